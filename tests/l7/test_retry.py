"""Retries of a route (HTTPRoute ``rules[].retry``): to another endpoint, with the body again, bounded by the
Service's retry budget; the budget's own arithmetic. (Upstream's retry conformance tables run in
tests/gateway/test_conformance.py.)"""

from __future__ import annotations

import functools

import httpx
import trio

from kmesh.l7.model import Endpoint, Retry
from kmesh.l7.retrybudget import RetryBudget
from tests.l7.support import Backend, simple_config, start_engine, url


def test_budget_allows_the_larger_of_its_minimum_and_its_share() -> None:
    budget = RetryBudget()
    for _ in range(10):
        budget.start()
    assert [budget.try_retry(False) for _ in range(4)] == [True, True, True, False]  # 20 % of 10 < 3: 3
    assert budget.try_retry(True)  # a request that holds a retry goes on
    budget.end(True)
    budget.start()
    assert budget.try_retry(False)
    for _ in range(90):
        budget.start()
    allowed = sum(budget.try_retry(False) for _ in range(30))
    assert budget.retrying == 20 and allowed == 17  # 20 % of 100 in flight
    assert (budget.retried, budget.refused) == (22, 14)


async def _failing(status: int, seen: list[bytes], gate: trio.Event | None,
                   stream: trio.SocketStream, arrived: tuple[int, trio.Event] | None = None) -> None:
    """A backend that answers every request with ``status`` (once ``gate`` is set), keeping what it was sent;
    ``arrived`` (n, event): the event is set once n requests have come."""
    async with stream:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        seen.append(data)
        if arrived is not None and len(seen) >= arrived[0]:
            arrived[1].set()
        if gate is not None:
            await gate.wait()
        await stream.send_all(b"HTTP/1.1 %d Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % status)


async def _serve(nursery: trio.Nursery, handler: object) -> int:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def test_a_failed_answer_is_retried_on_another_endpoint_with_its_body(nursery: trio.Nursery) -> None:
    good = await Backend("good").start(nursery)
    seen: list[bytes] = []
    bad = await _serve(nursery, functools.partial(_failing, 503, seen, None))
    engine = await start_engine(nursery, simple_config("svc", rule_kw={  # type: ignore[arg-type]
        "retry": Retry(codes=frozenset({503}), attempts=1, backoff=0.001)}))
    engine.set_endpoints("default", "svc", 80, [Endpoint("127.0.0.1", bad), good.endpoint()])
    async with httpx.AsyncClient() as client:
        replies = [await client.post(url(engine, path="/upload"), content=b"x" * 1000) for _ in range(8)]
    assert [r.status_code for r in replies] == [200] * 8
    assert all(r.json()["size"] == 1000 for r in replies)  # the body went again, whole
    assert len(seen) >= 1 and all(b"Content-Length: 1000" in s for s in seen)
    assert engine.retry_budget(("default", "svc", 80)).retried == len(seen)


async def test_without_a_retry_policy_or_past_its_attempts_the_failure_goes_to_the_client(
        nursery: trio.Nursery) -> None:
    seen: list[bytes] = []
    bad = await _serve(nursery, functools.partial(_failing, 500, seen, None))
    engine = await start_engine(nursery, simple_config("svc", rule_kw={  # type: ignore[arg-type]
        "retry": Retry(codes=frozenset({500}), attempts=2, backoff=0.001)}))
    engine.set_endpoints("default", "svc", 80, [Endpoint("127.0.0.1", bad)])
    async with httpx.AsyncClient() as client:
        assert (await client.get(url(engine))).status_code == 500
    assert len(seen) == 3  # the request and its 2 retries, all to the only endpoint
    plain = await start_engine(nursery, simple_config("svc"))  # type: ignore[arg-type]
    plain.set_endpoints("default", "svc", 80, [Endpoint("127.0.0.1", bad)])
    async with httpx.AsyncClient() as client:
        assert (await client.get(url(plain))).status_code == 500
    assert len(seen) == 4


async def test_the_budget_bounds_retries_of_many_failing_requests(nursery: trio.Nursery) -> None:
    """20 requests in flight all fail at once: the budget lets max(3, 20 % of those in flight) retry."""
    seen: list[bytes] = []
    gate, all_in = trio.Event(), trio.Event()
    bad = await _serve(nursery, functools.partial(_failing, 503, seen, gate, arrived=(20, all_in)))
    engine = await start_engine(nursery, simple_config("svc", rule_kw={  # type: ignore[arg-type]
        "retry": Retry(codes=frozenset({503}), attempts=1, backoff=0.001)}))
    engine.set_endpoints("default", "svc", 80, [Endpoint("127.0.0.1", bad)])
    budget = engine.retry_budget(("default", "svc", 80))
    codes: list[int] = []
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        async def one() -> None:
            codes.append((await client.get(url(engine))).status_code)

        async with trio.open_nursery() as n:
            for _ in range(20):
                n.start_soon(one)
            with trio.fail_after(20):
                await all_in.wait()
            assert budget.active == 20
            gate.set()
    assert codes == [503] * 20
    assert 3 <= budget.retried <= 4 and budget.retried + budget.refused == 20
    assert len(seen) == 20 + budget.retried
