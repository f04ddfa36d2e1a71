"""Measure store create rates from one trio task: ``python -m kmesh.store.bench``.

Prints creates/s for each backend and its ratio to the memory store
measured in the same run (the anchor), so numbers from different machines
compare. etcd is measured only when an ``etcd`` binary is on PATH (a
throwaway one is started, data in --etcd-dir or a temp dir).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import trio

from kmesh.store import Store, open_store
from kmesh.store.etcd_server import EtcdServer


def _pod(i: int) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"p{i}", "namespace": "default", "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "kmesh/echo", "ports": [{"containerPort": 8080}]}]},
    }


async def creates_per_second(store: Store, n: int) -> float:
    """Create ``n`` pods one after another; return the rate."""
    start = time.perf_counter()
    for i in range(n):
        await store.create(f"/registry/pods/default/p{i}", _pod(i))
    return n / (time.perf_counter() - start)


async def main(n: int, etcd_n: int, etcd_dir: str | None) -> None:
    """Run every available backend and print its rate and ratio to memory."""
    results: list[tuple[str, float]] = []
    async with open_store("memory://") as mem:
        results.append(("memory", await creates_per_second(mem, n)))
    with tempfile.TemporaryDirectory() as tmp:
        async with open_store(str(Path(tmp) / "bench.db")) as lite:
            results.append(("sqlite", await creates_per_second(lite, n)))
    if shutil.which("etcd"):
        async with EtcdServer(tmp_root=etcd_dir, die_with_parent=True) as server:
            async with open_store(server.url, prefix="/bench") as etcd:
                results.append(("etcd", await creates_per_second(etcd, etcd_n)))
    anchor = results[0][1]
    for name, rate in results:
        print(f"{name:8} {rate:10.0f} creates/s   {rate / anchor:6.3f} x memory")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20_000, help="creates for memory and SQLite")
    parser.add_argument("--etcd-n", type=int, default=2_000, help="creates for etcd")
    parser.add_argument("--etcd-dir", default=None, help="where etcd keeps its data (default: a temp dir)")
    args = parser.parse_args()
    trio.run(main, args.n, args.etcd_n, args.etcd_dir)
