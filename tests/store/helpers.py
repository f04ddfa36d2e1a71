"""Small helpers shared by the store tests."""

from __future__ import annotations

from typing import AsyncIterator

import trio

from kmesh.store import Event, Obj

PREFIX = "/registry/configmaps/default/"


def cm(name: str, **data: str) -> Obj:
    """A ConfigMap object named ``name``."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": dict(data),
    }


def key(name: str) -> str:
    """The store key of ConfigMap ``name`` in ``default``."""
    return PREFIX + name


def rv(obj: Obj) -> int:
    """An object's resourceVersion as an int."""
    return int(obj["metadata"]["resourceVersion"])


async def take(events: AsyncIterator[Event], n: int, timeout: float = 20.0) -> list[Event]:
    """The next ``n`` events (fails after ``timeout`` seconds)."""
    out: list[Event] = []
    with trio.fail_after(timeout):
        while len(out) < n:
            out.append(await events.__anext__())
    return out


def summary(events: list[Event]) -> list[tuple[str, str, int]]:
    """(type, key, revision) of each event, for comparisons."""
    return [(ev.type, ev.key, ev.revision) for ev in events]


def check_event(ev: Event) -> None:
    """Every event carries its revision as the object's resourceVersion."""
    assert rv(ev.obj) == ev.revision


