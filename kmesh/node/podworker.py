"""One pod on this node, from its IP to its deletion: the kubelet's pod worker.

Order of life: wait for the node's podCIDR → take an IP → make the sandbox →
run init containers one by one → run the containers (each a
``ContainerRunner``) → on deletion, preStop + SIGTERM within the grace period
→ remove the sandbox, free the IP → final status, then the status manager
deletes the object. A pod whose containers all finished for good (phase
Succeeded/Failed) gives its sandbox and IP back and stays until deleted.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from kmesh.api.meta import now
from kmesh.api.obj import Obj
from kmesh.node.ipam import IPExhausted
from kmesh.node.podspec import EnvError, container_env, env_references
from kmesh.node.podvolumes import PodVolumes, VolumeMountError
from kmesh.node.runner import ContainerRunner
from kmesh.node.runtime import ContainerError, Sandbox
from kmesh.node.status import pod_conditions, pod_phase
from kmesh.node.waits import sleeper, wait_any

if TYPE_CHECKING:
    from kmesh.node.kubelet import Kubelet

log = logging.getLogger("kmesh.node.pod")
GONE_GRACE = 2.0  # seconds containers get when their pod vanished from the API (force deletion)
TERMINAL = ("Succeeded", "Failed")


class PodWorker:
    """Runs one pod (by UID) until it is deleted or finished."""

    def __init__(self, kubelet: Kubelet, pod: Obj) -> None:
        self.kubelet = kubelet
        self.cfg = kubelet.cfg
        self.runtime = kubelet.runtime
        self.http = kubelet.http
        self.pod = pod
        md = pod["metadata"]
        self.uid: str = md["uid"]
        self.namespace: str = md.get("namespace", "")
        self.name: str = md["name"]
        self.stopping = trio.Event()
        self.gone = trio.Event()
        self.deadline = float("inf")
        self.ip = ""
        self.sandbox: Sandbox | None = None
        self.container_nursery: trio.Nursery = None  # type: ignore[assignment]  # set while containers run
        self.start_time: str | None = (pod.get("status") or {}).get("startTime")
        spec = pod.get("spec") or {}
        self.inits = [ContainerRunner(self, c["name"], init=True) for c in spec.get("initContainers") or []]
        self.runners = [ContainerRunner(self, c["name"]) for c in spec.get("containers") or []]
        self.initialized = not self.inits
        self.init_failed = False
        self.terminal_phase: str | None = None
        self.done = trio.Event()
        self.volumes = PodVolumes(pod, self.cfg.data_dir, kubelet.sources)
        self._resume(pod.get("status") or {})

    def _resume(self, status: Obj) -> None:
        prev = {c.get("name"): c for c in status.get("containerStatuses") or []}
        prev_init = {c.get("name"): c for c in status.get("initContainerStatuses") or []}
        for r in self.runners:
            if r.name in prev:
                r.resume(prev[r.name])
        for r in self.inits:
            if r.name in prev_init:
                r.resume(prev_init[r.name])
        if self.inits and any(c.get("type") == "Initialized" and c.get("status") == "True" for c in status.get("conditions") or []):
            self.initialized = True

    # ----------------------------------------------------------- updates

    def update(self, pod: Obj) -> None:
        """A newer version of the pod object arrived."""
        self.pod = pod
        self.volumes.pod = pod
        md = pod.get("metadata") or {}
        if md.get("deletionTimestamp") and not self.stopping.is_set():
            grace = md.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            self._stop(float(grace))
        for r in self.inits + self.runners:
            r.pod_updated()

    def removed(self) -> None:
        """The object is gone from the API (force-deleted): stop quickly, delete nothing."""
        self.gone.set()
        self._stop(GONE_GRACE)

    def _stop(self, grace: float) -> None:
        if self.stopping.is_set():
            self.deadline = min(self.deadline, trio.current_time() + grace)
            return
        self.deadline = trio.current_time() + max(grace, 0.0)
        self.stopping.set()
        self.publish()

    def runtime_pod(self) -> Obj:
        """The pod as handed to the runtime: status.podIP/hostIP filled in with what this worker knows."""
        status = dict(self.pod.get("status") or {})
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        status["hostIP"] = self.kubelet.node_ip
        status["hostIPs"] = [{"ip": self.kubelet.node_ip}]
        return {**self.pod, "status": status}

    async def prepare_env(self, container: Obj) -> str:
        """Fetch the Secrets/ConfigMaps ``container``'s env reads into the sandbox; the reason it cannot
        start yet ("" when it can), as upstream's CreateContainerConfigError message."""
        assert self.sandbox is not None
        refs = env_references(container)
        if not refs:
            return ""
        objects = dict(self.sandbox.env_objects or {})
        for kind, name in refs:
            objects[(kind, name)] = await self.volumes.lookup(kind, name)
        self.sandbox.env_objects = objects
        try:
            container_env(self.runtime_pod(), container, self.ip, self.kubelet.node_ip, objects)
        except EnvError as exc:
            return str(exc)
        return ""

    def event(self, type_: str, reason: str, message: str) -> None:
        """Record a Kubernetes Event about this pod."""
        self.kubelet.events.record(self.pod, type_, reason, message)

    # ------------------------------------------------------------ status

    def publish(self) -> None:
        """Hand the current status to the status manager (it writes only what changed)."""
        if self.gone.is_set():
            return
        st = self.status()
        self.kubelet.statuses.set(self.namespace, self.name, self.uid, st)

    def status(self) -> Obj:
        """The kubelet-owned fields of the pod's status."""
        spec = self.pod.get("spec") or {}
        states = [r.state for r in self.runners]
        phase = self.terminal_phase or pod_phase(spec, states, self.initialized, self.init_failed)
        conds = pod_conditions(
            spec, self.pod.get("status") or {}, states, [r.state for r in self.inits],
            sandbox=self.sandbox is not None, initialized=self.initialized, phase=phase,
        )
        out: Obj = {
            "phase": phase,
            "conditions": conds,
            "hostIP": self.kubelet.node_ip,
            "hostIPs": [{"ip": self.kubelet.node_ip}],
            "containerStatuses": [s.to_api() for s in states],
        }
        if self.inits:
            out["initContainerStatuses"] = [r.state.to_api() for r in self.inits]
        ip = self.ip or (self.pod.get("status") or {}).get("podIP")
        if ip:
            out["podIP"] = ip
            out["podIPs"] = [{"ip": ip}]
        if self.start_time:
            out["startTime"] = self.start_time
        return out

    # --------------------------------------------------------------- run

    async def run(self) -> None:
        """The pod's whole life on this node."""
        try:
            await self._run()
        finally:
            self.done.set()
            self.kubelet.worker_done(self)

    async def _run(self) -> None:
        phase = (self.pod.get("status") or {}).get("phase")
        if phase in TERMINAL:
            self.kubelet.release_ip(self.uid)
            await self._wait_deleted()
            return
        try:
            if await self._mount_volumes() and await self._acquire_ip():
                self.sandbox = await self._create_sandbox()
                if self.sandbox is not None:
                    self.sandbox.volumes = self.volumes.dirs
                    if not self.start_time:
                        self.start_time = now()
                    self.publish()
                    async with trio.open_nursery() as vn:
                        vn.start_soon(self.volumes.keep_current)
                        await self._run_containers()
                        vn.cancel_scope.cancel()
                    await self.runtime.remove_sandbox(self.sandbox)
        finally:
            self.volumes.remove()
        self.kubelet.release_ip(self.uid)  # also one a previous agent reserved for a pod deleted meanwhile
        if self.stopping.is_set():
            await self._finish_deletion()
        else:
            self.publish()
            await self._wait_deleted()

    async def _mount_volumes(self) -> bool:
        """Set up the pod's volumes before its sandbox, as the kubelet does; a missing Secret or ConfigMap
        keeps the pod ContainerCreating with FailedMount events until it appears. False if the pod stops first."""
        delay = 1.0
        published = False
        while not self.stopping.is_set():
            try:
                await self.volumes.mount()
                return True
            except VolumeMountError as exc:
                if not published:
                    published = True
                    self.publish()
                self.event("Warning", "FailedMount",
                           f'MountVolume.SetUp failed for volume "{exc.volume}" : {exc.message}')
                await wait_any(self.stopping.wait, self.volumes.wait_change, sleeper(delay))
                delay = min(delay * 2, 120.0)
        return False

    async def _create_sandbox(self) -> Sandbox | None:
        """The pod's sandbox, retried with backoff (as the kubelet does) until the pod stops."""
        delay = 1.0
        ready = self.kubelet.cfg.network_ready
        if ready is not None and not ready.is_set():
            await wait_any(self.stopping.wait, ready.wait)
        while not self.stopping.is_set():
            try:
                sandbox = await self.runtime.create_sandbox(self.runtime_pod(), self.ip)
                self.ip = sandbox.ip
                return sandbox
            except ContainerError as exc:
                log.warning("%s/%s: sandbox failed: %s", self.namespace, self.name, exc.message)
                self.event("Warning", "FailedCreatePodSandBox", exc.message)
                await wait_any(self.stopping.wait, sleeper(delay))
                delay = min(delay * 2, 30.0)
        self.kubelet.release_ip(self.uid)
        if self.runtime.assigns_ips:
            self.ip = ""
        return None

    async def _acquire_ip(self) -> bool:
        """Take the pod's IP (host network pods use the node's); False if the pod stops first."""
        if (self.pod.get("spec") or {}).get("hostNetwork"):
            self.ip = self.kubelet.node_ip
            return True
        if self.runtime.assigns_ips:
            self.ip = ""
            return not self.stopping.is_set()
        warned = False
        while not self.stopping.is_set():
            ipam = self.kubelet.ipam
            if ipam is None:
                await wait_any(self.stopping.wait, self.kubelet.cidr_changed_event().wait)
                continue
            try:
                self.ip = ipam.allocate(self.uid, f"{self.namespace}/{self.name}")
                return True
            except IPExhausted as exc:
                if not warned:
                    warned = True
                    self.event("Warning", "FailedCreatePodSandBox", f"failed to allocate an IP for the pod: {exc}")
                    log.warning("%s/%s: %s", self.namespace, self.name, exc)
                await wait_any(self.stopping.wait, ipam.released.wait, self.kubelet.cidr_changed_event().wait, sleeper(30))
            except OSError as exc:
                log.warning("%s/%s: IPAM: %s", self.namespace, self.name, exc)
                await wait_any(self.stopping.wait, sleeper(1))
        return False

    async def _run_containers(self) -> None:
        async with trio.open_nursery() as n:
            self.container_nursery = n
            lifecycle_done = trio.Event()

            async def lifecycle() -> None:
                try:
                    await self._lifecycle(n)
                finally:
                    lifecycle_done.set()

            n.start_soon(lifecycle)
            await wait_any(lifecycle_done.wait, self.stopping.wait)
            if not self.stopping.is_set():
                # Every container is done for good: the pod is terminal.
                self.terminal_phase = pod_phase(
                    self.pod.get("spec") or {}, [r.state for r in self.runners], self.initialized, self.init_failed
                )
                if self.terminal_phase not in TERMINAL:
                    self.terminal_phase = "Failed" if self.init_failed else "Succeeded"
                self.publish()
                n.cancel_scope.cancel()
                return
            # Terminating: runners stop their containers by the deadline and return.
            self.publish()
            with trio.move_on_at(self.deadline + 5):
                await lifecycle_done.wait()
            n.cancel_scope.cancel()
        self.terminal_phase = self._final_phase()
        self.publish()

    def _final_phase(self) -> str:
        """The phase of a pod whose containers were stopped for deletion (upstream turns it terminal)."""
        codes = [int((r.state.terminated or {}).get("exitCode") or 0) for r in self.runners if r.state.terminated]
        return "Succeeded" if codes and all(c == 0 for c in codes) and self.initialized else "Failed"

    async def _lifecycle(self, nursery: trio.Nursery) -> None:
        async with trio.open_nursery() as sidecars:
            for r in self.inits:
                if self.stopping.is_set():
                    return
                if r.sidecar:
                    # As upstream's kubelet: what follows a native sidecar starts once it has started.
                    sidecars.start_soon(r.run)
                    await wait_any(r.started_once.wait, self.stopping.wait)
                    continue
                await r.run()
                term = r.state.terminated or {}
                if self.stopping.is_set():
                    return
                if term.get("exitCode") != 0:
                    self.init_failed = True
                    self.publish()
                    return
            self.initialized = True
            self.publish()
            async with trio.open_nursery() as main:
                for r in self.runners:
                    main.start_soon(r.run)
            sidecars.cancel_scope.cancel()

    async def _finish_deletion(self) -> None:
        if self.gone.is_set():
            return
        done = self.kubelet.statuses.finish(self.namespace, self.name, self.uid)
        await wait_any(done.wait, self.gone.wait)

    async def _wait_deleted(self) -> None:
        """A finished pod stays until its object is deleted (or deleted gracefully: then delete it)."""
        await wait_any(self.stopping.wait, self.gone.wait)
        if not self.gone.is_set():
            self.publish()
            await self._finish_deletion()
