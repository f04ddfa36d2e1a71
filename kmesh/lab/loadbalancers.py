"""LoadBalancer Services from the machine: the lab's address pool and one loopback forward per LB port.

The pool (``kmesh up --lb-range``) defaults to the top of the underlay,
``kmesh.controllers.lbipam.DEFAULT_LB_RANGE`` (192.168.56.240-254): above
the gateway .1, the control plane .10 and the nodes .11-.74. ``lb_range_problem``
checks a range before anything starts.

The netns lab's underlay is not routed from the root namespace, so the
supervisor forwards a free port on 127.0.0.1 to every TCP port of every
LoadBalancer address (``LoadBalancerForwards``). Each forwarded connection
is made from the underlay namespace (192.168.56.1, the "host" of a Vagrant
host-only network): it crosses the bridge, the kernel there ARPs for the
address, the announcing node's speaker answers, and the node's kube-proxy
rules DNAT it — the path any machine on the underlay takes. The forwards are
listed in ``cluster.json`` as ``"loadBalancers": {"NS/NAME": {"ip": ...,
"ports": {"80": "127.0.0.1:P"}, "node": ...}}`` and follow the Services as
they come and go. UDP ports are not forwarded (the listing leaves them out).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from kmesh.client.api import Client
from kmesh.client.informer import Change, Informer
from kmesh.controllers.lbipam import DEFAULT_LB_RANGE, PoolError, check_range, within
from kmesh.gateway.announce import assignments, lb_addresses
from kmesh.lab.metrics import relay_into
from kmesh.net.sockets import OpenSocket

log = logging.getLogger("kmesh.lab.loadbalancers")


def lb_range_problem(text: str, *, runtime: str, nodes: int, service_cidr: str, cluster_cidr: str) -> str | None:
    """What is wrong with ``--lb-range`` ``text`` for such a lab, or None when it can be used."""
    from kmesh.lab.topology import CONTROL_PLANE_IP, UNDERLAY, UNDERLAY_GATEWAY, node_ip

    avoid = {"the pod CIDR": [cluster_cidr], "the service CIDR": [service_cidr]}
    if runtime == "netns":
        avoid["the lab's underlay gateway and control plane"] = [UNDERLAY_GATEWAY, CONTROL_PLANE_IP]
        avoid["the node addresses"] = [node_ip(i) for i in range(nodes)]
        avoid["the underlay's network and broadcast addresses"] = [str(UNDERLAY.network_address),
                                                                   str(UNDERLAY.broadcast_address)]
    try:
        check_range(text, avoid)
        if runtime == "netns" and not within(text, str(UNDERLAY)):
            return (f"{text!r} is not inside the lab underlay {UNDERLAY}: only addresses on the underlay can be "
                    "announced with ARP")
    except PoolError as exc:
        return str(exc)
    return None


def default_lb_range(runtime: str) -> str:
    """The pool a lab gets without ``--lb-range``: the top of the underlay (sim: none, its network is loopback)."""
    return "" if runtime == "sim" else DEFAULT_LB_RANGE


@dataclass
class _Forward:
    ip: str
    port: int
    local: int
    scope: trio.CancelScope


@dataclass
class LoadBalancerForwards:
    """The loopback forwards of one netns lab (see the module docstring); ``on_change`` gets the new listing."""

    client: Client
    open_root_socket: OpenSocket
    underlay_ns: str
    on_change: Callable[[dict[str, dict[str, object]]], None]
    forwards: dict[tuple[str, str, int], _Forward] = field(default_factory=dict)  # (svc, ip, port) → forward
    listing: dict[str, dict[str, object]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.services = Informer(self.client, "Service")
        self.nodes = Informer(self.client, "Node")
        self.slices = Informer(self.client, "EndpointSlice")
        self._dirty = trio.Event()
        for inf in (self.services, self.nodes, self.slices):
            inf.add_handler(self._on_change)

    def _on_change(self, ch: Change) -> None:
        self._dirty.set()

    def wanted(self) -> dict[tuple[str, str, int], None]:
        """Every (``ns/name``, address, TCP port) to forward now."""
        out: dict[tuple[str, str, int], None] = {}
        for svc in self.services.list():
            md = svc.get("metadata") or {}
            key = f"{md.get('namespace') or 'default'}/{md.get('name', '')}"
            for ip in lb_addresses(svc):
                for p in (svc.get("spec") or {}).get("ports") or []:
                    if (p.get("protocol") or "TCP") == "TCP" and p.get("port"):
                        out[(key, ip, int(p["port"]))] = None
        return out

    async def run(self, *, task_status: trio.TaskStatus[LoadBalancerForwards] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the forwards in line with the Services until cancelled."""
        async with trio.open_nursery() as n:
            for inf in (self.services, self.nodes, self.slices):
                await n.start(inf.run)
            task_status.started(self)
            while True:
                self._dirty = trio.Event()
                await self._sync(n)
                await self._dirty.wait()

    async def _sync(self, nursery: trio.Nursery) -> None:
        want = self.wanted()
        for k in [k for k in self.forwards if k not in want]:
            self.forwards.pop(k).scope.cancel()
            log.info("LoadBalancer forward to %s:%d (%s) removed", k[1], k[2], k[0])
        for k in want:
            if k in self.forwards:
                continue
            scope = trio.CancelScope()
            try:
                local = await nursery.start(self._relay, scope, k[1], k[2])
            except OSError as exc:
                log.warning("no forward to %s:%d: %s", k[1], k[2], exc)
                continue
            self.forwards[k] = _Forward(k[1], k[2], local, scope)
            log.info("LoadBalancer %s %s:%d on 127.0.0.1:%d", k[0], k[1], k[2], local)
        every = assignments(self.services.list(), self.nodes.list(), self.slices.list())
        listing: dict[str, dict[str, object]] = {}
        for (svc, ip, port), f in sorted(self.forwards.items()):
            entry = listing.setdefault(svc, {"ip": ip, "ports": {}, "node": every.get(ip, ("", ""))[0] or None})
            entry["ports"][str(port)] = f"127.0.0.1:{f.local}"  # type: ignore[index]
        if listing != self.listing:
            self.listing = listing
            self.on_change(listing)

    async def _relay(self, scope: trio.CancelScope, ip: str, port: int,
                     *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await relay_into(self.open_root_socket, self.underlay_ns, ip, port, task_status=task_status)

