"""Partial syncs of the nftables mode leave the same table a full sync of the same state writes.

A seeded random walk over Services (endpoints come and go, policies and
affinity change, load-balancer source ranges, NodePorts, ports sharing a
ClusterIP, two Services sharing an external IP) is applied with partial
syncs in one namespace; at checkpoints a fresh namespace gets one full sync
of the same state and the two ``nft list table ip kube-proxy`` listings must
hold the same chains (same rules, in order), sets and maps (same elements).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import replace

import pytest
import trio

from kmesh.net import netns
from kmesh.proxy.model import (
    Endpoint,
    NodeContext,
    ProxyState,
    ServicePort,
    ServicePortName,
)
from kmesh.proxy.nftables import NftablesError, NftablesProxy
from tests.proxy.traffic_lab import MakeNs, namespace_factory

pytestmark = pytest.mark.netns
NODE = "node1"

_OBJECT = re.compile(r"^\t(chain|set|map) (\S+) \{$")


def canonical(listing: str) -> dict[str, tuple[tuple[str, ...], frozenset[str]]]:
    """Each chain/set/map of an ``nft list table`` listing → (its lines in order, its elements).

    Objects are listed in creation order and set elements in hash order, so
    neither order is compared; rules keep theirs."""
    out: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {}
    lines = listing.splitlines()
    i = 0
    header: list[str] = []
    while i < len(lines):
        m = _OBJECT.match(lines[i])
        if not m:
            if lines[i].strip() and lines[i].startswith("\t"):
                header.append(lines[i].strip())  # the table's own lines (its comment)
            i += 1
            continue
        body: list[str] = []
        elements: set[str] = set()
        i += 1
        while lines[i] != "\t}":
            line = lines[i].strip()
            if line.startswith("elements = {"):
                text = line[len("elements = {"):]
                while not text.rstrip().endswith("}"):
                    i += 1
                    text += " " + lines[i].strip()
                elements |= {e.strip() for e in text.rstrip()[:-1].split(",") if e.strip()}
            elif line:
                body.append(line)
            i += 1
        out[f"{m[1]} {m[2]}"] = (tuple(body), frozenset(elements))
        i += 1
    out["table"] = (tuple(header), frozenset())
    return out


class Walk:
    """A seeded random walk over a handful of Services, as ProxyStates."""

    NAMES = tuple(f"svc{i}" for i in range(8))

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.services: dict[str, list[ServicePort]] = {}

    def _service(self, i: int) -> list[ServicePort]:
        rng = self.rng
        name = self.NAMES[i]
        svc_type = rng.choice(["ClusterIP", "NodePort", "LoadBalancer"])
        eps = tuple(Endpoint(f"10.244.{rng.randint(1, 2)}.{rng.randint(2, 40)}", 8080, ready=rng.random() > 0.15,
                             serving=True, terminating=rng.random() < 0.2, node=rng.choice([NODE, "node2"]))
                    for _ in range(rng.choice([0, 1, 2, 3, 4])))
        eps = tuple({e.addr: e for e in eps}.values())
        affinity = rng.random() < 0.3
        ports = []
        for k, pname in enumerate(rng.choice([["http"], ["http", "https"], [""]])):
            n = ServicePortName("default", name, pname, rng.choice(["TCP", "TCP", "UDP"]))
            ports.append(ServicePort(
                n, f"10.96.1.{i + 10}", 80 + k, type=svc_type,
                node_port=30000 + i * 10 + k if svc_type != "ClusterIP" else 0,
                external_ips=("192.168.99.1",) if rng.random() < 0.25 else (),  # shared: the later one wins
                load_balancer_ips=(f"5.6.7.{i}",) if svc_type == "LoadBalancer" else (),
                load_balancer_source_ranges=rng.choice([(), ("203.0.113.0/25",), (" 192.168.56.0/24", "10.0.0.0/8")])
                if svc_type == "LoadBalancer" else (),
                session_affinity=affinity, affinity_timeout=rng.choice([10800, 60]),
                internal_local=rng.random() < 0.2, external_local=svc_type != "ClusterIP" and rng.random() < 0.3,
                endpoints=eps))
        return ports

    def step(self) -> None:
        """Change one to three Services: add, modify or remove."""
        for _ in range(self.rng.randint(1, 3)):
            i = self.rng.randrange(len(self.NAMES))
            if self.NAMES[i] in self.services and self.rng.random() < 0.25:
                del self.services[self.NAMES[i]]
            else:
                self.services[self.NAMES[i]] = self._service(i)

    def state(self) -> ProxyState:
        return ProxyState({sp.name: sp for ports in self.services.values() for sp in ports})


@pytest.fixture
def make_ns() -> Iterator[MakeNs]:
    with namespace_factory("kmnft", ("nft",)) as make:
        yield make


async def listing(ns: str) -> str:
    return (await netns.run(ns, ["nft", "list", "table", "ip", "kube-proxy"])).stdout.decode()


async def full_sync_elsewhere(make_ns: MakeNs, ctx: NodeContext, state: ProxyState, what: str,
                              nursery: trio.Nursery) -> str:
    """The listing one full sync of ``state`` writes in a fresh namespace."""
    fresh = NftablesProxy(replace(ctx, netns=make_ns(what)), flush_conntrack=False)
    await fresh.start(nursery)
    await fresh.sync(state, frozenset(state.services), True)
    return await listing(fresh.ctx.netns or "")


CONTEXTS = {
    "primary": NodeContext(NODE, ("192.168.56.11",), cluster_cidr="10.244.0.0/16"),
    "all-addresses": NodeContext(NODE, ("192.168.56.11",), cluster_cidr="10.244.0.0/16", masquerade_all=True,
                                 nodeport_addresses=("0.0.0.0/0",), service_cidrs=("10.96.0.0/12", "172.30.0.0/16")),
}


@pytest.mark.parametrize("seed,ctx_name", [(1, "primary"), (2, "all-addresses"), (3, "primary")])
async def test_partial_syncs_equal_a_full_sync(make_ns: MakeNs, nursery: trio.Nursery, seed: int, ctx_name: str) -> None:
    ctx = replace(CONTEXTS[ctx_name], netns=make_ns("partial"))
    mode = NftablesProxy(ctx, flush_conntrack=False)
    await mode.start(nursery)
    walk = Walk(seed)
    walk.step()
    state = walk.state()
    await mode.sync(state, frozenset(state.services), True)
    partial_syncs = 0
    for step in range(1, 31):
        old = state
        walk.step()
        state = walk.state()
        changed = frozenset(n for n in set(old.services) | set(state.services)
                            if old.services.get(n) != state.services.get(n))
        # Now and then the runner under-reports; the mode still finds what differs from what it applied.
        await mode.sync(state, changed if step % 7 else frozenset(), False)
        assert not mode.last_full
        partial_syncs += 1
        if step % 6 == 0:
            mine = canonical(await listing(ctx.netns or ""))
            assert mine == canonical(await full_sync_elsewhere(make_ns, ctx, state, f"full{step}", nursery)), step
    assert partial_syncs == 30
    # A full sync over what the partial ones left changes nothing either.
    before = canonical(await listing(ctx.netns or ""))
    await mode.sync(state, frozenset(), True)
    assert mode.last_full and canonical(await listing(ctx.netns or "")) == before


async def test_partial_sync_is_small(make_ns: MakeNs, nursery: trio.Nursery) -> None:
    ctx = replace(CONTEXTS["primary"], netns=make_ns("small"))
    mode = NftablesProxy(ctx, flush_conntrack=False)
    await mode.start(nursery)
    walk = Walk(4)
    for i in range(len(Walk.NAMES)):
        walk.services[Walk.NAMES[i]] = walk._service(i)
    state = walk.state()
    await mode.sync(state, frozenset(state.services), True)
    one = ServicePortName("default", "svc9", "http")
    sp = ServicePort(one, "10.96.2.9", 80, endpoints=(Endpoint("10.244.1.9", 8080, node=NODE),))
    state.services[one] = sp
    await mode.sync(state, frozenset({one}), False)
    # Only the new service's chains and elements: no other chain is flushed, no map flushed.
    touched = {line.split()[4] for line in mode.last_script.splitlines() if line.startswith(("add chain", "flush chain"))}
    assert touched and all("/svc9/" in c for c in touched), mode.last_script
    assert "flush map" not in mode.last_script and "flush set" not in mode.last_script
    # Nothing changed: nothing to send.
    await mode.sync(state, frozenset(), False)
    assert mode.last_script == ""


async def test_a_failed_sync_is_followed_by_a_full_one(make_ns: MakeNs, nursery: trio.Nursery) -> None:
    ctx = replace(CONTEXTS["primary"], netns=make_ns("fail"))
    mode = NftablesProxy(ctx, flush_conntrack=False)
    await mode.start(nursery)
    walk = Walk(5)
    walk.step()
    state = walk.state()
    await mode.sync(state, frozenset(state.services), True)
    # The table disappears behind the proxy's back: the partial transaction refers to chains that are gone.
    await netns.run(ctx.netns, ["nft", "delete", "table", "ip", "kube-proxy"])
    one = ServicePortName("default", "svc9", "http")
    state.services[one] = ServicePort(one, "10.96.2.9", 80, endpoints=(Endpoint("10.244.1.9", 8080),))
    # A partial transaction that only adds things would recreate a half table; one that changes
    # existing objects fails. Force the latter by changing a service the proxy installed.
    name = next(iter(walk.state().services))
    state.services[name] = replace(state.services[name], endpoints=(Endpoint("10.244.1.99", 8080),))
    with pytest.raises(NftablesError):
        await mode.sync(state, frozenset({one, name}), False)
    await mode.sync(state, frozenset(), False)  # the runner asks for partial; the mode knows better
    assert mode.last_full
    assert canonical(await listing(ctx.netns or "")) == canonical(
        await full_sync_elsewhere(make_ns, ctx, state, "fresh", nursery))
