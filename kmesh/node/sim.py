"""The sim runtime: pods without root, on loopback.

A pod's IP is a loopback address (node podCIDRs are /24s of 127.244.0.0/16,
e.g. 127.244.1.7; Linux routes all of 127/8 to ``lo``, so binding it needs no
privilege). Built-in apps run as tasks of the agent with sockets bound to the
pod IP; containers with a ``command`` run as processes of the agent's user
with the container's env, working dir and a log file. There is no network
isolation: "localhost" between containers of one pod means the pod IP, and a
process that binds 0.0.0.0 or 127.0.0.1 is reachable from every pod.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import trio

from kmesh import __version__
from kmesh.api.obj import Obj
from kmesh.api.podlogpaths import pod_log_dir
from kmesh.node import apps
from kmesh.node.containers import exec_in_container, start_container
from kmesh.node.podspec import (
    container_env,
    log_path,
    pod_hostname,
)
from kmesh.node.runtime import (
    ContainerHandle,
    ExecResult,
    ImageError,
    Sandbox,
    StartError,
)

log = logging.getLogger("kmesh.node.sim")

SIM_POD_NETWORK = ipaddress.ip_network("127.244.0.0/16")


def builtin_images() -> list[str]:
    """The image names kmesh runs as built-in apps."""
    return sorted(apps.APPS)


def unknown_image_message(image: str) -> str:
    """The waiting message of a container kmesh cannot run."""
    return (
        f'kmesh cannot pull "{image}": kmesh runs only its built-in images '
        f"({', '.join(builtin_images())}) or containers that give a command"
    )


class SimRuntime:
    """The ``PodRuntime`` of the sim mode (see the module docstring)."""

    name = "sim"
    assigns_ips = False

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.version = __version__

    # ------------------------------------------------------------ images

    def check_image(self, container: Obj) -> None:
        """ErrImagePull unless the image is built in or the container gives a command."""
        app = apps.lookup(container.get("image", ""))
        if app is None and not container.get("command"):
            raise ImageError(unknown_image_message(container.get("image", "")))

    # ----------------------------------------------------------- sandbox

    async def create_sandbox(self, pod: Obj, ip: str) -> Sandbox:
        """A sandbox on loopback address ``ip`` (host network pods use the node's address)."""
        addr = ipaddress.ip_address(ip)
        if not addr.is_loopback:
            raise StartError(f"sim runtime: pod IP {ip} is not a loopback address")
        md = pod.get("metadata") or {}
        ldir = pod_log_dir(self.data_dir, pod)
        ldir.mkdir(parents=True, exist_ok=True)
        return Sandbox(
            pod_uid=md.get("uid", ""), namespace=md.get("namespace", ""), name=md.get("name", ""),
            ip=ip, bind_host=ip, log_dir=ldir, hostname=pod_hostname(pod),
        )

    async def remove_sandbox(self, sandbox: Sandbox) -> None:
        """Nothing to undo on loopback (logs stay until the pod is gone)."""

    # -------------------------------------------------------- containers

    async def start_container(
        self, nursery: trio.Nursery, sandbox: Sandbox, pod: Obj, container: Obj, *, attempt: int = 0
    ) -> ContainerHandle:
        """A built-in app as a task, or the container's command as a process."""
        self.check_image(container)
        env = container_env(pod, container, sandbox.ip, _host_ip(pod), sandbox.env_objects)
        lpath = log_path(self.data_dir, pod, container["name"], attempt)
        return await start_container(nursery, sandbox, pod, container, env, lpath)

    async def exec(self, sandbox: Sandbox, pod: Obj, container: Obj, argv: list[str], timeout: float) -> ExecResult:
        """Run ``argv`` as a process with the container's env and working dir."""
        env = container_env(pod, container, sandbox.ip, _host_ip(pod), sandbox.env_objects)
        return await exec_in_container(container, argv, env, timeout)


def _host_ip(pod: Obj) -> str:
    """The node IP the kubelet put in the pod it hands over."""
    return str((pod.get("status") or {}).get("hostIP") or "")
