#!/usr/bin/env python3
"""How long a Vagrant lab takes from `vagrant up` to every node Ready, and how much of it is kmesh's own.

Runs the project's Vagrantfile with the libvirt provider and the box ``make vagrant-box`` builds, libvirtd
confined to a network namespace made for the run (tests/support/libvirt.py: nothing touches this
machine's own network), QEMU with TCG unless ``--accel kvm``. While ``vagrant up`` runs, kubectl (in the
namespace, with the kubeconfig the first server leaves in the synced folder) watches for every node Ready.

The total splits into
- VM: until the last VM is ready for kmesh: libvirt and Vagrant preparing the domains, the VMs booting to
  ssh, Vagrant mounting the synced folder and starting the provisioners, kmesh's wheel installed;
- kmesh: the rest, until every node is Ready - ``kmesh up`` on the first server until its API answers and
  the join command is out, the joins (in parallel with the rest of the server's start), and the provisioning
  scripts' own steps around them. ``kmesh up`` and the slowest ``kmesh join`` are shown on their own too;
  as they overlap, their sum is more than kmesh's share.
Both ends are on this machine's clock: "every node Ready" is when a ``kubectl get nodes --watch`` here
first shows it; "the last VM ready" comes from the provisioning lines' own time of day, moved onto this clock by
each VM's clock offset (read over ssh afterwards), because Vagrant passes those lines on seconds late.
The goal is kmesh's share under 20 % of the total. Prints both and the ratio, then ``vagrant destroy``.
Needs root and the VM test's packages. Run: ``.venv/bin/python benchmarks/vagrant_up.py [--nodes 2]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.vagrant import VagrantLab, build_box, default_settings, missing_packages, vagrant_lab

console = Console()
GOAL = 0.20


def watch_ready(lab: VagrantLab, done: threading.Event, out: dict[str, float]) -> None:
    """Record when (this machine's epoch) every node is first Ready: one ``kubectl get nodes --watch`` from
    the namespace, started again while the API does not answer yet (one process rather than a poll, so the
    measuring takes no CPU from the VMs it measures)."""
    fmt = '{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\\n"}'
    want = set(lab.names())
    while not done.is_set():
        if not lab.kubeconfig.exists():
            done.wait(0.25)
            continue
        proc = subprocess.Popen(lab.lv.in_netns("kubectl", "--kubeconfig", str(lab.kubeconfig), "get", "nodes",
                                                "--watch", "-o", f"jsonpath={fmt}"),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        ready: dict[str, bool] = {}
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                name, _, status = line.strip().partition(" ")
                ready[name] = status == "True"
                if want <= {n for n, r in ready.items() if r}:
                    out["all ready"] = time.time()
                    return
                if done.is_set():
                    return
        finally:
            proc.kill()
            proc.wait()
        done.wait(0.5)


PROVISION = re.compile(r"kmesh-provision\[(\S+) (\d\d):(\d\d):(\d\d(?:\.\d+)?)\]: (.*)")


def phases(lab: VagrantLab) -> dict[str, float]:
    """What the stamped output of ``vagrant up`` says (seconds since it started, or durations)."""
    got: dict[str, float] = {}
    joins: list[float] = []
    for t, line in lab.up_stamped:
        if "Starting domain." in line:
            got.setdefault("first domain starts", t)
        if "Machine booted and ready!" in line:
            got["last VM booted"] = t
        if m := re.search(r"kmesh up returned after (\d+) s", line):
            got["kmesh up"] = float(m.group(1))
        if m := re.search(r"kmesh join returned after (\d+) s", line):
            joins.append(float(m.group(1)))
        if m := re.search(r"kmesh installed in (\d+) s", line):
            got["kmesh install (max)"] = max(got.get("kmesh install (max)", 0.0), float(m.group(1)))
    got["kmesh join (slowest)"] = max(joins, default=0.0)
    return got


def guest_events(lab: VagrantLab, near: float) -> dict[str, dict[str, float]]:
    """{machine: {event: epoch on the guest's clock}} from the provisioning lines' UTC time of day (which
    Vagrant may pass on late, so their arrival here is not when they happened); ``near``: an epoch of the
    same run, to pick the day."""
    base = dt.datetime.fromtimestamp(near, dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    out: dict[str, dict[str, float]] = {}
    for _, line in lab.up_stamped:
        m = PROVISION.search(line)
        if not m:
            continue
        machine, text = m.group(1), m.group(5)
        when = (base + dt.timedelta(hours=int(m.group(2)), minutes=int(m.group(3)),
                                    seconds=float(m.group(4)))).timestamp()
        when += 86400 * round((near - when) / 86400)  # the run crossed midnight
        event = ("installed" if "kmesh installed in" in text else "join out" if "the workers join now" in text
                 else None)
        if event:
            out.setdefault(machine, {})[event] = when
    return out


def guest_offsets(lab: VagrantLab) -> dict[str, float]:
    """Each VM's clock minus this machine's, read over ssh (the guest's time taken before ssh returns:
    an offset too low by at most ssh's wind-down, which counts against kmesh's share, never for it)."""
    out = {}
    for name in lab.names():
        r = lab.ssh(name, "date +%s.%N", sudo=False, timeout=120)
        out[name] = float(r.stdout.strip()) - time.time()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=2, help="VMs: 1 server + N-1 workers (default 2)")
    parser.add_argument("--accel", choices=("tcg", "kvm"), default="tcg", help="QEMU acceleration (default tcg)")
    parser.add_argument("--proxy-mode", default="iptables")
    parser.add_argument("--keep", type=Path, help="keep the work dir (logs) here instead of a temporary one")
    args = parser.parse_args()
    if os.geteuid() != 0:
        console.print("[red]needs root (libvirtd, namespaces, QEMU)[/]")
        return 2
    if missing := missing_packages():
        console.print(f"[red]missing Debian packages: {' '.join(missing)} (make deps as root)[/]")
        return 2
    work = args.keep or Path(tempfile.mkdtemp(prefix="kmesh-bench-vagrant-"))
    work.mkdir(parents=True, exist_ok=True)
    box, box_s = build_box(work / "box.log" if args.keep else None)
    console.print(f"box: {box} ({box_s:.0f} s)")
    settings = default_settings(work, workers=args.nodes - 1, proxy_mode=args.proxy_mode)
    settings["libvirt"]["accel"] = args.accel
    ready: dict[str, float] = {}
    with vagrant_lab(work, f"kmb-{secrets.token_hex(3)}", settings, box) as lab:
        done = threading.Event()
        t0 = time.time()
        watcher = threading.Thread(target=watch_ready, args=(lab, done, ready), daemon=True)
        watcher.start()
        try:
            with console.status(f"vagrant up ({args.nodes} VMs, {args.accel})"):
                lab.up()
                up_s = time.time() - t0
                if "all ready" not in ready:  # the last join returns once its node is Ready: a last look
                    watcher.join(timeout=120)
        finally:
            done.set()
        p = phases(lab)
        offsets = guest_offsets(lab)
        events = guest_events(lab, t0)
        with console.status("vagrant destroy"):
            destroy_s = lab.destroy()
    if "all ready" not in ready or set(events) != set(offsets) or any("installed" not in e for e in events.values()):
        console.print(f"[red]could not place the run on one clock: ready {ready}, events {events}[/]")
        return 1
    total = ready["all ready"] - t0
    vm = max(e["installed"] - offsets[m] for m, e in events.items()) - t0  # the last VM ready for kmesh
    kmesh = total - vm
    p["join command out"] = max((e["join out"] - offsets[m] for m, e in events.items() if "join out" in e),
                                default=t0 + vm) - t0
    t = Table("phase", "seconds", title=f"vagrant up -> {args.nodes} nodes Ready ({args.accel}, {args.proxy_mode})")
    t.add_row("VMs created, booted to ssh (last VM)", f"{p.get('last VM booted', 0):.0f}")
    t.add_row("  of which booting (first domain start -> last VM ssh)",
              f"{p.get('last VM booted', 0) - p.get('first domain starts', 0):.0f}")
    t.add_row("kmesh wheel installed in a VM (slowest)", f"{p.get('kmesh install (max)', 0):.0f}")
    t.add_row("[b]VM and Vagrant share: the last VM ready for kmesh", f"[b]{vm:.0f}")
    t.add_row("the server's API answers, join token out (after the last VM ready)",
              f"{p['join command out'] - vm:.0f}")
    t.add_row("kmesh up (first server)", f"{p.get('kmesh up', 0):.0f}")
    t.add_row("kmesh join (slowest worker)", f"{p['kmesh join (slowest)']:.0f}")
    t.add_row("[b]total: vagrant up -> every node Ready", f"[b]{total:.0f}")
    t.add_row("[b]kmesh share (total - VM share)", f"[b]{kmesh:.0f}")
    t.add_row("vagrant up returned / vagrant destroy", f"{up_s:.0f} / {destroy_s:.0f}")
    console.print(t)
    ratio = kmesh / total if total else 0.0
    verdict = "[green]within[/]" if ratio < GOAL else "[red]over[/]"
    console.print(f"clock offsets (VM - this machine): "
                  f"{', '.join(f'{m} {o:+.2f} s' for m, o in sorted(offsets.items()))}", highlight=False)
    console.print(f"VM {vm:.0f} s, kmesh {kmesh:.0f} s: kmesh's share {ratio:.1%} ({verdict} the {GOAL:.0%} goal)")
    console.print(f"logs: {work}" if args.keep else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
