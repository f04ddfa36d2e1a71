"""Address slots for sim labs, so several can run on one machine at once.

A sim lab lives on loopback: Services in 127.96.0.0/16, pods in
127.244.0.0/16, nodes at 127.1.0.N — slot 0. A second lab running at the
same time (another data dir, or another user) takes slot 1 (127.97/16,
127.245/16, 127.1.1.N), and so on up to 8 labs. A slot is held by an
exclusive ``flock`` on a file in a shared directory for as long as the lab's
supervisor lives; the kernel drops it when the process dies, even on kill -9.

A lab restarted on its store needs the slot it was made with (its Services
keep their ClusterIPs): ``claim(slot=N)`` takes that one or fails, saying
which ranges are held.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

SLOTS = 8
LOCK_DIR = Path(tempfile.gettempdir()) / "kmesh-sim-slots"


@dataclass(frozen=True)
class SimNet:
    """The loopback ranges of one sim slot."""

    slot: int

    @property
    def service_cidr(self) -> str:
        """Where ClusterIPs come from."""
        return f"127.{96 + self.slot}.0.0/16"

    @property
    def cluster_cidr(self) -> str:
        """Where node podCIDRs (/24s) come from."""
        return f"127.{244 + self.slot}.0.0/16"

    def node_ip(self, i: int) -> str:
        """The loopback address standing for the i-th node's IP (0-based)."""
        return str(ipaddress.ip_network(f"127.1.{self.slot}.0/24").network_address + i + 1)


class SlotsTaken(RuntimeError):
    """Every sim slot (or the one asked for) is held by a running lab."""


def _open(lock_dir: Path, slot: int) -> int | None:
    try:
        return os.open(lock_dir / f"slot-{slot}", os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except PermissionError:
        return None


def _lock_dir(lock_dir: Path) -> None:
    lock_dir.mkdir(mode=0o1777, parents=True, exist_ok=True)
    try:
        os.chmod(lock_dir, 0o1777)
    except PermissionError:
        pass  # made by another user, who set the mode already


def _take(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def taken_message(slot: int) -> str:
    """Why slot ``slot`` cannot be had."""
    net = SimNet(slot)
    return (f"another running sim lab holds sim address slot {slot} (Services {net.service_cidr}, "
            f"pods {net.cluster_cidr})")


def claim(lock_dir: Path = LOCK_DIR, slot: int | None = None) -> tuple[SimNet, int]:
    """The first free slot (or exactly ``slot``) and the file descriptor that holds it (close it to give
    the slot back)."""
    _lock_dir(lock_dir)
    if slot is not None:
        if not 0 <= slot < SLOTS:
            raise SlotsTaken(f"sim address slot {slot} does not exist (0..{SLOTS - 1})")
        fd = _open(lock_dir, slot)
        if fd is None or not _take(fd):
            if fd is not None:
                os.close(fd)
            raise SlotsTaken(taken_message(slot))
        return SimNet(slot), fd
    for n in range(SLOTS):
        fd = _open(lock_dir, n)
        if fd is None:
            continue
        if not _take(fd):
            os.close(fd)
            continue
        return SimNet(n), fd
    raise SlotsTaken(f"all {SLOTS} sim address slots are in use by running labs (locks in {lock_dir}); "
                     "stop one with `kmesh down`")


def is_free(slot: int, lock_dir: Path = LOCK_DIR) -> bool:
    """Whether no running lab holds ``slot`` now (a hint for a clear message; ``claim`` decides)."""
    try:
        _, fd = claim(lock_dir, slot)
    except SlotsTaken:
        return False
    os.close(fd)
    return True
