"""Address slots for sim labs, so several can run on one machine at once.

A sim lab lives on loopback: Services in 127.96.0.0/16, pods in
127.244.0.0/16, nodes at 127.1.0.N — slot 0. A second lab running at the
same time (another data dir, or another user) takes slot 1 (127.97/16,
127.245/16, 127.1.1.N), and so on up to 8 labs. A slot is held by an
exclusive ``flock`` on a file in a shared directory for as long as the lab's
supervisor lives; the kernel drops it when the process dies, even on kill -9.
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
    """Every sim slot is held by a running lab."""


def claim(lock_dir: Path = LOCK_DIR) -> tuple[SimNet, int]:
    """The first free slot and the file descriptor that holds it (close it to give the slot back)."""
    lock_dir.mkdir(mode=0o1777, parents=True, exist_ok=True)
    try:
        os.chmod(lock_dir, 0o1777)
    except PermissionError:
        pass  # made by another user, who set the mode already
    for slot in range(SLOTS):
        path = lock_dir / f"slot-{slot}"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except PermissionError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return SimNet(slot), fd
    raise SlotsTaken(f"all {SLOTS} sim address slots are in use by running labs (locks in {lock_dir}); "
                     "stop one with `kmesh down`")
