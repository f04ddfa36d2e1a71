"""Small trio helpers for waiting on whichever of several things happens first."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio


async def wait_any(*waits: Callable[[], Awaitable[object]]) -> int:
    """Run the waits concurrently; return the index of the first to finish (the others are cancelled)."""
    first = -1
    async with trio.open_nursery() as n:
        for i, fn in enumerate(waits):

            async def one(i: int = i, fn: Callable[[], Awaitable[object]] = fn) -> None:
                nonlocal first
                await fn()
                if first < 0:
                    first = i
                n.cancel_scope.cancel()

            n.start_soon(one)
    return first


def sleeper(seconds: float) -> Callable[[], Awaitable[None]]:
    """A wait that ends after ``seconds``."""

    async def wait() -> None:
        await trio.sleep(max(0.0, seconds))

    return wait
