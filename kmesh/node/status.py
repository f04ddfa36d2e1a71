"""What the kubelet knows about containers, and the pod status it derives from that (phase, conditions)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kmesh.api.meta import now
from kmesh.api.obj import Obj

OWNED_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")


@dataclass
class ContainerState:
    """One container as the kubelet tracks it (one per spec container, across restarts)."""

    name: str
    image: str
    init: bool = False
    sidecar: bool = False  # an init container with restartPolicy Always (it runs beside the containers)
    restart_count: int = 0
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    container_id: str = ""
    image_id: str = ""

    @property
    def running(self) -> bool:
        """Whether the container runs now."""
        return "running" in self.state

    @property
    def terminated(self) -> Obj | None:
        """The terminated state, if the container is terminated."""
        return self.state.get("terminated")

    def set_running(self, container_id: str, started_at: str) -> None:
        """The container has started."""
        self.container_id = container_id
        self.image_id = "kmesh://" + self.image
        self.state = {"running": {"startedAt": started_at}}
        self.ready = False

    def set_terminated(self, exit_code: int, started_at: str | None, reason: str = "", message: str = "") -> None:
        """The container has exited (``reason`` defaults to Completed / Error)."""
        term: Obj = {
            "exitCode": exit_code,
            "reason": reason or ("Completed" if exit_code == 0 else "Error"),
            "startedAt": started_at,
            "finishedAt": now(),
        }
        if message:
            term["message"] = message
        if self.container_id:
            term["containerID"] = self.container_id
        self.state = {"terminated": term}
        self.ready = False
        self.started = False

    def set_waiting(self, reason: str, message: str = "") -> None:
        """The container waits (to be created, for an image, in crash backoff)."""
        w: Obj = {"reason": reason}
        if message:
            w["message"] = message
        self.state = {"waiting": w}
        self.ready = False
        self.started = False

    def restarting(self) -> None:
        """Move the current terminated state to ``lastState`` and count the restart."""
        if self.terminated is not None:
            self.last_state = {"terminated": dict(self.terminated)}
        self.restart_count += 1

    def to_api(self) -> Obj:
        """The containerStatuses entry."""
        out: Obj = {
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out


def pod_phase(spec: Obj, containers: list[ContainerState], initialized: bool, init_failed: bool) -> str:
    """Upstream's getPhase: Pending / Running / Succeeded / Failed from the containers' states."""
    if init_failed:
        return "Failed"
    if not initialized:
        return "Pending"
    running = waiting = stopped = succeeded = 0
    for c in containers:
        if c.running:
            running += 1
        elif c.terminated is not None:
            stopped += 1
            if c.terminated.get("exitCode") == 0:
                succeeded += 1
        elif c.last_state.get("terminated"):
            stopped += 1
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        policy = spec.get("restartPolicy") or "Always"
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def _cond(ctype: str, ok: bool, reason: str = "", message: str = "") -> Obj:
    c: Obj = {"type": ctype, "status": "True" if ok else "False", "lastProbeTime": None}
    if not ok and reason:
        c["reason"] = reason
    if not ok and message:
        c["message"] = message
    return c


def pod_conditions(
    spec: Obj, status: Obj, containers: list[ContainerState], inits: list[ContainerState], *,
    sandbox: bool, initialized: bool, phase: str,
) -> list[Obj]:
    """PodReadyToStartContainers, Initialized, ContainersReady and Ready (other types kept as they are).

    A terminating pod stays Ready as long as its containers are: upstream's kubelet keeps probing readiness
    through the preStop hook and the grace period, and the EndpointSlice's ``serving`` condition follows it
    (what kube-proxy's terminating-endpoint fallback reads). A container that has stopped is not ready."""
    terminal = phase in ("Succeeded", "Failed")
    # Native sidecars count as containers for readiness (KEP-753) and are "initialized" once started.
    unready = [c.name for c in [*(i for i in inits if i.sidecar), *containers] if not c.ready]
    uninit = [c.name for c in inits
              if not (c.started if c.sidecar else c.terminated and c.terminated.get("exitCode") == 0)]
    if terminal:
        reason, msg = "PodCompleted", ""
        ready = False
    else:
        reason, msg = "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]"
        ready = not unready
    gates_ok = True
    existing = {c.get("type"): c for c in status.get("conditions") or []}
    gate_missing = []
    for g in spec.get("readinessGates") or []:
        gc = existing.get(g.get("conditionType"))
        if not gc or gc.get("status") != "True":
            gates_ok = False
            gate_missing.append(g.get("conditionType"))
    ours = [
        _cond("PodReadyToStartContainers", sandbox and not terminal),
        _cond("Initialized", initialized, "ContainersNotInitialized",
              f"containers with incomplete status: [{' '.join(uninit)}]"),
        _cond("ContainersReady", ready, reason, msg),
        _cond("Ready", ready and gates_ok, reason if not ready else "ReadinessGatesNotReady",
              msg if not ready else f"corresponding condition of pod readiness gate {gate_missing} does not exist."),
    ]
    for c in ours:
        old = existing.get(c["type"])
        if old is not None and old.get("status") == c["status"] and old.get("lastTransitionTime"):
            c["lastTransitionTime"] = old["lastTransitionTime"]
        else:
            c["lastTransitionTime"] = now()
    others = [c for t, c in existing.items() if t not in OWNED_CONDITIONS]
    return others + ours


def merge_status(current: Obj, ours: Obj) -> Obj:
    """The pod status to write: ``current`` with the kubelet-owned fields replaced by ``ours``."""
    out = dict(current)
    for key, value in ours.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out
