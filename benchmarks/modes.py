#!/usr/bin/env python3
"""kube-proxy modes at 1k, 5k and 10k Services, beside upstream's published figures.

Runs ``kmesh bench modes`` (its own namespaces: a node running each mode's
real rules, a client pod, a server pod answering for every endpoint) at the
sizes the ``--budget`` allows, writes the table (``modes.json``) and the
charts (``modes.png``) into ``--out``, and prints the comparisons upstream's
nftables blog (2025) draws from its chart: in iptables mode first-packet
latency grows with the number of Services (one rule per Service, matched in
turn) while nftables and IPVS stay flat; so each mode's last-Service p50 /
first-Service p50, and at each size iptables' best case (p01) against
nftables' median (p50) at the last Service. Both sides come from the same
run on the same machine.

Needs root. Run: ``.venv/bin/python benchmarks/modes.py [--services 1000,5000,10000] [--out benchmarks/out]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kmesh.bench.modes import parse_modes, parse_sizes, plot, run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--services", default="1000,5000,10000")
    ap.add_argument("--modes", default="iptables,nftables,ipvs,userspace")
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--budget", type=float, default=120.0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = ap.parse_args()
    console = Console()
    args.out.mkdir(parents=True, exist_ok=True)
    res = run(parse_modes(args.modes), parse_sizes(args.services), samples=args.samples, budget=args.budget,
              progress=lambda text: console.log(text))
    (args.out / "modes.json").write_text(json.dumps(res.to_json(), indent=2) + "\n")
    plot(res, str(args.out / "modes.png"))
    rows = {(r.mode, r.services): r for r in res.results}
    t = Table(title="kmesh bench modes beside upstream's figures (connect latency to the last Service, µs)")
    for col in ("Services", "mode", "first p50", "last p01", "last p50", "last p99", "last/first p50",
                "full sync s", "change ms", "rules", "RSS MB"):
        t.add_column(col, justify="right")
    for r in res.results:
        c = r.connect_us
        t.add_row(str(r.services), r.mode, f"{c['first']['p50']:.0f}", f"{c['last']['p01']:.0f}",
                  f"{c['last']['p50']:.0f}", f"{c['last']['p99']:.0f}", f"{c['last']['p50'] / c['first']['p50']:.2f}",
                  f"{r.full_sync_s:.2f}", f"{r.change_sync_ms:.1f}", str(r.rules), f"{r.proxy_rss_mb:.0f}")
    console.print(t)
    for n in sorted({r.services for r in res.results}):
        ipt, nft = rows.get(("iptables", n)), rows.get(("nftables", n))
        if ipt and nft:
            best, typical = ipt.connect_us["last"]["p01"], nft.connect_us["last"]["p50"]
            console.print(f"{n} Services, last Service: iptables p01 {best:.0f} µs / nftables p50 {typical:.0f} µs "
                          f"= {best / typical:.2f} (above 1: iptables' best case is slower than nftables' median)")
    for s in res.skipped:
        console.print(f"skipped {s['mode']} at {s['services']}: {s['reason']}")
    console.print(f"wrote {args.out / 'modes.json'} and {args.out / 'modes.png'}")


if __name__ == "__main__":
    main()
