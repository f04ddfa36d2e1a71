"""libvirtd confined to a network namespace the test makes, with its own configuration, state and sockets.

Everything libvirt makes lives where the test can remove it: its bridges
(virbrN), tap devices (vnetN), dnsmasq, LIBVIRT_* iptables chains and the
QEMU processes are inside the namespace ``netns`` (libvirtd is started with
``ip netns exec``, and starts all of them from there); its config, state,
storage pool and sockets are under ``root`` (bind-mounted over /etc/libvirt,
/run/libvirt, /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt in a
private mount namespace, so the machine's own /etc/libvirt is never read or
written). Clients reach it with :attr:`ConfinedLibvirt.uri`
(``qemu:///system?socket=<root>/run/libvirt-sock``).

qemu.conf runs QEMU as root: with /dev/kvm present but 0600 (no udev here),
libvirt otherwise re-probes QEMU's capabilities on every lookup (two QEMU
launches, ~48 s per ``virsh define``; see shared/VM-NOTES.md).
``stdio_handler = "file"`` spares a virtlogd. Stopping destroys every domain
and network through libvirt, ends libvirtd by its PID, kills what is still in
the namespace (only what this confinement started can be there), deletes the
namespace and the private tree, and checks that nothing is left.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

LIBVIRTD = "/usr/sbin/libvirtd"

# private dir (under root) -> where libvirtd looks for it
BIND = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",
}

QEMU_CONF = """\
# kmesh test libvirtd (tests/support/libvirt.py)
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
"""

LIBVIRTD_CONF = """\
# kmesh test libvirtd (tests/support/libvirt.py): a unix socket only, for root
listen_tls = 0
listen_tcp = 0
unix_sock_group = "root"
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""


def missing_programs() -> list[str]:
    """What a confined libvirtd needs and this machine lacks, as Debian package names."""
    need = {LIBVIRTD: "libvirt-daemon-system", "virsh": "libvirt-clients", "dnsmasq": "dnsmasq-base",
            "qemu-system-x86_64": "qemu-system-x86", "ip": "iproute2", "unshare": "util-linux",
            "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so": "libvirt-daemon-driver-qemu"}
    return [pkg for prog, pkg in need.items()
            if not (Path(prog).exists() if prog.startswith("/") else shutil.which(prog))]


@dataclass
class ConfinedLibvirt:
    """A running confined libvirtd."""

    netns: str
    root: Path
    pid: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def socket(self) -> Path:
        return self.root / "run" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.socket}"

    @property
    def log(self) -> Path:
        return self.root / "log" / "libvirtd.log"

    def virsh(self, *args: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess[str]:
        """``virsh -c <uri> args`` (it needs no namespace: the socket is a file)."""
        return subprocess.run(["virsh", "-c", self.uri, *args], capture_output=True, text=True, timeout=timeout,
                              check=check)

    def in_netns(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def domains(self) -> list[str]:
        out = self.virsh("list", "--all", "--name")
        return [d for d in out.stdout.split() if d]

    def networks(self) -> list[str]:
        out = self.virsh("net-list", "--all", "--name")
        return [n for n in out.stdout.split() if n]

    def netns_pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True, check=False)
        return [int(p) for p in out.stdout.split()]

    def stop(self) -> list[str]:
        """Destroy every domain and network, end libvirtd and all in the namespace, delete the namespace;
        what could not be removed, as messages. Calling it again is harmless."""
        return _stop(self)

    def netns_links(self) -> list[str]:
        out = subprocess.run(["ip", "-n", self.netns, "-o", "link", "show"], capture_output=True, text=True,
                             check=False)
        return [line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines() if ":" in line]


def _start(lv: ConfinedLibvirt, timeout: float) -> None:
    for d in BIND:
        (lv.root / d).mkdir(parents=True, exist_ok=True)
    (lv.root / "etc" / "qemu.conf").write_text(QEMU_CONF)
    (lv.root / "etc" / "libvirtd.conf").write_text(LIBVIRTD_CONF)
    (lv.root / "etc" / "libvirt.conf").write_text("")
    # (a mount point the libvirt packages would have made, e.g. /run/libvirt, is made if missing: an empty dir)
    mounts = " && ".join(f"mkdir -p {target} && mount --bind {lv.root / d} {target}" for d, target in BIND.items())
    # ip netns exec, unshare and sh all exec: the Popen's pid is libvirtd's
    pidfile, conf = lv.root / "run" / "libvirtd.pid", lv.root / "etc" / "libvirtd.conf"
    script = f"{mounts} && exec {LIBVIRTD} --pid-file {pidfile} -f {conf}"
    with open(lv.root / "log" / "libvirtd.stderr", "wb") as err:
        lv.proc = subprocess.Popen(
            ["ip", "netns", "exec", lv.netns, "unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True)
    lv.pid = lv.proc.pid
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lv.proc.poll() is not None:
            raise RuntimeError(f"libvirtd exited ({lv.proc.returncode}): "
                               f"{(lv.root / 'log' / 'libvirtd.stderr').read_text(errors='replace')[-2000:]}")
        if lv.socket.exists() and lv.virsh("uri", timeout=60).returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"libvirtd did not answer on {lv.socket} within {timeout:.0f} s")


def _stop(lv: ConfinedLibvirt) -> list[str]:
    """Tear everything down (again: harmless); what could not be removed, as messages."""
    problems: list[str] = []
    if lv.proc is not None and lv.proc.poll() is None:
        for dom in lv.domains():
            lv.virsh("destroy", dom, timeout=60)
            lv.virsh("undefine", dom, "--nvram", timeout=60)
        for net in lv.networks():
            lv.virsh("net-destroy", net, timeout=60)
            lv.virsh("net-undefine", net, timeout=60)
        lv.proc.send_signal(signal.SIGTERM)
        try:
            lv.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            lv.proc.kill()
            lv.proc.wait(timeout=10)
    # whatever is left in the namespace was started by this libvirtd (qemu, dnsmasq) or by the test in it
    for _ in range(50):
        pids = [p for p in lv.netns_pids() if p != os.getpid()]
        if not pids:
            break
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    else:
        problems.append(f"processes left in namespace {lv.netns}: {lv.netns_pids()}")
    subprocess.run(["ip", "netns", "del", lv.netns], capture_output=True, check=False)
    if lv.netns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout.split():
        problems.append(f"namespace {lv.netns} is still there")
    return problems


@contextmanager
def confined_libvirt(root: Path, netns: str, *, timeout: float = 120) -> Iterator[ConfinedLibvirt]:
    """A libvirtd in a new network namespace ``netns`` with its private tree under ``root``; removed, with its
    namespace, domains and networks, however the block ends (a leftover fails the block's caller)."""
    existing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout.split()
    if netns in existing:
        raise RuntimeError(f"namespace {netns} exists already")
    subprocess.run(["ip", "netns", "add", netns], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    lv = ConfinedLibvirt(netns, root)
    problems: list[str] = []
    try:
        _start(lv, timeout)
        yield lv
    finally:
        problems = lv.stop()
        shutil.rmtree(root, ignore_errors=True)
    if problems:
        raise AssertionError("; ".join(problems))
