"""Periodic compaction, as kube-apiserver does it.

Every ``interval`` the store is compacted to the revision seen at the
previous tick, so history always covers at least one interval: a watcher
that re-watches from a list made less than ``interval`` ago never gets
Gone.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import trio

from kmesh.store.base import Store, StoreError

log = logging.getLogger(__name__)


async def run_compactor(store: Store, interval: float = 300.0) -> NoReturn:
    """Compact ``store`` every ``interval`` seconds to the previous tick's revision; runs until cancelled."""
    previous: int | None = None
    while True:
        await trio.sleep(interval)  # a period, not a wait for an event
        try:
            if previous is not None:
                await store.compact(previous)
                log.debug("compacted store to revision %d", previous)
            previous = await store.current_revision()
        except StoreError as e:  # e.g. etcd briefly unavailable: try again next tick
            log.warning("store compaction failed: %s", e)
