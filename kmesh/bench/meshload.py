"""Request latency and throughput over keep-alive HTTP/1.1: paced (open loop) and as fast as it goes (closed loop).

The mesh experiments (``kmesh bench mesh latency``, ``benchmarks/mesh.py``)
compare one client → server exchange along several paths (direct, through a
sidecar pair with mutual TLS, through the pair in plaintext). Each path is
measured the same way, from a socket opened inside the client pod's network
namespace (so a meshed client's redirect rules apply to it):

- **open loop** (wrk2's model): requests are due at a fixed rate whatever the
  answers do, over a fixed set of keep-alive connections opened beforehand;
  each request takes an idle one, or waits for one. Latency is counted from
  when the request was *due*, not when it left, so a stall is paid by every
  request it delays (no coordinated omission).
- **closed loop**: ``connections`` connections each send their next request as
  soon as the last one answered; requests per second is the path's ceiling on
  this machine (the load generator shares its CPUs).

The pieces that need no network (``parse_head``, ``schedule``, the result
shapes and ``added``) are pure, for tests.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from kmesh.bench.stats import Latency

GOAL_RATE = 500.0
"""Requests per second of the open-loop run the goal is stated at."""
GOAL_ADDED_P50_MS = 1.0
GOAL_ADDED_P99_MS = 3.0
ANCHOR = ("Linkerd: a proxy hop costs 'network time, plus about 1ms' (Buoyant's goal: < 1 ms p95 at 1000 qps; "
          "linkerd.io/2017/02/01/making-things-faster-by-adding-more-steps); the Kinvolk/Linkerd benchmarks "
          "(2019, 2021) measured a few ms added at p99 through a meshed app at 500-2000 rps")
MAX_HEAD = 16 * 1024
MAX_BODY = 1024 * 1024


# ------------------------------------------------------------------ pure parts


def parse_head(buf: bytes) -> tuple[int, int, bool, int] | None:
    """``(status, body length, close, head length)`` once ``buf`` holds a whole HTTP/1.x response head; None
    before that. Body length -1: chunked; -2: delimited by the connection's end. ValueError for anything that
    is not an HTTP/1 response head (or one longer than ``MAX_HEAD``)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise ValueError("response head too long")
        return None
    lines = buf[:end].split(b"\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise ValueError(f"not an HTTP/1 response: {lines[0][:60]!r}")
    status = int(parts[1])
    close = parts[0] == b"HTTP/1.0"
    length: int | None = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            if not value.isdigit():
                raise ValueError(f"bad Content-Length {value[:20]!r}")
            length = int(value)
        elif name == b"connection":
            if value == b"close":
                close = True
            elif value == b"keep-alive":
                close = False
        elif name == b"transfer-encoding" and b"chunked" in value:
            chunked = True
    if 100 <= status < 200 or status in (204, 304):
        length = 0
    elif chunked:
        length = -1
    elif length is None:
        length, close = -2, True
    return status, length, close, end + 4


def schedule(rate: float, seconds: float) -> list[float]:
    """When each request of an open-loop run is due, in seconds from its start: ``rate`` per second for
    ``seconds`` (at least one request)."""
    if not rate > 0 or not seconds > 0:
        raise ValueError("rate and seconds must be > 0")
    return [i / rate for i in range(max(1, round(rate * seconds)))]


@dataclass(frozen=True)
class Sample:
    """One request: when it was due (seconds from the run's start), how long until its answer (from when it was
    due), its status, or the error that ended it."""

    due: float
    latency: float
    status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 400


def _num(x: float) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else x


def ms(x: float) -> float | None:
    """Seconds as milliseconds, rounded for JSON (None for NaN)."""
    return None if math.isnan(x) or math.isinf(x) else round(x * 1000, 3)


def latency_dict(lat: Latency) -> dict[str, Any]:
    """A latency summary in milliseconds, for JSON."""
    return {"count": lat.count, "p50_ms": ms(lat.p50), "p90_ms": ms(lat.p90), "p99_ms": ms(lat.p99),
            "max_ms": ms(lat.max)}


def errors_of(samples: list[Sample]) -> dict[str, int]:
    """Failed requests per error (``http 503``, ``timeout``, ``reset``...)."""
    out: dict[str, int] = {}
    for s in samples:
        if not s.ok:
            key = s.error or f"http {s.status}"
            out[key] = out.get(key, 0) + 1
    return out


@dataclass
class OpenLoop:
    """An open-loop run: the rate asked for, the samples, how many connections it opened."""

    rate: float
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    connections: int = 0
    elapsed: float = 0.0
    cpu: float | None = None
    """CPU seconds the lab's node processes (agents: apps and sidecars) used during the run, when known."""

    @property
    def cpu_per_request(self) -> float | None:
        """Node CPU seconds per request: unlike latency, barely moved by other load on the machine."""
        return self.cpu / len(self.samples) if self.cpu is not None and self.samples else None

    @property
    def latency(self) -> Latency:
        return Latency.of([s.latency for s in self.samples if s.ok])

    @property
    def failed(self) -> int:
        return sum(not s.ok for s in self.samples)

    @property
    def achieved(self) -> float:
        """Answers per second over the run (requests due over its length, when all were answered)."""
        ok = sum(s.ok for s in self.samples)
        return ok / self.elapsed if self.elapsed > 0 else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, "seconds": self.seconds, "requests": len(self.samples), "failed": self.failed,
                "errors": errors_of(self.samples), "connections": self.connections,
                "achieved_rps": _num(round(self.achieved, 1)), "latency": latency_dict(self.latency),
                "node_cpu_ms_per_request": None if self.cpu_per_request is None else round(self.cpu_per_request * 1000, 4)}


@dataclass
class ClosedLoop:
    """A closed-loop run: answers, errors and latencies over ``elapsed`` seconds on ``connections``."""

    connections: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed > 0 else math.nan

    @property
    def latency(self) -> Latency:
        return Latency.of(self.latencies)

    def as_dict(self) -> dict[str, Any]:
        return {"connections": self.connections, "seconds": self.seconds, "requests": len(self.latencies),
                "errors": dict(self.errors), "rps": _num(round(self.rps, 1)), "latency": latency_dict(self.latency)}


def merge_open(runs: Sequence[OpenLoop]) -> OpenLoop:
    """Several open-loop runs of one path as one: samples pooled (each run's ``due`` shifted after the one
    before), seconds and elapsed summed, connections the most any run used."""
    if not runs:
        raise ValueError("nothing to merge")
    out = OpenLoop(runs[0].rate, 0.0)
    for r in runs:
        out.samples += [replace(s, due=s.due + out.seconds) for s in r.samples]
        out.seconds += r.seconds
        out.elapsed += r.elapsed
        out.connections = max(out.connections, r.connections)
        if r.cpu is not None:
            out.cpu = (out.cpu or 0.0) + r.cpu
    return out


def merge_closed(runs: Sequence[ClosedLoop]) -> ClosedLoop:
    """Several closed-loop runs of one path as one: latencies and errors pooled, seconds and elapsed summed."""
    if not runs:
        raise ValueError("nothing to merge")
    out = ClosedLoop(runs[0].connections, 0.0)
    for r in runs:
        out.latencies += r.latencies
        for k, v in r.errors.items():
            out.errors[k] = out.errors.get(k, 0) + v
        out.seconds += r.seconds
        out.elapsed += r.elapsed
    return out


def rotations(paths: Sequence[str], rounds: int) -> list[list[str]]:
    """The order of ``paths`` in each of ``rounds`` rounds: rotated by one each round, so that no path always
    runs first (or right after another) while the machine's other load comes and goes."""
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    n = len(paths)
    return [[paths[(r + i) % n] for i in range(n)] for r in range(rounds)] if n else [[] for _ in range(rounds)]


def added(pair: Latency, direct: Latency) -> dict[str, float | None]:
    """What a path adds to the direct one, in ms, at p50 and p99."""
    return {"p50_ms": ms(pair.p50 - direct.p50), "p99_ms": ms(pair.p99 - direct.p99)}


def meets_goal(add: dict[str, float | None]) -> bool:
    """Whether added latency is within the goal (≤ 1 ms at p50, ≤ 3 ms at p99)."""
    p50, p99 = add.get("p50_ms"), add.get("p99_ms")
    return p50 is not None and p99 is not None and p50 <= GOAL_ADDED_P50_MS and p99 <= GOAL_ADDED_P99_MS


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by the processes ``pids`` (those still running)."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return total / tick


# ------------------------------------------------------------------ the client


@dataclass(frozen=True)
class Target:
    """Where one path's requests go: from network namespace ``netns`` (None: this one) to ``host:port``, with
    ``http_host`` as Host header and ``path``."""

    host: str
    port: int
    netns: str | None = None
    http_host: str = ""
    path: str = "/hostname"
    timeout: float = 2.0

    def request(self) -> bytes:
        return (f"GET {self.path} HTTP/1.1\r\nHost: {self.http_host or self.host}\r\n"
                "User-Agent: kmesh-bench\r\n\r\n").encode()


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.buf = b""
        self.usable = True

    @classmethod
    async def open(cls, target: Target) -> Conn:
        if target.netns is None:
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        else:
            from kmesh.net import netns

            sock = await netns.open_socket(target.netns, socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await sock.connect((target.host, target.port))
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    async def _more(self) -> None:
        data = await self.sock.recv(65536)
        if not data:
            self.usable = False
            raise ConnectionResetError("closed before the answer's end")
        self.buf += data

    async def get(self, request: bytes) -> tuple[int, bytes]:
        """Send one request, read its answer: ``(status, body)``."""
        view = memoryview(request)
        while view:
            view = view[await self.sock.send(view):]
        while (head := parse_head(self.buf)) is None:
            await self._more()
        status, length, close, hlen = head
        self.buf = self.buf[hlen:]
        if length == -2:
            while True:  # until the connection ends
                try:
                    await self._more()
                except ConnectionResetError:
                    break
                if len(self.buf) > MAX_BODY:
                    raise ValueError("answer too long")
            body, self.buf = self.buf, b""
        elif length == -1:
            while b"0\r\n\r\n" not in self.buf:  # chunked: the bytes, unparsed, up to the last chunk
                await self._more()
                if len(self.buf) > MAX_BODY:
                    raise ValueError("answer too long")
            end = self.buf.index(b"0\r\n\r\n") + 5
            body, self.buf = self.buf[:end], self.buf[end:]
        else:
            while len(self.buf) < length:
                await self._more()
            body, self.buf = self.buf[:length], self.buf[length:]
        if close:
            self.usable = False
        return status, body

    def close(self) -> None:
        self.usable = False
        self.sock.close()


def error_name(exc: BaseException) -> str:
    """A short name for what ended a request."""
    if isinstance(exc, trio.TooSlowError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return "reset"
    if isinstance(exc, ValueError):
        return "bad answer"
    if isinstance(exc, OSError) and exc.errno is not None:
        import errno

        return errno.errorcode.get(exc.errno, str(exc.errno)).lower()
    return type(exc).__name__


async def fetch(conn: Conn | None, target: Target) -> tuple[Conn | None, int | None, bytes, str | None]:
    """One request on ``conn`` (a new connection when None): ``(the connection if still usable, status, body,
    error)``; never raises for network trouble."""
    try:
        with trio.fail_after(target.timeout):
            if conn is None:
                conn = await Conn.open(target)
            status, body = await conn.get(target.request())
    except (OSError, ValueError, trio.TooSlowError, trio.BrokenResourceError) as exc:
        if conn is not None:
            conn.close()
        return None, None, b"", error_name(exc)
    if not conn.usable:
        conn.close()
        return None, status, body, None
    return conn, status, body, None


async def warm_pool(target: Target, connections: int, rounds: int = 3) -> list[Conn]:
    """``connections`` connections, opened at once and each used for ``rounds`` requests sent together: a
    sidecar keeps upstream connections of its own, and only concurrent requests make it open (and handshake)
    as many as the measured run will need."""
    pool: list[Conn | None] = [None] * connections
    for _ in range(rounds):
        async def use(i: int) -> None:
            pool[i], _, _, _ = await fetch(pool[i], target)

        async with trio.open_nursery() as n:
            for i in range(connections):
                n.start_soon(use, i)
    return [c for c in pool if c is not None]


async def open_loop(target: Target, rate: float, seconds: float, *, connections: int = 8,
                    on_sample: Callable[[Sample], None] | None = None) -> OpenLoop:
    """Requests due at ``rate`` per second for ``seconds`` over ``connections`` keep-alive connections (wrk2's
    ``-R rate -c connections``; see the module docstring). The connections are opened, and each used once,
    before the clock starts, so connection set-up (a TLS handshake between sidecars) is not what is measured;
    one that breaks is opened again when it is next needed, and that is measured. ``connections`` 0: a new
    connection per request."""
    run = OpenLoop(rate, seconds)
    idle = await warm_pool(target, connections)
    run.connections = len(idle)
    free = trio.Semaphore(max(connections, 1)) if connections else None
    due_times = schedule(rate, seconds)

    async def one(t0: float, due: float) -> None:
        if free is not None:
            await free.acquire()  # waiting for a free connection counts in the latency: it is part of the delay
        try:
            conn = idle.pop() if idle else None
            if conn is None:
                run.connections += 1
            conn, status, _, error = await fetch(conn, target)
            s = Sample(due, trio.current_time() - t0 - due, status, error)
            if conn is not None:
                if free is None:
                    conn.close()
                else:
                    idle.append(conn)
        finally:
            if free is not None:
                free.release()
        run.samples.append(s)
        if on_sample is not None:
            on_sample(s)

    try:
        start = trio.current_time() + 0.05
        async with trio.open_nursery() as n:
            for due in due_times:
                await trio.sleep_until(start + due)
                n.start_soon(one, start, due)
        run.elapsed = max(due_times[-1] + 1 / rate, trio.current_time() - start)
    finally:
        for c in idle:
            c.close()
    run.samples.sort(key=lambda s: s.due)
    return run


async def closed_loop(target: Target, connections: int, seconds: float,
                      on_answer: Callable[[], None] | None = None) -> ClosedLoop:
    """``connections`` keep-alive connections, each sending its next request as soon as the last answered,
    for ``seconds`` (see the module docstring)."""
    run = ClosedLoop(connections, seconds)

    async def worker(deadline: float) -> None:
        conn, _, _, _ = await fetch(None, target)  # opened before the clock runs: set-up is not measured
        await trio.sleep_until(start)
        try:
            while trio.current_time() < deadline:
                t = trio.current_time()
                conn, status, _, error = await fetch(conn, target)
                if error is None and status is not None and 200 <= status < 400:
                    run.latencies.append(trio.current_time() - t)
                    if on_answer is not None:
                        on_answer()
                else:
                    key = error or f"http {status}"
                    run.errors[key] = run.errors.get(key, 0) + 1
        finally:
            if conn is not None:
                conn.close()

    start = trio.current_time() + 0.5
    async with trio.open_nursery() as n:
        for _ in range(connections):
            n.start_soon(worker, start + seconds)
    run.elapsed = trio.current_time() - start
    return run


async def warm_up(target: Target, within: float = 30.0, ok: Callable[[int, bytes], bool] | None = None,
                  every: float = 0.1) -> bool:
    """Send until an answer passes ``ok`` (default: any 2xx), for at most ``within`` seconds; whether one did.
    A sidecar learns a new Service or route a moment after it is created, and nothing outside it says when."""
    with trio.move_on_after(within):
        while True:
            conn, status, body, _ = await fetch(None, target)
            if conn is not None:
                conn.close()
            if status is not None and (ok(status, body) if ok is not None else 200 <= status < 300):
                return True
            await trio.sleep(every)
    return False
