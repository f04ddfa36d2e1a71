"""The lab topology: underlay, hosts on it, and the sweep that removes a lab by name."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from kmesh.net import netns
from kmesh.net.netns_check import netns_usable
from kmesh.lab.topology import LabNames, add_host, build_underlay, node_ip, processes_in, sweep
from tests.conftest import require

pytestmark = pytest.mark.netns


@pytest.fixture
def names():
    require(netns_usable(), "root and network namespaces")
    n = LabNames(f"t{uuid.uuid4().hex[:6]}")
    try:
        yield n
    finally:
        sweep(n, grace=1.0)


def test_hosts_reach_each_other_and_sweep_removes_all(names: LabNames) -> None:
    build_underlay(names)
    add_host(names, names.control_plane, "cp", "192.168.56.10")
    add_host(names, names.node("node-1"), "node-1", node_ip(0), router=True)
    add_host(names, names.node("node-1"), "node-1", node_ip(0), router=True)  # idempotent
    assert node_ip(0) == "192.168.56.11"
    out = subprocess.run(netns.exec_argv(names.control_plane, ["ping", "-c1", "-W2", node_ip(0)]), capture_output=True)
    assert out.returncode == 0, out.stderr
    fwd = netns.call_in(names.node("node-1"), lambda: open("/proc/sys/net/ipv4/ip_forward").read().strip())
    assert fwd == "1"
    # nsenter enters the namespace, then execs sh, which says so and execs sleep: one PID throughout
    sleeper = subprocess.Popen(netns.nsenter_argv(names.node("node-1"), ["sh", "-c", "echo in; exec sleep 600"]),
                               stdout=subprocess.PIPE, text=True)
    try:
        assert sleeper.stdout is not None and sleeper.stdout.readline() == "in\n"  # it is inside now
        assert sleeper.pid in processes_in([names.node("node-1")])
        removed = sweep(names, grace=2.0)
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
        sleeper.wait()
        sleeper.stdout.close()
    assert f"process {sleeper.pid} (in a lab namespace)" in removed
    assert netns.names(names.prefix) == []
    assert removed[-1] == f"namespace {names.underlay}"
    assert sweep(names) == []


def test_up_refuses_a_lab_name_whose_namespaces_exist(names: LabNames, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import sys

    build_underlay(names)  # as if a lab with this name ran from another data dir
    out = subprocess.run([sys.executable, "-m", "kmesh.cli", "up", "--runtime", "netns", "--name", names.lab,
                          "--data-dir", str(tmp_path / "d"), "--port", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "--name" in out.stderr and names.underlay in out.stderr
    assert netns.names(names.prefix) == [names.underlay]  # nothing added, nothing removed
    assert not (tmp_path / "d" / "up.json").exists()
