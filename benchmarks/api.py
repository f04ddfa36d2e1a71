#!/usr/bin/env python3
"""API server throughput and watch latency on SQLite and etcd, beside etcd's own put rate.

For each store, a `kmesh server` process is started on a free loopback port;
this process opens W watchers on ConfigMaps and creates N ConfigMaps with C
concurrent writers. It prints creates/s and the delay from each create's
acknowledgement to its arrival at every watcher (p50/p99), and, as the anchor
measured in the same run, the raw put rate of the same etcd through its v3
JSON gateway at the same concurrency. `--plot FILE.png` draws the latency
distributions.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kmesh.client.kubeconfig import load_kubeconfig  # noqa: E402
from kmesh.lab.procs import start_until, stop_process  # noqa: E402
from kmesh.store.etcd_server import EtcdServer  # noqa: E402

console = Console()


@dataclass
class Result:
    """What one store's run measured."""

    store: str
    creates: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    missing: int = 0
    server_cpu: float = float("nan")
    client_cpu: float = float("nan")

    @property
    def rate(self) -> float:
        return self.creates / self.seconds

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(q * len(s)))]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def start_server(data_dir: Path, store_url: str) -> tuple[trio.Process, str, httpx.AsyncClient]:
    """Start `kmesh server` on a free port; return it with an HTTP client for it."""
    cmd = [sys.executable, "-m", "kmesh.cli", "server", "--data-dir", str(data_dir), "--port", "0"]
    if store_url:
        cmd += ["--store", store_url]
    proc = await start_until(cmd, b"API server on", data_dir / "server.log")
    creds = load_kubeconfig(data_dir / "kubeconfig.yaml")
    ctx = ssl.create_default_context(cadata=creds.ca_pem.decode())
    http = httpx.AsyncClient(
        base_url=creds.server, verify=ctx, headers={"Authorization": f"Bearer {creds.token}"},
        limits=httpx.Limits(max_connections=None), timeout=httpx.Timeout(60.0),
    )
    return proc, creds.server, http


async def run_store(label: str, store_url: str, n: int, writers: int, watchers: int, progress: Progress) -> Result:
    with tempfile.TemporaryDirectory(prefix="kmesh-bench-") as tmp:
        proc, url, http = await start_server(Path(tmp), store_url)
        try:
            acked: dict[str, float] = {}
            arrivals: list[float] = []
            counts = [0] * watchers
            done = trio.Event()
            ready = [trio.Event() for _ in range(watchers)]
            rv = (await http.get("/api/v1/namespaces/default/configmaps")).json()["metadata"]["resourceVersion"]
            server_cpu0, client_cpu0 = cpu_seconds(proc.pid), time.process_time()

            async def watcher(i: int) -> None:
                params = {"watch": "1", "resourceVersion": rv}
                async with http.stream("GET", "/api/v1/namespaces/default/configmaps", params=params,
                                       timeout=httpx.Timeout(None)) as resp:
                    ready[i].set()
                    async for line in resp.aiter_lines():
                        if not line:
                            continue
                        now = time.perf_counter()
                        ev = json.loads(line)
                        name = ev["object"]["metadata"]["name"]
                        t0 = acked.get(name)
                        if t0 is not None:
                            arrivals.append(now - t0)
                        counts[i] += 1
                        if counts[i] >= n and all(c >= n for c in counts):
                            done.set()

            task = progress.add_task(f"{label}: creates", total=n)
            async with trio.open_nursery() as nursery:
                for i in range(watchers):
                    nursery.start_soon(watcher, i)
                for e in ready:
                    await e.wait()
                next_i = iter(range(n))
                start = time.perf_counter()

                async def writer() -> None:
                    for i in next_i:
                        name = f"cm-{i}"
                        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"i": str(i)}}
                        r = await http.post("/api/v1/namespaces/default/configmaps", json=body)
                        if r.status_code != 201:
                            raise RuntimeError(f"create failed: {r.status_code} {r.text[:200]}")
                        acked.setdefault(name, time.perf_counter())
                        progress.advance(task)

                async with trio.open_nursery() as wn:
                    for _ in range(writers):
                        wn.start_soon(writer)
                elapsed = time.perf_counter() - start
                with trio.move_on_after(60):
                    await done.wait()
                nursery.cancel_scope.cancel()
            missing = sum(max(0, n - c) for c in counts)
            res = Result(label, n, elapsed, [a for a in arrivals if a >= 0], missing)
            res.server_cpu = cpu_seconds(proc.pid) - server_cpu0
            res.client_cpu = time.process_time() - client_cpu0
            return res
        finally:
            await http.aclose()
            await stop_process(proc)


async def etcd_put_rate(endpoint: str, n: int, writers: int, progress: Progress) -> Result:
    async with httpx.AsyncClient(base_url=endpoint, limits=httpx.Limits(max_connections=None)) as http:
        task = progress.add_task("etcd gateway: raw puts", total=n)
        it = iter(range(n))
        value = base64.b64encode(json.dumps({"data": {"i": "0" * 8}}).encode()).decode()
        start = time.perf_counter()

        async def writer() -> None:
            for i in it:
                key = base64.b64encode(f"/bench/raw/{i}".encode()).decode()
                r = await http.post("/v3/kv/put", json={"key": key, "value": value})
                r.raise_for_status()
                progress.advance(task)

        async with trio.open_nursery() as nursery:
            for _ in range(writers):
                nursery.start_soon(writer)
        return Result("etcd raw put (anchor)", n, time.perf_counter() - start)


def plot(results: list[Result], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in results:
        if r.latencies:
            ax.hist([x * 1000 for x in r.latencies], bins=60, histtype="step", label=f"{r.store} ({r.rate:.0f} creates/s)")
    ax.set_xlabel("create acknowledged → event at watcher (ms)")
    ax.set_ylabel("events")
    ax.set_yscale("log")
    ax.set_title("kmesh API: watch-event latency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    console.print(f"plot written to {path}")


async def main(args: argparse.Namespace) -> None:
    results: list[Result] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
        results.append(await run_store("sqlite", "", args.creates, args.writers, args.watchers, progress))
        if shutil.which("etcd") and not args.no_etcd:
            with tempfile.TemporaryDirectory(prefix="kmesh-bench-etcd-") as d, EtcdServer(Path(d)) as etcd:
                results.append(await run_store("etcd", etcd.url, args.creates, args.writers, args.watchers, progress))
                results.append(await etcd_put_rate(etcd.url, args.creates, args.writers, progress))
        else:
            console.print("[yellow]etcd not found: etcd rows skipped[/]")
    t = Table(title=f"{args.creates} creates, {args.writers} writers, {args.watchers} watchers")
    for col in ("store", "creates/s", "watch p50 (ms)", "watch p99 (ms)", "events missing", "server CPU s", "bench CPU s"):
        t.add_column(col, justify="right" if col != "store" else "left")
    for r in results:
        t.add_row(r.store, f"{r.rate:,.0f}",
                  f"{r.pct(0.5) * 1000:.1f}" if r.latencies else "-",
                  f"{r.pct(0.99) * 1000:.1f}" if r.latencies else "-",
                  str(r.missing) if r.latencies else "-",
                  f"{r.server_cpu:.1f}" if r.latencies else "-", f"{r.client_cpu:.1f}" if r.latencies else "-")
    console.print(t)
    anchor = next((r for r in results if r.store.startswith("etcd raw")), None)
    if anchor:
        for r in results:
            if r is not anchor:
                console.print(f"ratio {r.store} creates/s ÷ etcd raw puts/s = {r.rate / anchor.rate:.2f}")
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--creates", type=int, default=3000)
    p.add_argument("--writers", type=int, default=16)
    p.add_argument("--watchers", type=int, default=100)
    p.add_argument("--no-etcd", action="store_true")
    p.add_argument("--plot", metavar="PNG")
    trio.run(main, p.parse_args())
