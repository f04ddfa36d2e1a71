#!/usr/bin/env python3
"""kmesh's iptables proxy mode against plain iptables-restore of the same rules, in scratch namespaces.

Two questions, each answered against an anchor measured in the same run:

* full sync of N Services × E endpoints (default 10,000 × 2): kmesh's render +
  apply (``IptablesProxy.sync(full=True)`` into a fresh namespace) against
  ``iptables-restore --noflush`` of the same rules (jumps from the built-in
  chains included) into another fresh namespace (goal: ≤ 1.3×);
* one endpoint change among N services: kmesh's partial sync against a
  ``--noflush`` restore of only the changed chains on top of the full rule
  set (goal: ≤ 100 ms).

Each side's runs are interleaved with the other's and medians are reported.
iptables-nft restores of ~100k lines vary a lot between runs here (1–3 min),
so the table also shows kmesh's full sync against the restore inside it. Needs root; every
namespace is named ``kmi-bench-<random>-*`` and removed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import trio
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kmesh.net import netns
from kmesh.proxy.iptables import RESTORE, IptablesProxy
from kmesh.proxy.iptables_rules import JUMPS, Planner, RenderConfig
from kmesh.proxy.model import (
    Endpoint,
    NodeContext,
    ProxyState,
    ServicePort,
    ServicePortName,
)

console = Console()


def make_state(services: int, endpoints: int) -> ProxyState:
    """N ClusterIP services (10.96.0.0/12) with E endpoints each (10.244.0.0/16), 3 nodes."""
    state = ProxyState()
    for i in range(services):
        name = ServicePortName(f"ns{i % 50}", f"svc{i}", "http")
        eps = tuple(
            Endpoint(f"10.244.{(i * endpoints + j) // 250 % 256}.{(i * endpoints + j) % 250 + 2}", 8080,
                     node=f"node{j % 3}")
            for j in range(endpoints)
        )
        state.services[name] = ServicePort(name, f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}", 80, endpoints=eps)
    return state


async def restore(ns: str, text: str) -> float:
    """Seconds for one ``iptables-restore --noflush --counters`` of ``text`` in ``ns``."""
    t0 = time.perf_counter()
    await netns.run(ns, RESTORE, input=text.encode())
    return time.perf_counter() - t0


async def run(args: argparse.Namespace) -> None:
    tag = f"kmi-bench-{uuid.uuid4().hex[:6]}"
    state = make_state(args.services, args.endpoints)
    victim = next(iter(state.services))
    sp = state.services[victim]
    changed_state = ProxyState(dict(state.services))
    changed_state.services[victim] = replace(sp, endpoints=sp.endpoints[:-1])
    ctx = NodeContext("node0", ("192.168.56.11",))
    render_cfg = RenderConfig.from_context(ctx)

    full_kmesh: list[float] = []
    full_anchor: list[float] = []
    render_only: list[float] = []
    full_own_restore: list[float] = []  # the restore inside kmesh's own full sync
    part_kmesh: list[float] = []
    part_anchor: list[float] = []
    made: list[str] = []
    # The anchor installs the same final rule set, jumps from the built-in chains included (the kernel
    # re-validates every chain reachable from a hooked chain, so a rule set without them is cheaper).
    anchor_text = Planner(render_cfg).plan(state, full=True, jumps=JUMPS).text
    try:
        # Warm-up (not measured): the first large transaction after a while is slower.
        warm = f"{tag}-warm"
        netns.add(warm)
        made.append(warm)
        await restore(warm, Planner(render_cfg).plan(make_state(1000, 2), full=True, jumps=JUMPS).text)
        netns.delete(warm)
        made.remove(warm)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task(f"{args.services} services × {args.endpoints} endpoints",
                                     total=args.rounds * (2 + args.changes))
            for r in range(args.rounds):
                ns_k, ns_a = f"{tag}-k{r}", f"{tag}-a{r}"
                for ns in (ns_k, ns_a):
                    netns.add(ns)
                    made.append(ns)
                mode = IptablesProxy(replace(ctx, netns=ns_k), flush_conntrack=False, monitor_interval=0)
                async with trio.open_nursery() as nursery:
                    await mode.start(nursery)
                # Anchor first in odd rounds, kmesh first in even ones.
                order = ("k", "a") if r % 2 == 0 else ("a", "k")
                for who in order:
                    if who == "k":
                        t0 = time.perf_counter()
                        await mode.sync(state, frozenset(), True)
                        full_kmesh.append(time.perf_counter() - t0)
                        full_own_restore.append(mode.last_timings["restore"])
                    else:
                        full_anchor.append(await restore(ns_a, anchor_text))
                t0 = time.perf_counter()
                Planner(render_cfg).plan(state, full=True)
                render_only.append(time.perf_counter() - t0)
                progress.advance(task, 2)

                # One endpoint change (and back, so every change is the same size), kmesh and anchor
                # interleaved; the anchor restores the same changed chains on top of the same full set.
                anchor = Planner(render_cfg)
                anchor.commit(anchor.plan(state, full=True))
                for i in range(args.changes):
                    target = changed_state if i % 2 == 0 else state
                    plan = anchor.plan(target, {victim}, full=False)
                    for who in (order if i % 2 == 0 else order[::-1]):
                        if who == "k":
                            t0 = time.perf_counter()
                            await mode.sync(target, frozenset({victim}), False)
                            part_kmesh.append(time.perf_counter() - t0)
                        else:
                            part_anchor.append(await restore(ns_a, plan.text))
                    anchor.commit(plan)
                    progress.advance(task)
                for ns in (ns_k, ns_a):
                    netns.delete(ns)
                    made.remove(ns)
    finally:
        for ns in made:
            netns.delete(ns)

    med = statistics.median
    lines = len(anchor_text.splitlines())
    table = Table(title=f"iptables mode: {args.services} services × {args.endpoints} endpoints "
                        f"({lines} restore lines); medians of {args.rounds} full syncs, "
                        f"{args.rounds * args.changes} changes")
    for col in ("measurement", "kmesh", "anchor", "ratio", "goal"):
        table.add_column(col, justify="right" if col != "measurement" else "left")
    fk, fa = med(full_kmesh), med(full_anchor)
    table.add_row("full sync (render + restore)", f"{fk * 1000:.0f} ms", f"{fa * 1000:.0f} ms (iptables-restore)",
                  f"{fk / fa:.2f}×", "≤ 1.30×" + (" ✓" if fk / fa <= 1.3 else " ✗"))
    table.add_row("  of which rendering", f"{med(render_only) * 1000:.0f} ms", "", "", "")
    own = med(full_own_restore)
    table.add_row("  kmesh sync vs its own restore", f"{fk * 1000:.0f} ms", f"{own * 1000:.0f} ms (restore inside)",
                  f"{fk / own:.2f}×", "≤ 1.30×" + (" ✓" if fk / own <= 1.3 else " ✗"))
    pk, pa = med(part_kmesh), med(part_anchor)
    table.add_row("one endpoint change (partial sync)", f"{pk * 1000:.1f} ms",
                  f"{pa * 1000:.1f} ms (noflush restore of changed chains)", f"{pk / pa:.2f}×",
                  "≤ 100 ms" + (" ✓" if pk <= 0.1 else " ✗"))
    console.print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--endpoints", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="full syncs of each side (10,000 services take minutes)")
    ap.add_argument("--changes", type=int, default=10, help="endpoint changes per round")
    args = ap.parse_args()
    trio.run(run, args)


if __name__ == "__main__":
    main()
