#!/usr/bin/env python3
"""The kube-proxy benchmarks, each beside its anchor in the same run.

- userspace throughput: iperf3 through the Service vs a direct connection to
  the endpoint vs haproxy vs a minimal C splice() relay (the ceiling for a
  TCP-terminating proxy) in the same namespaces (benchmarks/proxy_userspace.py;
  goal >= 0.95x the C relay; ``--plot FILE.png`` draws the medians);
- iptables: a full sync of 10,000 Services x 2 endpoints vs plain
  iptables-restore of the same rules (goal <= 1.3x), and one endpoint change
  at 10,000 Services (goal <= 100 ms) vs a --noflush restore of the changed
  chains (benchmarks/proxy_iptables.py).

Run: ``sudo .venv/bin/python benchmarks/proxy.py [--only userspace|iptables]``; extra
arguments after ``--`` go to each script.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = {"userspace": HERE / "proxy_userspace.py", "iptables": HERE / "proxy_iptables.py"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=sorted(PARTS), help="run one part")
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed to the part (after --)")
    args = ap.parse_args()
    rest = [a for a in args.rest if a != "--"]
    status = 0
    for name, script in PARTS.items():
        if args.only and name != args.only:
            continue
        print(f"\n=== {name} ===", flush=True)
        status |= subprocess.run([sys.executable, str(script), *rest]).returncode
    return status


if __name__ == "__main__":
    raise SystemExit(main())
