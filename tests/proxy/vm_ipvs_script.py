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
import socket
import subprocess
import traceback
from pathlib import Path
from typing import Any

import trio

from kmesh.net import netns
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
    try:
        out["traffic"] = await traffic(kernel, table)
    except Exception as exc:  # noqa: BLE001 - reported to the test; the flush below still runs
        out["traffic_error"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    await kernel.flush()
    out["flushed_kernel"] = ipvsadm()
    out["flushed_kmesh"] = render_table(IPVSTable())
    netns.delete(NS)


POD = "kmesh-vm-ipvs-pod"
VIP = "10.96.0.50"
CLIENT_IP = "10.244.1.1"  # the node's end of the pod link: the source of the node's own connections


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


async def pod_server(listener: trio.SocketListener) -> None:
    """Answer every connection with the address it reached (which endpoint the kernel picked), keep it open."""
    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(f"{stream.socket.getsockname()[0]}\n".encode())
            while await stream.receive_some(100):
                pass

    await trio.serve_listeners(answer, [listener])


async def connect() -> tuple[trio.socket.SocketType, str]:
    sock = await netns.open_socket(NS)
    await sock.bind((CLIENT_IP, 0))
    await sock.connect((VIP, 80))
    with trio.fail_after(10):
        data = b""
        while not data.endswith(b"\n"):
            chunk = await sock.recv(100)
            if not chunk:
                break
            data += chunk
    return sock, data.decode().strip()


async def sync(kernel: KernelIPVS, table: IPVSTable, state: ProxyState) -> None:
    """One IpvsProxy.sync's kernel part: counters in, reconcile (graceful termination), sync out."""
    await kernel.read_counters(table)
    table.reconcile(desired_state(state, CTX, "rr")[0])
    await kernel.sync(table)


async def snapshot(kernel: KernelIPVS, table: IPVSTable) -> dict[str, str]:
    await kernel.read_counters(table)  # as IpvsProxy.table_text does
    return {"kernel": ipvsadm(), "kmesh": render_table(table)}


async def traffic(kernel: KernelIPVS, table: IPVSTable) -> dict[str, Any]:
    """Connections from the node namespace through a ClusterIP to a pod namespace with two endpoint addresses;
    then one endpoint removed while it has a connection (upstream's graceful termination: weight 0, kept)."""
    res: dict[str, Any] = {}
    netns.add(POD)
    ip("link", "add", "kmesh-pod0", "netns", NS, "type", "veth", "peer", "name", "eth0", "netns", POD)
    ip("-n", NS, "link", "add", "kube-ipvs0", "type", "dummy")
    ip("-n", NS, "address", "add", f"{VIP}/32", "dev", "kube-ipvs0")
    ip("-n", NS, "address", "add", f"{CLIENT_IP}/24", "dev", "kmesh-pod0")
    ip("-n", NS, "address", "add", "10.244.2.1/24", "dev", "kmesh-pod0")
    ip("-n", NS, "link", "set", "kmesh-pod0", "up")
    ip("-n", POD, "address", "add", "10.244.1.10/24", "dev", "eth0")
    ip("-n", POD, "address", "add", "10.244.2.10/24", "dev", "eth0")
    ip("-n", POD, "link", "set", "eth0", "up")
    ip("-n", POD, "route", "add", "default", "via", CLIENT_IP)
    web = state_of(WEB)
    async with trio.open_nursery() as nursery:
        lsock = await netns.open_socket(POD)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await lsock.bind(("0.0.0.0", 8080))
        lsock.listen(16)
        nursery.start_soon(pod_server, trio.SocketListener(lsock))
        await sync(kernel, table, web)
        conns = [await connect() for _ in range(2)]
        res["answered"] = sorted(c[1] for c in conns)
        res["two_open"] = await snapshot(kernel, table)
        # 10.244.2.10 leaves the service while a connection to it is open: weight 0, kept (draining)
        await sync(kernel, table, state_of(svc("web", VIP, ep("10.244.1.10"))))
        res["draining"] = await snapshot(kernel, table)
        third = await connect()
        res["answered_while_draining"] = third[1]
        res["draining_three"] = await snapshot(kernel, table)
        for sock, _ in [*conns, third]:
            sock.close()
        await trio.sleep(0.5)
        res["closed"] = await snapshot(kernel, table)
        await sync(kernel, table, state_of(svc("web", VIP, ep("10.244.1.10"))))  # InActConn 1: still kept
        res["closed_resynced"] = await snapshot(kernel, table)
        nursery.cancel_scope.cancel()
    netns.delete(POD)
    return res


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
