"""What a lab needs from this machine, checked before ``kmesh up`` makes anything.

The table below lists every program kmesh runs (read off the code: the
argv lists handed to ``netns.run``/``trio.run_process`` and the CNI chain's
plugin types), which part of a lab runs it and which Debian package provides
it, plus the kernel features each part uses. ``lab_needs`` picks the rows a
runtime, proxy mode, backend and store need; ``find_missing`` looks for each
(programs on ``$PATH``, CNI plugins where the CNI chain looks, kernel
features by trying them in a private namespace that dies with the probe);
``report`` turns what is missing into one message that names every program
and its package at once. The sim runtime needs nothing but Python, and etcd
for ``--store etcd``.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from kmesh.cni.spec import find_executable

Kind = Literal["program", "cni-plugin", "kernel"]

# program -> the Debian package that provides it
PACKAGES: dict[str, str] = {
    "ip": "iproute2",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "sh": "dash",
    "hostname": "hostname",
    "mount": "mount",
    "iptables": "iptables",
    "iptables-save": "iptables",
    "iptables-restore": "iptables",
    "sysctl": "procps",
    "conntrack": "conntrack",
    "ipset": "ipset",
    "nft": "nftables",
    "etcd": "etcd-server",
}
CNI_PACKAGE = "containernetworking-plugins"
KMESH_CNI = "kmesh-cni"  # kmesh's own plugin: a console script next to this Python

NETNS = "the netns runtime"
POD_COMMANDS = "running a pod's command"
MASQ = "flannel's masquerading of pod traffic"
PORTMAP = "the CNI portmap plugin (hostPort)"
POD_NETWORK = "the netns runtime's pod network"
POLICY = "the NetworkPolicy agent (kmesh.policy)"

# Programs of the netns runtime whatever the mode: kmesh.net.netns (ip, nsenter),
# kmesh.node.netns_runtime's pod wrapper (unshare, sh, hostname; mount for hostNetwork
# pods), kmesh.cni.backends.masq (iptables-save/-restore), portmap (iptables) and the policy agent (nft).
NETNS_PROGRAMS: tuple[tuple[str, str], ...] = (
    ("ip", NETNS), ("nsenter", NETNS),
    ("unshare", POD_COMMANDS), ("sh", POD_COMMANDS), ("hostname", POD_COMMANDS), ("mount", POD_COMMANDS),
    ("iptables-save", MASQ), ("iptables-restore", MASQ), ("iptables", PORTMAP), ("nft", POLICY),
)
# What each kube-proxy mode runs in a netns node (kmesh.proxy.<mode>, ipsets, conntrack).
PROXY_PROGRAMS: dict[str, tuple[str, ...]] = {
    "userspace": ("iptables-save", "iptables-restore"),
    "iptables": ("iptables", "iptables-save", "iptables-restore", "sysctl", "conntrack"),
    "ipvs": ("ip", "ipset", "iptables-save", "iptables-restore"),
    "nftables": ("nft", "conntrack"),
}
# The CNI chain of a netns node: the conflist's kmesh-cni and portmap, kmesh-cni's delegate
# bridge and its IPAM host-local (kmesh.cni.caller.write_conflist, kmesh.cni.plugin.build_delegate).
CNI_PLUGINS = (KMESH_CNI, "bridge", "host-local", "portmap")
# Kernel features: what the probe tries, what to call it in a message.
KERNEL: dict[str, str] = {
    "netns": "network namespaces (CONFIG_NET_NS)",
    "veth": "veth links (module veth)",
    "bridge": "bridges (module bridge)",
    "vxlan": "VXLAN links (module vxlan)",
    "tun": "TUN devices (module tun, /dev/net/tun)",
    "dummy": "dummy links (module dummy)",
}
BACKEND_KERNEL = {"vxlan": "vxlan", "udp": "tun", "host-gw": None}
KERNEL_ADVICE = {"vxlan": "or pick another --backend (host-gw)", "tun": "or pick another --backend (host-gw)"}


@dataclass(frozen=True)
class Need:
    """One thing a lab needs: a program, a CNI plugin or a kernel feature, and which parts need it."""

    kind: Kind
    name: str
    why: tuple[str, ...]

    @property
    def package(self) -> str:
        """The Debian package providing it ("" for kernel features and kmesh's own plugin)."""
        if self.kind == "program":
            return PACKAGES[self.name]
        if self.kind == "cni-plugin" and self.name != KMESH_CNI:
            return CNI_PACKAGE
        return ""


@dataclass(frozen=True)
class Missing:
    """A need this machine does not meet; ``detail`` says where kmesh looked or what the kernel said."""

    need: Need
    detail: str = ""


def _merge(rows: Iterable[tuple[Kind, str, str]]) -> list[Need]:
    """One Need per (kind, name), its reasons in first-seen order."""
    whys: dict[tuple[Kind, str], list[str]] = {}
    for kind, name, why in rows:
        seen = whys.setdefault((kind, name), [])
        if why not in seen:
            seen.append(why)
    return [Need(kind, name, tuple(w)) for (kind, name), w in whys.items()]


def runtime_rows(runtime: str) -> list[tuple[Kind, str, str]]:
    """What the runtime itself needs (the netns runtime's programs, CNI plugins and kernel features)."""
    if runtime != "netns":
        return []
    rows: list[tuple[Kind, str, str]] = [("program", p, why) for p, why in NETNS_PROGRAMS]
    rows += [("cni-plugin", p, POD_NETWORK) for p in CNI_PLUGINS]
    rows += [("kernel", k, NETNS) for k in ("netns", "veth", "bridge")]
    return rows


def proxy_rows(mode: str, runtime: str) -> list[tuple[Kind, str, str]]:
    """What kube-proxy in ``mode`` runs (the sim runtime's userspace proxy runs nothing)."""
    if runtime != "netns" or mode == "none":
        return []
    return [("program", p, f"the {mode} proxy mode") for p in PROXY_PROGRAMS[mode]]


def backend_rows(backend: str, runtime: str) -> list[tuple[Kind, str, str]]:
    """The kernel feature an overlay backend uses (sim has no overlay)."""
    feature = BACKEND_KERNEL[backend] if runtime == "netns" else None
    return [("kernel", feature, f"the {backend} backend")] if feature else []


def etcd_rows(runtime: str, store: str, subnet_manager: str, etcd_url: str) -> list[tuple[Kind, str, str]]:
    """etcd, when the lab starts its own (``--store etcd``, or ``--subnet-manager etcd`` in netns; not with ``--etcd``)."""
    if etcd_url:
        return []
    rows: list[tuple[Kind, str, str]] = []
    if store == "etcd":
        rows.append(("program", "etcd", "--store etcd"))
    if subnet_manager == "etcd" and runtime == "netns":
        rows.append(("program", "etcd", "--subnet-manager etcd"))
        rows.append(("program", "nft", "keeping pods off etcd's underlay port (kmesh.lab.etcd)"))
    return rows


def lab_needs(
    *, runtime: str, proxy_mode: str, backend: str = "vxlan", subnet_manager: str = "kube", store: str = "sqlite",
    etcd_url: str = "",
) -> list[Need]:
    """Everything ``kmesh up`` with these options needs from the machine."""
    return _merge([
        *runtime_rows(runtime), *proxy_rows(proxy_mode, runtime), *backend_rows(backend, runtime),
        *etcd_rows(runtime, store, subnet_manager, etcd_url),
    ])


def agent_needs(*, runtime: str, proxy_mode: str, backend: str) -> list[Need]:
    """What one ``kmesh agent`` node needs (its etcd, if any, is a URL it is given)."""
    return _merge([*runtime_rows(runtime), *proxy_rows(proxy_mode, runtime), *backend_rows(backend, runtime)])


def proxy_needs(*, mode: str, runtime: str) -> list[Need]:
    """What ``kmesh proxy run`` in ``mode`` needs."""
    return _merge(proxy_rows(mode, runtime))


# --- looking ---------------------------------------------------------------------------------------------

def _link_probe(kind: str, **extra: object) -> Callable[[], None]:
    def probe() -> None:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            ipr.link("add", ifname=f"kmesh-pf-{kind}"[:15], kind=kind, **extra)

    return probe


def _tun_probe() -> None:
    from kmesh.cni.backends.udp import open_tun

    os.close(open_tun("kmesh-pf-tun"))


PROBES: dict[str, Callable[[], None]] = {
    "netns": lambda: None,  # being inside the private namespace is the probe
    "veth": _link_probe("veth", peer="kmesh-pf-peer"),
    "bridge": _link_probe("bridge"),
    "vxlan": _link_probe("vxlan", vxlan_id=1, vxlan_port=8472),
    "tun": _tun_probe,
    "dummy": _link_probe("dummy"),
}


def _error_text(e: BaseException) -> str:
    code = getattr(e, "code", None)  # pyroute2's NetlinkError
    if isinstance(code, int) and code > 0:
        return os.strerror(code)
    if isinstance(e, OSError) and e.errno is not None:
        return f"{e.filename + ': ' if e.filename else ''}{os.strerror(e.errno)}"
    return str(e) or type(e).__name__


def probe_kernel(features: Iterable[str]) -> dict[str, str]:
    """Try each kernel feature in a private network namespace; {feature: what failed} for the ones that did.

    Nothing is made in any namespace that outlives the probe (see ``netns.call_in_private``)."""
    from kmesh.net import netns

    wanted = [f for f in dict.fromkeys(features)]
    if not wanted:
        return {}
    if not os.path.exists("/proc/self/ns/net"):
        return {f: "/proc/self/ns/net: no network namespaces in this kernel" for f in wanted}

    def inside() -> dict[str, str]:
        from pyroute2.netlink.exceptions import NetlinkError

        from kmesh.cni.backends.nl import BackendError

        failed: dict[str, str] = {}
        for f in wanted:
            try:
                PROBES[f]()
            except (OSError, NetlinkError, BackendError) as e:  # the kernel's refusal is the answer
                failed[f] = _error_text(e)
        return failed

    try:
        return netns.call_in_private(inside)
    except netns.NetnsError as e:
        return {f: str(e) for f in wanted}
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES):
            return {f: _error_text(e) for f in wanted}
        raise


def find_missing(needs: Iterable[Need], *, kernel: bool = True) -> list[Missing]:
    """The needs this machine does not meet: programs not on $PATH, plugins not where the CNI chain looks,
    kernel features the kernel refuses (probed only when ``kernel``)."""
    needs = list(needs)
    out: list[Missing] = []
    from kmesh.cni.caller import plugin_search_dirs

    dirs = plugin_search_dirs()  # where the CNI chain looks: kmesh-cni next to this Python, then the plugin dirs
    for n in needs:
        if n.kind == "program" and shutil.which(n.name) is None:
            out.append(Missing(n, "not on $PATH"))
        elif n.kind == "cni-plugin":
            where = dirs[:1] if n.name == KMESH_CNI else dirs[1:]
            if find_executable(n.name, where) is None:
                out.append(Missing(n, " or ".join(where)))
    if kernel:
        kernel_needs = [n for n in needs if n.kind == "kernel"]
        failed = probe_kernel(n.name for n in kernel_needs)
        out += [Missing(n, failed[n.name]) for n in kernel_needs if n.name in failed]
    return out


# --- telling ---------------------------------------------------------------------------------------------

def _whys(need: Need) -> str:
    w = list(need.why)
    text = w[0] if len(w) == 1 else ", ".join(w[:-1]) + " and " + w[-1]
    return f"{text} {'needs' if len(w) == 1 else 'need'}"


def describe(m: Missing) -> str:
    """One line: who needs what, and where it comes from."""
    n = m.need
    if n.kind == "program":
        return f"{_whys(n)} `{n.name}` (Debian package {n.package})"
    if n.kind == "cni-plugin":
        if n.name == KMESH_CNI:
            return (f"{_whys(n)} the CNI plugin `{KMESH_CNI}` in {m.detail} "
                    f"(part of kmesh: reinstall it with {sys.executable} -m pip install -e <kmesh checkout>)")
        where = f"$CNI_PATH ({m.detail})" if os.environ.get("CNI_PATH") else m.detail
        return f"{_whys(n)} the CNI plugin `{n.name}` in {where} (Debian package {n.package})"
    advice = KERNEL_ADVICE.get(n.name)
    return f"{_whys(n)} the kernel's {KERNEL[n.name]}, which failed here: {m.detail}" + (f"; {advice}" if advice else "")


def packages(missing: Iterable[Missing]) -> list[str]:
    """The Debian packages that would provide what is missing, each once."""
    return list(dict.fromkeys(m.need.package for m in missing if m.need.package))


def report(missing: list[Missing], command: str) -> str:
    """The message for a user: every missing thing at once, then the one apt-get line that installs them."""
    pkgs = packages(missing)
    if len(missing) == 1:
        line = f"{command}: {describe(missing[0])}"
        return line + (f"; install it with: apt-get install {pkgs[0]}" if pkgs else "")
    lines = [f"{command}: cannot start, {len(missing)} things it needs are missing:"]
    lines += [f"  - {describe(m)}" for m in missing]
    if pkgs:
        lines.append(f"install them with: apt-get install {' '.join(pkgs)}")
    return "\n".join(lines)


def check(needs: Iterable[Need], command: str, *, kernel: bool = True) -> str | None:
    """``report`` of what is missing, or None when the machine has everything."""
    missing = find_missing(needs, kernel=kernel)
    return report(missing, command) if missing else None
