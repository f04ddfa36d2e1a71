#!/usr/bin/env python3
"""How long a netns lab takes to come up: `kmesh up` for N nodes, then 100 pods Ready, then `kmesh down`.

For each node count (default 3 and 10): times ``kmesh up --runtime netns``
(namespaces, control plane, agents with overlay and CNI), then a Deployment
of 100 agnhost pods until all are Ready (scheduling, CNI ADD per pod,
readiness), then ``kmesh down``. Beside each time: pods Ready per second
next to the anchor (kwok creates ~20 fake pods/s with no data plane; kmesh's
pods are real namespaces wired by real CNI plugins), the lab's memory once
the pods are Ready (RSS summed over every process in the lab's namespaces:
control plane, agents, pod processes) and the ratio to the goal of issue 15
(1000 pods on 10 nodes Ready within 60 s, i.e. 60 ms per pod).
Prints a table; ``--plot PNG`` draws it; ``--json`` prints the numbers.
Needs root. Run: ``.venv/bin/python benchmarks/lab_up.py [--nodes 3,10] [--pods 100]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kmesh.lab.topology import processes_in
from kmesh.net.netns_check import netns_usable

console = Console(width=max(Console().width, 120))
KMESH = [sys.executable, "-m", "kmesh.cli"]
KWOK_PODS_PER_S = 20.0  # the anchor: kwok's fake pods (no namespaces, no CNI)
GOAL_MS_PER_POD = 60.0  # issue 15: 1000 pods on 10 nodes Ready within 60 s


def lab_rss_mb(lab: str) -> tuple[float, int]:
    """The lab's memory: RSS summed over the processes in its namespaces (MiB), and how many there are."""
    prefix = f"kmesh-{lab}-"
    names = [n.split()[0] for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()
             if n.startswith(prefix)]
    total = 0
    pids = processes_in(names)
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total / 2**20, len(pids)


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def measure(nodes: int, pods: int, progress: Progress) -> dict[str, float]:
    """Seconds for up, pods Ready and down, for one lab of ``nodes`` nodes."""
    d = Path(tempfile.mkdtemp(prefix="kmesh-bench-up-"))
    name = f"b{uuid.uuid4().hex[:5]}"
    env = dict(os.environ, KUBECONFIG=str(d / "kubeconfig.yaml"))
    task = progress.add_task(f"{nodes} nodes: kmesh up", total=None)
    out: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        _run([*KMESH, "up", "--runtime", "netns", "--nodes", str(nodes), "--name", name, "--data-dir", str(d), "--port", "0"])
        out["up"] = time.monotonic() - t0
        progress.update(task, description=f"{nodes} nodes: {pods} pods")
        t0 = time.monotonic()
        _run(["kubectl", "create", "deployment", "load", "--image=registry.k8s.io/e2e-test-images/agnhost:2.39",
              f"--replicas={pods}", "--", "/agnhost", "serve-hostname"], env)
        _run(["kubectl", "rollout", "status", "deployment/load", "--timeout=600s"], env)
        out["pods"] = time.monotonic() - t0
        out["rss_mb"], out["processes"] = lab_rss_mb(name)
    finally:
        progress.update(task, description=f"{nodes} nodes: kmesh down")
        t0 = time.monotonic()
        subprocess.run([*KMESH, "down", "--data-dir", str(d)], capture_output=True, timeout=300)
        out["down"] = time.monotonic() - t0
        progress.remove_task(task)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="3,10", help="comma-separated node counts (default 3,10)")
    parser.add_argument("--pods", type=int, default=100, help="pods in the Deployment (default 100)")
    parser.add_argument("--plot", type=Path, help="write a bar chart to this PNG")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args()
    if not netns_usable():
        console.print("[red]needs root and network namespaces[/]")
        return 2
    counts = [int(n) for n in args.nodes.split(",")]
    results: dict[int, dict[str, float]] = {}
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as progress:
        for n in counts:
            results[n] = measure(n, args.pods, progress)
    for r in results.values():
        r["pods_per_s"] = args.pods / r["pods"]
        r["ms_per_pod"] = 1000 * r["pods"] / args.pods
        r["vs_goal"] = r["ms_per_pod"] / GOAL_MS_PER_POD
    if args.json:
        print(json.dumps({"pods": args.pods, "kwok_pods_per_s": KWOK_PODS_PER_S, "goal_ms_per_pod": GOAL_MS_PER_POD,
                          "results": [{"nodes": n, **r} for n, r in results.items()]}, indent=1))
    else:
        t = Table("nodes", "up (s)", f"{args.pods} pods Ready (s)", "ms/pod", "pods/s", "kwok pods/s",
                  "vs goal", "lab RSS (MiB)", "procs", "down (s)", title="netns lab bring-up")
        for n, r in results.items():
            t.add_row(str(n), f"{r['up']:.2f}", f"{r['pods']:.2f}", f"{r['ms_per_pod']:.0f}", f"{r['pods_per_s']:.1f}",
                      f"~{KWOK_PODS_PER_S:.0f}", f"{r['vs_goal']:.2f}x", f"{r['rss_mb']:.0f}", str(r["processes"]),
                      f"{r['down']:.2f}")
        console.print(t)
        console.print(f"goal (issue 15): {GOAL_MS_PER_POD:.0f} ms per pod (1000 pods on 10 nodes in 60 s); "
                      "vs goal < 1.00x meets it. kwok: fake pods, no namespaces, no CNI. lab RSS: every process "
                      "in the lab's namespaces once the pods are Ready.")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        xs = range(len(counts))
        ax.bar([x - 0.2 for x in xs], [results[n]["up"] for n in counts], 0.4, label="kmesh up")
        ax.bar([x + 0.2 for x in xs], [results[n]["pods"] for n in counts], 0.4, label=f"{args.pods} pods Ready")
        ax.set_xticks(list(xs), [f"{n} nodes" for n in counts])
        ax.set_ylabel("seconds")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot)
        console.print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
