"""A steady load and its accounting, shared by the experiments that disturb a Service under load.

``bench lb --during 'link down NODE'`` (kmesh.bench.partition) and ``bench
churn`` (kmesh.bench.churn) both send requests at a fixed rate, each started
on time whatever the others do, and judge what came back the same way: one
``Record`` per request, error windows (runs of failures with no ``settle``
seconds of steady success inside), a per-second timeline, errors by kind.

Everything here but ``steady_load`` is pure, for tests.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

# What a client sees go wrong, in the words of the issues people file: the connection was refused (nothing
# listens: a pod already stopping, a REJECT rule), reset (a server that went away mid-connection), or the
# request timed out (packets to an endpoint that is gone). Everything else (unreachable, a bad HTTP status,
# an empty answer...) is "other", with its own name kept beside it.
ERROR_KINDS = ("refused", "reset", "timeout", "other")


@dataclass(frozen=True)
class Record:
    """One request: when it left and ended (seconds since the load began), and its answer or error."""

    start: float
    end: float
    answer: str | None
    error: str | None
    port: int | None = None  # the client's source port (None: not known)

    @property
    def failed(self) -> bool:
        return self.answer is None

    def as_dict(self) -> dict[str, Any]:
        return {"start": round(self.start, 4), "end": round(self.end, 4), "answer": self.answer,
                "error": self.error, "port": self.port}


@dataclass(frozen=True)
class Window:
    """A run of failures with no ``settle`` seconds of steady success inside: first failure's start to last's end."""

    start: float
    end: float
    failed: int
    errors: dict[str, int]

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def as_dict(self) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "seconds": round(self.seconds, 3),
                "failed": self.failed, "errors": dict(self.errors)}


class LoadRecords:
    """What every load experiment's result derives from its ``records`` and ``options.settle``: the error
    windows and how many requests failed (a mixin for the result dataclasses)."""

    records: list[Record]
    options: Any

    @property
    def windows(self) -> list[Window]:
        """The error windows of the run."""
        return error_windows(self.records, self.options.settle)

    @property
    def failed(self) -> int:
        """Requests that failed."""
        return sum(r.failed for r in self.records)


def error_windows(records: Sequence[Record], settle: float) -> list[Window]:
    """The error windows of ``records``: failures ordered by start, grouped while the next failure starts
    less than ``settle`` seconds after the previous one ended (successes in between do not close a window:
    steady success does). Each window runs from its first failure's start to its last failure's end."""
    fails = sorted((r for r in records if r.failed), key=lambda r: (r.start, r.end))
    out: list[Window] = []
    cur: list[Record] = []
    end = -math.inf
    for r in fails:
        if cur and r.start - end >= settle:
            out.append(_window(cur))
            cur = []
        cur.append(r)
        end = max(end, r.end) if len(cur) > 1 else r.end
    if cur:
        out.append(_window(cur))
    return out


def _window(fails: list[Record]) -> Window:
    errors: dict[str, int] = {}
    for r in fails:
        key = r.error or "error"
        errors[key] = errors.get(key, 0) + 1
    return Window(fails[0].start, max(r.end for r in fails), len(fails), errors)


def longest(windows: Sequence[Window]) -> Window | None:
    """The longest window (the first of equals), None without failures."""
    return max(windows, key=lambda w: w.seconds, default=None)


def timeline(records: Sequence[Record], bucket: float = 1.0) -> list[dict[str, Any]]:
    """Per ``bucket`` seconds (by request start): ``t`` (bucket start), ``ok`` and a count per error kind."""
    if bucket <= 0:
        raise ValueError("bucket must be > 0")
    if not records:
        return []
    n = int(max(r.start for r in records) // bucket) + 1
    rows: list[dict[str, Any]] = [{"t": round(i * bucket, 3), "ok": 0} for i in range(n)]
    for r in records:
        row = rows[int(r.start // bucket)]
        key = "ok" if not r.failed else (r.error or "error")
        row[key] = row.get(key, 0) + 1
    return rows


def errors_by_kind(records: Sequence[Record]) -> dict[str, int]:
    """Failed requests per error (as the request named it: ``refused``, ``unreachable``, ``http 503``...)."""
    out: dict[str, int] = {}
    for r in records:
        if r.failed:
            out[r.error or "error"] = out.get(r.error or "error", 0) + 1
    return out


def kind_of(error: str | None) -> str:
    """The class of an error name: one of ``ERROR_KINDS``."""
    return error if error in ("refused", "reset", "timeout") else "other"


def errors_by_class(records: Sequence[Record]) -> dict[str, int]:
    """Failed requests per ``ERROR_KINDS`` class, every class present (0 when none)."""
    out = dict.fromkeys(ERROR_KINDS, 0)
    for r in records:
        if r.failed:
            out[kind_of(r.error)] += 1
    return out


def quiet_started(records: Sequence[Record], since: float, until: float, settle: float) -> bool:
    """The requests that started in the ``settle`` seconds up to ``until`` (all after ``since``) all succeeded,
    and there was one. Judged by start time, so it can be asked once every request started by ``until`` has
    ended (``until`` a request timeout in the past): the answer does not change when later ones end."""
    if until - settle < since:
        return False
    window = [r for r in records if until - settle <= r.start <= until]
    return bool(window) and not any(r.failed for r in window)


def ended_by(now: float, timeout: float) -> float:
    """The latest start time whose requests have all ended by ``now`` (answered or timed out after
    ``timeout`` seconds, with a margin): where ``quiet_started`` can be asked without a request still in
    flight turning its answer later."""
    return now - (timeout + 0.5)


# How long conntrack keeps a connection whose SYN was never answered (nf_conntrack_tcp_timeout_syn_sent).
SYN_SENT_TIMEOUT = 120.0


UNANSWERED = ("timeout", "unreachable")  # the errors of a request whose SYN the endpoint never answered


def port_reused(records: Sequence[Record], lifetime: float = SYN_SENT_TIMEOUT) -> list[Record]:
    """The failed requests that left from the source port of an earlier unanswered request (a timeout or
    unreachable) started less than ``lifetime`` seconds before. Conntrack still held that one's entry
    (``SYN_SENT``, its NAT to the endpoint then chosen), so the new SYN was taken for a retransmission and
    sent the same way: a stale entry, not the proxy's rules, decided where it went. kube-proxy clears stale
    conntrack entries of UDP only, as upstream (kubernetes#101607); the kernel reuses ports sooner than one
    might think. (A refused request's entry was closed by the RST: a new SYN on it is NATed afresh.)"""
    last: dict[int, float] = {}
    out: list[Record] = []
    for r in sorted(records, key=lambda r: r.start):
        if not r.failed or r.port is None:
            continue
        before = last.get(r.port)
        if before is not None and r.start - before < lifetime:
            out.append(r)
        if r.error in UNANSWERED:
            last[r.port] = r.start
        else:
            last.pop(r.port, None)
    return out


def leaves(eg: BaseExceptionGroup) -> list[BaseException]:
    """The exceptions of a (nested) group, flattened."""
    out: list[BaseException] = []
    for e in eg.exceptions:
        out.extend(leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


Send = Callable[[], Awaitable[tuple[str | None, str | None, int | None]]]  # one request: (answer, error, port)


async def steady_load(send: Send, rate: float, clock: Callable[[], float], records: list[Record],
                      on_record: Callable[[Record], None] | None, stop: trio.Event, done: trio.Event, *,
                      concurrent: bool = True) -> None:
    """``rate`` requests per second until ``stop``; ``done`` once every request has ended.

    ``concurrent``: each request runs on its own, started on time whatever the others do (a new connection
    each); otherwise one after the other (one persistent connection), each started on time unless the one
    before it is still running."""
    interval = 1.0 / rate

    async def one() -> None:
        t0 = clock()
        answer, error, port = await send()
        r = Record(t0, clock(), answer, error, port)
        records.append(r)
        if on_record is not None:
            on_record(r)

    async with trio.open_nursery() as n:
        due = trio.current_time()
        while not stop.is_set():
            if concurrent:
                n.start_soon(one)
            else:
                await one()
            due += interval
            if not concurrent and trio.current_time() > due:  # a slow request: no catching up in a burst
                due = trio.current_time()
            with trio.move_on_at(due):
                await stop.wait()
    done.set()
