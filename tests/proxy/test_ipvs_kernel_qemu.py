"""The IPVS mode's kernel data path against a real ip_vs: a Debian kernel booted in qemu.

This machine's kernel has no ip_vs, so ``kmesh.proxy.ipvs_kernel`` is
otherwise only checked message by message (test_ipvs_table.py). Here
``tests.support.qemu`` boots Debian's amd64 kernel (TCG, ~20 s) with ip_vs
loaded, this machine's root filesystem mounted read-only over 9p, and runs
vm_ipvs_script.py in it: KernelIPVS syncs the tables the mode computes into
a namespace of the VM, and ``ipvsadm -Ln`` there must print exactly what
kmesh's ``render_table`` prints for the same table. Then real connections go
from that namespace through a ClusterIP to a pod namespace: the kernel's
ActiveConn/InActConn, read back into kmesh's table, keep the two equal, and
an endpoint removed while it has a connection drains (weight 0) as upstream's
graceful termination wants.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require, require_binary
from tests.proxy import vm_ipvs_script as script

pytestmark = [pytest.mark.slow, pytest.mark.netns, pytest.mark.vm]  # it boots a VM: make test runs it with the VMs

REPO = Path(__file__).resolve().parents[2]
MODULES = ("crc32c_generic", "ip_vs", "ip_vs_rr", "veth", "dummy")
VM_TIMEOUT = 300.0  # TCG boots in ~5 s and the script takes ~15 s here; slow CI machines get room


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The script's JSON result from one boot (shared by the tests of this module)."""
    require_binary("qemu-system-x86_64")
    require(Path("/bin/busybox").exists(), "/bin/busybox (busybox-static)")
    require(Path("/usr/sbin/ipvsadm").exists(), "/usr/sbin/ipvsadm")
    from tests.support import qemu

    work = tmp_path_factory.mktemp("qemu-ipvs")
    run = work / "run.sh"
    run.write_text(  # run in the VM, chrooted into this machine's root: the same python, the same files
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PYTHONDONTWRITEBYTECODE=1\n"
        f"cd {REPO} && exec {sys.executable} -m tests.proxy.vm_ipvs_script\n")
    boot = qemu.boot(run, MODULES, timeout=VM_TIMEOUT)
    lines = [line for line in boot.console.splitlines() if line.startswith(script.MARKER)]
    assert lines, f"no result from the VM (qemu rc {boot.returncode}, {boot.seconds:.0f}s); console:\n{boot.console[-6000:]}"
    out: dict[str, Any] = json.loads(lines[-1][len(script.MARKER):])
    out["boot_seconds"] = boot.seconds
    assert "error" not in out, f"{out['error']}\n{out.get('traceback', '')}\nconsole:\n{boot.console[-4000:]}"
    return out


def steps(vm: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in vm["steps"]}


def services(text: str, counters: bool = False) -> dict[str, list[str]]:
    """``ipvsadm -Ln`` text -> {"TCP  ip:port rr ...": ["ip:port Forward Weight", ...]} (counters too when asked)."""
    out: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines()[3:]:
        if line.startswith("  -> "):
            current.append(" ".join(line[5:].split()[:5 if counters else 3]))
        else:
            current = out.setdefault(" ".join(line.split()), [])
    return out


def test_the_vm_kernel_has_ip_vs(vm: dict[str, Any]) -> None:
    assert re.match(r"\d+\.\d+", vm["kernel"]), vm["kernel"]
    assert vm["has_ipvs"] is True
    assert vm["sysctls"] == {"net/ipv4/vs/conntrack": "1", "net/ipv4/vs/expire_nodest_conn": "1",
                             "net/ipv4/vs/expire_quiescent_template": "1", "net/ipv4/vs/conn_reuse_mode": "0"}


def test_kernel_table_equals_render_table(vm: dict[str, Any]) -> None:
    for step in vm["steps"]:
        assert step["kernel"] == step["kmesh"], f"step {step['name']}:\nkernel:\n{step['kernel']}\nkmesh:\n{step['kmesh']}"
        assert step["kernel_again"] == step["kernel"], f"step {step['name']}: a second sync changed the kernel"


def test_initial_sync(vm: dict[str, Any]) -> None:
    assert services(steps(vm)["initial"]["kernel"]) == {
        "TCP 10.96.0.50:80 rr": ["10.244.1.10:8080 Masq 1", "10.244.2.10:8080 Masq 1"],
        "TCP 10.96.0.60:80 rr persistent 600": ["10.244.1.20:8080 Masq 1", "10.244.2.20:8080 Masq 1"],
        "UDP 10.96.0.10:53 rr": ["10.244.2.3:53 Masq 1"],
    }


def test_changed_endpoints_persistence_and_deleted_service(vm: dict[str, Any]) -> None:
    assert services(steps(vm)["changed"]["kernel"]) == {
        "TCP 10.96.0.50:80 rr": ["10.244.1.10:8080 Masq 1", "10.244.3.10:8080 Masq 1"],  # 2.10 deleted, 3.10 added
        "TCP 10.96.0.60:80 rr persistent 1800": ["10.244.1.20:8080 Masq 1", "10.244.2.20:8080 Masq 1"],
    }
    assert services(steps(vm)["affinity-off"]["kernel"]) == {
        "TCP 10.96.0.50:80 rr": ["10.244.1.10:8080 Masq 1", "10.244.2.10:8080 Masq 1"],
        "TCP 10.96.0.60:80 rr": ["10.244.1.20:8080 Masq 1", "10.244.2.20:8080 Masq 1"],
    }


def test_ipv6_virtual_server(vm: dict[str, Any]) -> None:
    assert services(steps(vm)["ipv6"]["kernel"])["TCP [fd00:10:96::50]:80 rr"] == [
        "[fd00:10:244:1::10]:8080 Masq 1", "[fd00:10:244:2::10]:8080 Masq 1"]


def test_flush_empties_the_table(vm: dict[str, Any]) -> None:
    assert vm["flushed_kernel"] == vm["flushed_kmesh"]
    assert services(vm["flushed_kernel"]) == {}


def test_connections_through_the_kernel_and_graceful_termination(vm: dict[str, Any]) -> None:
    """Node -> ClusterIP -> pod namespace through the kernel; kmesh's table (counters read back) matches throughout."""
    assert "traffic_error" not in vm, vm["traffic_error"]
    t = vm["traffic"]
    for name in ("two_open", "draining", "draining_three", "closed", "closed_resynced"):
        assert t[name]["kernel"] == t[name]["kmesh"], f"{name}:\nkernel:\n{t[name]['kernel']}\nkmesh:\n{t[name]['kmesh']}"
    vs = "TCP 10.96.0.50:80 rr"
    assert t["answered"] == ["10.244.1.10", "10.244.2.10"]  # rr: one connection each
    assert services(t["two_open"]["kernel"], counters=True)[vs] == ["10.244.1.10:8080 Masq 1 1 0", "10.244.2.10:8080 Masq 1 1 0"]
    # 10.244.2.10 left the service with a connection open: weight 0, kept, no new connections
    assert services(t["draining"]["kernel"], counters=True)[vs] == ["10.244.1.10:8080 Masq 1 1 0", "10.244.2.10:8080 Masq 0 1 0"]
    assert t["answered_while_draining"] == "10.244.1.10"
    assert services(t["draining_three"]["kernel"], counters=True)[vs] == ["10.244.1.10:8080 Masq 1 2 0", "10.244.2.10:8080 Masq 0 1 0"]
    # closed: the kernel counts them inactive (TIME_WAIT), and the draining server stays while it has any
    assert services(t["closed"]["kernel"], counters=True)[vs] == ["10.244.1.10:8080 Masq 1 0 2", "10.244.2.10:8080 Masq 0 0 1"]
    assert services(t["closed_resynced"]["kernel"], counters=True)[vs] == ["10.244.1.10:8080 Masq 1 0 2", "10.244.2.10:8080 Masq 0 0 1"]
