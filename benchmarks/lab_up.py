#!/usr/bin/env python3
"""How long a netns lab takes to come up: `kmesh up` for N nodes, then 100 pods Ready, then `kmesh down`.

For each node count (default 3 and 10): times ``kmesh up --runtime netns``
(namespaces, control plane, agents with overlay and CNI), then a Deployment
of 100 agnhost pods until all are Ready (scheduling, CNI ADD per pod,
readiness), then ``kmesh down``. Prints a table; ``--plot PNG`` draws it.
Needs root. Run: ``.venv/bin/python benchmarks/lab_up.py [--nodes 3,10] [--pods 100]``.
"""

from __future__ import annotations

import argparse
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

from kmesh.net.netns_check import netns_usable

console = Console()
KMESH = [sys.executable, "-m", "kmesh.cli"]


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
    args = parser.parse_args()
    if not netns_usable():
        console.print("[red]needs root and network namespaces[/]")
        return 2
    counts = [int(n) for n in args.nodes.split(",")]
    results: dict[int, dict[str, float]] = {}
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as progress:
        for n in counts:
            results[n] = measure(n, args.pods, progress)
    t = Table("nodes", "kmesh up (s)", f"{args.pods} pods Ready (s)", "per pod (ms)", "kmesh down (s)",
              title="netns lab bring-up")
    for n, r in results.items():
        t.add_row(str(n), f"{r['up']:.2f}", f"{r['pods']:.2f}", f"{1000 * r['pods'] / args.pods:.0f}", f"{r['down']:.2f}")
    console.print(t)
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
