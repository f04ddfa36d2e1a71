"""Host-local-like IPAM: pod IPs from the node's podCIDR, reservations kept as files.

Like the CNI ``host-local`` plugin: one file per reserved address (named by
the address, holding its owner), a ``last_reserved_ip.0`` file so the next
allocation continues after the last one (a freed address is reused only after
the range wraps around), the network address, the first address (the
gateway, ``.1``) and the broadcast address never handed out. The files live in
the node's data dir, so a restarted agent does not hand out addresses that
pods still hold.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import trio

LAST_RESERVED = "last_reserved_ip.0"


class IPExhausted(Exception):
    """Every address of the range is taken."""


class HostLocalIPAM:
    """Allocate and release pod IPs of one CIDR; owners are pod UIDs.

    The agent is the only writer of its state directory: reservations are
    read once and then kept in memory beside the files.
    """

    def __init__(self, state_dir: Path, cidr: str) -> None:
        self.network = ipaddress.ip_network(cidr, strict=False)
        self.dir = Path(state_dir) / str(self.network).replace("/", "_")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.gateway = self.network.network_address + 1
        self.released = trio.Event()  # replaced after each release: wakes allocations waiting for room
        self._owners = self._load()

    def _load(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in self.dir.iterdir():
            if f.name == LAST_RESERVED or f.name.startswith("."):
                continue
            try:
                out[f.name] = f.read_text().split("\n", 1)[0].strip()
            except OSError:
                continue
        return out

    def _first_last(self) -> tuple[int, int]:
        """The integer range handed out: from gateway+1 to the last host."""
        net = self.network
        first = int(self.gateway) + 1
        last = int(net.broadcast_address) - 1 if net.version == 4 and net.prefixlen < 31 else int(net.broadcast_address)
        return first, last

    def owners(self) -> dict[str, str]:
        """Reserved address → owner."""
        return dict(self._owners)

    def lookup(self, owner: str) -> str | None:
        """The address ``owner`` holds, if any."""
        for ip, who in self._owners.items():
            if who == owner:
                return ip
        return None

    def allocate(self, owner: str, note: str = "") -> str:
        """The address of ``owner`` (the one it holds already, else the next free one after the last reserved)."""
        held = self.lookup(owner)
        if held is not None:
            return held
        first, last = self._first_last()
        n = last - first + 1
        if n <= 0:
            raise IPExhausted(f"no addresses in {self.network}")
        start = 0
        try:
            prev = int(ipaddress.ip_address((self.dir / LAST_RESERVED).read_text().strip()))
            if first <= prev <= last:
                start = prev - first + 1
        except (OSError, ValueError):
            pass
        for i in range(n):
            ip = str(ipaddress.ip_address(first + (start + i) % n))
            if ip in self._owners:
                continue
            try:
                fd = os.open(self.dir / ip, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{owner}\n{note}\n")
            self._owners[ip] = owner
            (self.dir / LAST_RESERVED).write_text(ip)
            return ip
        raise IPExhausted(f"no free address in {self.network} ({n} in use)")

    def release(self, owner: str) -> str | None:
        """Free the address ``owner`` holds; returns it (None if it held none)."""
        freed = None
        for ip, who in list(self._owners.items()):
            if who == owner:
                self._free(ip)
                freed = ip
        if freed is not None:
            self._wake()
        return freed

    def gc(self, live_owners: set[str]) -> list[str]:
        """Free every address whose owner is not in ``live_owners``; returns the freed addresses."""
        freed = [ip for ip, who in self._owners.items() if who not in live_owners]
        for ip in freed:
            self._free(ip)
        if freed:
            self._wake()
        return freed

    def _free(self, ip: str) -> None:
        (self.dir / ip).unlink(missing_ok=True)
        self._owners.pop(ip, None)

    def _wake(self) -> None:
        self.released.set()
        self.released = trio.Event()
