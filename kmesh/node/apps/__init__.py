"""Built-in images: apps that run as tasks of the agent instead of container images.

The registry maps an image name (without tag or digest; ``docker.io/`` and
``library/`` dropped) to an app's main function, or to a lazy
``"module:function"`` path imported on first use, so later components (the
cluster DNS app, ``kmesh/dns``) can plug in without the agent importing them
up front. Extend it with ``register_app``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from kmesh.api.obj import Obj
from kmesh.net.sockets import tcp_listener, udp_socket

# The agent's environment variable naming the kubeconfig its built-in apps use when their pod names none:
# the node's own credentials, where a kubelet would mount a ServiceAccount token (in-cluster config).
IN_CLUSTER_KUBECONFIG = "KMESH_IN_CLUSTER_KUBECONFIG"
from kmesh.node.mounts import Mount, host_path
from kmesh.node.podspec import open_log
from kmesh.node.runtime import Sandbox

log = logging.getLogger("kmesh.node.apps")


@dataclass
class AppContext:
    """What a built-in app gets: its pod, container, argv, network (through the sandbox) and a log."""

    pod: Obj
    container: Obj
    args: list[str]
    env: dict[str, str]
    sandbox: Sandbox
    log_path: Path
    hostname: str
    sigterm: trio.Event = field(default_factory=trio.Event)
    handles_sigterm: bool = False
    exit_code: int | None = None
    mounts: list[Mount] = field(default_factory=list)
    _scope: trio.CancelScope | None = field(default=None, repr=False)
    _log_file: Any = field(default=None, repr=False)

    def exit(self, code: int) -> None:
        """End the app now with ``code`` (like a process calling exit)."""
        self.exit_code = code
        if self._scope is not None:
            self._scope.cancel()

    @property
    def host(self) -> str:
        """The address to bind (the pod IP in the sim runtime)."""
        return self.sandbox.bind_host

    def host_path(self, path: str) -> Path:
        """The file on the machine behind a path in the container (through its volume mounts; else ``path``)."""
        return host_path(self.mounts, path)

    def container_ports(self, protocol: str = "TCP") -> list[int]:
        """The container's declared ports of one protocol."""
        return [
            int(p["containerPort"]) for p in self.container.get("ports") or []
            if (p.get("protocol") or "TCP") == protocol and p.get("containerPort")
        ]

    def log(self, msg: str) -> None:
        """Append a line to the container's log file."""
        if self._log_file is None:
            self._log_file = open_log(self.log_path, text=True)  # closed by close()
        self._log_file.write(msg.rstrip("\n") + "\n")

    def close(self) -> None:
        """Close the log file."""
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    async def listen_tcp(self, port: int) -> trio.SocketListener:
        """A TCP listener on ``host:port`` in the pod's network."""
        return trio.SocketListener(await tcp_listener(self.host, port, self.sandbox.open_socket, 512))

    async def bind_udp(self, port: int) -> trio.socket.SocketType:
        """A UDP socket bound to ``host:port`` in the pod's network."""
        return await udp_socket(self.host, port, self.sandbox.open_socket)


AppMain = Callable[[AppContext], Awaitable[int | None]]
"""An app: runs until it returns its exit code (None means 0), calls ``ctx.exit`` or is stopped.

Stopping sets ``ctx.sigterm``. An app that set ``ctx.handles_sigterm`` gets
the grace period to finish by itself; any other app is cancelled at once and
exits 0 (agnhost's servers exit cleanly on SIGTERM). An app still running when
the grace period ends is cancelled and exits 137, like a SIGKILLed process.
"""


@dataclass(frozen=True)
class App:
    """One built-in image: its main, the entrypoint names that mean "run the app" in ``command``, and the
    commands an exec into its containers can run (name → module, as in the image's ``$PATH``)."""

    main: AppMain | str
    entrypoints: tuple[str, ...] = ()
    commands: tuple[tuple[str, str], ...] = ()

    def resolve(self) -> AppMain:
        """The main function (importing a lazy ``module:function`` path)."""
        if not isinstance(self.main, str):
            return self.main
        module, _, attr = self.main.partition(":")
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


APPS: dict[str, App] = {}
"""Built-in images by normalized image name."""


def register_app(
    image: str, main: AppMain | str, entrypoints: tuple[str, ...] = (), commands: dict[str, str] | None = None,
) -> None:
    """Make ``image`` a built-in app (``main`` may be a lazy ``"module:function"`` path).

    ``commands`` maps the names of the image's own tools to modules (``{"client": "kmesh.node.apps.x"}``): an
    exec into a container of the image whose argv[0] is such a name runs that module (see ``exec_argv``)."""
    APPS[image_name(image)] = App(main, entrypoints, tuple(sorted((commands or {}).items())))


def image_name(image: str) -> str:
    """An image reference without tag or digest, with Docker Hub's implicit prefixes dropped."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    for prefix in ("docker.io/", "index.docker.io/"):
        name = name.removeprefix(prefix)
    name = name.removeprefix("library/")
    return name


def lookup(image: str) -> App | None:
    """The built-in app of ``image``, if it is one."""
    return APPS.get(image_name(image or ""))


def app_args(app: App, container: Obj) -> list[str] | None:
    """The app's argv when ``container`` runs the app, None when its ``command`` runs something else."""
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if not command:
        return args
    if command[0].rsplit("/", 1)[-1] in app.entrypoints:
        return command[1:] + args
    return None


def exec_argv(image: str, argv: list[str]) -> list[str]:
    """The argv that an exec of ``argv`` into a container of ``image`` runs on this machine.

    Built-in images have no files: a command the image's app declared (``client`` of echo-advanced) becomes
    ``python -P <the module's file> args...`` with this Python, run as a script so that the process, started
    afresh for every exec, does not import kmesh's packages (``-P``: its own directory is not put on
    ``sys.path``). It runs like any exec, inside the pod's namespace, as a process of its own: its sockets
    carry no mark, so a sidecar's redirect rules apply to them as to the app's. Anything else is unchanged.
    """
    app = lookup(image)
    if app is None or not app.commands or not argv:
        return argv
    module = dict(app.commands).get(argv[0].rsplit("/", 1)[-1])
    if module is None:
        return argv
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return [sys.executable, "-m", module, *argv[1:]]
    return [sys.executable, "-P", spec.origin, *argv[1:]]


def _register_builtins() -> None:
    register_app("registry.k8s.io/e2e-test-images/agnhost", "kmesh.node.apps.agnhost:main", ("agnhost",))
    register_app("kmesh/echo", "kmesh.node.apps.echo:main", ("kmesh-echo",))
    register_app("kmesh/dns", "kmesh.node.apps.dns:main", ("kmesh-dns",))
    for echo_basic in ("gcr.io/k8s-staging-gateway-api/echo-basic", "registry.k8s.io/gateway-api/conformance/echo-basic"):
        register_app(echo_basic, "kmesh.node.apps.echobasic:main", ("echo-basic",))
    register_app("registry.k8s.io/gateway-api/conformance/echo-advanced", "kmesh.node.apps.echoadvanced:main",
                 ("server",), commands={"client": "kmesh.node.apps.echoadvanced_client"})
    register_app("kmesh/gateway", "kmesh.node.apps.gateway:gateway_main", ("kmesh-gateway",))
    register_app("kmesh/ingress-controller", "kmesh.node.apps.gateway:ingress_main", ("kmesh-ingress-controller",))
    register_app("kmesh/gateway-controller", "kmesh.node.apps.gateway:controller_main", ("kmesh-gateway-controller",))
    register_app("kmesh/proxy-init", "kmesh.node.apps.meshinit:main", ("kmesh-proxy-init",))
    register_app("kmesh/proxy", "kmesh.node.apps.meshproxy:main", ("kmesh-proxy",))


_register_builtins()
