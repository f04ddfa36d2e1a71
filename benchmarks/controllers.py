#!/usr/bin/env python3
"""Endpoint programming latency: from a pod turning Ready to its EndpointSlice saying so.

Starts `kmesh server` and `kmesh controllers` as separate processes, creates
S Services and P pods (P/S per Service, spread over fake nodes), gives every
pod an IP the way a kubelet does (status subresource), then flips a sample of
pods to Ready one by one and measures, for each, the time from the status
write's acknowledgement to the moment a watcher sees the EndpointSlice with
that endpoint ready. Printed beside upstream's e2e bound for Service
programming (p50 <= 20 s); kmesh's goal is p99 <= 1 s. `--plot FILE.png`
draws the distribution.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import tempfile
import time
from pathlib import Path

import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kmesh.client.api import Client  # noqa: E402
from kmesh.client.informer import Informer  # noqa: E402
from kmesh.lab.datadir import SIM_CLUSTER_CIDR, SIM_SERVICE_CIDR  # noqa: E402
from kmesh.lab.procs import start_until, stop_process  # noqa: E402

console = Console()
UPSTREAM_P50_BOUND = 20.0


def pod(name: str, app: str, node: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "registry.k8s.io/e2e-test-images/agnhost:2.39",
                                                    "ports": [{"containerPort": 9376}]}]},
    }


def status(ip: str, node_ip: str, ready: bool) -> dict:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    flag = "True" if ready else "False"
    return {"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": node_ip,
        "conditions": [{"type": t, "status": flag, "lastTransitionTime": now} for t in ("Ready", "ContainersReady")],
    }}


async def fan_out(items: list, worker, concurrency: int, progress: Progress, label: str) -> None:
    task = progress.add_task(label, total=len(items))
    it = iter(items)

    async def run() -> None:
        for x in it:
            await worker(x)
            progress.advance(task)

    async with trio.open_nursery() as n:
        for _ in range(concurrency):
            n.start_soon(run)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="kmesh-bench-ctrl-") as tmp:
        d = Path(tmp)
        py = [sys.executable, "-m", "kmesh.cli"]
        server = await start_until(py + ["server", "--data-dir", str(d), "--port", "0", "--service-cidr", SIM_SERVICE_CIDR,
                                   "--loopback-ok"], b"API server on", d / "server.log")
        ctrl = None
        try:
            ctrl = await start_until(py + ["controllers", "--kubeconfig", str(d / "kubeconfig.yaml"), "--cluster-cidr",
                                     SIM_CLUSTER_CIDR, "--service-cidr", SIM_SERVICE_CIDR, "--metrics-port", "0",
                                     "--scheduler-metrics-port", "0"], b"controllers running", d / "ctrl.log")
            async with Client.from_kubeconfig(d / "kubeconfig.yaml") as c:
                await run_bench(c, args)
        finally:
            if ctrl is not None:
                await stop_process(ctrl)
            await stop_process(server)


async def run_bench(c: Client, args: argparse.Namespace) -> None:
    per = args.pods // args.services
    nodes = [f"node-{i + 1}" for i in range(args.nodes)]
    ips = ipaddress.ip_network(SIM_CLUSTER_CIDR).hosts()
    next(ips)
    plan = [(f"s{s}-p{p}", f"s{s}", nodes[(s * per + p) % len(nodes)], str(next(ips)))
            for s in range(args.services) for p in range(per)]
    latencies: list[float] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        services = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{s}", "namespace": "default"},
                     "spec": {"selector": {"app": f"s{s}"}, "ports": [{"port": 80, "targetPort": 9376}]}}
                    for s in range(args.services)]
        await fan_out(services, c.create, args.concurrency, progress, "services")
        await fan_out(plan, lambda x: c.create(pod(x[0], x[1], x[2])), args.concurrency, progress, "pods")
        await fan_out(plan, lambda x: c.patch("Pod", x[0], status(x[3], "127.1.0.1", False), "default",
                                              subresource="status"), args.concurrency, progress, "pod IPs (not ready)")

        # Wait for the slices to hold every pod (not ready), then flip a sample to Ready one at a time.
        slices = Informer(c, "EndpointSlice", namespace="default")
        synced = progress.add_task("slices hold every pod", total=len(plan))

        def count(inf: Informer) -> bool:
            n = sum(len(s.get("endpoints") or []) for s in inf.list() if s["metadata"]["name"] != "kubernetes")
            progress.update(synced, completed=n)
            return n >= len(plan)

        async with trio.open_nursery() as n:
            await n.start(slices.run)
            with trio.fail_after(600):
                await slices.wait_for(count)
            n.cancel_scope.cancel()
        rv = slices.resource_version
        sample = plan[:: max(1, len(plan) // args.sample)][: args.sample]
        task = progress.add_task("readiness flips", total=len(sample))
        waiting: dict[str, trio.Event] = {}
        seen_at: dict[str, float] = {}

        async def watch_slices(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with c.watch("EndpointSlice", "default", resource_version=rv) as events:
                task_status.started()
                async for etype, obj in events:
                    if etype == "BOOKMARK":
                        continue
                    now = time.perf_counter()
                    for e in obj.get("endpoints") or []:
                        name = (e.get("targetRef") or {}).get("name") or ""
                        if name in waiting and (e.get("conditions") or {}).get("ready"):
                            seen_at[name] = now
                            waiting.pop(name).set()

        async with trio.open_nursery() as n:
            await n.start(watch_slices)
            for name, _, _, ip in sample:
                ev = waiting[name] = trio.Event()
                await c.patch("Pod", name, status(ip, "127.1.0.1", True), "default", subresource="status")
                acked = time.perf_counter()
                with trio.move_on_after(30):
                    await ev.wait()
                if name in seen_at:
                    latencies.append(max(0.0, seen_at[name] - acked))
                progress.advance(task)
            n.cancel_scope.cancel()
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")

    t = Table(title=f"{args.services} Services, {len(plan)} pods: pod Ready → EndpointSlice updated")
    for col in ("", "p50 (s)", "p99 (s)", "max (s)", "samples"):
        t.add_column(col, justify="right")
    t.add_row("kmesh", f"{pct(0.5):.3f}", f"{pct(0.99):.3f}", f"{latencies[-1] if latencies else float('nan'):.3f}",
              f"{len(latencies)}/{len(sample)}")
    t.add_row("upstream e2e bound", f"{UPSTREAM_P50_BOUND:.0f}", "-", "-", "-")
    console.print(t)
    console.print(f"ratio upstream p50 bound ÷ kmesh p50 = {UPSTREAM_P50_BOUND / pct(0.5):.0f}x; goal p99 <= 1 s: "
                  + ("[green]met[/]" if pct(0.99) <= 1.0 else "[red]not met[/]"))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        ax.hist([x * 1000 for x in latencies], bins=50)
        ax.set_xlabel("pod Ready → EndpointSlice ready (ms)")
        ax.set_ylabel("pods")
        ax.set_title(f"kmesh endpoint programming, {args.services} services / {len(plan)} pods")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        console.print(f"plot written to {args.plot}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--pods", type=int, default=10000)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--sample", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--plot", metavar="PNG")
    trio.run(main, p.parse_args())
