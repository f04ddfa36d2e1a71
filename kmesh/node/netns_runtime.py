"""The netns runtime: each pod is a network namespace wired by a CNI chain.

``create_sandbox`` makes ``kmesh-<cluster>-<node>-<pod>-<uid8>`` (lo up), runs
CNI ADD on it (the chain's IPAM picks the pod IP, so ``assigns_ips`` is True),
and writes the pod's ``resolv.conf`` and ``hosts`` under ``/etc/netns/<ns>/``,
where ``ip netns exec`` bind-mounts them over ``/etc``. Built-in apps stay
tasks of the agent whose sockets are created inside the pod namespace and bind
0.0.0.0 there; a container with a command runs as a process::

    ip netns exec <ns> unshare --uts -- sh -c 'hostname "$0" && exec "$@"' <hostname> <argv...>

Every step ``exec``s the next, so the PID (and process group) the kubelet
signals is the command's own. ``hostNetwork`` pods share the node's namespace
(``node_netns``, or the agent's own when None); their processes get a private
mount namespace where the pod's resolv.conf and hosts are bind-mounted.

Which namespaces this node made is recorded in ``<data_dir>/netns-sandboxes.json``
so that ``reap_orphans`` (agent start) removes exactly those of pods that are
gone, running CNI DEL for each, and never a namespace of another node whose
name merely shares the prefix (``node-1`` vs ``node-1-a``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from kmesh import __version__
from kmesh.api.obj import Obj
from kmesh.api.podlogpaths import pod_log_dir
from kmesh.api.wellknown import CLUSTER_DNS_IP, CLUSTER_DOMAIN
from kmesh.net import netns
from kmesh.node import apps
from kmesh.node.containers import exec_in_container, start_container
from kmesh.node.podspec import (
    container_env,
    log_path,
    pod_hostname,
)
from kmesh.node.resolvconf import (
    host_network_hosts_file,
    pod_hosts_file,
    pod_resolv_conf,
    read_host_config,
)
from kmesh.node.runtime import (
    ContainerError,
    ContainerHandle,
    ExecResult,
    ImageError,
    Sandbox,
    StartError,
)
from kmesh.node.sim import unknown_image_message

if TYPE_CHECKING:
    from kmesh.cni.caller import CNIChain

log = logging.getLogger("kmesh.node.netns_runtime")

CNI_TIMEOUT = 60.0  # seconds one CNI ADD/DEL may take before the sandbox counts as failed
RECORD_FILE = "netns-sandboxes.json"


def _which(name: str) -> str:
    """The absolute path of a tool the wrapper uses (the container's own PATH may not have it)."""
    return shutil.which(name) or name


# $0 is the hostname, "$@" the command (an exec chain: the command keeps the wrapper's PID).
_SET_HOSTNAME = f'{shlex.quote(_which("hostname"))} "$0" && exec "$@"'
_HOST_NET_SETUP = (
    f'{shlex.quote(_which("mount"))} --bind "$1" /etc/resolv.conf && {shlex.quote(_which("mount"))} --bind "$2" /etc/hosts'
    f' && {shlex.quote(_which("hostname"))} "$0" && shift 2 && exec "$@"'
)


class SandboxError(ContainerError):
    """The pod's network could not be set up (CNI ADD failed); the kubelet retries with backoff."""

    reason = "CreatePodSandboxError"


@dataclass
class NetnsSandbox(Sandbox):
    """A sandbox whose sockets and processes live in network namespace ``netns`` (None: the agent's)."""

    netns: str | None = None
    sandbox_id: str = ""
    host_network: bool = False
    etc_dir: Path | None = None  # hostNetwork pods: where their resolv.conf and hosts are

    async def open_socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> trio.socket.SocketType:
        """A trio socket created inside the pod's namespace."""
        return await netns.open_socket(self.netns, family, type)


def sandbox_id(uid: str) -> str:
    """The pod's sandbox (CNI container) ID: stable per UID, so a restarted agent can still DEL it."""
    return hashlib.sha256(f"kmesh-sandbox:{uid}".encode()).hexdigest()


def port_mappings(pod: Obj) -> list[Obj]:
    """The ``portMappings`` capability of a pod: every container port with a ``hostPort``."""
    out: list[Obj] = []
    spec = pod.get("spec") or {}
    for c in list(spec.get("initContainers") or []) + list(spec.get("containers") or []):
        for p in c.get("ports") or []:
            if not p.get("hostPort"):
                continue
            m: Obj = {
                "hostPort": int(p["hostPort"]), "containerPort": int(p["containerPort"]),
                "protocol": str(p.get("protocol") or "TCP").lower(),
            }
            if p.get("hostIP"):
                m["hostIP"] = p["hostIP"]
            out.append(m)
    return out


def pod_exec_prefix(ns_name: str, hostname: str) -> list[str]:
    """The wrapper that runs a command in pod namespace ``ns_name`` as the pod's containers run
    (its /etc/netns files over /etc, its hostname); append the command's argv (``kmesh exec`` can too)."""
    return [
        _which("ip"), "netns", "exec", ns_name, _which("unshare"), "--uts", "--",
        _which("sh"), "-c", _SET_HOSTNAME, hostname,
    ]


def pod_netns_name(prefix: str, pod_name: str, uid: str) -> str:
    """The namespace of a pod: the node's prefix, the pod name (40 characters at most) and 8 of its UID."""
    return f"{prefix}{pod_name[:40]}-{uid[:8]}"


class NetnsRuntime:
    """The ``PodRuntime`` of the netns mode (see the module docstring)."""

    name = "netns"
    assigns_ips = True

    def __init__(
        self, data_dir: Path, *, netns_prefix: str, node: str, cni: CNIChain, dns_ip: str = CLUSTER_DNS_IP,
        cluster_domain: str = CLUSTER_DOMAIN, node_netns: str | None = None, node_ip: str = "",
        resolv_conf: Path | None = Path("/etc/resolv.conf"),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.netns_prefix = netns_prefix
        self.node = node
        self.cni = cni
        self.dns_ip = dns_ip
        self.cluster_domain = cluster_domain
        self.node_netns = node_netns
        self.node_ip = node_ip
        self.resolv_conf = resolv_conf  # the kubelet's --resolv-conf: the node's resolver for Default pods
        self.version = __version__
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._records: dict[str, Obj] = self._load_records()

    # ------------------------------------------------------------ naming

    def netns_name(self, pod: Obj) -> str:
        """``<netns_prefix><podname[:40]>-<uid[:8]>``: the lab gives the prefix (``kmesh-<lab>-<node>-``)."""
        md = pod.get("metadata") or {}
        return pod_netns_name(self.netns_prefix, md.get("name", ""), md.get("uid", ""))

    # ----------------------------------------------------------- records

    def _record_path(self) -> Path:
        return self.data_dir / RECORD_FILE

    def _load_records(self) -> dict[str, Obj]:
        try:
            data = json.loads(self._record_path().read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return {str(k): v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}

    def _save_records(self) -> None:
        tmp = self._record_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(self._records, indent=1, sort_keys=True))
        os.replace(tmp, self._record_path())

    def recorded(self) -> dict[str, Obj]:
        """The pod namespaces this node made and has not removed yet: name → {uid, namespace, name, sandboxId}."""
        return dict(self._records)

    # ------------------------------------------------------------ images

    def check_image(self, container: Obj) -> None:
        """ErrImagePull unless the image is built in or the container gives a command."""
        app = apps.lookup(container.get("image", ""))
        if app is None and not container.get("command"):
            raise ImageError(unknown_image_message(container.get("image", "")))

    # ----------------------------------------------------------- sandbox

    def _cni_args(self, rec: Obj) -> dict[str, str]:
        return {
            "K8S_POD_NAMESPACE": rec.get("namespace", ""), "K8S_POD_NAME": rec.get("name", ""),
            "K8S_POD_UID": rec.get("uid", ""), "K8S_POD_INFRA_CONTAINER_ID": rec.get("sandboxId", ""),
        }

    async def create_sandbox(self, pod: Obj, ip: str = "") -> Sandbox:
        """A namespace wired by CNI ADD (IP from its IPAM), or the node's namespace for hostNetwork pods."""
        md = pod.get("metadata") or {}
        ldir = pod_log_dir(self.data_dir, pod)
        ldir.mkdir(parents=True, exist_ok=True)
        if (pod.get("spec") or {}).get("hostNetwork"):
            return self._host_network_sandbox(pod, ip or self.node_ip, ldir)
        name = self.netns_name(pod)
        sid = sandbox_id(md.get("uid", ""))
        rec = {"uid": md.get("uid", ""), "namespace": md.get("namespace", ""), "name": md.get("name", ""), "sandboxId": sid}
        if netns.exists(name):  # left by an agent that died: start from a clean namespace
            await self._teardown(name, self._records.get(name, rec))
        # Recorded before anything is made, so a crash halfway is still found by reap_orphans.
        self._records[name] = rec
        self._save_records()
        done = False
        try:
            try:
                await trio.to_thread.run_sync(netns.add, name)
            except netns.NetnsError as exc:
                raise SandboxError(f"failed to create network namespace {name}: {exc}") from None
            pod_ip = await self._cni_add(name, rec, pod)
            hostname = pod_hostname(pod)
            netns.write_etc(name, "resolv.conf", self._resolv_conf(pod))
            netns.write_etc(name, "hosts", pod_hosts_file(pod, pod_ip, hostname, self.cluster_domain))
            done = True
        finally:
            if not done:
                with trio.CancelScope(shield=True):
                    await self._teardown(name, rec)
        return NetnsSandbox(
            pod_uid=rec["uid"], namespace=rec["namespace"], name=rec["name"], ip=pod_ip, bind_host="0.0.0.0",
            log_dir=ldir, hostname=hostname, netns=name, sandbox_id=sid,
        )

    async def _cni_add(self, name: str, rec: Obj, pod: Obj) -> str:
        """CNI ADD for namespace ``name``: the pod IP; SandboxError with the plugin's message on failure."""
        from kmesh.cni.caller import pod_ip
        from kmesh.cni.spec import CNIError

        prefix = f'failed to set up network for sandbox "{rec["sandboxId"][:12]}"'
        try:
            mappings = port_mappings(pod)
            caps: Obj = {"portMappings": mappings} if mappings else {}
            with trio.fail_after(CNI_TIMEOUT):
                result = await self.cni.add(
                    rec["sandboxId"], str(netns.path(name)), ifname="eth0", args=self._cni_args(rec), capability_args=caps,
                )
            ip = pod_ip(result)
        except CNIError as exc:
            raise SandboxError(f"{prefix}: {exc}") from None
        except trio.TooSlowError:
            raise SandboxError(f"{prefix}: CNI ADD did not finish within {CNI_TIMEOUT:.0f}s") from None
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise SandboxError(f"{prefix}: {type(exc).__name__}: {exc}") from None
        if not ip:
            raise SandboxError(f"{prefix}: the CNI result has no IPv4 address")
        return ip

    def _host_network_sandbox(self, pod: Obj, ip: str, ldir: Path) -> NetnsSandbox:
        """A sandbox in the node's namespace: the node's IP and name, the pod's own resolv.conf/hosts files."""
        md = pod.get("metadata") or {}
        etc = ldir / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(self._resolv_conf(pod))
        try:
            node_hosts = self._node_etc("hosts").read_text()
        except OSError:
            node_hosts = "127.0.0.1\tlocalhost\n"
        (etc / "hosts").write_text(host_network_hosts_file(pod, node_hosts))
        return NetnsSandbox(
            pod_uid=md.get("uid", ""), namespace=md.get("namespace", ""), name=md.get("name", ""), ip=ip,
            bind_host="0.0.0.0", log_dir=ldir, hostname=self.node, netns=self.node_netns, host_network=True,
            etc_dir=etc,
        )

    def _resolv_conf(self, pod: Obj) -> str:
        """The pod's resolv.conf text per its dnsPolicy/dnsConfig (limit warnings go to the log)."""
        host = self.resolv_conf
        if host == Path("/etc/resolv.conf"):
            host = self._node_etc("resolv.conf")
        text, warnings = pod_resolv_conf(
            pod, cluster_dns=[self.dns_ip] if self.dns_ip else [], cluster_domain=self.cluster_domain,
            host=read_host_config(host),
        )
        md = pod.get("metadata") or {}
        for w in warnings:
            log.warning("%s/%s: %s", md.get("namespace"), md.get("name"), w)
        return text

    def _node_etc(self, filename: str) -> Path:
        """The node's view of ``/etc/<filename>`` (``/etc/netns/<node ns>/<filename>`` when the lab wrote one)."""
        if self.node_netns:
            p = netns.ETC_NETNS / self.node_netns / filename
            if p.exists():
                return p
        return Path("/etc") / filename

    async def remove_sandbox(self, sandbox: Sandbox) -> None:
        """CNI DEL and delete the namespace (idempotent; nothing to undo for hostNetwork pods)."""
        if not isinstance(sandbox, NetnsSandbox) or sandbox.host_network or not sandbox.netns:
            return
        rec = self._records.get(sandbox.netns) or {
            "uid": sandbox.pod_uid, "namespace": sandbox.namespace, "name": sandbox.name, "sandboxId": sandbox.sandbox_id,
        }
        with trio.CancelScope(shield=True):
            await self._teardown(sandbox.netns, rec)

    async def _teardown(self, name: str, rec: Obj) -> bool:
        """CNI DEL (releases the IP, removes the veth) then delete namespace ``name``; True when DEL worked.

        The record stays when DEL failed, so ``reap_orphans`` tries again later."""
        from kmesh.cni.spec import CNIError

        ok = True
        try:
            with trio.fail_after(CNI_TIMEOUT):
                await self.cni.delete(
                    rec.get("sandboxId") or sandbox_id(rec.get("uid", "")), str(netns.path(name)),
                    ifname="eth0", args=self._cni_args(rec),
                )
        except (CNIError, OSError, trio.TooSlowError) as exc:
            ok = False
            log.warning("CNI DEL of %s failed: %s", name, exc)
        try:
            await trio.to_thread.run_sync(netns.delete, name)
        except netns.NetnsError as exc:
            ok = False
            log.warning("deleting namespace %s failed: %s", name, exc)
        if ok and name in self._records:
            del self._records[name]
            self._save_records()
        return ok

    async def reap_orphans(self, live_uids: Iterable[str]) -> list[str]:
        """Remove the recorded pod namespaces of pods not in ``live_uids`` (CNI DEL each); their names.

        Only namespaces this node recorded are touched: another node's namespace
        that shares the name prefix (``node-1-`` vs ``node-1-a-``) is left alone."""
        live = set(live_uids)
        reaped: list[str] = []
        for name, rec in sorted(self._records.items()):
            if rec.get("uid") in live:
                continue
            if await self._teardown(name, rec):
                reaped.append(name)
        unknown = [n for n in netns.names(self.netns_prefix) if n not in self._records and n not in reaped]
        if unknown:
            log.info("pod namespaces with this node's prefix but not recorded here (left alone): %s", ", ".join(unknown))
        return reaped

    # -------------------------------------------------------- containers

    def _prefix(self, sandbox: Sandbox) -> list[str]:
        """The exec-ing wrapper that puts a command in the pod's namespace, hostname and /etc files."""
        if not isinstance(sandbox, NetnsSandbox):
            raise StartError("netns runtime: not a netns sandbox")
        if sandbox.host_network:
            enter = [_which("ip"), "netns", "exec", sandbox.netns] if sandbox.netns else []
            etc = sandbox.etc_dir or sandbox.log_dir / "etc"
            return [
                *enter, _which("unshare"), "--uts", "--mount", "--propagation", "private", "--",
                _which("sh"), "-c", _HOST_NET_SETUP, sandbox.hostname, str(etc / "resolv.conf"), str(etc / "hosts"),
            ]
        if not sandbox.netns or not netns.exists(sandbox.netns):
            raise StartError(f"network namespace {sandbox.netns!r} of the pod is gone")
        return pod_exec_prefix(sandbox.netns, sandbox.hostname)

    def _env(self, sandbox: Sandbox, pod: Obj, container: Obj) -> dict[str, str]:
        env = container_env(pod, container, sandbox.ip, _host_ip(pod) or self.node_ip, sandbox.env_objects)
        env["HOSTNAME"] = sandbox.hostname
        return env

    async def start_container(
        self, nursery: trio.Nursery, sandbox: Sandbox, pod: Obj, container: Obj, *, attempt: int = 0
    ) -> ContainerHandle:
        """A built-in app as a task with sockets in the pod namespace, or the command as a process in it."""
        self.check_image(container)
        env = self._env(sandbox, pod, container)
        lpath = log_path(self.data_dir, pod, container["name"], attempt)
        return await start_container(nursery, sandbox, pod, container, env, lpath, prefix=lambda: self._prefix(sandbox))

    async def exec(self, sandbox: Sandbox, pod: Obj, container: Obj, argv: list[str], timeout: float) -> ExecResult:
        """Run ``argv`` in the pod's namespace with its hostname, /etc files, the container's env and working dir."""
        env = self._env(sandbox, pod, container)
        try:
            prefix = self._prefix(sandbox)
        except StartError as exc:
            return ExecResult(126, exc.message.encode())
        return await exec_in_container(container, argv, env, timeout, prefix=prefix)


def _host_ip(pod: Obj) -> str:
    """The node IP the kubelet put in the pod it hands over."""
    return str((pod.get("status") or {}).get("hostIP") or "")
