"""Run inside the qemu VM of test_ipvs_kernel_qemu.py (a kernel with ip_vs): the IPVS mode's kernel path for real.

In a fresh network namespace it does what ``IpvsProxy`` does with the
kernel's ip_vs: ``kernel_has_ipvs``, ``set_sysctls``, then per sync
``read_counters`` + ``IPVSTable.reconcile(desired_state(...))`` +
``KernelIPVS.sync``, and ``flush`` at the end. After each step it records
``ipvsadm -Ln`` run in the namespace next to kmesh's ``render_table`` of
the same table, and prints everything as one JSON line after ``MARKER``.
Each step is guarded: an exception is recorded (with its traceback) and the
rest is skipped, so the test can say what failed.
"""

from __future__ import annotations

import json
import subprocess
import traceback
from pathlib import Path
from typing import Any

import trio

from kmesh.lab import netns
from kmesh.proxy.ipvs import desired_state
from kmesh.proxy.ipvs_kernel import UPSTREAM_SYSCTLS, KernelIPVS, kernel_has_ipvs
from kmesh.proxy.ipvs_table import IPVSTable, render_table
from kmesh.proxy.model import (
    Endpoint,
    NodeContext,
    ProxyState,
    ServicePort,
    ServicePortName,
)

MARKER = "KMESH-VM-IPVS-RESULT "
NS = "kmesh-vm-ipvs"
CTX = NodeContext("node-a", ("192.168.56.11",), cluster_cidr="10.244.0.0/16")


def svc(name: str, cip: str, *eps: Endpoint, port: int = 80, protocol: str = "TCP", **kw: Any) -> ServicePort:
    return ServicePort(ServicePortName("default", name, "", protocol), cip, port, endpoints=tuple(eps), **kw)


def state_of(*sps: ServicePort) -> ProxyState:
    return ProxyState({sp.name: sp for sp in sps})


def ep(ip: str, port: int = 8080) -> Endpoint:
    return Endpoint(ip, port, node="node-b")


WEB = svc("web", "10.96.0.50", ep("10.244.1.10"), ep("10.244.2.10"))
STICKY = svc("sticky", "10.96.0.60", ep("10.244.1.20"), ep("10.244.2.20"), session_affinity=True, affinity_timeout=600)
DNS = svc("dns", "10.96.0.10", ep("10.244.2.3", 53), port=53, protocol="UDP")
WEB6 = svc("web6", "fd00:10:96::50", ep("fd00:10:244:1::10"), ep("fd00:10:244:2::10"))

STEPS: list[tuple[str, ProxyState]] = [
    ("initial", state_of(WEB, STICKY, DNS)),
    # web: 10.244.2.10 gone, 10.244.3.10 new; sticky: timeout 600 -> 1800 (a "set" of the service); dns gone
    ("changed", state_of(
        svc("web", "10.96.0.50", ep("10.244.1.10"), ep("10.244.3.10")),
        svc("sticky", "10.96.0.60", ep("10.244.1.20"), ep("10.244.2.20"), session_affinity=True, affinity_timeout=1800),
    )),
    ("affinity-off", state_of(WEB, svc("sticky", "10.96.0.60", ep("10.244.1.20"), ep("10.244.2.20")))),
    ("ipv6", state_of(WEB, WEB6)),
]


def ipvsadm() -> str:
    proc = subprocess.run(netns.nsenter_argv(NS, ["/usr/sbin/ipvsadm", "-Ln"]), check=False, capture_output=True, text=True)
    return proc.stdout + (f"[ipvsadm exit {proc.returncode}: {proc.stderr}]" if proc.returncode else "")


async def main(out: dict[str, Any]) -> None:
    netns.add(NS)
    out["kernel"] = Path("/proc/sys/kernel/osrelease").read_text().strip()
    out["has_ipvs"] = kernel_has_ipvs(NS)
    out["has_ipvs_root_ns"] = kernel_has_ipvs(None)
    kernel = KernelIPVS(NS)
    await kernel.set_sysctls()
    sysctls = {}
    for key in UPSTREAM_SYSCTLS:
        sysctls[key] = netns.call_in(NS, lambda k=key: Path(f"/proc/sys/{k}").read_text().strip())
    out["sysctls"] = sysctls
    table = IPVSTable()
    out["steps"] = []
    for name, state in STEPS:
        step: dict[str, Any] = {"name": name}
        out["steps"].append(step)
        await kernel.read_counters(table)  # as IpvsProxy.sync does before reconcile
        vss, _, _ = desired_state(state, CTX, "rr")
        table.reconcile(vss)
        await kernel.sync(table)
        step["kernel"] = ipvsadm()
        step["kmesh"] = render_table(table)
        await kernel.sync(table)  # a second sync of the same table changes nothing
        step["kernel_again"] = ipvsadm()
        counters = await trio.to_thread.run_sync(kernel.counters_now)
        step["counters"] = sorted(f"{k[0][0]} {k[0][1]}:{k[0][2]} -> {k[1][0]}:{k[1][1]} {v[0]}/{v[1]}" for k, v in counters.items())
    await kernel.flush()
    out["flushed_kernel"] = ipvsadm()
    out["flushed_kmesh"] = render_table(IPVSTable())
    netns.delete(NS)


def run() -> None:
    out: dict[str, Any] = {}
    try:
        trio.run(main, out)
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()
    print(MARKER + json.dumps(out), flush=True)


if __name__ == "__main__":
    run()
