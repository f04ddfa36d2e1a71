"""kubelet-lite: runs the pods bound to this node, one ``PodWorker`` per pod UID.

It follows the pods of its node through the shared informer (field selector
``spec.nodeName=<node>``), starts a worker for each new UID, forwards updates
(a deletionTimestamp starts graceful termination), and tells a worker when
its object is gone. IPs come from a host-local-like IPAM on the node's
podCIDR; addresses held by pods that no longer exist are freed when the IPAM
is (re)opened. Every worker runs in the kubelet's nursery, so cancelling the
kubelet stops every pod task and process.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from kmesh.api.obj import Obj
from kmesh.client.api import Client
from kmesh.client.informer import Change, Informer
from kmesh.node.events import EventRecorder
from kmesh.node.ipam import HostLocalIPAM
from kmesh.node.podvolumes import remove_orphan_volumes
from kmesh.node.podworker import TERMINAL, PodWorker
from kmesh.node.probes import new_http_client
from kmesh.node.runtime import PodRuntime
from kmesh.node.statusmgr import StatusManager
from kmesh.node.volumesources import VolumeSources

if TYPE_CHECKING:
    from kmesh.node.agent import AgentConfig

log = logging.getLogger("kmesh.node.kubelet")


class Kubelet:
    """Pod workers, IPAM and status writes of one node."""

    def __init__(self, client: Client, cfg: AgentConfig, pods: Informer) -> None:
        self.client = client
        self.cfg = cfg
        self.runtime: PodRuntime = cfg.runtime
        self.node_ip = cfg.node_ip
        self.pods = pods
        self.statuses = StatusManager(client, pods)
        self.events = EventRecorder(client, cfg.node_name)
        self.sources = VolumeSources(client)
        self.http = new_http_client()
        self.workers: dict[str, PodWorker] = {}
        self.finished: set[str] = set()  # UIDs whose worker ended (terminal pods stay in the cache)
        self.ipam: HostLocalIPAM | None = None
        self.pod_cidr = ""
        self._cidr_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.started_containers = 0
        self.start_errors: dict[str, int] = {}

    # ------------------------------------------------------------- network

    def set_pod_cidr(self, cidr: str) -> None:
        """The node's podCIDR (from the Node object); opening the IPAM frees addresses of vanished pods."""
        if not cidr or cidr == self.pod_cidr:
            return
        self.pod_cidr = cidr
        self.ipam = HostLocalIPAM(self.cfg.data_dir / "ipam", cidr)
        live = {p["metadata"].get("uid") for p in self.pods.list() if (p.get("status") or {}).get("phase") not in TERMINAL}
        live |= set(self.workers)
        freed = self.ipam.gc({u for u in live if u})
        if freed:
            log.info("%s: freed addresses of pods that are gone: %s", self.cfg.node_name, ", ".join(freed))
        self._cidr_changed.set()
        self._cidr_changed = trio.Event()

    def cidr_changed_event(self) -> trio.Event:
        """Set the next time the podCIDR is learnt or changes."""
        return self._cidr_changed

    def release_ip(self, uid: str) -> None:
        """Free the address of pod ``uid``."""
        if self.ipam is not None:
            self.ipam.release(uid)

    # ---------------------------------------------------------------- pods

    def on_change(self, change: Change) -> None:
        """Informer handler: start, update or end pod workers."""
        if self._nursery is None:
            return
        old, new = change.old, change.new
        if new is None:
            assert old is not None
            self.finished.discard(old["metadata"].get("uid", ""))
            w = self.workers.get(old["metadata"].get("uid", ""))
            if w is not None:
                w.removed()
            return
        uid = new["metadata"].get("uid", "")
        if old is not None and old["metadata"].get("uid") != uid:
            w = self.workers.get(old["metadata"].get("uid", ""))
            if w is not None:
                w.removed()
        w = self.workers.get(uid)
        if w is not None:
            w.update(new)
            self.statuses.queue.add(uid)  # re-check: someone else may have written the status
            return
        self._start(new)

    def _start(self, pod: Obj) -> None:
        uid = pod["metadata"].get("uid", "")
        if not uid or uid in self.finished or (pod.get("spec") or {}).get("nodeName") != self.cfg.node_name:
            return
        assert self._nursery is not None
        w = PodWorker(self, pod)
        self.workers[uid] = w
        w.update(pod)
        self._nursery.start_soon(w.run, name=f"pod {w.namespace}/{w.name}")

    def worker_done(self, w: PodWorker) -> None:
        """Called by a worker when it ends."""
        self.workers.pop(w.uid, None)
        self.finished.add(w.uid)
        if w.gone.is_set():
            self.statuses.forget(w.uid)

    def running_pods(self) -> int:
        """Pods with a sandbox (kubelet_running_pods)."""
        return sum(1 for w in self.workers.values() if w.sandbox is not None and w.terminal_phase is None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run pod workers until cancelled (the pods informer must be running and synced)."""
        try:
            async with trio.open_nursery() as n:
                n.start_soon(self.statuses.run)
                n.start_soon(self.events.run)
                await n.start(self.sources.run)
                self._nursery = n
                self.pods.add_handler(self.on_change)
                for pod in self.pods.list():
                    self._start(pod)
                remove_orphan_volumes(self.cfg.data_dir, {p["metadata"].get("uid", "") for p in self.pods.list()})
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            if self.on_change in self.pods.handlers:
                self.pods.handlers.remove(self.on_change)
            with trio.CancelScope(shield=True):
                await self.http.aclose()
