"""The netpol truth table probed from inside the pods, all cells at once: sockets opened in each pod's namespace.

One round sends every (from, to, port, protocol) probe concurrently: a TCP
connect, or a UDP datagram answered by ``serve-hostname`` with the target's
name, each within ``timeout`` (a dropped packet is a timeout). A refused
connection counts as unreachable: in this model every target serves every
port, so a refusal means the server is missing, and policies drop, never
reject. Sockets are made in one namespace entry per (pod, protocol) rather
than one per probe.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import trio

from kmesh.net import netns

Cell = tuple[str, str]
Matrix = dict[Cell, bool]


@dataclass(frozen=True)
class Target:
    """A model pod in the lab: its name (what serve-hostname answers), address and network namespace."""

    name: str
    ip: str
    netns: str


def _sockets(kind: int, count: int) -> list[socket.socket]:
    return [socket.socket(socket.AF_INET, kind) for _ in range(count)]


async def _probe(sock: trio.socket.SocketType, to: Target, port: int, udp: bool, timeout: float) -> bool:
    with sock:
        with trio.move_on_after(timeout):
            try:
                await sock.connect((to.ip, port))
                if not udp:
                    return True
                answer = b""
                while answer != to.name.encode():  # a datagram may be lost: ask again until the timeout
                    await sock.send(b"hostname")
                    with trio.move_on_after(timeout / 3):
                        answer = await sock.recv(512)
                return True
            except OSError:  # refused (nobody serves) or unreachable
                return False
    return False


async def probe_round(pods: Mapping[str, Target], probes: Sequence[tuple[int, str]],
                      timeout: float = 1.0) -> dict[tuple[int, str], Matrix]:
    """Every pod to every pod for each (port, protocol): ``{(port, proto): {(from, to): reached}}``."""
    names = list(pods)
    out: dict[tuple[int, str], Matrix] = {p: {} for p in probes}
    per_pod = {proto: sum(1 for _, p in probes if p == proto) * len(names) for proto in ("TCP", "UDP")}
    socks: dict[tuple[str, str], list[socket.socket]] = {}

    async def make(pod: str, proto: str) -> None:
        kind = socket.SOCK_DGRAM if proto == "UDP" else socket.SOCK_STREAM
        socks[(pod, proto)] = await netns.run_sync_in(pods[pod].netns, _sockets, kind, per_pod[proto])

    async with trio.open_nursery() as n:
        for pod in names:
            for proto, count in per_pod.items():
                if count:
                    n.start_soon(make, pod, proto)

    async def one(frm: str, to: str, port: int, proto: str, raw: socket.socket) -> None:
        sock = trio.socket.from_stdlib_socket(raw)
        out[(port, proto)][(frm, to)] = await _probe(sock, pods[to], port, proto == "UDP", timeout)

    async with trio.open_nursery() as n:
        for port, proto in probes:
            for frm in names:
                for to in names:
                    n.start_soon(one, frm, to, port, proto, socks[(frm, proto)].pop())
    return out


def probe_until(pods: Mapping[str, Target], expected: Mapping[tuple[int, str], Matrix], *, timeout: float = 1.0,
                within: float = 12.0) -> tuple[dict[tuple[int, str], Matrix], int]:
    """Probe rounds until one matches ``expected`` or ``within`` seconds pass; the last round and how many ran."""
    rounds = 0

    async def loop() -> dict[tuple[int, str], Matrix]:
        nonlocal rounds
        end = trio.current_time() + within
        while True:
            got = await probe_round(pods, list(expected), timeout)
            rounds += 1
            if got == dict(expected) or trio.current_time() >= end:
                return got
            await trio.sleep(0.1)  # a poll interval: rounds with drops take `timeout` anyway

    return trio.run(loop), rounds
