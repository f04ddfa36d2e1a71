"""The one-machine topology of a netns lab: names, addresses, build and sweep.

Every namespace a lab makes starts with ``kmesh-<lab>-`` so that clean-up can
find leftovers by name (as Mininet does with ``h1-eth0``):

- ``kmesh-<lab>-underlay`` holds the bridge ``br0`` that stands for the
  physical network (192.168.56.0/24, the Vagrant host-only range), with
  192.168.56.1 (the "host") on it, every other namespace's default gateway;
- ``kmesh-<lab>-cp`` is the control plane (API server, controllers, DNS,
  etcd), ``eth0`` = 192.168.56.10;
- ``kmesh-<lab>-<node>`` is a node, ``eth0`` = 192.168.56.(10+i);
- pods are ``kmesh-<lab>-<node>-<pod>-<uid8>``, made by the netns runtime.

Each host's ``eth0`` is one end of a veth whose other end, named after the
host, is a port of ``br0``. Nothing is created in the root namespace.
"""

from __future__ import annotations

import ipaddress
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from kmesh.lab.procs import send, wait_fd
from kmesh.net import netns

UNDERLAY = ipaddress.ip_network("192.168.56.0/24")
UNDERLAY_GATEWAY = "192.168.56.1"  # on br0: stands for the host, as in a Vagrant host-only network
CONTROL_PLANE_IP = "192.168.56.10"
UNDERLAY_BRIDGE = "br0"
FIRST_NODE_HOST = 11
MAX_NODES = 240


@dataclass(frozen=True)
class LabNames:
    """Names of one lab's namespaces."""

    lab: str

    @property
    def prefix(self) -> str:
        """What every namespace of the lab starts with."""
        return f"kmesh-{self.lab}-"

    @property
    def underlay(self) -> str:
        """The namespace holding the underlay bridge."""
        return self.prefix + "underlay"

    @property
    def control_plane(self) -> str:
        """The control plane's namespace."""
        return self.prefix + "cp"

    def node(self, node: str) -> str:
        """Node ``node``'s namespace."""
        return self.prefix + node

    def pod_prefix(self, node: str) -> str:
        """What the namespace of every pod on ``node`` starts with (the node agent's ``netns_prefix``)."""
        return self.node(node) + "-"

    def pod(self, node: str, pod_name: str, uid: str) -> str:
        """The namespace of pod ``pod_name`` (UID ``uid``) on ``node``."""
        from kmesh.node.netns_runtime import pod_netns_name  # the node agent's modules: loaded when needed

        return pod_netns_name(self.pod_prefix(node), pod_name, uid)


def node_ip(i: int) -> str:
    """The underlay address of the i-th node (0-based)."""
    if not 0 <= i < MAX_NODES:
        raise ValueError(f"node index {i} outside 0..{MAX_NODES - 1}")
    return str(UNDERLAY.network_address + FIRST_NODE_HOST + i)


def _sysctl(ns: str, key: str, value: str) -> None:
    p = Path("/proc/sys") / key.replace(".", "/")
    netns.call_in(ns, _write_if_exists, p, value)


def _write_if_exists(p: Path, value: str) -> None:
    if p.exists():
        p.write_text(value)


def strict_arp(ns: str) -> None:
    """kube-proxy's IPVS ``strictARP``: answer ARP only for addresses of the interface asked, announce the
    best local source; so the service addresses on kube-ipvs0 are answered by no one but the L2 speaker."""
    _sysctl(ns, "net.ipv4.conf.all.arp_ignore", "1")
    _sysctl(ns, "net.ipv4.conf.all.arp_announce", "2")


def build_underlay(names: LabNames) -> None:
    """The underlay namespace with its bridge, up (idempotent)."""
    ns = names.underlay
    netns.add(ns)
    if UNDERLAY_BRIDGE not in netns.ip(ns, "-o", "link", "show"):
        netns.ip(ns, "link", "add", UNDERLAY_BRIDGE, "type", "bridge")
        netns.ip(ns, "addr", "add", f"{UNDERLAY_GATEWAY}/{UNDERLAY.prefixlen}", "dev", UNDERLAY_BRIDGE)
    netns.ip(ns, "link", "set", UNDERLAY_BRIDGE, "up")


def add_host(names: LabNames, host_ns: str, port: str, address: str, *, router: bool = False) -> None:
    """A namespace with ``eth0`` = ``address``/24 plugged into the underlay bridge as ``port``.

    ``router``: forward packets (nodes route pod traffic)."""
    netns.add(host_ns)
    links = netns.ip(host_ns, "-o", "link", "show")
    if " eth0@" not in links and " eth0:" not in links:
        netns.add_veth(names.underlay, port[:15], host_ns, "eth0")
        netns.ip(names.underlay, "link", "set", port[:15], "master", UNDERLAY_BRIDGE)
        netns.ip(host_ns, "addr", "add", f"{address}/{UNDERLAY.prefixlen}", "dev", "eth0")
        # Like a real machine, a default route (to the "host"): traffic to an address the node
        # does not serve (a ClusterIP without endpoints) reaches the FORWARD chain and its REJECT.
        netns.ip(host_ns, "route", "replace", "default", "via", UNDERLAY_GATEWAY, "dev", "eth0")
    if router:
        _sysctl(host_ns, "net.ipv4.ip_forward", "1")
        _sysctl(host_ns, "net.bridge.bridge-nf-call-iptables", "1")
    # Keep pod-to-pod traffic out of conntrack-based surprises: reply on the interface asked.
    _sysctl(host_ns, "net.ipv4.conf.all.rp_filter", "0")


def lab_namespaces(names: LabNames) -> list[str]:
    """Every namespace of the lab that exists now (pods, nodes, control plane, underlay)."""
    return netns.names(names.prefix)


def _netns_inodes(namespaces: list[str]) -> set[int]:
    inodes = set()
    for ns in namespaces:
        try:
            inodes.add(os.stat(netns.path(ns)).st_ino)
        except FileNotFoundError:
            continue
    return inodes


def _in_netns(pid: int, inodes: set[int]) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino in inodes
    except (FileNotFoundError, PermissionError, ProcessLookupError):
        return False


def processes_in(namespaces: list[str]) -> list[int]:
    """PIDs of processes whose network namespace is one of ``namespaces``."""
    inodes = _netns_inodes(namespaces)
    me = os.getpid()
    return sorted(int(e.name) for e in Path("/proc").iterdir()
                  if e.name.isdigit() and int(e.name) != me and _in_netns(int(e.name), inodes))


def _open_if_in(pid: int, inodes: set[int]) -> int | None:
    """A pidfd of ``pid`` if that process is in one of the namespaces ``inodes`` (checked after the pidfd
    is open, so the pidfd cannot name a process that took the PID since)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    if _in_netns(pid, inodes):
        return fd
    os.close(fd)
    return None


def sweep(names: LabNames, grace: float = 5.0) -> list[str]:
    """Kill what still runs inside the lab's namespaces and delete them all; what was removed.

    A process is signalled only through a pidfd opened before it is seen in
    one of the lab's namespaces. Pods go first, then nodes, the control plane
    and the underlay, so a veth is never left with one end."""
    removed: list[str] = []
    spaces = lab_namespaces(names)
    inodes = _netns_inodes(spaces)
    victims: list[tuple[int, int]] = []
    for pid in processes_in(spaces):
        fd = _open_if_in(pid, inodes)
        if fd is None:
            continue
        if send(fd, signal.SIGTERM):
            victims.append((pid, fd))
        else:
            os.close(fd)
    for pid, fd in victims:
        try:
            if not wait_fd(fd, grace) and send(fd, signal.SIGKILL):
                wait_fd(fd, 2.0)
        finally:
            os.close(fd)
        removed.append(f"process {pid} (in a lab namespace)")
    special = {names.underlay: 3, names.control_plane: 2}
    node_like = {ns for ns in spaces if ns.count("-") <= names.prefix.count("-") + 1}
    order = sorted(spaces, key=lambda ns: (special.get(ns, 1 if ns in node_like else 0), ns))
    for ns in order:
        if netns.delete(ns):
            removed.append(f"namespace {ns}")
    return removed
