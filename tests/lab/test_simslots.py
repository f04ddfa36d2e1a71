"""Sim address slots: two labs at once get different loopback ranges; a dead lab's slot comes back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kmesh.lab.simslots import SLOTS, SimNet, SlotsTaken, claim

KMESH = [sys.executable, "-m", "kmesh.cli"]


def test_slots_are_exclusive_and_come_back(tmp_path: Path) -> None:
    first, fd1 = claim(tmp_path)
    second, fd2 = claim(tmp_path)
    assert (first.slot, second.slot) == (0, 1)
    assert (first.service_cidr, first.cluster_cidr, first.node_ip(0)) == ("127.96.0.0/16", "127.244.0.0/16", "127.1.0.1")
    assert (second.service_cidr, second.cluster_cidr, second.node_ip(2)) == ("127.97.0.0/16", "127.245.0.0/16", "127.1.1.3")
    os.close(fd1)
    again, fd3 = claim(tmp_path)
    assert again == SimNet(0)
    held = [claim(tmp_path)[1] for _ in range(SLOTS - 2)]
    with pytest.raises(SlotsTaken, match="kmesh down"):
        claim(tmp_path)
    for fd in (fd2, fd3, *held):
        os.close(fd)


def test_a_killed_holder_frees_its_slot(tmp_path: Path) -> None:
    code = f"import sys, time; sys.path.insert(0, {str(Path.cwd())!r}); from kmesh.lab.simslots import claim; " \
           f"from pathlib import Path; print(claim(Path({str(tmp_path)!r}))[0].slot, flush=True); time.sleep(600)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "0"
        net, fd = claim(tmp_path)
        assert net.slot == 1
        os.close(fd)
    finally:
        holder.kill()
        holder.wait()
    net, fd = claim(tmp_path)
    assert net.slot == 0
    os.close(fd)


@pytest.mark.slow
def test_two_sim_labs_at_once_both_serve_their_demo(tmp_path: Path) -> None:
    dirs = [tmp_path / "a", tmp_path / "b"]
    try:
        for d in dirs:
            up = subprocess.run([*KMESH, "up", "--runtime", "sim", "--nodes", "2", "--demo", "--port", "0",
                                 "--data-dir", str(d)], capture_output=True, text=True, timeout=180)
            assert up.returncode == 0, up.stdout + up.stderr
        cidrs = set()
        for d in dirs:
            info = (d / "cluster.json").read_text()
            cidrs.add(info.split('"serviceCIDR": ')[1].split(",")[0])
            lb = subprocess.run([*KMESH, "bench", "lb", "--data-dir", str(d), "web", "--requests", "60", "--alpha", "0.0001"],
                                capture_output=True, text=True, timeout=180)
            assert lb.returncode == 0, lb.stdout + lb.stderr
        assert len(cidrs) == 2
    finally:
        for d in dirs:
            subprocess.run([*KMESH, "down", "--data-dir", str(d)], capture_output=True, timeout=120)
