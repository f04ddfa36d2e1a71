"""Writes to a SQLite store forever, printing each acknowledged write.

Used by test_sqlite_durability: ``python -m tests.store.sqlite_writer PATH``
prints ``<revision> <key>`` after each create returns, until it is killed.
"""

from __future__ import annotations

import sys

import trio

from kmesh.store.sqlite import SqliteStore


async def main(path: str) -> None:
    async with SqliteStore(path) as store:
        i = 0
        while True:
            k = f"/registry/configmaps/default/c{i}"
            obj = await store.create(k, {"kind": "ConfigMap", "metadata": {"name": f"c{i}"}, "data": {"i": str(i)}})
            sys.stdout.write(f"{obj['metadata']['resourceVersion']} {k}\n")
            sys.stdout.flush()
            i += 1


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
