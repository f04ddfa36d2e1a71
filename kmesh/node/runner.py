"""One container of a pod across its restarts: start, probe, stop, restart with crash backoff."""

from __future__ import annotations

import functools
import json
import logging
from typing import TYPE_CHECKING

import trio

from kmesh.api.meta import now
from kmesh.api.obj import Obj
from kmesh.node.probes import ProbeTarget, ProbeWorker, check
from kmesh.node.runtime import ContainerError, ContainerHandle, ExecResult, ImageError
from kmesh.node.status import ContainerState
from kmesh.node.waits import sleeper, wait_any

if TYPE_CHECKING:
    from kmesh.node.podworker import PodWorker

log = logging.getLogger("kmesh.node.runner")
MIN_STOP_GRACE = 2.0  # the kubelet's floor for the time a container gets after its preStop hook


class CrashBackoff:
    """Upstream's restart backoff: the first restart is immediate, then 10 s doubling to 300 s.

    A container that ran longer than twice the maximum since the last restart
    starts over with no delay.
    """

    def __init__(self, initial: float = 10.0, maximum: float = 300.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.backoff: float | None = None
        self.last_update = 0.0

    def delay(self, finished_at: float) -> float:
        """Seconds to wait (from now) before restarting a container that exited at ``finished_at``."""
        if self.backoff is None or finished_at - self.last_update > 2 * self.maximum:
            self.backoff = None
            return 0.0
        return max(0.0, finished_at + self.backoff - trio.current_time())

    def restarted(self) -> None:
        """Record a restart (grows the next backoff)."""
        self.backoff = self.initial if self.backoff is None else min(self.backoff * 2, self.maximum)
        self.last_update = trio.current_time()


def spec_hash(container: Obj) -> str:
    """What identifies a container's spec (a change restarts the container)."""
    return json.dumps(container, sort_keys=True)


class ContainerRunner:
    """Runs one spec container of a pod worker until it will not run again."""

    def __init__(self, pw: PodWorker, name: str, *, init: bool = False) -> None:
        self.pw = pw
        self.name = name
        self.init = init
        spec = self.spec()
        self.state = ContainerState(name=name, image=spec.get("image", ""), init=init,
                                    sidecar=init and spec.get("restartPolicy") == "Always")
        self.started_once = trio.Event()
        """Set the first time the container counts as started (its startup probe passed, if it has one):
        the pod worker starts what follows a native sidecar only then, as upstream's kubelet."""
        self.backoff = CrashBackoff(pw.cfg.backoff_initial, pw.cfg.backoff_max)
        self.handle: ContainerHandle | None = None
        self.spec_changed = trio.Event()
        self._kill = trio.Event()
        self._kill_reason = ""
        self._terminating = False  # stopping for the pod's deletion: probes still run, liveness no longer kills
        self._hash = spec_hash(spec)
        self.resumed = False

    def resume(self, previous: Obj) -> None:
        """Carry on from the status a previous agent wrote: a container that had run counts a restart."""
        self.state.restart_count = int(previous.get("restartCount") or 0)
        self.state.last_state = dict(previous.get("lastState") or {})
        state = previous.get("state") or {}
        if state.get("terminated"):
            self.resumed = True
            self.state.container_id = previous.get("containerID", "")
            self.state.state = {"terminated": dict(state["terminated"])}
        elif previous.get("containerID") or state.get("running"):
            self.resumed = True
            started = (state.get("running") or {}).get("startedAt")
            self.state.container_id = previous.get("containerID", "")
            self.state.set_terminated(255, started, reason="Unknown", message="the kmesh agent restarted")
        elif self.state.last_state:
            self.resumed = True

    # ------------------------------------------------------------ the spec

    def spec(self) -> Obj:
        """The container's current spec in the pod."""
        key = "initContainers" if self.init else "containers"
        for c in (self.pw.pod.get("spec") or {}).get(key) or []:
            if c.get("name") == self.name:
                return c
        return {"name": self.name}

    def pod_updated(self) -> None:
        """The pod object changed: notice a changed container spec (an image update)."""
        h = spec_hash(self.spec())
        if h != self._hash:
            self._hash = h
            self.spec_changed.set()

    def _restart_policy(self) -> str:
        policy = (self.pw.pod.get("spec") or {}).get("restartPolicy") or "Always"
        if self.init:
            sidecar = self.spec().get("restartPolicy") == "Always"
            return "Always" if sidecar else ("Never" if policy == "Never" else "OnFailure")
        return policy

    @property
    def _can_be_ready(self) -> bool:
        """Containers and native sidecars have readiness; init containers that run to completion do not."""
        return not self.init or self.sidecar

    @property
    def sidecar(self) -> bool:
        """An init container with restartPolicy Always runs beside the others (a native sidecar)."""
        return self.init and self.spec().get("restartPolicy") == "Always"

    # ---------------------------------------------------------------- run

    async def run(self) -> None:
        """Start, supervise and restart the container until it is done or the pod stops."""
        pw = self.pw
        first = not self.resumed
        term = self.state.terminated
        if self.resumed and term is not None and not self._should_restart(int(term.get("exitCode") or 0), False):
            pw.publish()
            return
        while not pw.stopping.is_set():
            spec = self.spec()
            self.state.image = spec.get("image", "")
            self.spec_changed = trio.Event()
            self._hash = spec_hash(spec)
            try:
                pw.runtime.check_image(spec)
            except ImageError as exc:
                if self.state.terminated is not None:
                    self.state.last_state = {"terminated": dict(self.state.terminated)}
                self.state.set_waiting(exc.reason, exc.message)
                pw.publish()
                pw.event("Warning", "Failed", f"Failed to pull image \"{spec.get('image')}\": {exc.message}")
                await wait_any(pw.stopping.wait, self.spec_changed.wait)
                continue
            config_error = await pw.prepare_env(spec)
            if config_error:
                if self.state.terminated is not None:
                    self.state.last_state = {"terminated": dict(self.state.terminated)}
                self.state.set_waiting("CreateContainerConfigError", config_error)
                pw.publish()
                pw.event("Warning", "Failed", f"Error: {config_error}")
                env_changed = functools.partial(pw.volumes.wait_change, "env")
                await wait_any(pw.stopping.wait, self.spec_changed.wait, env_changed, sleeper(30))
                continue
            if not first:
                self.state.restarting()
                self.backoff.restarted()
            first = False
            code, forced = await self._run_once(spec)
            finished = trio.current_time()
            if pw.stopping.is_set():
                return
            if not self._should_restart(code, forced):
                pw.publish()
                return
            delay = 0.0 if forced else self.backoff.delay(finished)
            if delay > 0:
                term = self.state.terminated or {}
                self.state.last_state = {"terminated": dict(term)}
                md = pw.pod.get("metadata") or {}
                self.state.set_waiting(
                    "CrashLoopBackOff",
                    f"back-off {_fmt(self.backoff.backoff or delay)} restarting failed container={self.name} "
                    f"pod={md.get('name')}_{md.get('namespace')}({md.get('uid')})",
                )
                pw.publish()
                pw.event("Warning", "BackOff", "Back-off restarting failed container " + self.name)
                await wait_any(pw.stopping.wait, self.spec_changed.wait, sleeper(delay))

    def _should_restart(self, code: int, forced: bool) -> bool:
        policy = self._restart_policy()
        if forced:
            return policy != "Never" or self._kill_reason == "spec"
        if policy == "Always":
            return True
        if policy == "OnFailure":
            return code != 0
        return False

    async def _run_once(self, spec: Obj) -> tuple[int, bool]:
        """One container run: (exit code, restart forced by a probe or a spec change)."""
        pw = self.pw
        self._kill = trio.Event()
        self._kill_reason = ""
        assert pw.sandbox is not None
        try:
            handle = await pw.runtime.start_container(
                pw.container_nursery, pw.sandbox, pw.runtime_pod(), spec, attempt=self.state.restart_count
            )
        except ContainerError as exc:
            errors = pw.kubelet.start_errors
            errors[exc.reason] = errors.get(exc.reason, 0) + 1
            self.state.container_id = ""
            self.state.set_terminated(exc.exit_code, None, reason=exc.reason, message=exc.message)
            pw.publish()
            pw.event("Warning", "Failed", f"Error: {exc.message}")
            return exc.exit_code, False
        self.handle = handle
        pw.kubelet.started_containers += 1
        started_at = now()
        self.state.set_running(handle.id, started_at)
        self.state.started = not spec.get("startupProbe")
        self.state.ready = self.state.started and not spec.get("readinessProbe") and self._can_be_ready
        if self.state.started:
            self.started_once.set()
        pw.publish()
        pw.event("Normal", "Pulled", f'Container image "{spec.get("image")}" already present on machine')
        pw.event("Normal", "Created", f"Created container {self.name}")
        pw.event("Normal", "Started", f"Started container {self.name}")
        which = -1
        code = 0
        async with trio.open_nursery() as probes:
            probes.start_soon(self._probe, spec, probes)
            which = await wait_any(handle.wait, pw.stopping.wait, self._kill.wait, self.spec_changed.wait)
            if which == 1:
                # As upstream's kubelet: readiness is still probed while the pod terminates (preStop, then the
                # grace period after SIGTERM), so the pod stays Ready (its endpoint serving) until the probe
                # fails or the container stops; liveness and startup no longer restart anything.
                self._terminating = True
                code = await self._stop_for_deletion(handle, spec)
            probes.cancel_scope.cancel()
        forced = False
        message = ""
        if which == 0:
            code = await handle.wait()
        elif which == 1:
            pass
        else:
            forced = True
            if which == 3:
                self._kill_reason = "spec"
                message = "Container spec hash changed, will be restarted"
            pw.event("Normal", "Killing", f"Container {self.name} {self._kill_message()}")
            code = await handle.stop(self._grace(spec))
        self.handle = None
        self.state.set_terminated(code, started_at, message=message if which == 3 else "")
        pw.publish()
        return code, forced

    def _kill_message(self) -> str:
        return {
            "liveness": "failed liveness probe, will be restarted",
            "startup": "failed startup probe, will be restarted",
            "spec": "definition changed, will be restarted",
        }.get(self._kill_reason, "will be restarted")

    def _grace(self, spec: Obj) -> float:
        pod_grace = (self.pw.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        probe = spec.get("livenessProbe" if self._kill_reason == "liveness" else "startupProbe") or {}
        grace = probe.get("terminationGracePeriodSeconds", pod_grace) if self._kill_reason != "spec" else pod_grace
        return float(grace if grace is not None else 30)

    async def _stop_for_deletion(self, handle: ContainerHandle, spec: Obj) -> int:
        """preStop (bounded by the pod's deadline), then SIGTERM / grace / SIGKILL."""
        pw = self.pw
        pre = (spec.get("lifecycle") or {}).get("preStop")
        if pre:
            with trio.move_on_at(pw.deadline):
                res = await check(pre, self._target(spec), max(1.0, pw.deadline - trio.current_time()))
                if not res.ok:
                    pw.event("Warning", "FailedPreStopHook", f"PreStopHook failed: {res.message}")
        pw.event("Normal", "Killing", f"Stopping container {self.name}")
        remaining = max(pw.deadline - trio.current_time(), 0.0)
        if pre:
            remaining = max(remaining, MIN_STOP_GRACE)
        return await handle.stop(remaining)

    # ------------------------------------------------------------- probes

    def _target(self, spec: Obj) -> ProbeTarget:
        pw = self.pw

        async def run_exec(argv: list[str], timeout: float) -> ExecResult:
            assert pw.sandbox is not None
            return await pw.runtime.exec(pw.sandbox, pw.runtime_pod(), spec, argv, timeout)

        return ProbeTarget(pw.ip, spec, run_exec, pw.http)

    async def _probe(self, spec: Obj, nursery: trio.Nursery) -> None:
        target = self._target(spec)
        pw = self.pw
        startup = spec.get("startupProbe")

        def start_others() -> None:
            if spec.get("livenessProbe"):
                nursery.start_soon(ProbeWorker("liveness", spec["livenessProbe"], target, self._on_liveness).run)
            if spec.get("readinessProbe") and self._can_be_ready:
                nursery.start_soon(ProbeWorker("readiness", spec["readinessProbe"], target, self._on_readiness).run)

        def on_startup(ok: bool, message: str) -> None:
            if ok:
                self.state.started = True
                self.state.ready = not spec.get("readinessProbe") and self._can_be_ready
                self.started_once.set()
                pw.publish()
                start_others()
            elif not self._terminating:
                pw.event("Warning", "Unhealthy", f"Startup probe failed: {message}")
                self._kill_reason = "startup"
                self._kill.set()

        if startup:
            nursery.start_soon(ProbeWorker("startup", startup, target, on_startup).run)
        else:
            start_others()

    def _on_liveness(self, ok: bool, message: str) -> None:
        if not ok and not self._terminating:
            self.pw.event("Warning", "Unhealthy", f"Liveness probe failed: {message}")
            self._kill_reason = "liveness"
            self._kill.set()

    def _on_readiness(self, ok: bool, message: str) -> None:
        if not ok:
            self.pw.event("Warning", "Unhealthy", f"Readiness probe failed: {message}")
        if self.state.running and self.state.started:
            self.state.ready = ok
            self.pw.publish()


def _fmt(seconds: float) -> str:
    s = int(seconds)
    if s >= 60:
        m, s = divmod(s, 60)
        return f"{m}m{s}s"
    return f"{s}s"
