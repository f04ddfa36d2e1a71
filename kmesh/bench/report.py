"""What ``kmesh bench lb`` shows: a progress bar while sending, a rich table of the split, a PNG bar chart.

``run_lb_command`` is the whole command behind the thin click wrapper in
``kmesh.cli``: it returns the exit code (0 the split passes, 1 it fails) and
raises ``UsageError`` for bad arguments (exit code 2 in the CLI).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import trio
from rich.console import Console, Group
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from kmesh.bench.lb import LbResult, Outcome, Plan, UsageError, execute, plan_lb
from kmesh.lab.datadir import DataDir


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.2f} ms"


def _bar(share: float, width: int = 20) -> str:
    full = round(share * width)
    return "█" * full + "·" * (width - full)


def describe_plan(plan: Plan) -> str:
    """One line saying what is about to happen."""
    p = plan.probe
    return (f"{plan.requests} {p.protocol} request(s) to Service {plan.target} at {p.host}:{p.port} "
            f"from {plan.source.description}, concurrency {plan.concurrency}, expecting {plan.expect}")


def split_table(result: LbResult) -> Table:
    """Count, share and expected share per endpoint (answers naming no endpoint last)."""
    plan, t, v = result.plan, result.tally, result.verdict
    by_name = {b.name: b for b in plan.target.endpoints}
    table = Table(title=f"Service {plan.target} — {t.answered} answered, {t.failed} failed", title_justify="left")
    for col, justify in (("ENDPOINT", "left"), ("NODE", "left"), ("ADDRESS", "left"), ("READY", "center"),
                         ("COUNT", "right"), ("SHARE", "right"), ("EXPECTED", "right"), ("", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    n = t.answered
    for name, count in t.cells().items():
        b = by_name.get(name)
        share = count / n if n else 0.0
        exp = v.expected.get(name)
        style = "red" if b is None else ("" if b.ready else "dim")
        table.add_row(
            name if b else f"? {name}", b.node if b else "-", b.addr if b else "-",
            ("yes" if b.ready else "no") if b else "-", str(count), f"{share:6.1%}",
            "-" if exp is None else f"{exp:6.1%}", _bar(share), style=style,
        )
    return table


def summary(result: LbResult) -> Group:
    """Errors, latency percentiles, the test and the verdict, below the table."""
    t, lat, v = result.tally, result.latency, result.verdict
    lines: list[Text] = []
    errs = ", ".join(f"{k} {c}" for k, c in sorted(t.errors.items(), key=lambda kv: -kv[1])) or "none"
    lines.append(Text(f"errors: {errs}", style="red" if t.errors else ""))
    rate = (result.plan.requests / result.duration) if result.duration > 0 else math.nan
    lines.append(Text(f"latency: p50 {_ms(lat.p50)}  p90 {_ms(lat.p90)}  p99 {_ms(lat.p99)}  max {_ms(lat.max)}"
                      f"  ({result.plan.requests} in {result.duration:.2f} s, {rate:.0f}/s)"))
    if v.test is not None:
        chi = (f"chi-square {v.test.statistic:.3f}, df {v.test.df}, p-value {v.test.p_value:.4g} "
               f"(alpha {v.alpha:g})")
        if v.small_counts:
            chi += " — some expected counts < 5, send more requests for a reliable test"
        lines.append(Text(chi))
    elif v.expect.kind == "sticky":
        lines.append(Text("p-value: - (sticky holds or not, exactly)"))
    else:
        lines.append(Text("p-value: - (no answers to test)"))
    lines.append(Text(("PASS: " if v.passed else "FAIL: ") + v.reason, style="bold green" if v.passed else "bold red"))
    return Group(*lines)


def plot(result: LbResult, path: Path) -> Path:
    """A PNG bar chart: share per endpoint, with the expected share drawn as a line over each bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, v = result.tally, result.verdict
    cells = t.cells()
    names = list(cells)
    n = t.answered
    shares = [cells[k] / n if n else 0.0 for k in names]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 2), 4.5))
    try:
        colors = ["tab:blue" if k in t.counts else "tab:red" for k in names]
        xs = list(range(len(names)))
        ax.bar(xs, shares, color=colors, label="observed share")
        if v.expected:
            ax.hlines([v.expected.get(k, 0.0) for k in names], [x - 0.4 for x in xs], [x + 0.4 for x in xs],
                      colors="black", linestyles="dashed", label=f"expected ({v.expect})")
        ax.set_xticks(xs)
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("share of answers")
        for x, k, sh in zip(xs, names, shares):
            ax.annotate(str(cells[k]), (x, sh), ha="center", va="bottom", fontsize=8)
        ax.set_ylim(0, max([*shares, *v.expected.values(), 0.01]) * 1.35)
        pv = f", p = {v.test.p_value:.3g}" if v.test is not None else ""
        ax.set_title(f"{result.plan.target}: {n} answers, {t.failed} errors{pv} — {'PASS' if v.passed else 'FAIL'}",
                     fontsize=10)
        ax.legend(fontsize=8, loc="upper right")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def run_lb_command(dd: DataDir, service: str, *, console: Console, plot_path: Path | None = None,
                   warmup: float = 0.0, json_out: bool = False, **options: Any) -> int:
    """Plan, send with a progress bar, show the table and verdict, write the plot; the exit code (0 pass, 1 fail).

    ``json_out``: print ``LbResult.as_dict()`` as JSON on stdout instead (progress goes to stderr).
    ``options`` are ``plan_lb``'s keyword arguments."""
    if json_out:
        out_console, console = console, Console(stderr=True)
    from kmesh.client.api import Client

    if plot_path is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot", "needs matplotlib (pip install 'kmesh[bench]')")
    info = dd.read_cluster()
    if info is None or not dd.kubeconfig.exists():
        raise UsageError("--data-dir", f"no lab is running in {dd.root} (no cluster.json / kubeconfig.yaml)")

    async def plan() -> Plan:
        async with Client.from_kubeconfig(dd.kubeconfig) as c:
            return await plan_lb(c, info, service, **options)

    p = trio.run(plan)
    console.print(describe_plan(p), highlight=False)
    progress = Progress(TextColumn("[bold]sending"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[errors]} error(s)"), TimeElapsedColumn(), console=console,
                        transient=True)
    with progress:
        task = progress.add_task("send", total=p.requests, errors=0)
        failed = 0

        def seen(o: Outcome) -> None:
            nonlocal failed
            failed += o.answer is None
            progress.update(task, advance=1, errors=failed)

        try:
            result = trio.run(execute, p, seen, warmup)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: no verdict[/]")
            return 130
    if json_out:
        import json

        out_console.file.write(json.dumps(result.as_dict(), indent=2) + "\n")
        out_console.file.flush()
    else:
        console.print(split_table(result))
        console.print(summary(result))
    if plot_path is not None:
        console.print(f"plot written to {plot(result, plot_path)}", highlight=False)
    return 0 if result.passed else 1
