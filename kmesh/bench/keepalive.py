"""``kmesh bench lb --keepalive``: HTTP/1.1 requests over persistent connections, split per connection and per request.

kube-proxy in its iptables, nftables and IPVS modes picks an endpoint when a
connection opens (conntrack, or IPVS's connection table, remembers the
choice), so every request of a keep-alive connection goes where its first one
went: the proxy balances connections, not requests (kubernetes#37932,
#38456). This sends ``plan.requests`` ``GET /hostname`` (``--path``) requests over
``plan.concurrency`` connections open at the same time, one request after the
other on each (h11 for HTTP/1.1), and keeps what each connection got.

A server that closes a connection on the way — ``Connection: close``, a
reset, or an idle keep-alive connection it dropped — makes that client open
a new one: a reconnect, which is a connection of its own in the report. A
request that finds its reused connection already closed by the server, before
any byte of an answer, is sent again on the new one (what HTTP clients do
with an idempotent GET); any other failure is the request's error.

The judge looks at connections: each connection's first endpoint is one draw
of the proxy's choice, so ``uniform`` (``sticky``, ``weights``) is tested
over those; the per-request split is shown beside it. Through a Gateway or
the ingress controller (``--via``) an L7 proxy picks an endpoint per request:
one connection's requests spread over several endpoints (``spread``), and
the judge looks at the requests instead.

``send_keepalive`` only talks to sockets; ``tally_connections`` and
``judge_keepalive`` are pure.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import h11
import trio

from kmesh.bench.lb import (
    MAX_ANSWER,
    Backend,
    LbResult,
    Outcome,
    Plan,
    Probe,
    Tally,
    _error_name,
    _named,
    _open,
    judge,
    tally,
    warm_up,
)
from kmesh.bench.stats import Latency

# why a connection ended before its client was done with it (None: kept open until the client closed it)
ENDED = {
    "close": "Connection: close",
    "eof": "closed by the server",
    "reset": "reset",
}


@dataclass
class Connection:
    """One TCP connection (or attempt to open one) and the requests it carried, in order."""

    index: int  # in the order connections were opened, from 0
    client: int  # which of the concurrent clients opened it
    outcomes: list[Outcome] = field(default_factory=list)
    ended: str | None = None  # "close", "eof", "reset", or the error that ended it; None: kept to the end


def quotas(requests: int, clients: int) -> list[int]:
    """How many requests each of ``clients`` sends: ``requests`` spread evenly, the first ones one more."""
    base, extra = divmod(requests, clients)
    return [base + (i < extra) for i in range(clients)]


# ------------------------------------------------------------------ sending


class _Dropped(Exception):
    """The connection ended before any byte of the answer: ``kind`` is "eof" or "reset"."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class _NotHTTP(Exception):
    """An answer that is not an HTTP response (or too long to be a name)."""


async def _connect(probe: Probe) -> trio.SocketStream:
    sock = await _open(probe, socket.SOCK_STREAM)
    try:
        await sock.connect((probe.host, probe.port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def _get(stream: trio.SocketStream, conn: h11.Connection, host: str, path: str) -> tuple[int, bytes]:
    """One ``GET path`` on an open connection: (status, body)."""
    got = False
    try:
        req = h11.Request(method="GET", target=path, headers=[("Host", host), ("User-Agent", "kmesh-bench")])
        await stream.send_all(conn.send(req) + conn.send(h11.EndOfMessage()))
        status, body = 0, bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data and not got:
                    raise _Dropped("eof")
                got = True
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_ANSWER:
                    raise _NotHTTP("answer too long")
            elif isinstance(event, h11.EndOfMessage):
                return status, bytes(body)
    except h11.RemoteProtocolError:
        raise _NotHTTP("not HTTP") from None
    except (OSError, trio.BrokenResourceError) as exc:
        if not got and _error_name(exc) == "reset":
            raise _Dropped("reset") from None
        raise


async def _client(probe: Probe, client: int, quota: int, conns: list[Connection],
                  on_outcome: Callable[[Outcome], None] | None) -> None:
    """Send ``quota`` requests one after the other, over one connection while the server keeps it open."""
    host = probe.http_host or probe.host
    stream: trio.SocketStream | None = None
    h: h11.Connection | None = None
    record: Connection | None = None
    sent = 0

    async def drop(why: str | None) -> None:
        nonlocal stream, record
        if record is not None:
            record.ended = why
        if stream is not None:
            await trio.aclose_forcefully(stream)
        stream, record = None, None

    try:
        while sent < quota:
            reused = stream is not None
            if record is None:
                record = Connection(len(conns), client)
                conns.append(record)
            start = time.perf_counter()
            error: str | None = None
            answer = ""
            try:
                with trio.fail_after(probe.timeout):
                    if stream is None:
                        stream, h = await _connect(probe), h11.Connection(h11.CLIENT)
                    assert h is not None
                    status, body = await _get(stream, h, host, probe.path)
            except _Dropped as exc:
                if reused:  # the server had closed this idle connection: the same request on a new one
                    await drop(exc.kind)
                    continue
                error, ended = ("empty" if exc.kind == "eof" else exc.kind), exc.kind
            except _NotHTTP as exc:
                error = ended = str(exc)
            except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
                error = ended = _error_name(exc)
            else:
                answer = _named(body.decode(errors="replace").strip())
                if status != 200:
                    error = f"http {status}"
                elif not answer:
                    error = "empty"
                assert h is not None
                if h.our_state is h11.DONE and h.their_state is h11.DONE:
                    h.start_next_cycle()
                    ended = None
                else:
                    ended = "close"
            out = Outcome(None if error else answer, error, time.perf_counter() - start)
            record.outcomes.append(out)
            sent += 1
            if on_outcome is not None:
                on_outcome(out)
            if ended is not None:
                await drop(ended)
    finally:
        with trio.CancelScope(shield=True):
            await drop(record.ended if record is not None else None)


async def send_keepalive(probe: Probe, per_client: Sequence[int],
                         on_outcome: Callable[[Outcome], None] | None = None) -> list[Connection]:
    """One client per entry of ``per_client``, all at once, each sending that many requests over keep-alive
    connections; every connection opened (or tried), in the order they were opened."""
    if any(n < 0 for n in per_client):
        raise ValueError("requests per client must be >= 0")
    conns: list[Connection] = []
    async with trio.open_nursery() as n:
        for i, quota in enumerate(per_client):
            n.start_soon(_client, probe, i, quota, conns, on_outcome)
    return conns


# ------------------------------------------------------------------ counting and judging


@dataclass(frozen=True)
class ConnectionRow:
    """What one connection got: answers per endpoint (answers naming none by their text) and errors."""

    connection: int
    client: int
    requests: int
    endpoints: dict[str, int]
    errors: dict[str, int]
    first: str | None  # the endpoint (or unknown answer) of its first answered request
    ended: str | None

    @property
    def answered(self) -> int:
        """Requests of this connection that got an answer."""
        return sum(self.endpoints.values())

    @property
    def pinned(self) -> bool:
        """Two or more answers, all from one endpoint."""
        return self.answered >= 2 and len(self.endpoints) == 1

    def as_dict(self) -> dict[str, Any]:
        """The ``per_connection`` entry of ``--json``."""
        return {"connection": self.connection, "client": self.client, "requests": self.requests,
                "endpoints": dict(self.endpoints), "errors": dict(self.errors), "pinned": self.pinned,
                "ended": self.ended}


@dataclass(frozen=True)
class ConnectionTally:
    """Every connection's row, and the connections counted by their first endpoint (what the judge tests)."""

    rows: tuple[ConnectionRow, ...]
    first: Tally

    @property
    def reconnects(self) -> int:
        """Connections a client opened after its first (the server closed or reset the one before)."""
        return len(self.rows) - len({r.client for r in self.rows})

    @property
    def pinned(self) -> int:
        """Connections whose two or more answers all came from one endpoint."""
        return sum(r.pinned for r in self.rows)

    @property
    def multi(self) -> int:
        """Connections with two or more answers (those that can show pinning or not)."""
        return sum(r.answered >= 2 for r in self.rows)

    @property
    def spread(self) -> int:
        """Connections whose answers came from two or more endpoints (a proxy balancing per request)."""
        return sum(len(r.endpoints) >= 2 for r in self.rows)

    def ended(self) -> dict[str, int]:
        """How many connections ended early, by why."""
        out: dict[str, int] = {}
        for r in self.rows:
            if r.ended is not None:
                out[r.ended] = out.get(r.ended, 0) + 1
        return out


def tally_connections(endpoints: Sequence[Backend], conns: Sequence[Connection]) -> ConnectionTally:
    """Count each connection's answers per endpoint (as ``tally`` maps answers) and its first endpoint."""
    rows: list[ConnectionRow] = []
    firsts: list[Outcome] = []
    for c in conns:
        t = tally(endpoints, c.outcomes)
        first = next((o for o in c.outcomes if o.answer is not None), None)
        if first is not None:
            firsts.append(first)
        first_name = None if first is None else next(k for k, v in tally(endpoints, [first]).cells().items() if v)
        rows.append(ConnectionRow(c.index, c.client, len(c.outcomes), {k: v for k, v in t.cells().items() if v},
                                  dict(t.errors), first_name, c.ended))
    rows.sort(key=lambda r: r.connection)
    return ConnectionTally(tuple(rows), tally(endpoints, firsts))


@dataclass(frozen=True)
class KeepaliveResult(LbResult):
    """``LbResult`` with ``tally`` per request and ``verdict`` over connections, plus the connections."""

    connections: ConnectionTally

    def as_dict(self) -> dict[str, Any]:
        """The usual split (per request, expected shares and test over connections) plus ``per_connection``."""
        d = super().as_dict()
        first = self.connections.first.cells()
        for e in d["endpoints"]:
            e["connections"] = first.get(e["name"], 0)
        ct = self.connections
        d.update({"keepalive": True, "judged": judged_over(self.plan), "connections": len(ct.rows),
                  "reconnects": ct.reconnects, "pinned": ct.pinned, "pinned_of": ct.multi, "spread": ct.spread,
                  "per_connection": [r.as_dict() for r in ct.rows]})
        return d


def judged_over(plan: Plan) -> str:
    """What a keep-alive run is judged over: ``connections`` through kube-proxy (it picks an endpoint per
    connection: each one's first endpoint is one draw), ``requests`` through a Gateway or the ingress controller
    (``--via``: an L7 proxy picks per request)."""
    return "requests" if plan.via is not None else "connections"


def judge_keepalive(plan: Plan, conns: Sequence[Connection], duration: float) -> KeepaliveResult:
    """Tally requests and connections; judge the plan's expectation over the connections' first endpoints (over the
    requests with ``--via``), per Service when the expectation weighs Services."""
    t = tally(plan.target.endpoints, [o for c in conns for o in c.outcomes])
    ct = tally_connections(plan.target.endpoints, conns)
    basis = t if judged_over(plan) == "requests" else ct.first
    v = judge(plan.cells(basis), plan.shares, plan.expect, plan.alpha)
    v = replace(v, reason=f"over {basis.answered} {judged_over(plan)[:-1]}(s): {v.reason}")
    return KeepaliveResult(plan, t, Latency.of(t.latencies), v, duration, ct)


async def execute_keepalive(plan: Plan, on_outcome: Callable[[Outcome], None] | None = None,
                            warmup: float = 0.0) -> KeepaliveResult:
    """Send the plan's requests over ``plan.concurrency`` keep-alive connections and judge them."""
    await warm_up(plan.probe, warmup)
    start = time.perf_counter()
    conns = await send_keepalive(plan.probe, quotas(plan.requests, plan.concurrency), on_outcome)
    return judge_keepalive(plan, conns, time.perf_counter() - start)
