"""The proxy under test in ``kmesh bench modes``: one proxy mode, in the bench's node namespace, driven by lines.

It runs as its own process (``python -m kmesh.bench.modesworker MODE``,
started inside the node namespace) so that its memory is the proxy's alone
and the CPU of a sync is its own and its children's (iptables-restore,
nft). It makes the mode's real rules for synthetic Services: Service ``i``
is ``bench/svc-i`` with ClusterIP ``service_ip(i)`` port 80 and endpoints
``endpoint_ip(i, j)`` port 80 (addresses the bench's server namespace
answers for all at once). Commands come one JSON object per line on stdin,
answers go one per line on stdout:

- ``{"op": "grow", "services": N, "endpoints": E}``: add Services up to N,
  then one full sync; answers ``full_sync_s``, ``sync_cpu_s``, ``rules``.
- ``{"op": "change"}``: one endpoint of the middle Service moves to another
  address, then a partial sync; answers ``change_sync_ms``, ``cpu_s``.
- ``{"op": "stats"}``: ``rss_mb`` and ``served_by``.
- ``{"op": "stop"}``: remove everything the mode installed, and exit.

Bypassing the API server and the change tracker is deliberate: the sync is
what differs between the modes, and feeding it directly measures it alone,
at sizes (10k Services) that would otherwise take minutes to create.
"""

from __future__ import annotations

import ipaddress
import json
import resource
import sys
import time
from typing import Any

import trio

from kmesh.proxy.base import ProxyMode
from kmesh.proxy.model import Endpoint, NodeContext, ProxyState, ServicePort, ServicePortName
from kmesh.proxy.modes import make_mode

SERVICE_BASE = ipaddress.IPv4Address("10.100.0.0")  # inside the default service CIDR 10.96.0.0/12
ENDPOINT_NET = ipaddress.IPv4Network("10.250.0.0/16")  # the server namespace answers on all of it
SPARE_BASE = ipaddress.IPv4Address("10.250.255.0")  # where a moved endpoint goes
PORT = 80
NAMESPACE = "bench"


def service_ip(i: int) -> str:
    """The ClusterIP of Service ``i`` (0-based)."""
    return str(SERVICE_BASE + i)


MAX_ENDPOINTS = int(SPARE_BASE) - int(ENDPOINT_NET.network_address) - 1  # Services × endpoints, at most


def endpoint_ip(i: int, j: int, per_service: int) -> str:
    """The address of endpoint ``j`` of Service ``i``."""
    n = i * per_service + j
    if n >= MAX_ENDPOINTS:
        raise ValueError(f"more than {MAX_ENDPOINTS} endpoints in all")
    return str(ENDPOINT_NET.network_address + 1 + n)


def service_port(i: int, per_service: int, moved: int = 0) -> ServicePort:
    """Service ``i``'s port; ``moved`` > 0 puts its first endpoint on spare address ``moved``."""
    eps = [Endpoint(endpoint_ip(i, j, per_service), PORT, node="bench-node") for j in range(per_service)]
    if moved:
        eps[0] = Endpoint(str(SPARE_BASE + moved % 250), PORT, node="bench-node")
    return ServicePort(ServicePortName(NAMESPACE, f"svc-{i}", "", "TCP"), service_ip(i), PORT,
                       endpoints=tuple(sorted(eps, key=lambda e: e.ip)))


def _cpu() -> float:
    own = time.process_time()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own + kids.ru_utime + kids.ru_stime


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def count_rules(mode: str, text: str) -> int:
    """Objects the mode installed, counted in its own tool's text: iptables lines, nft rules and map
    elements, IPVS virtual and real servers, userspace listeners."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if mode in ("iptables", "userspace") and any(ln.startswith("-A ") for ln in lines):
        return sum(1 for ln in lines if ln.startswith("-A "))
    if mode == "nftables":
        rules = sum(1 for ln in lines if not ln.startswith(("table ", "chain ", "map ", "set ", "type ", "flags ",
                                                               "elements", "}", "policy", "comment")))
        elements = sum(ln.count(" : ") for ln in lines if " : " in ln)
        return rules + elements
    if mode == "ipvs":
        return sum(1 for ln in lines if ln.startswith(("TCP ", "UDP ", "SCTP ", "-> ")))
    return len(lines)


class Worker:
    """One mode and the synthetic Services it serves."""

    def __init__(self, mode_name: str, node_ip: str) -> None:
        self.mode_name = mode_name
        ctx = NodeContext("bench-node", (node_ip,))
        self.mode: ProxyMode = make_mode(mode_name, ctx)
        self.state = ProxyState()
        self.per_service = 2
        self.moves = 0

    async def grow(self, services: int, endpoints: int) -> dict[str, Any]:
        """Services up to ``services``, then a full sync."""
        self.per_service = endpoints
        for i in range(len(self.state.services), services):
            sp = service_port(i, endpoints)
            self.state.services[sp.name] = sp
        cpu, t0 = _cpu(), time.perf_counter()
        await self.mode.sync(self.state, frozenset(self.state.services), True)
        took = time.perf_counter() - t0
        used = _cpu() - cpu
        rules = count_rules(self.mode_name, await self.mode.rules())
        return {"full_sync_s": took, "sync_cpu_s": used, "rules": rules}

    async def change(self) -> dict[str, Any]:
        """Move one endpoint of the middle Service, then a partial sync."""
        i = len(self.state.services) // 2
        self.moves += 1
        sp = service_port(i, self.per_service, moved=self.moves)
        self.state.services[sp.name] = sp
        cpu, t0 = _cpu(), time.perf_counter()
        await self.mode.sync(self.state, frozenset({sp.name}), False)
        return {"change_sync_ms": (time.perf_counter() - t0) * 1000, "cpu_s": _cpu() - cpu}

    def stats(self) -> dict[str, Any]:
        """The process's memory and what serves the Services."""
        served = {"iptables": "kernel netfilter (iptables rules)", "nftables": "kernel netfilter (nftables)",
                  "userspace": "kmesh's userspace proxy (a listener per Service port)"}.get(self.mode_name, "")
        if self.mode_name == "ipvs":
            kernel = getattr(self.mode, "data_path", "") == "kernel"
            served = ("kernel ip_vs" if kernel else
                      "kmesh's own IPVS table (this kernel has no ip_vs): a relay per virtual server")
        return {"rss_mb": _rss_mb(), "served_by": served}


async def main(mode_name: str, node_ip: str) -> None:
    """Serve commands on stdin until ``stop`` or end of input."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the userspace mode holds a socket per Service
    worker = Worker(mode_name, node_ip)
    stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
    async with trio.open_nursery() as nursery:
        await worker.mode.start(nursery)
        _answer({"ready": True})
        buf = b""
        try:
            while True:
                chunk = await stdin.receive_some(65536)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    cmd = json.loads(line)
                    op = cmd.get("op")
                    if op == "grow":
                        _answer(await worker.grow(int(cmd["services"]), int(cmd.get("endpoints", 2))))
                    elif op == "change":
                        _answer(await worker.change())
                    elif op == "stats":
                        _answer(worker.stats())
                    elif op == "stop":
                        raise _Stop
                    else:
                        _answer({"error": f"unknown op {op!r}"})
        except _Stop:
            pass
        finally:
            with trio.CancelScope(shield=True):
                await worker.mode.cleanup()
            nursery.cancel_scope.cancel()
    _answer({"stopped": True})


class _Stop(Exception):
    pass


def _answer(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
