"""What ``kmesh bench mesh`` shows: progress while it runs, a table per experiment, JSON, one PNG.

``run_mesh_command`` is the whole command behind the click wrapper in
``kmesh.cli``: it returns the exit code (0 every experiment passed, 1 not,
130 interrupted) and raises ``UsageError`` for bad arguments.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import trio
from rich.console import Console, Group
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from kmesh.bench import meshload
from kmesh.bench.mesh import (
    LATENCY_COLUMNS,
    PATH_TITLES,
    LatencyResult,
    MeshOptions,
    MeshResult,
    RetriesResult,
    latency_rows,
    run_mesh,
    run_until_signalled,
)
from kmesh.bench.report import lab_info, need_plot, png, services_table, split_table, summary
from kmesh.lab.datadir import DataDir


def latency_table(res: LatencyResult) -> Table:
    """One row per path, and what each meshed path adds to the direct one against the goal."""
    t = Table(title=f"latency, open loop at {res.rate:g} requests/s for {res.seconds:g} s per path "
                    f"(goal: ≤ +{meshload.GOAL_ADDED_P50_MS:g} ms p50, ≤ +{meshload.GOAL_ADDED_P99_MS:g} ms p99 "
                    f"at {meshload.GOAL_RATE:g}/s)", title_justify="left")
    for col in LATENCY_COLUMNS:
        t.add_column(col, justify="left" if col in ("path", "TLS", "goal") else "right")
    for row in latency_rows(res):
        t.add_row(*row)
    return t


def latency_summary(res: LatencyResult) -> Group:
    lines = [Text(f"anchor: {meshload.ANCHOR}", style="dim")]
    for name in res.meshed:
        if res.paths[name].tls is None:
            lines.append(Text(f"{PATH_TITLES[name]}: the client sidecar's metrics did not say whether it used TLS",
                              style="yellow"))
        elif name == "mesh-plain" and res.paths[name].tls:
            lines.append(Text("the plaintext pair ran with TLS: the client sidecar still saw the server as meshed",
                              style="yellow"))
    if "mesh-mtls" in res.paths:
        add = res.added("mesh-mtls")
        ok = res.passed
        lines.append(Text(("PASS: " if ok else "FAIL: ") + f"the mTLS sidecar pair adds {add['p50_ms']} ms at p50 and "
                          f"{add['p99_ms']} ms at p99", style="bold green" if ok else "bold red"))
    return Group(*lines)


def retries_table(res: RetriesResult) -> Table:
    d = res.as_dict()
    t = Table(title=f"retries: Service flaky answers 503 with probability {res.fail_ratio:g}, "
                    f"{res.rate:g} requests/s", title_justify="left")
    for col in ("phase", "requests", "succeeded", "success", "expected", "errors"):
        t.add_column(col, justify="left" if col in ("phase", "errors") else "right")
    exp = d["expected"]
    expected = [f"{exp['without']:.1%}",
                f"{exp['with_retry_no_budget']:.1%} ({exp['with_retry_budget']:.1%} within the budget)"]
    for ph, e in zip((res.without, res.with_retry), expected):
        s = ph.success
        errs = ", ".join(f"{k} {v}" for k, v in meshload.errors_of(ph.samples).items()) or "-"
        t.add_row(ph.name, str(len(ph.samples)), str(ph.ok), "-" if math.isnan(s) else f"{s:.1%}", e, errs)
    return t


def retries_summary(res: RetriesResult) -> Group:
    lines = []
    if res.with_retry.note:
        lines.append(Text(res.with_retry.note, style="yellow"))
    lines.append(Text("retry budget: retries in flight at most 20 % of the requests in flight, 3 always allowed "
                      "(Envoy's)", style="dim"))
    lines.append(Text(("PASS: " if res.passed else "FAIL: ") + res.reason(),
                      style="bold green" if res.passed else "bold red"))
    return Group(*lines)


def show(res: MeshResult, console: Console) -> None:
    """Every experiment's table and verdict."""
    if res.canary is not None:
        console.print(Text("canary: HTTPRoute on Service canary, split over canary-v1 and canary-v2", style="bold"))
        console.print(split_table(res.canary))
        console.print(services_table(res.canary))
        console.print(summary(res.canary))
    if res.retries is not None:
        console.print(retries_table(res.retries))
        console.print(retries_summary(res.retries))
    if res.latency is not None:
        console.print(latency_table(res.latency))
        console.print(latency_summary(res.latency))


def draw_cdf(ax: Any, res: LatencyResult) -> None:
    """Latency CDFs of the open-loop runs, one line per path, log-scaled milliseconds."""
    for name, p in res.paths.items():
        xs = sorted(s.latency * 1000 for s in p.open.samples if s.ok)
        if not xs:
            continue
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.plot(xs, ys, label=f"{PATH_TITLES.get(name, name)} (p50 {xs[len(xs) // 2]:.2f} ms)", drawstyle="steps-post")
    ax.axhline(0.5, color="grey", lw=0.5, ls=":")
    ax.axhline(0.99, color="grey", lw=0.5, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, from when the request was due)")
    ax.set_ylabel("share of requests")
    ax.set_title(f"open loop, {res.rate:g} requests/s", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")


def draw_retries(ax: Any, res: RetriesResult) -> None:
    d = res.as_dict()["expected"]
    names = ["without", "with retry"]
    got = [res.without.success, res.with_retry.success]
    ax.bar(names, [0 if math.isnan(g) else g for g in got], color=["tab:red", "tab:green"], label="observed")
    ax.hlines([d["without"], d["with_retry_no_budget"]], [-0.4, 0.6], [0.4, 1.4], colors="black", linestyles="dashed",
              label="no budget")
    ax.hlines([d["with_retry_budget"]], [0.6], [1.4], colors="tab:blue", linestyles="dotted", label="with the budget")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate")
    ax.set_title(f"retries: 503 with p = {res.fail_ratio:g}, {res.rate:g}/s", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")


def draw_canary(ax: Any, res: Any) -> None:
    counts = res.plan.service_counts(res.tally)
    n = sum(counts.values())
    names = list(counts)
    ax.bar(names, [counts[k] / n if n else 0 for k in names], color="tab:blue", label="observed share")
    ax.hlines([res.verdict.expected.get(k, 0.0) for k in names], [i - 0.4 for i in range(len(names))],
              [i + 0.4 for i in range(len(names))], colors="black", linestyles="dashed", label="weights")
    pv = f", p = {res.verdict.test.p_value:.3g}" if res.verdict.test is not None else ""
    ax.set_title(f"canary: {n} answers{pv} — {'PASS' if res.passed else 'FAIL'}", fontsize=10)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)


def plot(res: MeshResult, path: Path) -> Path:
    """One PNG with a panel per experiment that ran."""
    panels = [(draw_canary, res.canary), (draw_retries, res.retries), (draw_cdf, res.latency)]
    panels = [(f, r) for f, r in panels if r is not None]
    widths = [1.0 if f is not draw_cdf else 2.0 for f, _ in panels]
    with png(path, 1, len(panels), figsize=(4.5 * sum(widths), 4.5), squeeze=False,
             gridspec_kw={"width_ratios": widths}) as (_fig, axes):
        for ax, (f, r) in zip(axes[0], panels):
            f(ax, r)
    return path


def run_mesh_command(dd: DataDir, opts: MeshOptions, *, console: Console, plot_path: Path | None = None,
                     json_out: bool = False) -> int:
    """Check, run with a progress line, show or print JSON, plot; the exit code."""
    from kmesh.client.api import Client

    opts.check()
    need_plot(plot_path)
    out = console
    if json_out:
        console = Console(stderr=True)
    info = lab_info(dd)
    res = MeshResult()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed:.0f} request(s)"),
                  TimeElapsedColumn(), console=console, transient=True) as prog:
        task = prog.add_task("starting", total=None)

        def progress(text: str) -> None:
            prog.update(task, description=text, completed=0)
            console.print(f"[dim]{text}[/]", highlight=False)

        def seen(_: Any) -> None:
            prog.update(task, advance=1)

        async def main() -> bool:
            async with Client.from_kubeconfig(dd.kubeconfig) as c:
                return await run_until_signalled(
                    lambda: run_mesh(c, info, opts, progress, result=res, on_outcome=seen))

        if trio.run(main):
            console.print("[yellow]interrupted: the run's namespaces were removed; no verdict[/]")
            return 130
    if json_out:
        out.file.write(json.dumps(res.as_dict(), indent=2) + "\n")
        out.file.flush()
    else:
        show(res, console)
    if plot_path is not None:
        console.print(f"plot written to {plot(res, plot_path)}", highlight=False)
    return 0 if res.passed else 1
