"""What ``kmesh bench lb`` shows: a progress bar while sending, a rich table of the split, a PNG bar chart
(with ``--keepalive``: the split by connections and by requests side by side, a table per connection, and
requests per connection stacked by endpoint).

``run_lb_command`` is the whole command behind the thin click wrapper in
``kmesh.cli``: it returns the exit code (0 the split passes, 1 it fails) and
raises ``UsageError`` for bad arguments (exit code 2 in the CLI).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
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

from kmesh.bench.keepalive import ENDED, KeepaliveResult, execute_keepalive, judged_over, quotas
from kmesh.bench.lb import LbResult, Outcome, Plan, UsageError, execute, plan_lb
from kmesh.lab.datadir import ClusterInfo, DataDir


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.2f} ms"


def _bar(share: float, width: int = 20) -> str:
    full = round(share * width)
    return "█" * full + "·" * (width - full)


def _services(plan: Plan) -> str:
    """``Service ns/a:http`` or ``Services ns/a:http, ns/b:http``."""
    return f"Service{'s' if len(plan.services) > 1 else ''} {plan.target}"


def _to(plan: Plan) -> str:
    """Where the requests go: the Service(s) at the ClusterIP, or the Gateway / ingress controller (--via)."""
    p = plan.probe
    if plan.via is None:
        return f"to {_services(plan)} at {p.host}:{p.port}"
    at = "" if (p.host, p.port) == (plan.via.address, plan.via.port) else f" via {p.host}:{p.port}"
    return f"to {plan.via}{at}, Host {p.http_host or p.host}, GET {p.path}, for {_services(plan)}"


def describe_plan(plan: Plan) -> str:
    """One line saying what is about to happen."""
    p = plan.probe
    per_service = " per Service" if plan.per_service else ""
    if plan.keepalive:
        per = sorted(set(quotas(plan.requests, plan.concurrency)))
        each = "-".join(str(n) for n in per)
        return (f"{plan.requests} http request(s) over {plan.concurrency} keep-alive connection(s) ({each} each) "
                f"{_to(plan)} from {plan.source.description}, expecting {plan.expect}{per_service} over "
                f"{judged_over(plan)}")
    return (f"{plan.requests} {p.protocol} request(s) {_to(plan)} from {plan.source.description}, "
            f"concurrency {plan.concurrency}, expecting {plan.expect}{per_service}")


def services_table(result: LbResult) -> Table:
    """Answers per Service of the plan (and, with ``--keepalive``, the connections each one's endpoints got
    first), beside the expected share when the expectation weighs Services."""
    plan, t, v = result.plan, result.tally, result.verdict
    counts = plan.service_counts(t)
    first = plan.service_counts(result.connections.first) if isinstance(result, KeepaliveResult) else None
    table = Table(title=f"per Service{' (judged)' if plan.per_service else ''}", title_justify="left")
    cols = [("SERVICE", "left"), ("ENDPOINTS", "right")]
    if first is not None:
        cols += [("CONNS", "right")]
    cols += [("REQUESTS" if first is not None else "COUNT", "right"), ("SHARE", "right"), ("EXPECTED", "right"),
             ("", "left")]
    for col, justify in cols:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    n = t.answered
    for name, count in counts.items():
        share = count / n if n else 0.0
        exp = v.expected.get(name) if plan.per_service else None
        row = [name, str(sum(b.service == name for b in plan.target.endpoints))]
        if first is not None:
            row.append(str(first.get(name, 0)))
        row += [str(count), f"{share:6.1%}", "-" if exp is None else f"{exp:6.1%}", _bar(share)]
        table.add_row(*row)
    return table


def _views(plan: Plan, *views: Callable[[Any], Any]) -> tuple[Callable[[Any], Any], ...]:
    """The views of a result, with the per-Service table after the first when the plan has several Services or
    weighs Services."""
    if len(plan.services) > 1 or plan.per_service:
        return (views[0], services_table, *views[1:])
    return views


def split_table(result: LbResult) -> Table:
    """Count, share and expected share per endpoint (answers naming no endpoint last)."""
    plan, t, v = result.plan, result.tally, result.verdict
    by_name = {b.name: b for b in plan.target.endpoints}
    several = len(plan.services) > 1
    table = Table(title=f"{_services(plan)} — {t.answered} answered, {t.failed} failed", title_justify="left")
    expected = () if plan.per_service else (("EXPECTED", "right"),)  # judged per Service: in services_table
    for col, justify in ((("SERVICE", "left"),) if several else ()) + (
            ("ENDPOINT", "left"), ("NODE", "left"), ("ADDRESS", "left"), ("READY", "center"),
            ("COUNT", "right"), ("SHARE", "right"), *expected, ("", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    n = t.answered
    for name, count in t.cells().items():
        b = by_name.get(name)
        share = count / n if n else 0.0
        exp = v.expected.get(name)
        style = "red" if b is None else ("" if b.ready else "dim")
        table.add_row(
            *(((b.service if b else "-"),) if several else ()),
            name if b else f"? {name}", b.node if b else "-", b.addr if b else "-",
            ("yes" if b.ready else "no") if b else "-", str(count), f"{share:6.1%}",
            *(() if plan.per_service else ("-" if exp is None else f"{exp:6.1%}",)), _bar(share), style=style,
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
        if result.plan.per_service:
            chi += " per Service"
        over = judged_over(result.plan) if result.plan.keepalive else "requests"
        if result.plan.keepalive:
            chi += f" over {over}"
        if v.small_counts:
            more = "open more --connections" if over == "connections" else "send more requests"
            chi += f" — some expected counts < 5, {more} for a reliable test"
        lines.append(Text(chi))
    elif v.expect.kind == "sticky":
        lines.append(Text("p-value: - (sticky holds or not, exactly)"))
    else:
        lines.append(Text("p-value: - (no answers to test)"))
    lines.append(Text(("PASS: " if v.passed else "FAIL: ") + v.reason, style="bold green" if v.passed else "bold red"))
    return Group(*lines)


@contextlib.contextmanager
def png(path: Path, *args: Any, dpi: int = 100, **kw: Any) -> Iterator[tuple[Any, Any]]:
    """A figure and its axes from ``plt.subplots(*args, **kw)``, laid out and written to ``path`` as a PNG when
    the block ends without an error, and closed either way."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*args, **kw)
    try:
        yield fig, axes
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)


def plot(result: LbResult, path: Path) -> Path:
    """A PNG bar chart: share per endpoint, with the expected share drawn as a line over each bar."""
    t, v = result.plan.cells(result.tally), result.verdict
    cells = t.cells()
    names = list(cells)
    n = t.answered
    shares = [cells[k] / n if n else 0.0 for k in names]
    with png(path, figsize=(max(6.0, 1.1 * len(names) + 2), 4.5)) as (fig, ax):
        colors = ["tab:blue" if k in t.counts else "tab:red" for k in names]
        xs = list(range(len(names)))
        ax.bar(xs, shares, color=colors, label="observed share")
        if v.expected:
            ax.hlines([v.expected.get(k, 0.0) for k in names], [x - 0.4 for x in xs], [x + 0.4 for x in xs],
                      colors="black", linestyles="dashed", label=f"expected ({v.expect})")
        ax.set_xticks(xs)
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("share of answers" + (" (per Service)" if result.plan.per_service else ""))
        for x, k, sh in zip(xs, names, shares):
            ax.annotate(str(cells[k]), (x, sh), ha="center", va="bottom", fontsize=8)
        ax.set_ylim(0, max([*shares, *v.expected.values(), 0.01]) * 1.35)
        pv = f", p = {v.test.p_value:.3g}" if v.test is not None else ""
        what = f"{result.plan.target}" if result.plan.via is None else \
            f"{result.plan.via.spec()} → {', '.join(result.plan.services)}\n"
        ax.set_title(f"{what}: {n} answers, {t.failed} errors{pv} — {'PASS' if v.passed else 'FAIL'}"
                     .replace("\n:", ":\n"), fontsize=10)
        ax.legend(fontsize=8, loc="upper right")
    return path


# ------------------------------------------------------------------ --keepalive


def keepalive_table(result: KeepaliveResult) -> Table:
    """Per endpoint, side by side: the connections it got first and the requests it answered, the expected share
    beside the judged side (connections through kube-proxy, requests ``--via`` an L7 proxy)."""
    plan, t, v, ct = result.plan, result.tally, result.verdict, result.connections
    by_name = {b.name: b for b in plan.target.endpoints}
    first = ct.first.cells()
    by_requests = judged_over(plan) == "requests"
    table = Table(title=f"{_services(plan)} — {len(ct.rows)} connection(s) ({ct.reconnects} reconnect(s)), "
                        f"{t.answered} request(s) answered, {t.failed} failed", title_justify="left")
    conns = [("CONNS", "right"), ("CONN %", "right"), ("", "left")]
    reqs = [("REQUESTS", "right"), ("REQ %", "right"), ("", "left")]
    expected = [] if plan.per_service else [("EXPECTED", "right")]  # judged per Service: in services_table
    cols = [("ENDPOINT", "left"), ("NODE", "left"), ("ADDRESS", "left")]
    cols += conns + reqs[:2] + expected + reqs[2:] if by_requests else conns[:2] + expected + conns[2:] + reqs
    for col, justify in cols:
        table.add_column(col, justify=justify, no_wrap=col == "ENDPOINT")  # type: ignore[arg-type]
    nc, nr = ct.first.answered, t.answered
    for name, count in t.cells().items():
        b = by_name.get(name)
        cshare = first.get(name, 0) / nc if nc else 0.0
        rshare = count / nr if nr else 0.0
        exp = None if plan.per_service else v.expected.get(name)
        style = "red" if b is None else ("" if b.ready else "dim")
        label = (name if b.ready else f"{name} (not ready)") if b else f"? {name}"
        c = [str(first.get(name, 0)), f"{cshare:6.1%}", _bar(cshare, 8)]
        r = [str(count), f"{rshare:6.1%}", _bar(rshare, 8)]
        e = [] if plan.per_service else ["-" if exp is None else f"{exp:6.1%}"]
        cells = c + r[:2] + e + r[2:] if by_requests else c[:2] + e + c[2:] + r
        table.add_row(label, b.node if b else "-", b.addr if b else "-", *cells, style=style)
    return table


MAX_CONNECTION_ROWS = 40


def connection_table(result: KeepaliveResult) -> Table:
    """One row per connection: requests, which endpoints answered them, pinned or not, how it ended."""
    rows = result.connections.rows
    table = Table(title="per connection", title_justify="left")
    for col, justify in (("CONN", "right"), ("CLIENT", "right"), ("REQUESTS", "right"), ("ENDPOINTS", "left"),
                         ("PINNED", "center"), ("ENDED", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows[:MAX_CONNECTION_ROWS]:
        eps = ", ".join(f"{k} {c}" for k, c in sorted(r.endpoints.items(), key=lambda kv: -kv[1]))
        errs = ", ".join(f"{k} {c}" for k, c in r.errors.items())
        what = "; ".join(x for x in (eps, errs and f"errors: {errs}") if x) or "-"
        pinned = "yes" if r.pinned else ("no" if r.answered >= 2 else "-")
        ended = "kept open" if r.ended is None else ENDED.get(r.ended, r.ended)
        table.add_row(str(r.connection), str(r.client), str(r.requests), what, pinned, ended,
                      style="" if r.pinned or r.answered < 2 else "yellow")
    if len(rows) > MAX_CONNECTION_ROWS:
        table.caption = f"... {len(rows) - MAX_CONNECTION_ROWS} more connection(s): --json lists them all"
    return table


def keepalive_summary(result: KeepaliveResult) -> Group:
    """Pinned connections and reconnects, then the usual errors, latency, test (over connections) and verdict."""
    ct = result.connections
    lines: list[Text] = []
    if ct.multi and result.plan.via is not None:
        lines.append(Text(f"spread: {ct.spread} of {ct.multi} connection(s) with 2+ answers got answers from 2+ "
                          f"endpoints, {ct.pinned} pinned (an L7 proxy balances requests, not connections)",
                          style="bold"))
    elif ct.multi:
        lines.append(Text(f"pinned: {ct.pinned} of {ct.multi} connection(s) with 2+ answers got every answer from "
                          "one endpoint (the proxy balances connections, not requests)", style="bold"))
    else:
        lines.append(Text("pinned: - (no connection carried two answers: the server closes after each?)"))
    ended = ", ".join(f"{ENDED.get(k, k)} {c}" for k, c in sorted(ct.ended().items(), key=lambda kv: -kv[1]))
    gone = sum(ct.ended().values())
    lines.append(Text(f"reconnects: {ct.reconnects}" + (f" ({gone} connection(s) ended by the server or an error: "
                                                         f"{ended})" if ended else ""),
                      style="yellow" if ct.reconnects else ""))
    return Group(*lines, *summary(result).renderables)


def plot_keepalive(result: KeepaliveResult, path: Path) -> Path:
    """A PNG: requests per connection stacked by endpoint; beside it, each endpoint's share of connections
    (first endpoint, with the expected share) and of requests."""
    t, v, ct = result.tally, result.verdict, result.connections
    names = list(t.cells())
    from matplotlib import colormaps

    colors = {k: colormaps["tab10"](i % 10) for i, k in enumerate(names)}
    width = {"width_ratios": [max(2.0, len(ct.rows) / 6), 1.4]}
    with png(path, 1, 2, figsize=(max(10.0, 0.3 * len(ct.rows) + 7), 5.5), gridspec_kw=width) as (fig, (ax, ax2)):
        xs = [r.connection for r in ct.rows]
        bottom = [0] * len(ct.rows)
        for i, k in enumerate(names):  # every endpoint in the legend, numbered as on the right
            vals = [r.endpoints.get(k, 0) for r in ct.rows]
            ax.bar(xs, vals, bottom=bottom, color=colors[k], label=f"{i + 1}: {k}")
            bottom = [b + x for b, x in zip(bottom, vals)]
        errs = [sum(r.errors.values()) for r in ct.rows]
        if any(errs):
            ax.bar(xs, errs, bottom=bottom, color="lightgray", hatch="//", label="errors")
        ax.set_ylim(0, max([b + e for b, e in zip(bottom, errs)] or [1]) * 1.1)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("connection")
        ax.set_ylabel("requests")
        spread = f", {ct.spread} spread" if result.plan.via is not None else ""
        ax.set_title(f"requests per connection: {ct.pinned} of {ct.multi} pinned{spread}, {ct.reconnects} "
                     "reconnect(s)", fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
        first = ct.first.cells()
        nc, nr = ct.first.answered, t.answered
        cshares = [first.get(k, 0) / nc if nc else 0.0 for k in names]
        rshares = [t.cells()[k] / nr if nr else 0.0 for k in names]
        pos = list(range(len(names)))
        ax2.bar([p - 0.2 for p in pos], cshares, width=0.4, color=[colors[k] for k in names],
                label="connections (first endpoint)")
        ax2.bar([p + 0.2 for p in pos], rshares, width=0.4, color=[colors[k] for k in names], alpha=0.45,
                label="requests")
        if v.expected and not result.plan.per_service:
            ax2.hlines([v.expected.get(k, 0.0) for k in names], [p - 0.45 for p in pos], [p + 0.45 for p in pos],
                       colors="black", linestyles="dashed", label=f"expected ({v.expect})")
        ax2.set_xticks(pos)
        ax2.set_xticklabels([str(i + 1) for i in pos], fontsize=8)
        ax2.set_xlabel("endpoint (numbered as in the legend)", fontsize=8)
        ax2.set_ylabel("share")
        ax2.set_title("share: by connections | by requests", fontsize=9)
        ax2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
        ax2.set_ylim(0, min(1.0, max([*v.expected.values(), *cshares, *rshares, 0.01])) * 1.3)
        pv = f", p = {v.test.p_value:.3g}" if v.test is not None else ""
        plan = result.plan
        what = f"{plan.target}" if plan.via is None else f"{plan.via.spec()} → {', '.join(plan.services)}"
        per = f" per Service ({v.expect})" if plan.per_service else ""
        fig.suptitle(f"{what} over keep-alive connections\njudged over {judged_over(plan)}{per}{pv}: "
                     f"{'PASS' if v.passed else 'FAIL'}", fontsize=10)
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

    need_plot(plot_path)
    info = lab_info(dd)

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
            result = trio.run(execute_keepalive if p.keepalive else execute, p, seen, warmup)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: no verdict[/]")
            return 130
    if isinstance(result, KeepaliveResult):
        return _report(result, json_out, out_console, console,
                       _views(p, keepalive_table, connection_table, keepalive_summary), plot_keepalive, plot_path)
    return _report(result, json_out, out_console, console, _views(p, split_table, summary), plot, plot_path)


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


def port_reused_lines(n: int) -> list[Text]:
    """The summary's word on failures that stale conntrack entries decided (none when ``n`` is 0)."""
    if not n:
        return []
    return [Text(f"  {n} of the failed requests left from the source port of an earlier failed one: its conntrack "
                 "entry (never answered) still sent them where that one went, whatever the proxy's rules said "
                 "(kube-proxy clears stale conntrack entries of UDP only)")]


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
    from kmesh.bench.load import errors_by_kind, longest

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
    lines.extend(port_reused_lines(d["portReused"]))
    lease = d["leaseRenewedBeforeCut"]
    lines.append(Text(f"node grace period {result.grace:g} s ({result.grace_source}) decides the window: "
                      "a cut-off node goes NotReady that long after its Lease's last renewal"))
    if lease is not None:
        lines.append(Text(f"  {result.options.during.node}'s Lease was last renewed {-lease:.1f} s before the cut"))
    lines.append(Text(("PASS: " if result.passed else "FAIL: ") + result.reason(),
                      style="bold green" if result.passed else "bold red"))
    return Group(*lines)


def draw_load(ax: Any, records: Any, windows: Any, events: list[tuple[float, str]], bucket: float = 1.0) -> None:
    """On ``ax``: answered requests per ``bucket`` (a line), failed ones stacked by error kind (bars), the
    longest error window shaded and ``events`` ((t, what)) as labelled vertical lines — the picture of a
    Service under a steady load while something happens to it (bench lb --during, bench churn)."""
    from kmesh.bench.load import longest, timeline

    rows = timeline(records, bucket)
    kinds = sorted({k for r in rows for k in r if k not in ("t", "ok")})
    ts = [r["t"] for r in rows]
    ax.plot(ts, [r["ok"] for r in rows], color="tab:green", label="answered", drawstyle="steps-post")
    bottom = [0] * len(rows)
    for k in kinds:
        vals = [r.get(k, 0) for r in rows]
        ax.bar(ts, vals, width=bucket, align="edge", bottom=bottom, label=k, alpha=0.7)
        bottom = [b + v for b, v in zip(bottom, vals)]
    lw = longest(windows)
    if lw is not None:
        ax.axvspan(lw.start, lw.end, color="tab:red", alpha=0.08, label=f"longest error window {lw.seconds:.1f} s")
    for at, what in events:
        ax.axvline(at, color="black", linestyle="dashed", linewidth=0.8)
        ax.annotate(what, (at, ax.get_ylim()[1] * 0.95), rotation=90, fontsize=7, va="top", ha="right")
    ax.set_xlabel("seconds since the load began")
    ax.set_ylabel("requests per second" if bucket == 1.0 else f"requests per {bucket:g} s")


def plot_partition(result: Any, path: Path) -> Path:
    """A PNG: answered and failed requests per second (errors stacked by kind), the events as vertical lines."""
    with png(path, figsize=(10, 4.5)) as (fig, ax):
        draw_load(ax, result.records, result.windows, [(e["at"], e["what"]) for e in result.events_list()])
        w = result.as_dict()["errorWindow"]
        span = f"error window {w['seconds']:.1f} s, " if w else ""
        ax.set_title(f"{result.plan.target}: {result.options.during} — {span}{result.failed} failed "
                     f"(grace period {result.grace:g} s)", fontsize=10)
        ax.legend(fontsize=8, loc="lower left")
    return path


def check_load_args(rate: float, settle: float, max_wait: float, after: float, after_flag: str,
                    plot_path: Path | None) -> None:
    """The arguments every experiment under load shares, checked before the lab is looked at (``UsageError``
    naming the flag; ``after_flag`` is how the command spells its baseline)."""
    for name, value in (("--rate", rate), ("--settle", settle), ("--max-wait", max_wait)):
        if not (math.isfinite(value) and value > 0):
            raise UsageError(name, f"must be a number above 0, got {value}")
    if not (math.isfinite(after) and after >= 0):
        raise UsageError(after_flag, f"must be a number of seconds >= 0, got {after}")
    if rate > 1000:
        raise UsageError("--rate", f"at most 1000 requests/s, got {rate:g}")
    need_plot(plot_path)


def need_plot(plot_path: Path | None) -> None:
    """``UsageError`` naming ``--plot`` when a chart is asked for and matplotlib is missing."""
    if plot_path is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot", "needs matplotlib (pip install 'kmesh[bench]')")


def lab_info(dd: DataDir) -> ClusterInfo:
    """The running lab's cluster.json; ``UsageError`` naming ``--data-dir`` when none runs there."""
    info = dd.read_cluster()
    if info is None or not dd.kubeconfig.exists():
        raise UsageError("--data-dir", f"no lab is running in {dd.root} (no cluster.json / kubeconfig.yaml)")
    return info


@contextlib.contextmanager
def load_progress(console: Console) -> Iterator[tuple[Callable[[Any], None], Callable[[str], None]]]:
    """A live line while a load runs (its phase, requests sent, errors) and the two callbacks that feed it:
    one per finished request, one per phase (printed as it begins)."""
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

        yield seen, event


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
    check_load_args(rate, settle, max_wait, after, "--during-after", plot_path)
    info = lab_info(dd)
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
            with load_progress(console) as (seen, event):
                return await run_partition(c, dd, plan, popts, seen, event)

    try:
        result = trio.run(main)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: the node was put back on the underlay; no verdict[/]")
        return 130
    return _report(result, json_out, out_console, console, (partition_table, partition_summary), plot_partition,
                   plot_path)


# ------------------------------------------------------------------ bench churn


def churn_table(result: Any) -> Table:
    """The Service's pods during the change: answers, answers while terminating, and when each step was seen."""
    from kmesh.bench.churn import answers_by_pod, served_by_terminating

    o = result.options
    table = Table(title=f"Service {result.plan.target} — {o.change} under {o.rate:g} requests/s"
                        f"{' (keep-alive)' if o.keepalive else ''}", title_justify="left")
    for col, justify in (("POD", "left"), ("NODE", "left"), ("ANSWERS", "right"), ("WHILE TERMINATING", "right"),
                         ("AFTER EP TERMINATING", "right"), ("DELETION SEEN", "right"), ("EP TERMINATING", "right"),
                         ("EP REMOVED", "right"), ("GONE", "right"), ("READY", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    answers = answers_by_pod(result.records, result.pods)
    term = {d["pod"]: d for d in served_by_terminating(result.records, result.pods)["pods"]}

    def at(t: float | None) -> str:
        return "-" if t is None else f"{t:.1f} s"

    for p in sorted(result.pods.values(), key=lambda p: (p.seen_at or 0.0, p.name)):
        d = term.get(p.name, {})
        style = "dim" if p.gone_at is not None else ""
        table.add_row(p.name, p.node or "-", str(answers.get(p.name, 0)), str(d.get("requests", 0)),
                      str(d.get("afterEndpointTerminating", 0)), at(p.deleting_at), at(p.endpoint_terminating_at),
                      at(p.endpoint_removed_at), at(p.gone_at), at(p.ready_at), style=style)
    stray = {k: v for k, v in answers.items() if k not in result.pods}
    for k, v in sorted(stray.items()):
        table.add_row(f"? {k}", "-", str(v), "-", "-", "-", "-", "-", "-", "-", style="red")
    return table


def churn_summary(result: Any) -> Group:
    """Requests, errors by kind, the longest error window, answers from terminating pods, stale UDP flows,
    the verdict."""
    from kmesh.bench.load import longest

    d = result.as_dict()
    lines: list[Text] = []
    errs = ", ".join(f"{k} {c}" for k, c in d["errors"].items() if c)
    other = ", ".join(f"{k} {c}" for k, c in d["errorDetail"].items() if k not in ("refused", "reset", "timeout"))
    lines.append(Text(f"requests: {d['requests']}, ok {d['ok']}, failed {d['failed']} "
                      f"({errs or 'no errors'}{f'; other: {other}' if other else ''})",
                      style="red" if d["failed"] else ""))
    w = longest(result.windows)
    change = result.changed_at or 0.0
    if w is None:
        lines.append(Text("error window: none"))
    else:
        lines.append(Text(f"longest error window: {w.seconds:.1f} s (first failure {w.start - change:+.1f} s, last "
                          f"{w.end - change:+.1f} s from the change; {w.failed} failed)", style="bold"))
    lines.extend(port_reused_lines(d["portReused"]))
    sbt = d["served_by_terminating"]
    if sbt["requests"]:
        who = ", ".join(f"{p['pod']} {p['requests']}" for p in sbt["pods"])
        lines.append(Text(f"served by terminating pods: {sbt['requests']} ({who}); "
                          f"{sbt['afterEndpointTerminating']} after the EndpointSlice said terminating"))
    else:
        lines.append(Text("served by terminating pods: none"))
    if result.options.keepalive:
        lines.append(Text(f"connections opened: {result.connections}"))
    ct = d["conntrack"]
    if ct is not None:
        if ct["error"]:
            lines.append(Text(f"stale UDP conntrack: not checked ({ct['error']})", style="yellow"))
        else:
            lines.append(Text(f"stale UDP conntrack in {ct['where']}: {ct['stale']} of {ct['entries']} flow(s) to the "
                              "Service point at an endpoint that is gone", style="red" if ct["stale"] else ""))
            for f in ct["flows"][:5]:
                lines.append(Text(f"  {f['line']}" + (f"  (was {f['pod']})" if f["pod"] else "")))
    lines.append(Text(("PASS: " if result.passed else "FAIL: ") + result.reason(),
                      style="bold green" if result.passed else "bold red"))
    return Group(*lines)


def plot_churn(result: Any, path: Path) -> Path:
    """A PNG: the load per second (errors stacked by kind), answers from terminating pods, ready endpoints on a
    second axis, the change and its completion as vertical lines."""
    from kmesh.bench.churn import churn_timeline

    marks = [(t, what) for t, k, what in result.events if k in ("change", "complete", "podDeleting")]
    with png(path, figsize=(10, 4.5)) as (fig, ax):
        draw_load(ax, result.records, result.windows, marks)
        rows = churn_timeline(result.records, result.pods, result.endpoint_states)
        if any(r.get("terminating") for r in rows):
            ax.plot([r["t"] for r in rows], [r.get("terminating", 0) for r in rows], color="tab:purple",
                    drawstyle="steps-post", label="answered by terminating pods")
        if result.endpoint_states:
            ax2 = ax.twinx()
            ts = [s.t for s in result.endpoint_states] + [result.duration]
            ready = [s.ready for s in result.endpoint_states]
            ax2.step(ts, [*ready, ready[-1]], where="post", color="tab:gray", linestyle="dotted",
                     label="ready endpoints")
            ax2.set_ylabel("ready endpoints")
            ax2.set_ylim(0, max(ready + [1]) + 1)
            ax2.legend(fontsize=8, loc="lower right")
        d = result.as_dict()
        ax.set_title(f"{result.plan.target}: {result.options.change} — longest error window "
                     f"{d['longest_error_window_s']:.1f} s, {result.failed} failed, "
                     f"{d['served_by_terminating']['requests']} served by terminating pods", fontsize=10)
        ax.legend(fontsize=8, loc="lower left")
    return path


def run_churn_command(dd: DataDir, service: str, during: str, *, console: Console, plot_path: Path | None = None,
                      json_out: bool = False, warmup: float = 5.0, rate: float = 20.0, after: float = 3.0,
                      settle: float = 3.0, max_wait: float = 120.0, duration: float | None = None,
                      keepalive: bool = False, path: str = "/hostname", **options: Any) -> int:
    """``bench churn``: plan, run the load while the endpoints change, show pods, errors and windows; exit 0 when
    the change completed and the errors stopped, 1 when not. ``UsageError`` for bad arguments, before any change."""
    from kmesh.bench.churn import ChurnOptions, parse_change, prepare, run_churn
    from kmesh.bench.lb import warm_up
    from kmesh.client.api import Client

    out_console = console  # the JSON's; with --json, what people read goes to stderr
    if json_out:
        console = Console(stderr=True)
    change = parse_change(during)  # the form first: a bad --during needs no lab
    check_load_args(rate, settle, max_wait, after, "--after", plot_path)
    if duration is not None and not (math.isfinite(duration) and duration > after):
        raise UsageError("--duration", f"must be more than the baseline (--after {after:g} s), got {duration}")
    timeout = options.get("timeout", 1.0)
    if not (math.isfinite(timeout) and timeout > 0):
        raise UsageError("--timeout", f"must be a number of seconds above 0, got {timeout}")
    if not path.startswith("/") or any(c in path for c in " \r\n"):
        raise UsageError("--path", f"must start with / and hold no spaces, got {path!r}")
    info = lab_info(dd)
    copts = ChurnOptions(change, rate=rate, after=after, settle=settle, max_wait=max_wait, duration=duration,
                         keepalive=keepalive, path=path)

    async def main() -> Any:
        async with Client.from_kubeconfig(dd.kubeconfig) as c:
            plan, selector, dep, victims, replaced = await prepare(c, info, service, change, keepalive=keepalive,
                                                                   **options)
            p = plan.probe
            what = f"GET {path} " if p.protocol == "http" else ""
            console.print(f"{rate:g} {p.protocol} {what}request(s)/s{' over one kept connection' if keepalive else ''}"
                          f" to Service {plan.target} at {p.host}:{p.port} from {plan.source.description}; "
                          f"{change} after {after:g} s", highlight=False)
            await warm_up(plan.probe, warmup)
            with load_progress(console) as (seen, event):
                return await run_churn(c, info, plan, copts, selector, dep, victims, on_record=seen, on_event=event,
                                       replaced=replaced)

    try:
        result = trio.run(main)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: no verdict (the change, once made, stays made)[/]")
        return 130
    return _report(result, json_out, out_console, console, (churn_table, churn_summary), plot_churn, plot_path)
