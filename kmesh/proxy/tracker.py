"""The change tracker every proxy mode shares: Services + EndpointSlices → desired state + what changed.

Two informers (the one informer of kmesh.client) keep the caches; every
event recomputes the ports of the one Service it touches and records the
service-port names whose ``ServicePort`` differs from before. The sync
loop (kmesh.proxy.runner) takes a snapshot and the changed names together,
so a mode sees each change exactly once. When the API server is
unreachable the informers keep their caches, so nothing is taken away.

Like kube-proxy, the tracker also follows the proxy's own Node (one more
informer, filtered to that one name): its ``topology.kubernetes.io/zone``
label is the zone topology-aware routing uses, and a change of it recomputes
every Service.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from kmesh.api.obj import Obj
from kmesh.api.wellknown import ZONE_LABEL
from kmesh.client.api import Client
from kmesh.client.informer import Change, Informer
from kmesh.proxy.convert import SERVICE_NAME_LABEL, service_ports
from kmesh.proxy.model import ProxyState, ServicePort, ServicePortName

log = logging.getLogger("kmesh.proxy.tracker")


class ChangeTracker:
    """Desired proxy state from the API, with the names changed since the last ``take``."""

    def __init__(self, client: Client, *, node: str = "") -> None:
        """``node``: the proxy's Node, whose zone label is followed ("": none, and no zone)."""
        self.services = Informer(client, "Service")
        self.slices = Informer(client, "EndpointSlice")
        self.services.add_handler(self._on_service)
        self.slices.add_handler(self._on_slice)
        self.zone = ""  # unknown until the Node is seen
        self.node: Informer | None = None
        if node:
            self.node = Informer(client, "Node", field_selector=f"metadata.name={node}")
            self.node.add_handler(self._on_node)
        self._ports: dict[tuple[str, str], dict[ServicePortName, ServicePort]] = {}
        self._slices: dict[tuple[str, str], dict[str, Obj]] = {}  # (ns, service) -> slice name -> slice
        self._pending: set[ServicePortName] = set()
        self._changed = trio.Event()
        self.on_change: Callable[[], None] | None = None  # told whenever something becomes pending (health)

    # ------------------------------------------------------------ events

    def _on_service(self, change: Change) -> None:
        obj = change.new or change.old
        assert obj is not None
        md = obj["metadata"]
        self._recompute(md.get("namespace", "default"), md["name"])

    def _on_slice(self, change: Change) -> None:
        owners: set[tuple[str, str]] = set()
        for obj, present in ((change.old, False), (change.new, True)):
            if obj is None:
                continue
            md = obj["metadata"]
            owner = (md.get("labels") or {}).get(SERVICE_NAME_LABEL)
            if not owner:
                continue
            key = (md.get("namespace", "default"), owner)
            owners.add(key)
            group = self._slices.setdefault(key, {})
            if present:
                group[md["name"]] = obj
            else:
                group.pop(md["name"], None)
                if not group:
                    self._slices.pop(key, None)
        for namespace, name in owners:  # once per Service, even when old and new name the same one
            self._recompute(namespace, name)

    def _on_node(self, change: Change) -> None:
        labels = ((change.new or {}).get("metadata") or {}).get("labels") or {}  # deleted: zone unknown
        zone = labels.get(ZONE_LABEL) or ""
        if zone == self.zone:
            return
        log.info("node zone is now %r: topology hints are recomputed", zone)
        self.zone = zone
        for svc in self.services.list():
            md = svc["metadata"]
            self._recompute(md.get("namespace", "default"), md["name"])

    def _recompute(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        svc = self.services.get(name, namespace)
        new = ({sp.name: sp for sp in service_ports(svc, self._slices.get(key, {}).values(), self.zone)}
               if svc else {})
        old = self._ports.get(key, {})
        changed = {n for n in old.keys() | new.keys() if old.get(n) != new.get(n)}
        if new:
            self._ports[key] = new
        else:
            self._ports.pop(key, None)
        self._mark_pending(changed)

    def _mark_pending(self, changed: set[ServicePortName] | frozenset[ServicePortName]) -> None:
        if changed:
            self._pending |= changed
            self._changed.set()
            if self.on_change is not None:
                self.on_change()

    # ------------------------------------------------------------- reads

    def state(self) -> ProxyState:
        """A snapshot of the desired state."""
        out = ProxyState()
        for ports in self._ports.values():
            out.services.update(ports)
        return out

    def take(self) -> tuple[ProxyState, frozenset[ServicePortName]]:
        """The desired state and the names changed since the previous ``take`` (which are then cleared)."""
        changed = frozenset(self._pending)
        self._pending.clear()
        self._changed = trio.Event()
        return self.state(), changed

    def give_back(self, changed: frozenset[ServicePortName]) -> None:
        """Mark ``changed`` pending again (a sync that failed)."""
        self._mark_pending(changed)

    @property
    def pending(self) -> bool:
        """Whether changes wait for the next ``take``."""
        return bool(self._pending)

    async def wait_changed(self) -> None:
        """Return once something is pending."""
        if self._pending:
            return
        await self._changed.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the informers until cancelled; ``task_status`` once all have listed."""
        async with trio.open_nursery() as n:
            if self.node is not None:
                await n.start(self.node.run)
            await n.start(self.slices.run)
            await n.start(self.services.run)
            task_status.started()
