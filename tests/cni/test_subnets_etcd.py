"""The etcd subnet manager against a real etcd: races, exhaustion, restarts, renewal, duplicates, peers; over TLS."""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Iterator

import pytest
import trio

from kmesh.cni.netconf import NetConf
from kmesh.cni.subnets import (
    DuplicatePublicIP,
    EtcdSubnetManager,
    SubnetsExhausted,
    ensure_config,
)
from kmesh.apiserver.pki import EtcdPKI, ensure_etcd_pki
from kmesh.store.base import Unavailable
from kmesh.store.etcd_api import EtcdClient, EtcdTLS, b64, unb64
from kmesh.store.etcd_server import EtcdServer
from tests.cni.conftest import SHM
from tests.cni.peer_events import PeerEvents
from tests.conftest import require_binary

pytestmark = pytest.mark.etcd

SMALL = NetConf.parse({"Network": "10.9.0.0/24", "SubnetLen": 28, "SubnetMin": "10.9.0.16", "SubnetMax": "10.9.0.128"})
VXLAN = {"VNI": 1, "VtepMAC": "aa:bb:cc:00:00:01"}


@pytest.fixture
def prefix() -> str:
    return f"/kmesh-test-{uuid.uuid4().hex[:10]}/network"


def manager(etcd: EtcdClient, prefix: str, node: str, ip: str, **kw: object) -> EtcdSubnetManager:
    return EtcdSubnetManager(etcd, node, ip, prefix=prefix, **kw)  # type: ignore[arg-type]


async def stored(etcd: EtcdClient, prefix: str, key: str) -> dict[str, object] | None:
    resp = await etcd.call("/v3/kv/range", {"key": b64(f"{prefix}/subnets/{key}".encode())})
    kvs = resp.get("kvs")
    return json.loads(unb64(kvs[0]["value"])) if kvs else None


async def test_ensure_config_writes_once(etcd: EtcdClient, prefix: str) -> None:
    assert await ensure_config(etcd, SMALL, prefix=prefix) == SMALL
    assert await ensure_config(etcd, NetConf.default(), prefix=prefix) == SMALL  # the first one stays
    m = manager(etcd, prefix, "n1", "192.168.56.11")
    assert await m.get_config() == SMALL


async def test_waits_for_the_config(etcd: EtcdClient, prefix: str) -> None:
    m = manager(etcd, prefix, "n1", "192.168.56.11")
    async with trio.open_nursery() as n:
        got: list[object] = []

        async def acquire() -> None:
            got.append(await m.acquire("vxlan", VXLAN))

        n.start_soon(acquire)
        await trio.sleep(0.3)  # let it find no config (polls with backoff, nothing to await on)
        assert not got
        await ensure_config(etcd, SMALL, prefix=prefix)
    assert SMALL.allows(got[0].subnet)  # type: ignore[attr-defined]


async def test_racing_managers_get_distinct_subnets_then_exhaustion(etcd: EtcdClient, prefix: str) -> None:
    await ensure_config(etcd, SMALL, prefix=prefix)
    assert SMALL.count() == 8
    results: dict[str, object] = {}

    async def one(i: int) -> None:
        m = manager(etcd, prefix, f"n{i}", f"192.168.56.{10 + i}")
        try:
            results[m.node] = (await m.acquire("vxlan", {"VNI": 1, "VtepMAC": f"aa:bb:cc:00:00:{i:02x}"})).subnet
        except SubnetsExhausted as exc:
            results[m.node] = exc

    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            for i in range(11):
                n.start_soon(one, i)
    subnets = [r for r in results.values() if isinstance(r, ipaddress.IPv4Network)]
    errors = [r for r in results.values() if isinstance(r, SubnetsExhausted)]
    assert len(subnets) == 8 and len(set(subnets)) == 8
    assert set(subnets) == set(SMALL.subnets())
    assert len(errors) == 3
    msg = str(errors[0])
    assert "10.9.0.0/24" in msg and "SubnetMin 10.9.0.16" in msg and "SubnetMax 10.9.0.128" in msg


async def test_restart_keeps_subnet_and_updates_backend_data(etcd: EtcdClient, prefix: str) -> None:
    await ensure_config(etcd, SMALL, prefix=prefix)
    first = await manager(etcd, prefix, "n1", "192.168.56.11").acquire("vxlan", VXLAN)
    for i in range(3):  # other nodes
        await manager(etcd, prefix, f"o{i}", f"192.168.56.{50 + i}").acquire("vxlan", VXLAN)
    again = await manager(etcd, prefix, "n1", "192.168.56.11").acquire("vxlan", {"VNI": 1, "VtepMAC": "aa:bb:cc:00:00:99"})
    assert again.subnet == first.subnet
    assert await stored(etcd, prefix, first.key) == {
        "PublicIP": "192.168.56.11", "BackendType": "vxlan",
        "BackendData": {"VNI": 1, "VtepMAC": "aa:bb:cc:00:00:99"}, "KmeshNode": "n1",
    }


async def test_previous_subnet_from_subnet_env_is_reused(etcd: EtcdClient, prefix: str) -> None:
    await ensure_config(etcd, SMALL, prefix=prefix)
    prev = ipaddress.IPv4Network("10.9.0.96/28")
    lease = await manager(etcd, prefix, "n1", "192.168.56.11", prev_subnet=prev).acquire("host-gw", {})
    assert lease.subnet == prev
    taken = await manager(etcd, prefix, "n2", "192.168.56.12", prev_subnet=prev).acquire("host-gw", {})
    assert taken.subnet != prev


async def test_duplicate_public_ip_is_refused(etcd: EtcdClient, prefix: str) -> None:
    await ensure_config(etcd, SMALL, prefix=prefix)
    a = await manager(etcd, prefix, "vm-a", "10.0.2.15").acquire("vxlan", VXLAN)
    with pytest.raises(DuplicatePublicIP) as exc:
        await manager(etcd, prefix, "vm-b", "10.0.2.15").acquire("vxlan", VXLAN)
    assert "10.0.2.15" in str(exc.value) and "vm-a" in str(exc.value) and str(a.subnet) in str(exc.value)
    assert await stored(etcd, prefix, a.key) is not None  # the first node's lease is untouched


async def test_duplicate_public_ip_racing(etcd: EtcdClient, prefix: str) -> None:
    await ensure_config(etcd, SMALL, prefix=prefix)
    outcomes: list[object] = []

    async def one(node: str) -> None:
        try:
            outcomes.append(await manager(etcd, prefix, node, "10.0.2.15").acquire("vxlan", VXLAN))
        except DuplicatePublicIP as exc:
            outcomes.append(exc)

    async with trio.open_nursery() as n:
        n.start_soon(one, "vm-a")
        n.start_soon(one, "vm-b")
    assert sum(isinstance(o, DuplicatePublicIP) for o in outcomes) == 1
    resp = await etcd.call("/v3/kv/range", {"key": b64(f"{prefix}/subnets/".encode()),
                                            "range_end": b64(f"{prefix}/subnets0".encode())})
    assert len(resp.get("kvs") or []) == 1  # the loser's lease is gone


async def test_renewal_keeps_a_short_lease_alive(etcd: EtcdClient, prefix: str) -> None:
    await ensure_config(etcd, SMALL, prefix=prefix)
    m = manager(etcd, prefix, "n1", "192.168.56.11", ttl=4, renew_margin=2)
    lease = await m.acquire("vxlan", VXLAN)
    start = trio.current_time()
    with trio.fail_after(20):
        async with trio.open_nursery() as n:
            n.start_soon(m.keep_lease)
            await m.wait_renewed(3)  # three renewals: ~6 s, longer than the 4 s TTL
            n.cancel_scope.cancel()
    assert trio.current_time() - start > 4
    assert await stored(etcd, prefix, lease.key) is not None
    resp = await etcd.call("/v3/kv/range", {"key": b64(f"{prefix}/subnets/{lease.key}".encode())})
    ttl = await etcd.call("/v3/lease/timetolive", {"ID": resp["kvs"][0]["lease"]})
    assert 0 < int(ttl["TTL"]) <= 4


async def test_peers_added_changed_removed_and_expired(etcd: EtcdClient, prefix: str) -> None:
    await ensure_config(etcd, SMALL, prefix=prefix)
    me = manager(etcd, prefix, "me", "192.168.56.10")
    early = manager(etcd, prefix, "early", "192.168.56.20")
    early_lease = await early.acquire("vxlan", VXLAN)
    peers = PeerEvents()
    events, on_event, until = peers.events, peers.on_event, peers.first

    with trio.fail_after(20):
        async with trio.open_nursery() as n:
            my_lease = await me.acquire("vxlan", VXLAN)
            await n.start(me.watch_peers, on_event)
            # the snapshot: the early peer, never myself
            assert [(e.kind, e.lease.node) for e in events] == [("added", "early")]
            assert events.pop().lease == early_lease
            peer = manager(etcd, prefix, "peer", "192.168.56.30", ttl=3, renew_margin=1)
            peer_lease = await peer.acquire("vxlan", VXLAN)
            ev = await until(lambda e: e.lease.node == "peer")
            assert ev.kind == "added" and ev.lease == peer_lease and ev.lease.vtep_mac == VXLAN["VtepMAC"]
            # a restart with a new VTEP MAC is a change
            await manager(etcd, prefix, "peer", "192.168.56.30", ttl=3, renew_margin=1).acquire(
                "vxlan", {"VNI": 1, "VtepMAC": "aa:bb:cc:00:00:77"})
            ev = await until(lambda e: e.lease.node == "peer")
            assert ev.kind == "changed" and ev.old is not None
            assert (ev.old.vtep_mac, ev.lease.vtep_mac) == (VXLAN["VtepMAC"], "aa:bb:cc:00:00:77")
            # nobody renews it: it expires, and that is a removal
            ev = await until(lambda e: e.lease.node == "peer")
            assert ev.kind == "removed" and ev.lease.subnet == peer_lease.subnet
            # a release is a removal too
            await early.release()
            ev = await until(lambda e: e.lease.node == "early")
            assert ev.kind == "removed"
            # my own renewals never show up
            await me.renew()
            n.cancel_scope.cancel()
    assert all(e.lease.node != "me" for e in events)
    assert my_lease.node == "me"


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EtcdServer, EtcdPKI]]:
    """An etcd as the lab runs its own: https, client certificates of its own CA only."""
    require_binary("etcd")
    pki = ensure_etcd_pki(tmp_path_factory.mktemp("etcd-tls"))
    with EtcdServer(tmp_root=SHM, die_with_parent=True, tls=pki.server_tls()) as server:
        yield server, pki


async def test_managers_over_tls_with_the_flannel_certificate(tls_etcd: tuple[EtcdServer, EtcdPKI], prefix: str) -> None:
    """The node agents' subnet managers on the lab's etcd: leases, peers and renewals over TLS; no certificate, no way in."""
    server, pki = tls_etcd
    etcd = EtcdClient(server.url, pki.flannel_client())
    nocert = EtcdClient(server.url, EtcdTLS(str(pki.ca_cert)))
    try:
        await ensure_config(etcd, SMALL, prefix=prefix)
        me = manager(etcd, prefix, "me", "192.168.56.11")
        peers = PeerEvents()
        with trio.fail_after(20):
            async with trio.open_nursery() as n:
                mine = await me.acquire("vxlan", VXLAN)
                await n.start(me.watch_peers, peers.on_event)
                other = await manager(etcd, prefix, "other", "192.168.56.12").acquire("vxlan", VXLAN)
                ev = await peers.first(lambda e: e.lease.node == "other")
                assert ev.kind == "added" and ev.lease == other and other.subnet != mine.subnet
                await me.renew()
                n.cancel_scope.cancel()
        assert (await stored(etcd, prefix, mine.key) or {}).get("KmeshNode") == "me"
        with trio.fail_after(20):  # a manager would retry; its calls fail the same way
            with pytest.raises(Unavailable, match="TLS"):
                await ensure_config(nocert, SMALL, prefix=prefix + "-intruder")
            with pytest.raises(Unavailable, match="TLS"):
                await stored(nocert, prefix, mine.key)
    finally:
        await etcd.aclose()
        await nocert.aclose()
