"""The shared work queue: dedupe, no concurrent work on one key, retries with backoff."""

from __future__ import annotations

import trio
import trio.testing

from kmesh.client.workqueue import WorkQueue


async def test_dedupes_and_requeues_keys_added_while_processing() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    k = await q.get()
    assert k == "a"
    q.add("a")  # added while being processed: queued again only after done
    assert len(q) == 1
    q.done("a")
    assert len(q) == 2
    assert [await q.get(), await q.get()] == ["b", "a"]


async def test_failures_retry_with_growing_backoff(autojump_clock: trio.testing.MockClock) -> None:
    q: WorkQueue[str] = WorkQueue(base_delay=1.0, max_delay=8.0)
    attempts: list[float] = []
    finished = trio.Event()

    async def handler(key: str) -> None:
        attempts.append(trio.current_time())
        if len(attempts) < 4:
            raise RuntimeError("not yet")
        finished.set()

    async with trio.open_nursery() as n:
        n.start_soon(q.run, handler, 2)
        q.add("k")
        await finished.wait()
        n.cancel_scope.cancel()
    gaps = [round(b - a, 3) for a, b in zip(attempts, attempts[1:])]
    assert gaps == [1.0, 2.0, 4.0]
    assert q.failures("k") == 0  # forgotten after success


async def test_one_key_is_never_worked_on_twice_at_once() -> None:
    q: WorkQueue[int] = WorkQueue()
    active: set[int] = set()
    overlaps = 0
    done = 0
    all_done = trio.Event()

    async def handler(key: int) -> None:
        nonlocal overlaps, done
        if key in active:
            overlaps += 1
        active.add(key)
        await trio.sleep(0)
        for _ in range(3):
            q.add(key)  # re-adds while busy must not run concurrently
            await trio.sleep(0)
        active.discard(key)
        done += 1
        if done >= 50:
            all_done.set()

    async with trio.open_nursery() as n:
        n.start_soon(q.run, handler, 8)
        for i in range(5):
            q.add(i)
        await all_done.wait()
        n.cancel_scope.cancel()
    assert overlaps == 0


async def test_metrics_count_as_client_go_does() -> None:
    from prometheus_client import CollectorRegistry

    from kmesh.client.workqueue_metrics import WorkqueueMetrics

    reg = CollectorRegistry()
    q: WorkQueue[str] = WorkQueue(metrics=WorkqueueMetrics(reg).for_queue("things"))

    def val(name: str) -> float:
        return reg.get_sample_value(name, {"name": "things"}) or 0.0

    q.add("a")
    q.add("a")  # already waiting: not an add
    assert (val("workqueue_adds_total"), val("workqueue_depth")) == (1, 1)
    assert await q.get() == "a"
    assert val("workqueue_depth") == 0 and val("workqueue_queue_duration_seconds_count") == 1
    assert val("workqueue_unfinished_work_seconds") >= 0
    q.add("a")  # while processing: counted, waits for done
    assert (val("workqueue_adds_total"), val("workqueue_depth"), len(q)) == (2, 1, 0)
    q.done("a")
    assert val("workqueue_work_duration_seconds_count") == 1 and len(q) == 1
    assert await q.get() == "a"
    q.add_rate_limited("a")  # a delayed add is a retry
    q.done("a")
    assert val("workqueue_retries_total") == 1 and val("workqueue_work_duration_seconds_count") == 2
    assert val("workqueue_depth") == 0 and q.delayed() == 1 and q.waiting("a")
