#!/usr/bin/env python3
"""NetworkPolicy speed: 100 policies over 300 pods on 3 nodes, from a policy change to its enforcement.

One run (root; kmesh/bench/netpol.py does the work): three node namespaces
routed to one another, a real client and server pod on each, the other pods
as API objects only, ten labelled namespaces, 100 policies of many kinds,
an in-process API server and one PolicyAgent per node (in this process)
programming its node with nft. Printed:

- time from a policy write returning to the first probe that shows the new
  behaviour, p50/p99 over ~32 changes (probes: a new TCP connect every 1 ms
  from the client pod, 100 ms timeout, in a process of their own), against
  the goal p99 <= 1 s; and the agents' syncs (model + render vs nft) and rule
  counts per node;
- connect latency client→server (same node, across nodes), 2 000 connects per
  round, 8 rounds each interleaving three conditions: no policy, kmesh's
  table with the 100 policies (the server isolated, the rule that allows the
  client third of its policies), and the same policies as k3s's embedded
  agent (kube-router) writes them with iptables and ipset: the anchor. The
  goal is no measurable change (a sign test on the per-round p50 differences
  gives p >= 0.05), and kmesh's added p50 no more than the anchor's.

Every namespace it makes is named ``kmesh-np<random>-…`` and removed on exit
and on Ctrl-C. Run: ``sudo .venv/bin/python benchmarks/netpol.py [--json]
[--plot FILE.png]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kmesh.bench.netpol import GOAL_ENFORCE_P99, Options, run_bench


def ms(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * 1000:.1f}"


def us(x: float) -> str:
    return f"{x * 1e6:.1f}"


def show(report: dict[str, Any], console: Console) -> None:
    s = report["setup"]
    console.print(f"[bold]{s['policies']} NetworkPolicies, {s['pods']} pods ({s['real_pods']} real) in "
                  f"{s['namespaces']} namespaces on {s['nodes']} nodes[/]")
    b = report["bulk"]
    console.print(f"all {s['policies']} policies: created in {b['create_seconds']:.2f} s, enforced on every node "
                  f"{b['enforced_seconds']:.2f} s after the first write")

    e = report["enforcement"]
    t = Table(title=f"policy write → enforcement (probe every {s['probe_interval'] * 1000:.0f} ms, "
                    f"timeout {s['probe_timeout'] * 1000:.0f} ms)")
    for col in ("change", "n", "p50 ms", "p99 ms", "max ms", "agent sync starts ms", "render ms", "nft ms"):
        t.add_column(col, justify="right" if col != "change" else "left")
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for c in report["changes"]:
        by_kind.setdefault(c["change"], []).append(c)
    from kmesh.bench.netpol import summary

    for label, cs in by_kind.items():
        sm = summary([c["seconds"] for c in cs if c["seconds"] is not None])
        t.add_row(label, str(len(cs)), ms(sm.p50), ms(sm.p99), ms(sm.max),
                  ms(summary([c["sync_start"] for c in cs if c["sync_start"] is not None]).p50),
                  ms(summary([c["sync_render"] for c in cs if c["sync_render"] is not None]).p50),
                  ms(summary([c["sync_apply"] for c in cs if c["sync_apply"] is not None]).p50))
    t.add_row("[bold]all[/]", str(e["count"]), f"[bold]{ms(e['p50'])}[/]", f"[bold]{ms(e['p99'])}[/]", ms(e["max"]),
              "", "", "")
    console.print(t)
    res = [c["seconds"] - c["lower"] for c in report["changes"] if c["seconds"] is not None and c["lower"] is not None]
    flaps = sum(c["flaps"] for c in report["changes"])
    console.print(f"resolution (gap between the last probe with the old behaviour and the first with the new): "
                  f"median {ms(summary(res).p50)} ms, max {ms(summary(res).max)} ms; flaps: {flaps}; "
                  f"missed: {e['missed']}")
    met = e["missed"] == 0 and e["p99"] <= GOAL_ENFORCE_P99
    console.print(f"goal p99 <= {GOAL_ENFORCE_P99:.0f} s to enforcement: p99 {ms(e['p99'])} ms — "
                  + ("[green]met[/]" if met else "[red]not met[/]"))

    t = Table(title="agent syncs during the changes (per node; one agent each, all in this process)")
    for col in ("node", "syncs", "rules", "render p50/p99 ms", "nft p50/p99 ms (when changed)", "applied"):
        t.add_column(col, justify="right")
    for node, sy in report["syncs"].items():
        t.add_row(node, str(sy["syncs"]), str(sy["rules"]), f"{ms(sy['render']['p50'])} / {ms(sy['render']['p99'])}",
                  f"{ms(sy['apply']['p50'])} / {ms(sy['apply']['p99'])}", str(sy["applied"]))
    console.print(t)
    pos = report.get("allow_rule_position")
    if pos:
        console.print(f"the rule allowing the client is rule {pos[0]} of {pos[1]} in the server's ingress chain")

    t = Table(title=f"TCP connect latency, {s['connects_per_round']} connects × "
                    f"{len(next(iter(report['latency'].values()))['rounds']['none'])} interleaved rounds, p50 (µs)")
    for col in ("pair", "no policy", f"kmesh, {s['policies']} policies", "Δ", "p", "measurable?",
                "kube-router's rules", "Δ", "kmesh Δ / kube-router Δ"):
        t.add_column(col, justify="right")
    rounds = []
    for pair, d in report["latency"].items():
        v, a = d["verdict"], d["anchor"]
        t.add_row(pair, us(v["baseline_p50"]), us(v["policies_p50"]), us(v["p50_diff"]), f"{v['p_value']:.3f}",
                  "[red]yes[/]" if v["measurable"] else "[green]no[/]", us(a["policies_p50"]), us(a["p50_diff"]),
                  f"[bold]{d['added_vs_anchor']:.2f}×[/]")
        rounds.append(f"{pair}: kmesh − none per round " + " ".join(f"{x * 1e6:+.1f}" for x in v["round_diffs"])
                      + "; kube-router − none " + " ".join(f"{x * 1e6:+.1f}" for x in a["round_diffs"]))
    console.print(t)
    console.print("Δ: the median of the per-round p50 differences to no policy (µs); p: a two-sided sign test on "
                  "them.\n" + "\n".join(rounds), highlight=False)
    console.print("goal: no measurable connect-latency change (p >= 0.05): "
                  + ("[green]met[/]" if not any(d["verdict"]["measurable"] for d in report["latency"].values())
                     else "[red]not met[/]"))
    console.print("anchor: kmesh adds no more than kube-router's rules (Δ ratio <= 1): "
                  + ("[green]met[/]" if all(d["added_vs_anchor"] <= 1 for d in report["latency"].values())
                     else "[red]not met[/]"))


def plot(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def cdf(ax: Any, values: list[float], label: str, scale: float) -> None:
        xs = sorted(v * scale for v in values)
        if xs:
            ax.step([xs[0]] + xs, [0.0] + [(i + 1) / len(xs) for i in range(len(xs))], where="post", label=label)

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for kind in sorted({c["change"] for c in report["changes"]}):
        cdf(a, [c["seconds"] for c in report["changes"] if c["change"] == kind and c["seconds"] is not None], kind, 1000)
    cdf(a, [c["seconds"] for c in report["changes"] if c["seconds"] is not None], "all", 1000)
    a.set_xlabel("policy write → enforced (ms)")
    a.set_ylabel("fraction of changes")
    a.legend(fontsize=7)
    a.set_title("enforcement time")
    for pair, d in report["latency_samples"].items():
        cdf(b, d["none"], f"{pair}, no policy", 1e6)
        cdf(b, d["kmesh"], f"{pair}, {report['setup']['policies']} policies (kmesh)", 1e6)
        cdf(b, d["anchor"], f"{pair}, the same as kube-router's rules", 1e6)
    b.set_xscale("log")
    b.set_xlabel("TCP connect (µs)")
    b.legend(fontsize=7)
    b.set_title("connect latency")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--pods", type=int, default=300)
    ap.add_argument("--policies", type=int, default=100)
    ap.add_argument("--changes", type=int, default=32, help="policy changes timed (whole cycles of 4)")
    ap.add_argument("--connects", type=int, default=2000, help="TCP connects per latency round")
    ap.add_argument("--rounds", type=int, default=8, help="interleaved latency rounds (each: no policy, kmesh, "
                                                          "kube-router's rules)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON (no table)")
    ap.add_argument("--plot", metavar="PNG", help="enforcement-time CDF and connect-latency CDFs")
    args = ap.parse_args()
    opts = Options(nodes=args.nodes, pods=args.pods, policies=args.policies, changes=args.changes,
                   connects=args.connects, rounds=args.rounds)
    console = Console(stderr=args.json)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=args.json) as progress:
        tasks: dict[str, Any] = {}

        def step(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done, total=total)

        try:
            report = trio.run(run_bench, opts, step)
        except (KeyboardInterrupt, BaseExceptionGroup) as exc:  # trio may hand Ctrl-C back inside a group
            if isinstance(exc, BaseExceptionGroup) and exc.subgroup(KeyboardInterrupt) is None:
                raise
            console.print("interrupted; every namespace it made is removed")
            return 130
    if args.plot:
        plot(report, args.plot)
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "latency_samples"}, indent=2))
    else:
        show(report, console)
        if args.plot:
            console.print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
