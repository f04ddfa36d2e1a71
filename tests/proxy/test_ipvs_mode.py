"""The IPVS proxy mode: what a sync wants (pure), and a node namespace where pods reach Services through it.

The lab: a node namespace with a bridge ``cni0`` (10.244.1.1/24) that client
and endpoint pod namespaces hang off (default route via the node), and a
port-less bridge ``eth0`` carrying the node IP. Endpoint pods run small trio
servers answering their name. This kernel has no ip_vs, so the mode serves
its table itself; the kernel path is covered by the message tests in
test_ipvs_table.py.
"""

from __future__ import annotations

import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace

import pytest
import trio

from kmesh.net import netns
from kmesh.net.netns_check import netns_usable
from kmesh.proxy.ipvs import IPVSConfig, IpvsProxy, desired_state, iptables_text
from kmesh.proxy.ipvs_table import IPVSTable
from kmesh.proxy.model import (
    Endpoint,
    NodeContext,
    ProxyState,
    ServicePort,
    ServicePortName,
)
from tests.conftest import require, require_binary
from tests.proxy.support import (
    endpoint_slice_yaml,
    endpoint_yaml,
    read_line,
    service_yaml,
)

NODE_IP = "192.168.56.11"
CTX = NodeContext("node-a", (NODE_IP,), cluster_cidr="10.244.0.0/16")


def svc(name: str, cip: str, *eps: Endpoint, port: int = 80, protocol: str = "TCP", **kw: object) -> ServicePort:
    return ServicePort(ServicePortName("default", name, "", protocol), cip, port, endpoints=tuple(eps), **kw)  # type: ignore[arg-type]


def state_of(*sps: ServicePort) -> ProxyState:
    return ProxyState({sp.name: sp for sp in sps})


# ---------------------------------------------------------------------------------------------- pure


def test_desired_state_virtual_servers_sets_and_addresses() -> None:
    eps = (Endpoint("10.244.1.10", 8080, node="node-a"), Endpoint("10.244.2.10", 8080, node="node-b"),
           Endpoint("10.244.1.11", 8080, node="node-a", ready=False, serving=True, terminating=True))
    web = svc("web", "10.96.0.50", *eps, type="LoadBalancer", node_port=30080, external_ips=("192.0.2.7",),
              load_balancer_ips=("198.51.100.9",), session_affinity=True, affinity_timeout=600, external_local=True)
    dns = svc("dns", "10.96.0.10", Endpoint("10.244.2.3", 53, node="node-b"), port=53, protocol="UDP")
    vss, sets, addrs = desired_state(state_of(web, dns), CTX, "wlc")
    by_key = {v.key: v for v in vss}
    assert set(by_key) == {("TCP", "10.96.0.50", 80), ("TCP", "192.0.2.7", 80), ("TCP", "198.51.100.9", 80),
                           ("TCP", NODE_IP, 30080), ("UDP", "10.96.0.10", 53)}
    cluster = by_key[("TCP", "10.96.0.50", 80)]
    assert cluster.dests == (("10.244.1.10", 8080), ("10.244.2.10", 8080))  # ready ones; the terminating one drains
    assert (cluster.scheduler, cluster.persistent, cluster.comment) == ("wlc", 600, "default/web")
    assert by_key[("TCP", NODE_IP, 30080)].dests == (("10.244.1.10", 8080),)  # externalTrafficPolicy Local
    assert addrs == {"10.96.0.50", "192.0.2.7", "198.51.100.9", "10.96.0.10"}
    m = sets.members
    assert m["KUBE-CLUSTER-IP"] == {"10.96.0.50,tcp:80", "10.96.0.10,udp:53"}
    assert m["KUBE-EXTERNAL-IP"] == {"192.0.2.7,tcp:80"} == m["KUBE-EXTERNAL-IP-LOCAL"]
    assert m["KUBE-LOAD-BALANCER"] == {"198.51.100.9,tcp:80"} == m["KUBE-LOAD-BALANCER-LOCAL"]
    assert m["KUBE-NODE-PORT-TCP"] == {"30080"} == m["KUBE-NODE-PORT-LOCAL-TCP"]
    assert m["KUBE-NODE-PORT-UDP"] == set()
    assert m["KUBE-LOOP-BACK"] == {"10.244.1.10,tcp:8080,10.244.1.10", "10.244.1.11,tcp:8080,10.244.1.11"}
    assert m["KUBE-IPVS-IPS"] == addrs


def test_iptables_text_follows_the_sets() -> None:
    _, sets, _ = desired_state(state_of(svc("web", "10.96.0.50", Endpoint("10.244.1.10", 8080))), CTX)
    text = iptables_text(sets, "10.244.0.0/16")
    assert ('-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" '
            "-m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ") in text
    assert "KUBE-EXTERNAL-IP dst,dst -j KUBE-MARK-MASQ" not in text  # no external IPs: no rule
    assert "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000" in text
    assert "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN" in text
    assert "--match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE" in text
    assert "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT" in text
    all_masq = iptables_text(sets, "10.244.0.0/16", masquerade_all=True)
    assert "! -s 10.244.0.0/16" not in all_masq


def test_unknown_scheduler_is_refused() -> None:
    with pytest.raises(ValueError, match="scheduler"):
        IpvsProxy(CTX, scheduler="nope")


# ---------------------------------------------------------------------------------------------- the lab


@dataclass
class Lab:
    prefix: str
    node: str
    client: str
    pods: list[str]

    def pod_ip(self, i: int) -> str:
        return f"10.244.1.{10 + i}"

    def endpoints(self, *idx: int, port: int = 8080) -> tuple[Endpoint, ...]:
        return tuple(Endpoint(self.pod_ip(i), port, node="node-a") for i in idx)


@pytest.fixture
def lab() -> Iterator[Lab]:
    require(netns_usable(), "root and network namespaces")
    for prog in ("ipset", "iptables-restore", "iptables-save"):
        require_binary(prog)
    prefix = f"kmv-{uuid.uuid4().hex[:6]}"
    made: list[str] = []
    try:
        node = f"{prefix}-node"
        netns.add(node)
        made.append(node)
        netns.ip(node, "link", "add", "cni0", "type", "bridge")
        netns.ip(node, "addr", "add", "10.244.1.1/24", "dev", "cni0")
        netns.ip(node, "link", "set", "cni0", "up")
        netns.ip(node, "link", "add", "eth0", "type", "bridge")
        netns.ip(node, "addr", "add", f"{NODE_IP}/24", "dev", "eth0")
        netns.ip(node, "link", "set", "eth0", "up")
        lab = Lab(prefix, node, f"{prefix}-c", [f"{prefix}-p{i}" for i in range(3)])
        for i, ns in enumerate([lab.client, *lab.pods]):
            netns.add(ns)
            made.append(ns)
            ip = "10.244.1.100" if ns == lab.client else lab.pod_ip(i - 1)
            host = f"veth{i}"
            netns.add_veth(node, host, ns, "eth0")
            netns.ip(node, "link", "set", host, "master", "cni0")
            netns.ip(ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            netns.ip(ns, "route", "add", "default", "via", "10.244.1.1")
        yield lab
    finally:
        for ns in reversed(made):
            netns.delete(ns)


@pytest.fixture
async def proxy(lab: Lab, nursery: trio.Nursery) -> AsyncIterator[IpvsProxy]:
    ctx = replace(CTX, netns=lab.node)
    p = IpvsProxy(ctx, config=IPVSConfig(scheduler="rr", data_path="userspace", sweep_interval=0.05, linger=0.2))
    await p.start(nursery)
    try:
        yield p
    finally:
        await p.cleanup()


async def name_servers(nursery: trio.Nursery, lab: Lab, port: int = 8080, udp: bool = False) -> None:
    """Each endpoint pod answers its name (TCP: a line on connect; UDP: to any datagram)."""
    for i, ns in enumerate(lab.pods):
        kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
        sock = await netns.open_socket(ns, socket.AF_INET, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind((lab.pod_ip(i), port))
        name = f"pod{i}"
        if udp:
            nursery.start_soon(_udp_loop, sock, name)
        else:
            sock.listen(128)
            nursery.start_soon(_tcp_loop, sock, name)


async def _tcp_loop(lsock: trio.socket.SocketType, name: str) -> None:
    async def handle(sock: trio.socket.SocketType) -> None:
        with sock:
            try:
                await sock.send(name.encode() + b"\n")
                while await sock.recv(4096):
                    pass
            except OSError:
                pass

    with lsock:
        async with trio.open_nursery() as n:
            while True:
                s, _ = await lsock.accept()
                n.start_soon(handle, s)


async def _udp_loop(sock: trio.socket.SocketType, name: str) -> None:
    with sock:
        while True:
            data, addr = await sock.recvfrom(2048)
            await sock.sendto(name.encode() + b":" + data, addr)


async def connect(lab: Lab, ip: str, port: int) -> trio.socket.SocketType:
    sock = await netns.open_socket(lab.client, socket.AF_INET, socket.SOCK_STREAM)
    try:
        with trio.fail_after(5):
            await sock.connect((ip, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def ask(lab: Lab, ip: str, port: int = 80) -> str:
    """Connect from the client pod, read the name line, close."""
    with await connect(lab, ip, port) as sock, trio.fail_after(5):
        return await read_line(sock)


async def sh(ns: str, *argv: str) -> str:
    return (await netns.run(ns, list(argv))).stdout.decode()


@pytest.mark.netns
async def test_programs_device_ipsets_and_rules(lab: Lab, proxy: IpvsProxy) -> None:
    web = svc("web", "10.96.0.50", *lab.endpoints(0, 1), type="NodePort", node_port=30080)
    for _ in range(2):  # a second sync changes nothing and duplicates nothing
        await proxy.sync(state_of(web), frozenset({web.name}), True)
    assert proxy.device_kind in ("dummy", "bridge")
    addrs = await sh(lab.node, "ip", "-o", "addr", "show", "dev", "kube-ipvs0")
    assert "inet 10.96.0.50/32" in addrs
    saved_sets = await sh(lab.node, "ipset", "save")
    assert "add KUBE-CLUSTER-IP 10.96.0.50,tcp:80" in saved_sets
    assert "add KUBE-NODE-PORT-TCP 30080" in saved_sets
    assert "add KUBE-LOOP-BACK 10.244.1.10,tcp:8080,10.244.1.10" in saved_sets
    assert "add KUBE-IPVS-IPS 10.96.0.50" in saved_sets
    listed = await sh(lab.node, "ipset", "list", "KUBE-CLUSTER-IP")
    assert "Type: hash:ip,port" in listed and "10.96.0.50,tcp:80" in listed
    nat = await sh(lab.node, "iptables-save", "-t", "nat")
    assert nat.count('-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES') == 1
    assert nat.count('-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING') == 1
    assert "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000" in nat
    assert "--match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ" in nat
    assert "--match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE" in nat
    assert "--match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ" in nat
    filt = await sh(lab.node, "iptables-save", "-t", "filter")
    assert filt.count("-j KUBE-IPVS-FILTER") == 1 and filt.count("-j KUBE-FORWARD") == 1
    assert "--match-set KUBE-IPVS-IPS dst -j REJECT" in filt
    text = await proxy.rules()
    assert text.startswith("IP Virtual Server version 1.2.1 (size=4096)\n")
    assert "TCP  10.96.0.50:80 rr\n  -> 10.244.1.10:8080             Masq    1      0          0         \n" in text
    assert f"TCP  {NODE_IP}:30080 rr\n" in text
    assert "add KUBE-CLUSTER-IP 10.96.0.50,tcp:80" in text and "*nat" in text
    # the service goes: its address, set members and virtual servers go too
    await proxy.sync(state_of(), frozenset({web.name}), False)
    assert "10.96.0.50" not in await sh(lab.node, "ip", "-o", "addr", "show", "dev", "kube-ipvs0")
    assert "10.96.0.50" not in await sh(lab.node, "ipset", "save")
    assert "10.96.0.50" not in await proxy.table_text()


@pytest.mark.netns
async def test_cluster_ip_round_robin_exact_and_nodeport(lab: Lab, proxy: IpvsProxy, nursery: trio.Nursery) -> None:
    await name_servers(nursery, lab)
    web = svc("web", "10.96.0.50", *lab.endpoints(0, 1, 2), type="NodePort", node_port=30080)
    await proxy.sync(state_of(web), frozenset({web.name}), True)
    got = Counter([await ask(lab, "10.96.0.50") for _ in range(300)])
    assert got == {"pod0": 100, "pod1": 100, "pod2": 100}
    assert {await ask(lab, NODE_IP, 30080) for _ in range(3)} == {"pod0", "pod1", "pod2"}
    table = await proxy.table_text()
    assert "  -> 10.244.1.10:8080             Masq    1      0          " in table  # closed ones linger as InActConn


@pytest.mark.netns
async def test_affinity_pins_the_client(lab: Lab, proxy: IpvsProxy, nursery: trio.Nursery) -> None:
    await name_servers(nursery, lab)
    web = svc("web", "10.96.0.51", *lab.endpoints(0, 1, 2), session_affinity=True, affinity_timeout=60)
    await proxy.sync(state_of(web), frozenset({web.name}), True)
    assert len({await ask(lab, "10.96.0.51") for _ in range(20)}) == 1
    assert "TCP  10.96.0.51:80 rr persistent 60" in await proxy.table_text()


@pytest.mark.netns
async def test_no_endpoints_is_refused(lab: Lab, proxy: IpvsProxy, nursery: trio.Nursery) -> None:
    await name_servers(nursery, lab)
    empty = svc("empty", "10.96.0.52")
    web = svc("web", "10.96.0.50", *lab.endpoints(0))
    await proxy.sync(state_of(empty, web), frozenset({empty.name, web.name}), True)
    with pytest.raises(ConnectionRefusedError):
        await connect(lab, "10.96.0.52", 80)
    with pytest.raises(ConnectionRefusedError):  # a bound service address on a port that is no service
        await connect(lab, "10.96.0.50", 81)
    assert await ask(lab, "10.96.0.50") == "pod0"
    # endpoints come: served; they go: refused again
    await proxy.sync(state_of(replace(empty, endpoints=lab.endpoints(1)), web), frozenset({empty.name}), False)
    assert await ask(lab, "10.96.0.52") == "pod1"
    await proxy.sync(state_of(empty, web), frozenset({empty.name}), False)
    with trio.fail_after(5):
        while "10.96.0.52" in proxy.served_addresses():
            await trio.sleep(0.05)
    with pytest.raises(ConnectionRefusedError):
        await connect(lab, "10.96.0.52", 80)


@pytest.mark.netns
async def test_removed_endpoint_drains_then_goes(lab: Lab, proxy: IpvsProxy, nursery: trio.Nursery) -> None:
    await name_servers(nursery, lab)
    web = svc("web", "10.96.0.50", *lab.endpoints(0, 1))
    await proxy.sync(state_of(web), frozenset({web.name}), True)
    held = await connect(lab, "10.96.0.50", 80)
    first = (await held.recv(100)).decode().strip()
    gone = lab.endpoints(0 if first == "pod0" else 1)[0]
    keep = [e for e in web.endpoints if e != gone]
    await proxy.sync(state_of(replace(web, endpoints=tuple(keep))), frozenset({web.name}), False)
    table = await proxy.table_text()
    assert f"  -> {gone.addr:<28} Masq    0      1          0         " in table
    assert {await ask(lab, "10.96.0.50") for _ in range(4)} == {"pod1" if first == "pod0" else "pod0"}
    await held.send(b"still here\n")  # the established connection goes on
    held.close()
    with trio.fail_after(5):
        while gone.addr in await proxy.table_text():
            await trio.sleep(0.05)


@pytest.mark.netns
async def test_udp_service(lab: Lab, proxy: IpvsProxy, nursery: trio.Nursery) -> None:
    await name_servers(nursery, lab, port=5353, udp=True)
    dns = svc("dns", "10.96.0.10", *lab.endpoints(0, 1, port=5353), port=53, protocol="UDP")
    await proxy.sync(state_of(dns), frozenset({dns.name}), True)
    names = set()
    for i in range(4):
        sock = await netns.open_socket(lab.client, socket.AF_INET, socket.SOCK_DGRAM)
        with sock, trio.fail_after(5):
            await sock.connect(("10.96.0.10", 53))
            await sock.send(b"q%d" % i)
            reply = (await sock.recv(100)).decode()
        assert reply.endswith(f":q{i}")
        names.add(reply.split(":")[0])
    assert names == {"pod0", "pod1"}
    assert "UDP  10.96.0.10:53 rr" in await proxy.table_text()


@pytest.mark.netns
async def test_cleanup_removes_everything(lab: Lab, nursery: trio.Nursery) -> None:
    ctx = replace(CTX, netns=lab.node)
    p = IpvsProxy(ctx, config=IPVSConfig(data_path="userspace"))
    await p.start(nursery)
    web = svc("web", "10.96.0.50", *lab.endpoints(0), type="NodePort", node_port=30080)
    await p.sync(state_of(web), frozenset({web.name}), True)
    await p.cleanup()
    await p.cleanup()  # twice is fine
    assert (await netns.run(lab.node, ["ip", "link", "show", "kube-ipvs0"], check=False)).returncode != 0
    assert "KUBE-" not in await sh(lab.node, "ipset", "list", "-n")
    assert "KUBE-" not in await sh(lab.node, "iptables-save")
    assert p.served == {} and p.table.services == {}
    with pytest.raises(ConnectionRefusedError):
        await connect(lab, NODE_IP, 30080)
    assert isinstance(p.table, IPVSTable)


@pytest.mark.netns
async def test_lc_follows_open_connections(lab: Lab, nursery: trio.Nursery) -> None:
    ctx = replace(CTX, netns=lab.node)
    p = IpvsProxy(ctx, config=IPVSConfig(scheduler="lc", data_path="userspace", sweep_interval=0.05, linger=30))
    await p.start(nursery)
    try:
        await name_servers(nursery, lab)
        web = svc("web", "10.96.0.53", *lab.endpoints(0, 1, 2))
        await p.sync(state_of(web), frozenset({web.name}), True)
        held = []
        for want in ("pod0", "pod1", "pod2"):  # each open connection weighs 256: the next goes elsewhere
            s = await connect(lab, "10.96.0.53", 80)
            held.append(s)
            assert (await s.recv(100)).decode().strip() == want
        held.pop(0).close()  # pod0: 0 active, 1 lingering inactive (1) < 256
        with trio.fail_after(5):
            while "10.244.1.10:8080             Masq    1      0          1" not in await p.table_text():
                await trio.sleep(0.02)
        assert await ask(lab, "10.96.0.53") == "pod0"
        # pod0 now has 2 inactive, pod1 and pod2 256 each: still pod0
        with trio.fail_after(5):
            while "10.244.1.10:8080             Masq    1      0          2" not in await p.table_text():
                await trio.sleep(0.02)
        assert await ask(lab, "10.96.0.53") == "pod0"
        assert "TCP  10.96.0.53:80 lc\n" in await p.table_text()
        for s in held:
            s.close()
    finally:
        await p.cleanup()


def test_ipset_restore_text() -> None:
    from kmesh.proxy.ipsets import IPSets

    _, sets, _ = desired_state(state_of(svc("web", "10.96.0.50", Endpoint("10.244.1.10", 8080, node="node-a"),
                                            type="NodePort", node_port=30080)), CTX)
    lines = sets.restore_text().splitlines()
    i = lines.index("create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 -exist")
    assert lines[i + 1:i + 3] == ["flush KUBE-CLUSTER-IP", "add KUBE-CLUSTER-IP 10.96.0.50,tcp:80 -exist"]
    assert "create KUBE-NODE-PORT-TCP bitmap:port range 0-65535 -exist" in lines
    assert "add KUBE-NODE-PORT-TCP 30080 -exist" in lines
    assert "flush KUBE-NODE-PORT-UDP" in lines  # every set is rewritten, empty ones too
    assert IPSets().restore_text().count("create ") == 12


async def test_cleanup_when_the_namespace_is_gone() -> None:
    p = IpvsProxy(replace(CTX, netns=f"kmv-gone-{uuid.uuid4().hex[:6]}"))
    await p.cleanup()
    assert p.table.services == {} and p.addresses == set()


@pytest.mark.netns
async def test_external_and_load_balancer_ips(lab: Lab, proxy: IpvsProxy, nursery: trio.Nursery) -> None:
    await name_servers(nursery, lab)
    web = svc("web", "10.96.0.50", *lab.endpoints(1), type="LoadBalancer", node_port=30081,
              external_ips=("192.0.2.7",), load_balancer_ips=("198.51.100.9",))
    await proxy.sync(state_of(web), frozenset({web.name}), True)
    addrs = await sh(lab.node, "ip", "-o", "addr", "show", "dev", "kube-ipvs0")
    assert "inet 192.0.2.7/32" in addrs and "inet 198.51.100.9/32" in addrs
    for ip, port in (("10.96.0.50", 80), ("192.0.2.7", 80), ("198.51.100.9", 80), (NODE_IP, 30081)):
        assert await ask(lab, ip, port) == "pod1", (ip, port)
    nat = await sh(lab.node, "iptables-save", "-t", "nat")
    assert "--match-set KUBE-EXTERNAL-IP dst,dst -j KUBE-MARK-MASQ" in nat
    assert "--match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER" in nat
    sets = await sh(lab.node, "ipset", "save")
    assert "add KUBE-EXTERNAL-IP 192.0.2.7,tcp:80" in sets and "add KUBE-LOAD-BALANCER 198.51.100.9,tcp:80" in sets


@pytest.mark.netns
async def test_a_busy_port_fails_the_sync_until_it_is_free(lab: Lab, proxy: IpvsProxy, nursery: trio.Nursery) -> None:
    await name_servers(nursery, lab)
    squatter = await netns.open_socket(lab.node, socket.AF_INET, socket.SOCK_STREAM)
    await squatter.bind((NODE_IP, 30082))
    squatter.listen(1)
    web = svc("web", "10.96.0.50", *lab.endpoints(2), type="NodePort", node_port=30082)
    with pytest.raises(OSError, match="30082"):
        await proxy.sync(state_of(web), frozenset({web.name}), True)
    assert await ask(lab, "10.96.0.50") == "pod2"  # what could be served is
    squatter.close()
    await proxy.sync(state_of(web), frozenset({web.name}), True)  # the retry (a full sync) completes
    assert await ask(lab, NODE_IP, 30082) == "pod2"


SVC_YAML = service_yaml("10.96.0.60", "{name: http, port: 80, targetPort: 9376}")


def slice_yaml(lab: Lab, *idx: int) -> str:
    return endpoint_slice_yaml(("{name: http, port: 9376, protocol: TCP}",), [endpoint_yaml(lab.pod_ip(i), "node-a") for i in idx])


@pytest.mark.netns
async def test_through_the_api_with_kubectl(lab: Lab, cluster: object, nursery: trio.Nursery) -> None:
    """kubectl → API → tracker → sync loop → IPVS mode → a pod reaching the Service; /ipvs shows the table."""
    import functools

    import httpx

    from kmesh.proxy.runner import SyncConfig, run_proxy

    await name_servers(nursery, lab, port=9376)
    mode = IpvsProxy(replace(CTX, netns=lab.node), config=IPVSConfig(data_path="userspace", sweep_interval=0.05, linger=0.2))
    try:
        async with trio.open_nursery() as inner:
            runner = await inner.start(functools.partial(
                run_proxy, cluster.client, mode, SyncConfig(min_sync_period=0.0), metrics_port=0))  # type: ignore[attr-defined]
            await cluster.kubectl("apply", "-f", "-", stdin=SVC_YAML)  # type: ignore[attr-defined]
            await cluster.kubectl("apply", "-f", "-", stdin=slice_yaml(lab, 0, 1, 2))  # type: ignore[attr-defined]
            with trio.fail_after(10):  # the sync that brings the slice has finished
                while runner.metrics.syncs < 1 or "10.96.0.60" not in mode.served_addresses():
                    await trio.sleep(0.05)
            assert "10.244.1.12:9376" in await mode.table_text()
            got = Counter([await ask(lab, "10.96.0.60") for _ in range(30)])
            assert got == {"pod0": 10, "pod1": 10, "pod2": 10}
            async with httpx.AsyncClient() as http:
                resp = await http.get(f"http://127.0.0.1:{runner.metrics_port}/ipvs")
            assert resp.status_code == 200
            assert "TCP  10.96.0.60:80 rr\n  -> 10.244.1.10:9376" in resp.text
            # an endpoint leaves the slice: it drains and goes, the others keep serving
            await cluster.kubectl("apply", "-f", "-", stdin=slice_yaml(lab, 0, 2))  # type: ignore[attr-defined]
            with trio.fail_after(10):
                while "10.244.1.11:9376" in await mode.table_text():
                    await trio.sleep(0.05)
            assert {await ask(lab, "10.96.0.60") for _ in range(6)} == {"pod0", "pod2"}
            inner.cancel_scope.cancel()
    finally:
        await mode.cleanup()
    assert "KUBE-" not in await sh(lab.node, "iptables-save")


@pytest.mark.netns
async def test_endpoints_gone_and_back_at_once(lab: Lab, proxy: IpvsProxy, nursery: trio.Nursery) -> None:
    await name_servers(nursery, lab)
    web = svc("web", "10.96.0.50", *lab.endpoints(0), type="NodePort", node_port=30083)
    udp = svc("dns", "10.96.0.50", *lab.endpoints(0, port=5353), port=53, protocol="UDP")
    await proxy.sync(state_of(web, udp), frozenset({web.name, udp.name}), True)
    for _ in range(3):  # the listeners go and come back without waiting: the ports are free again at once
        await proxy.sync(state_of(replace(web, endpoints=()), replace(udp, endpoints=())), frozenset({web.name, udp.name}), False)
        await proxy.sync(state_of(web, udp), frozenset({web.name, udp.name}), False)
    assert await ask(lab, "10.96.0.50") == "pod0"
    assert await ask(lab, NODE_IP, 30083) == "pod0"


@pytest.mark.netns
async def test_counters_as_the_kernel_counts(lab: Lab, proxy: IpvsProxy, nursery: trio.Nursery) -> None:
    """ActiveConn: established both ways; InActConn: half-closed, then closed for the linger time."""
    lsock = await netns.open_socket(lab.pods[0], socket.AF_INET, socket.SOCK_STREAM)
    await lsock.bind((lab.pod_ip(0), 8080))
    lsock.listen(8)
    release = trio.Event()

    async def stubborn() -> None:  # answers, and keeps its side open after the client's EOF
        conn, _ = await lsock.accept()
        with conn, lsock:
            await conn.send(b"pod0\n")
            while await conn.recv(100):
                pass
            await release.wait()

    nursery.start_soon(stubborn)
    web = svc("web", "10.96.0.54", *lab.endpoints(0))
    await proxy.sync(state_of(web), frozenset({web.name}), True)
    client = await connect(lab, "10.96.0.54", 80)
    assert (await client.recv(100)).strip() == b"pod0"
    row = "  -> 10.244.1.10:8080             Masq    1      {:<10d} {:<10d}"

    async def until(active: int, inactive: int) -> None:
        with trio.fail_after(5):
            while row.format(active, inactive) not in await proxy.table_text():
                await trio.sleep(0.02)

    await until(1, 0)
    client.shutdown(socket.SHUT_WR)  # half-closed
    await until(0, 1)
    release.set()  # the server closes too: the connection ends, and lingers as inactive
    assert await client.recv(100) == b""
    client.close()
    await until(0, 1)
    await until(0, 0)  # linger (0.2 s) over
