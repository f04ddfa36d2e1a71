"""``kmesh bench modes``: first-packet latency, sync time and cost of each kube-proxy mode against the number
of Services, the shape of upstream's charts (the nftables blog of 2025).

For each mode the bench builds three namespaces of its own
(``kmesh-bm<tag>-node``, ``-client``, ``-server``), each joined to the node by
a veth, as a node with two pods: the client pod ``10.244.0.2`` and a server
pod ``10.244.1.2`` that answers on every address of 10.250.0.0/16 at once (a
``local`` route on its loopback and one listener on port 80: the endpoints
are real listeners, not N pods). The mode's proxy runs in the node
namespace as its own process (``kmesh.bench.modesworker``) and makes its real
rules for N synthetic Services of 2 endpoints each; the sizes grow in turn
(100, 1000, 5000, 10000 by default), and at each size the bench measures:

- connect latency (the time ``connect()`` takes: SYN out, SYN-ACK back) from
  the client pod to the first, a middle and the last Service made, p01, p50
  and p99 over ``--samples`` new connections each;
- the full sync at that size (wall time and CPU seconds of the proxy process
  and its children), a sync after one endpoint of one Service changed, the
  objects installed (iptables lines, nft rules and map elements, IPVS virtual
  and real servers, userspace listeners) and the proxy's memory.

A size whose full sync the previous size predicts (linearly) to exceed
``--budget`` seconds is skipped and said so. Where the kernel has no
``ip_vs``, the IPVS rows say they were served by kmesh's own table, so nobody
takes them for the kernel's numbers. Everything made is removed at the end,
however the bench ends.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kmesh.bench.modesworker import ENDPOINT_NET, MAX_ENDPOINTS, PORT, service_ip
from kmesh.bench.stats import percentile
from kmesh.net import netns
from kmesh.proxy.modes import MODES

DEFAULT_SIZES = (100, 1000, 5000, 10000)
NODE_IP = "10.244.0.1"
CLIENT_IP = "10.244.0.2"
SERVER_GW = "10.244.1.1"
SERVER_IP = "10.244.1.2"
WORKER_TIMEOUT = 900.0


class ModesUsage(ValueError):
    """A bad argument; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


@dataclass
class SizeResult:
    """One mode at one number of Services."""

    mode: str
    services: int
    connect_us: dict[str, dict[str, float]]
    full_sync_s: float
    change_sync_ms: float
    sync_cpu_s: float
    rules: int
    proxy_rss_mb: float
    served_by: str
    errors: int = 0  # connects that failed

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` form of one row."""
        return {"mode": self.mode, "services": self.services, "connect_us": self.connect_us,
                "full_sync_s": round(self.full_sync_s, 4), "change_sync_ms": round(self.change_sync_ms, 2),
                "sync_cpu_s": round(self.sync_cpu_s, 4), "rules": self.rules,
                "proxy_rss_mb": round(self.proxy_rss_mb, 1), "served_by": self.served_by,
                "connect_errors": self.errors}


@dataclass
class Results:
    """Every row, and the sizes skipped with why."""

    results: list[SizeResult] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {"results": [r.to_json() for r in self.results], "skipped": self.skipped}


def parse_sizes(text: str) -> list[int]:
    """``--services 100,1000``: sorted, distinct, each 1..the endpoint space allows."""
    try:
        sizes = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ModesUsage("--services", f"{text!r} is not a comma-separated list of numbers") from None
    if not sizes or sizes[0] < 1:
        raise ModesUsage("--services", "give at least one size, each at least 1")
    return sizes


def check_space(sizes: list[int], endpoints: int) -> None:
    """``ModesUsage`` naming ``--services`` when the largest size needs more endpoint addresses than there are."""
    if sizes[-1] * endpoints > MAX_ENDPOINTS:
        raise ModesUsage("--services", f"{sizes[-1]} Services × {endpoints} endpoints is more than the "
                         f"{MAX_ENDPOINTS} endpoint addresses the bench has")


def parse_modes(text: str) -> list[str]:
    """``--modes iptables,nftables``: known modes, in the order given."""
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ModesUsage("--modes", f"unknown mode {bad[0]!r}" if bad else "give at least one mode"
                         f" (the modes: {', '.join(MODES)})")
    return list(dict.fromkeys(modes))


# ---------------------------------------------------------------------------------------------- the namespaces


@dataclass(frozen=True)
class Bed:
    """The bench's namespaces."""

    node: str
    client: str
    server: str


@contextmanager
def testbed() -> Iterator[Bed]:
    """A node with a client pod and a server pod answering on all of 10.250.0.0/16; removed however it ends."""
    tag = secrets.token_hex(3)
    bed = Bed(f"kmesh-bm{tag}-node", f"kmesh-bm{tag}-client", f"kmesh-bm{tag}-server")
    try:
        for ns in (bed.node, bed.client, bed.server):
            netns.add(ns)
            netns.ip(ns, "link", "set", "lo", "up")
        netns.add_veth(bed.client, "eth0", bed.node, "veth-client")
        netns.add_veth(bed.server, "eth0", bed.node, "veth-server")
        netns.ip(bed.node, "addr", "add", f"{NODE_IP}/24", "dev", "veth-client")
        netns.ip(bed.node, "addr", "add", f"{SERVER_GW}/24", "dev", "veth-server")
        netns.ip(bed.client, "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0")
        netns.ip(bed.server, "addr", "add", f"{SERVER_IP}/24", "dev", "eth0")
        for ns, dev in ((bed.node, "veth-client"), (bed.node, "veth-server"), (bed.client, "eth0"),
                        (bed.server, "eth0")):
            netns.ip(ns, "link", "set", dev, "up")
        netns.ip(bed.client, "route", "add", "default", "via", NODE_IP)
        netns.ip(bed.server, "route", "add", "default", "via", SERVER_GW)
        netns.ip(bed.server, "route", "add", "local", str(ENDPOINT_NET), "dev", "lo")
        netns.ip(bed.node, "route", "add", str(ENDPOINT_NET), "via", SERVER_IP)
        subprocess.run(netns.exec_argv(bed.node, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]), check=True)
        yield bed
    finally:
        for ns in (bed.node, bed.client, bed.server):
            netns.delete(ns)


class Server:
    """The server pod's listener: accepts every connection on port 80 of any address and closes it."""

    def __init__(self, ns: str) -> None:
        self.sock = netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", PORT))
        self.sock.listen(4096)
        self._thread = threading.Thread(target=self._accept, name="kmesh-bench-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        """Stop accepting."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(timeout=5)


class WorkerProcess:
    """The proxy under test: ``kmesh.bench.modesworker`` in the node namespace, one JSON line per command."""

    def __init__(self, bed: Bed, mode: str) -> None:
        argv = netns.nsenter_argv(bed.node, [sys.executable, "-m", "kmesh.bench.modesworker", mode, NODE_IP])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        ready = self._read()
        if not ready.get("ready"):
            raise RuntimeError(f"the {mode} proxy did not start: {ready}")

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"the proxy process ended: {err.strip()[-2000:]}")
        return dict(json.loads(line))

    def call(self, **cmd: Any) -> dict[str, Any]:
        """Send one command and read its answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        out = self._read()
        if "error" in out:
            raise RuntimeError(out["error"])
        return out

    def stop(self) -> None:
        """Remove what the mode installed and end the process."""
        if self.proc.poll() is None:
            try:
                self.call(op="stop")
                self.proc.wait(timeout=60)
            except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------------------------------------- measuring


def connect_times(ns: str, ip: str, samples: int, timeout: float = 2.0) -> tuple[list[float], int]:
    """``samples`` new TCP connections to ``ip``:80 from namespace ``ns``: the µs each ``connect()`` took, and how
    many failed. Each is reset on close, so no TIME_WAIT piles up."""
    linger = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")

    def run() -> tuple[list[float], int]:
        times: list[float] = []
        failed = 0
        for _ in range(samples):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            try:
                t0 = time.perf_counter_ns()
                s.connect((ip, PORT))
                times.append((time.perf_counter_ns() - t0) / 1000)
            except OSError:
                failed += 1
            finally:
                s.close()
        return times, failed

    return netns.call_in(ns, run)


def _summary(values: list[float]) -> dict[str, float]:
    return {"p01": round(percentile(values, 1), 1), "p50": round(percentile(values, 50), 1),
            "p99": round(percentile(values, 99), 1)}


def measure(bed: Bed, worker: WorkerProcess, mode: str, services: int, endpoints: int, samples: int) -> SizeResult:
    """Grow to ``services`` and measure everything at that size."""
    grown = worker.call(op="grow", services=services, endpoints=endpoints)
    change = worker.call(op="change")
    connect: dict[str, dict[str, float]] = {}
    errors = 0
    targets = {"first": 0, "middle": services // 2, "last": services - 1}
    for _ in range(3):  # warm: ARP, routes, the relay's first accept
        connect_times(bed.client, service_ip(0), 1)
    rounds: dict[str, list[float]] = {k: [] for k in targets}
    per_round = max(1, samples // 5)
    for _ in range(5):  # interleaved, so a busy moment of the machine falls on every target alike
        for key, i in targets.items():
            times, failed = connect_times(bed.client, service_ip(i), per_round)
            rounds[key] += times
            errors += failed
    for key, values in rounds.items():
        connect[key] = _summary(values)
    stats = worker.call(op="stats")
    return SizeResult(mode, services, connect, float(grown["full_sync_s"]), float(change["change_sync_ms"]),
                      float(grown["sync_cpu_s"]), int(grown["rules"]), float(stats["rss_mb"]), str(stats["served_by"]),
                      errors)


def run(modes: list[str], sizes: list[int], *, endpoints: int = 2, samples: int = 200, budget: float = 120.0,
        progress: Callable[[str], None] = lambda _: None) -> Results:
    """The whole experiment."""
    check_space(sizes, endpoints)
    out = Results()
    for mode in modes:
        with testbed() as bed:
            server = Server(bed.server)
            worker = None
            try:
                progress(f"{mode}: starting the proxy")
                worker = WorkerProcess(bed, mode)
                last: SizeResult | None = None
                for n in sizes:
                    if last is not None and last.full_sync_s * n / last.services > budget:
                        guess = last.full_sync_s * n / last.services
                        out.skipped.append({"mode": mode, "services": n, "reason": (
                            f"a full sync would take about {guess:.0f} s (from {last.full_sync_s:.1f} s at "
                            f"{last.services}), over the --budget of {budget:.0f} s")})
                        progress(f"{mode}: {n} Services skipped (over budget)")
                        continue
                    progress(f"{mode}: {n} Services")
                    last = measure(bed, worker, mode, n, endpoints, samples)
                    out.results.append(last)
            finally:
                if worker is not None:
                    worker.stop()
                server.close()
    return out


# ---------------------------------------------------------------------------------------------- showing


def table_rows(res: Results) -> list[list[str]]:
    """The rows of the terminal table."""
    rows = []
    for r in res.results:
        c = r.connect_us
        rows.append([r.mode, str(r.services), f"{c['first']['p50']:.0f}", f"{c['middle']['p50']:.0f}",
                     f"{c['last']['p50']:.0f}", f"{c['last']['p01']:.0f}–{c['last']['p99']:.0f}",
                     f"{r.full_sync_s:.3f}", f"{r.change_sync_ms:.1f}", f"{r.sync_cpu_s:.3f}", str(r.rules),
                     f"{r.proxy_rss_mb:.0f}", _short(r.served_by)])
    return rows


def _short(served_by: str) -> str:
    """The table's word for what served the Services (the JSON has the sentence)."""
    for key, word in (("own IPVS table", "kmesh IPVS table"), ("kernel ip_vs", "kernel ip_vs"),
                      ("userspace", "userspace relay"), ("nftables", "nftables"), ("iptables", "iptables")):
        if key in served_by:
            return word
    return served_by


def plot(res: Results, path: str) -> None:
    """One chart per metric, one line per mode: connect latency (p50 with the p01–p99 band, last Service),
    full sync time, one-change sync time, proxy memory, against the number of Services."""
    from pathlib import Path

    from kmesh.bench.report import png

    with png(Path(path), 2, 2, figsize=(12, 8), dpi=110) as (fig, axes):
        _draw(res, fig, axes)


def _draw(res: Results, fig: Any, axes: Any) -> None:
    (lat, full), (change, mem) = axes
    modes = list(dict.fromkeys(r.mode for r in res.results))
    for mode in modes:
        rows = [r for r in res.results if r.mode == mode]
        xs = [r.services for r in rows]
        p50 = [r.connect_us["last"]["p50"] for r in rows]
        lat.plot(xs, p50, "-o", label=f"{mode} (last Service)")
        lat.fill_between(xs, [r.connect_us["last"]["p01"] for r in rows],
                         [r.connect_us["last"]["p99"] for r in rows], alpha=0.15)
        lat.plot(xs, [r.connect_us["first"]["p50"] for r in rows], ":", color=lat.lines[-1].get_color(),
                 label=f"{mode} (first Service)")
        full.plot(xs, [r.full_sync_s for r in rows], "-o", label=mode)
        change.plot(xs, [r.change_sync_ms for r in rows], "-o", label=mode)
        mem.plot(xs, [r.proxy_rss_mb for r in rows], "-o", label=mode)
    for ax, title, unit in ((lat, "connect latency (p50, band p01–p99)", "µs"), (full, "full sync", "s"),
                            (change, "sync after one endpoint change", "ms"), (mem, "proxy memory (RSS)", "MB")):
        ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel("Services")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("kmesh bench modes: kube-proxy modes against the number of Services")
