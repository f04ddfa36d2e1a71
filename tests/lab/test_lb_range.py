"""``--lb-range``: bad pools are refused before anything starts, with an error that names the option (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kmesh.lab.loadbalancers import default_lb_range, lb_range_problem

KMESH = [sys.executable, "-m", "kmesh.cli"]
LAB = {"service_cidr": "10.96.0.0/12", "cluster_cidr": "10.244.0.0/16"}


def test_problems_of_a_netns_pool() -> None:
    assert lb_range_problem(default_lb_range("netns"), runtime="netns", nodes=64, **LAB) is None
    assert "10.96.0.0/12" in (lb_range_problem("10.96.5.0/28", runtime="netns", nodes=1, **LAB) or "")
    assert "pod CIDR" in (lb_range_problem("10.244.9.1-10.244.9.3", runtime="host", nodes=1, **LAB) or "")
    assert "node addresses" in (lb_range_problem("192.168.56.12/32", runtime="netns", nodes=2, **LAB) or "")
    assert lb_range_problem("192.168.56.13/32", runtime="netns", nodes=2, **LAB) is None
    assert "control plane" in (lb_range_problem("192.168.56.8/30", runtime="netns", nodes=1, **LAB) or "")
    assert "underlay" in (lb_range_problem("172.16.0.0/28", runtime="netns", nodes=1, **LAB) or "")
    assert lb_range_problem("172.16.0.0/28", runtime="host", nodes=1, **LAB) is None  # a VM's own LAN
    assert "START-END" in (lb_range_problem("192.168.56.x", runtime="netns", nodes=1, **LAB) or "")
    assert default_lb_range("sim") == ""


@pytest.mark.parametrize("runtime,value,says", [
    ("sim", "192.168.56.240/28", "sim runtime"),
    ("netns", "10.96.0.0/28", "service CIDR"),
    ("netns", "192.168.56.11-192.168.56.20", "node addresses"),
    ("netns", "nonsense", "neither an IPv4 CIDR"),
])
def test_up_refuses_a_bad_lb_range(tmp_path: Path, runtime: str, value: str, says: str) -> None:
    if runtime == "netns" and os.geteuid() != 0:
        pytest.skip("the netns runtime's options are checked as root")
    out = subprocess.run([*KMESH, "up", "--data-dir", str(tmp_path / "d"), "--runtime", runtime, "--name", "lbrange",
                          "--lb-range", value], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "--lb-range" in out.stderr and says in out.stderr
    assert not (tmp_path / "d" / "up.json").exists()


def test_controllers_refuse_a_bad_lb_range(tmp_path: Path) -> None:
    kc = tmp_path / "kubeconfig"
    kc.write_text("apiVersion: v1\nkind: Config\n")
    out = subprocess.run([*KMESH, "controllers", "--kubeconfig", str(kc),
                          "--lb-range", "10.244.0.0/28"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--lb-range" in out.stderr and "--cluster-cidr" in out.stderr
