"""The contract between the kubelet and a pod runtime (sim and netns).

The kubelet never touches sockets, processes or namespaces itself: it asks a
``PodRuntime`` for a sandbox (the pod's network identity: one IP, one place
where sockets are opened and processes run), starts containers in it, execs
commands for probes and hooks, and removes it.

The pod objects the kubelet hands over carry ``status.podIP`` and
``status.hostIP`` already (what the downward API resolves to), even before
that status is written to the API server.

Containers are owned by the caller's nursery: ``start_container`` is given the
nursery its supervising task runs in, so cancelling that nursery (the agent
stopping) kills the container, and a ``ContainerHandle`` lets the kubelet wait
for the exit code or stop it with a grace period.
"""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import trio

from kmesh.api.obj import Obj



class ContainerError(Exception):
    """A container could not be started; ``reason`` is what the container status shows."""

    reason = "RunContainerError"

    def __init__(self, message: str, *, reason: str | None = None, exit_code: int = 128) -> None:
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason
        self.exit_code = exit_code


class ImageError(ContainerError):
    """The image is not something this runtime can run (the container waits; the pod stays Pending)."""

    reason = "ErrImagePull"


class StartError(ContainerError):
    """The container's process could not be started (e.g. no such executable): it terminates with 128."""

    reason = "StartError"


@dataclass
class Sandbox:
    """One pod's network identity as the runtime made it.

    ``bind_host`` is where built-in apps bind their sockets (the pod IP in the
    sim runtime, where "localhost" between containers of one pod is the pod IP;
    a netns runtime may use 0.0.0.0 inside the namespace). ``socket`` opens a
    socket in the pod's network (the netns runtime opens it inside the pod
    namespace in a worker thread and hands it back).
    """

    pod_uid: str
    namespace: str
    name: str
    ip: str
    bind_host: str
    log_dir: Path
    hostname: str
    extra: dict[str, Any] = field(default_factory=dict)
    volumes: dict[str, Path] = field(default_factory=dict)  # the pod's materialised volumes by name (kubelet-set)
    # The Secrets/ConfigMaps the containers' env reads, by (kind, name), None when missing (kubelet-set);
    # None: not fetched, such references resolve to "".
    env_objects: dict[tuple[str, str], Obj | None] | None = None

    async def open_socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> trio.socket.SocketType:
        """A new trio socket in the pod's network (a netns runtime creates it inside the pod namespace)."""
        return trio.socket.socket(family, type)


@runtime_checkable
class ContainerHandle(Protocol):
    """A started container: wait for its exit code or stop it."""

    id: str
    pid: int | None

    async def wait(self) -> int:
        """The exit code once the container has exited (128+N when killed by signal N)."""
        ...

    async def stop(self, grace: float) -> int:
        """SIGTERM (or cancel), wait up to ``grace`` seconds, then SIGKILL; the exit code."""
        ...


@dataclass
class ExecResult:
    """What a command run in a pod returned."""

    exit_code: int
    output: bytes = b""
    timed_out: bool = False


class PodRuntime(Protocol):
    """What a kubelet needs from a runtime; see the module docstring."""

    name: str
    version: str
    # True when the runtime's network plugin (CNI IPAM) picks pod IPs: the
    # kubelet then passes ip="" to create_sandbox and reads Sandbox.ip back.
    assigns_ips: bool

    def check_image(self, container: Obj) -> None:
        """Raise ``ImageError`` when the container can never run here (unknown image, no command)."""
        ...

    async def create_sandbox(self, pod: Obj, ip: str) -> Sandbox:
        """Make the pod's network identity with address ``ip`` (``""`` when ``assigns_ips``)."""
        ...

    async def start_container(
        self, nursery: trio.Nursery, sandbox: Sandbox, pod: Obj, container: Obj, *, attempt: int = 0
    ) -> ContainerHandle:
        """Start ``container`` of ``pod`` in ``sandbox``; its supervising task runs in ``nursery``."""
        ...

    async def exec(self, sandbox: Sandbox, pod: Obj, container: Obj, argv: list[str], timeout: float) -> ExecResult:
        """Run ``argv`` the way ``container`` runs (pod network, env, working dir)."""
        ...

    async def remove_sandbox(self, sandbox: Sandbox) -> None:
        """Undo ``create_sandbox`` (idempotent)."""
        ...


def new_container_id() -> str:
    """A fresh ``kmesh://`` container ID (shown in containerStatuses[].containerID)."""
    return "kmesh://" + secrets.token_hex(16)


def exit_code_of(returncode: int) -> int:
    """A process return code as a container exit code (signal N → 128+N, as runtimes report it)."""
    return 128 - returncode if returncode < 0 else returncode
