"""What ``kmesh bench lb`` shows: a progress bar while sending, a rich table of the split, a PNG bar chart.

``run_lb_command`` is the whole command behind the thin click wrapper in
``kmesh.cli``: it returns the exit code (0 the split passes, 1 it fails) and
raises ``UsageError`` for bad arguments (exit code 2 in the CLI).
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
    out_console = console  # the JSON's; with --json, what people read goes to stderr
    if json_out:
        console = Console(stderr=True)
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
    return _report(result, json_out, out_console, console, (split_table, summary), plot, plot_path)


def _report(result: Any, json_out: bool, out_console: Console, console: Console,
            views: tuple[Callable[[Any], Any], ...], plotter: Callable[[Any, Path], Any], plot_path: Path | None) -> int:
    """An experiment's result as every bench command shows it: JSON on ``out_console``, or its table and
    summary on ``console``; the plot if asked for; exit 0 when it passed, 1 when not."""
    if json_out:
        import json

        out_console.file.write(json.dumps(result.as_dict(), indent=2) + "\n")
        out_console.file.flush()
    else:
        for view in views:
            console.print(view(result))
    if plot_path is not None:
        console.print(f"plot written to {plotter(result, plot_path)}", highlight=False)
    return 0 if result.passed else 1


# ------------------------------------------------------------------ --during 'link down NODE'


def partition_table(result: Any) -> Table:
    """The partition's events in order: when, and how long after the cut (and after the restore)."""
    table = Table(title=f"Service {result.plan.target} — {result.options.during} under "
                        f"{result.options.rate:g} requests/s", title_justify="left")
    for col, justify in (("EVENT", "left"), ("AT", "right"), ("AFTER CUT", "right"), ("", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    restored = result.events.restored
    for e in result.events_list():
        extra = ""
        if restored is not None and e["event"] in ("nodeReady", "endpointsReady"):
            extra = f"{e['at'] - restored:.1f} s after link up"
        table.add_row(e["what"], f"{e['at']:.1f} s", f"{e['sinceCut']:.1f} s", extra)
    return table


def partition_summary(result: Any) -> Group:
    """Requests, errors by kind, the longest error window, the grace period that decided it, the verdict."""
    from kmesh.bench.partition import errors_by_kind, longest

    d = result.as_dict()
    lines: list[Text] = []
    errs = ", ".join(f"{k} {c}" for k, c in sorted(errors_by_kind(result.records).items(), key=lambda kv: -kv[1]))
    lines.append(Text(f"requests: {d['requests']}, failed {d['failed']} ({errs or 'no errors'})",
                      style="red" if d["failed"] else ""))
    w = longest(result.windows)
    if w is None:
        lines.append(Text("error window: none"))
    else:
        cut = result.events.cut or 0.0
        lines.append(Text(f"longest error window: {w.seconds:.1f} s (first failure {w.start - cut:+.1f} s, last "
                          f"{w.end - cut:+.1f} s from the cut; {w.failed} failed)", style="bold"))
    lease = d["leaseRenewedBeforeCut"]
    lines.append(Text(f"node grace period {result.grace:g} s ({result.grace_source}) decides the window: "
                      "a cut-off node goes NotReady that long after its Lease's last renewal"))
    if lease is not None:
        lines.append(Text(f"  {result.options.during.node}'s Lease was last renewed {-lease:.1f} s before the cut"))
    lines.append(Text(("PASS: " if result.passed else "FAIL: ") + result.reason(),
                      style="bold green" if result.passed else "bold red"))
    return Group(*lines)


def plot_partition(result: Any, path: Path) -> Path:
    """A PNG: answered and failed requests per second (errors stacked by kind), the events as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kmesh.bench.partition import longest, timeline

    rows = timeline(result.records)
    kinds = sorted({k for r in rows for k in r if k not in ("t", "ok")})
    fig, ax = plt.subplots(figsize=(10, 4.5))
    try:
        ts = [r["t"] for r in rows]
        ax.plot(ts, [r["ok"] for r in rows], color="tab:green", label="answered", drawstyle="steps-post")
        bottom = [0] * len(rows)
        for k in kinds:
            vals = [r.get(k, 0) for r in rows]
            ax.bar(ts, vals, width=1.0, align="edge", bottom=bottom, label=k, alpha=0.7)
            bottom = [b + v for b, v in zip(bottom, vals)]
        lw = longest(result.windows)
        if lw is not None:
            ax.axvspan(lw.start, lw.end, color="tab:red", alpha=0.08, label=f"longest error window {lw.seconds:.1f} s")
        for e in result.events_list():
            ax.axvline(e["at"], color="black", linestyle="dashed", linewidth=0.8)
            ax.annotate(e["what"], (e["at"], ax.get_ylim()[1] * 0.95), rotation=90, fontsize=7, va="top", ha="right")
        ax.set_xlabel("seconds since the load began")
        ax.set_ylabel("requests per second")
        w = result.as_dict()["errorWindow"]
        span = f"error window {w['seconds']:.1f} s, " if w else ""
        ax.set_title(f"{result.plan.target}: {result.options.during} — {span}{result.failed} failed "
                     f"(grace period {result.grace:g} s)", fontsize=10)
        ax.legend(fontsize=8, loc="lower left")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def run_partition_command(dd: DataDir, service: str, during: str, *, console: Console, plot_path: Path | None = None,
                          json_out: bool = False, warmup: float = 0.0, rate: float = 20.0, after: float = 5.0,
                          settle: float = 5.0, max_wait: float = 120.0, restore: bool = True,
                          **options: Any) -> int:
    """``bench lb --during``: plan, run the partition under load, show events and windows; exit 0 when the
    Service converged (and the node came back), 1 when not. ``UsageError`` for bad arguments, before any change."""
    from kmesh.bench.lb import warm_up
    from kmesh.bench.partition import PartitionOptions, parse_during, pick_client, run_partition
    from kmesh.client.api import Client

    out_console = console  # the JSON's; with --json, what people read goes to stderr
    if json_out:
        console = Console(stderr=True)
    parse_during(during)  # the form first: a bad --during needs no lab
    for name, value, low in (("--rate", rate, 0.0), ("--settle", settle, 0.0), ("--max-wait", max_wait, 0.0)):
        if not (math.isfinite(value) and value > low):
            raise UsageError(name, f"must be a number above {low:g}, got {value}")
    if not (math.isfinite(after) and after >= 0):
        raise UsageError("--during-after", f"must be a number of seconds >= 0, got {after}")
    if rate > 1000:
        raise UsageError("--rate", f"at most 1000 requests/s, got {rate:g}")
    if plot_path is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot", "needs matplotlib (pip install 'kmesh[bench]')")
    info = dd.read_cluster()
    if info is None or not dd.kubeconfig.exists():
        raise UsageError("--data-dir", f"no lab is running in {dd.root} (no cluster.json / kubeconfig.yaml)")
    what = parse_during(during, [n.name for n in info.nodes])
    from kmesh.lab.links import LinkUsage, NoLab, open_lab

    try:
        open_lab(dd)
    except NoLab as exc:
        raise UsageError("--data-dir", str(exc)) from None
    except LinkUsage as exc:
        raise UsageError("--during", exc.message) from None
    popts = PartitionOptions(what, rate=rate, after=after, settle=settle, max_wait=max_wait, restore=restore)

    async def main() -> Any:
        async with Client.from_kubeconfig(dd.kubeconfig) as c:
            if options.get("from_pod") is None:
                options["from_pod"] = await pick_client(c, info, service, what.node, options)
            plan = await plan_lb(c, info, service, **options)
            if plan.source.node == what.node:
                raise UsageError("--from", f"{plan.source.description} is on {what.node}, the node the partition "
                                           "cuts off: send from a pod on another node")
            p = plan.probe
            console.print(f"{rate:g} {p.protocol} request(s)/s to Service {plan.target} at {p.host}:{p.port} from "
                          f"{plan.source.description}; {what} after {after:g} s", highlight=False)
            await warm_up(plan.probe, warmup)
            failed = 0
            with Progress(TextColumn("[bold]{task.fields[phase]}"), TextColumn("{task.completed:.0f} request(s)"),
                          TextColumn("{task.fields[errors]} error(s)"), TimeElapsedColumn(), console=console,
                          transient=True) as progress:
                task = progress.add_task("load", phase="baseline", errors=0)

                def seen(r: Any) -> None:
                    nonlocal failed
                    failed += r.failed
                    progress.update(task, advance=1, errors=failed)

                def event(s: str) -> None:
                    progress.update(task, phase=s)
                    console.print(f"[bold]{s}[/]", highlight=False)

                return await run_partition(c, dd, plan, popts, seen, event)

    try:
        result = trio.run(main)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: the node was put back on the underlay; no verdict[/]")
        return 130
    return _report(result, json_out, out_console, console, (partition_table, partition_summary), plot_partition,
                   plot_path)
