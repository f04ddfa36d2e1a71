"""The IPVS schedulers against their kernel definitions (net/netfilter/ipvs/ip_vs_*.c)."""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass

import pytest

from kmesh.proxy.schedulers import (
    HASH_TAB_SIZE,
    MH_KEY1,
    SCHEDULERS,
    MaglevHashing,
    Scheduler,
    addr_fold,
    hash_32,
    make_scheduler,
    mh_hashkey,
    siphash,
)


@dataclass
class D:
    ip: str
    port: int = 80
    weight: int = 1
    active: int = 0
    inactive: int = 0


def dests(n: int, **kw: int) -> list[D]:
    return [D(f"10.244.{i}.5", **kw) for i in range(1, n + 1)]


def sched(name: str, ds: list[D]) -> Scheduler:
    s = make_scheduler(name)
    s.update(ds)
    return s


def picks(s: Scheduler, ds: list[D], n: int, client: str = "10.1.0.1") -> list[str]:
    out = []
    for _ in range(n):
        d = s.schedule(ds, client, 0, "10.96.0.10")
        out.append(d.ip if d else "-")
    return out


CLIENTS = [str(ipaddress.ip_address("10.1.0.0") + i) for i in range(3000)]


def test_known_names() -> None:
    assert set(SCHEDULERS) == {"rr", "wrr", "lc", "wlc", "sh", "dh", "sed", "nq", "mh", "lblc", "lblcr"}
    with pytest.raises(ValueError, match="unknown IPVS scheduler"):
        make_scheduler("fo")


def test_rr_exact_cycle_skipping_weight_zero() -> None:
    ds = dests(3)
    s = sched("rr", ds)
    assert picks(s, ds, 6) == [d.ip for d in ds] * 2
    ds[1].weight = 0
    s.update(ds)
    assert picks(s, ds, 4) == [ds[0].ip, ds[2].ip] * 2
    assert sched("rr", []).schedule([], "1.1.1.1") is None
    ds0 = dests(2, weight=0)
    assert sched("rr", ds0).schedule(ds0, "1.1.1.1") is None


def test_rr_continues_after_the_last_choice_when_the_list_changes() -> None:
    ds = dests(4)
    s = sched("rr", ds)
    assert picks(s, ds, 2) == [ds[0].ip, ds[1].ip]
    del ds[1]  # the last choice goes: go on from the one before it
    s.update(ds)
    assert picks(s, ds, 3) == [ds[1].ip, ds[2].ip, ds[0].ip]


def test_wrr_by_weights() -> None:
    a, b, c = D("10.0.0.1", weight=4), D("10.0.0.2", weight=3), D("10.0.0.3", weight=2)
    ds = [a, b, c]
    s = sched("wrr", ds)
    seq = "".join("ABC"[ds.index(s.schedule(ds, "1.1.1.1"))] for _ in range(18))
    assert seq == "AABABCABC" * 2
    # gcd: weights 2,4 behave as 1,2
    ds2 = [D("10.0.0.1", weight=2), D("10.0.0.2", weight=4)]
    s2 = sched("wrr", ds2)
    assert Counter(picks(s2, ds2, 30)) == {"10.0.0.1": 10, "10.0.0.2": 20}
    ds2[0].weight = 0
    s2.update(ds2)
    assert set(picks(s2, ds2, 10)) == {"10.0.0.2"}
    ds2[1].weight = 0
    s2.update(ds2)
    assert s2.schedule(ds2, "1.1.1.1") is None


def test_lc_least_active_times_256_plus_inactive() -> None:
    ds = dests(3)
    ds[0].active, ds[1].active, ds[2].active = 2, 1, 1
    ds[1].inactive, ds[2].inactive = 5, 3
    s = sched("lc", ds)
    assert s.schedule(ds, "c").ip == ds[2].ip  # 256+3 < 256+5 < 512
    ds[2].inactive = 5
    assert s.schedule(ds, "c").ip == ds[1].ip  # tie: the first in list order
    ds[1].weight = ds[2].weight = 0
    assert s.schedule(ds, "c").ip == ds[0].ip  # weight 0 is never chosen


def test_wlc_overhead_per_weight() -> None:
    ds = dests(2)
    ds[0].weight, ds[1].weight = 1, 3
    ds[0].active, ds[1].active = 1, 2  # 256/1 vs 512/3
    s = sched("wlc", ds)
    assert s.schedule(ds, "c").ip == ds[1].ip
    ds[1].active = 4  # 1024/3 > 256
    assert s.schedule(ds, "c").ip == ds[0].ip
    # filling up from idle keeps active counts proportional to weight
    for d in ds:
        d.active = 0
    for _ in range(40):
        s.schedule(ds, "c").active += 1
    assert (ds[0].active, ds[1].active) == (10, 30)


def test_sed_ignores_inactive_and_adds_one() -> None:
    ds = dests(2)
    ds[0].weight, ds[1].weight = 1, 2
    ds[0].inactive = 1000
    s = sched("sed", ds)
    # (0+1)/1 vs (0+1)/2: the heavier one
    assert s.schedule(ds, "c").ip == ds[1].ip
    ds[1].active = 1  # 1/1 vs 2/2: tie, the first
    assert s.schedule(ds, "c").ip == ds[0].ip
    ds[1].active = 2  # 1 vs 1.5
    assert s.schedule(ds, "c").ip == ds[0].ip


def test_nq_takes_an_idle_server_first() -> None:
    ds = dests(3)
    ds[0].weight, ds[1].weight, ds[2].weight = 10, 10, 1
    ds[0].active, ds[1].active = 1, 1
    s = sched("nq", ds)
    assert s.schedule(ds, "c").ip == ds[2].ip  # idle beats a heavier weight
    ds[2].active = 1
    assert s.schedule(ds, "c").ip == ds[0].ip  # nobody idle: sed (2/10 < 2/1)


def test_hash_32_is_the_kernels() -> None:
    for v in (0, 1, 0x0A000001, 0xFFFFFFFF):
        assert hash_32(v, 8) == ((v * 0x61C88647) % 2**32) >> 24
    assert addr_fold("10.0.0.1") == 0x0A000001
    assert addr_fold("::1") == 1


def test_sh_hashes_the_source_address_into_weighted_buckets() -> None:
    ds = dests(3)
    ds[0].weight = 2
    s = sched("sh", ds)
    # the table: each server fills `weight` consecutive buckets, round and round
    expected_table = ([ds[0], ds[0], ds[1], ds[2]] * HASH_TAB_SIZE)[:HASH_TAB_SIZE]
    assert s.buckets == expected_table  # type: ignore[attr-defined]
    for c in CLIENTS[:200]:
        bucket = hash_32(int(ipaddress.ip_address(c)), 8)
        assert s.schedule(ds, c) is expected_table[bucket]
        assert s.schedule(ds, c, 4242) is expected_table[bucket]  # the port does not count (no sh-port)
    shares = Counter(s.schedule(ds, c).ip for c in CLIENTS)
    assert shares[ds[0].ip] > shares[ds[1].ip] * 1.5
    # a quiesced server's clients get nothing (no sh-fallback), the others keep theirs
    before = {c: s.schedule(ds, c) for c in CLIENTS}
    ds[1].weight = 0
    for c in CLIENTS:
        got = s.schedule(ds, c)
        assert got is (None if before[c] is ds[1] else before[c])


def test_dh_hashes_the_destination_address() -> None:
    ds = dests(4)
    s = sched("dh", ds)
    for vip in ("10.96.0.1", "10.96.0.10", "10.96.7.7"):
        want = ds[hash_32(int(ipaddress.ip_address(vip)), 8) % 4]
        assert {s.schedule(ds, c, 0, vip).ip for c in CLIENTS[:50]} == {want.ip}


def test_mh_is_consistent_and_disrupts_little() -> None:
    ds = dests(3)
    s = sched("mh", ds)
    before = {c: s.schedule(ds, c).ip for c in CLIENTS}
    assert {c: s.schedule(ds, c).ip for c in CLIENTS} == before  # stable
    shares = Counter(before.values())
    assert all(abs(n - 1000) < 150 for n in shares.values()), shares
    # add a fourth server: about a quarter of the clients move, nearly all to it
    ds4 = ds + [D("10.244.9.5")]
    s.update(ds4)
    after = {c: s.schedule(ds4, c).ip for c in CLIENTS}
    moved = [c for c in CLIENTS if after[c] != before[c]]
    assert 0.18 * len(CLIENTS) < len(moved) < 0.30 * len(CLIENTS)
    assert sum(after[c] == "10.244.9.5" for c in moved) >= 0.95 * len(moved)
    # remove a server: its clients move, nearly everyone else stays
    s.update(ds)
    again = {c: s.schedule(ds, c).ip for c in CLIENTS}
    assert again == before
    ds2 = [ds[0], ds[2]]
    s.update(ds2)
    gone = {c: s.schedule(ds2, c).ip for c in CLIENTS}
    kept = [c for c in CLIENTS if before[c] != ds[1].ip]
    assert sum(gone[c] == before[c] for c in kept) >= 0.95 * len(kept)
    assert all(gone[c] != ds[1].ip for c in CLIENTS)


def test_mh_weights_give_proportional_shares() -> None:
    ds = dests(2)
    ds[1].weight = 3
    s = sched("mh", ds)
    shares = Counter(s.schedule(ds, c).ip for c in CLIENTS)
    assert 2.5 < shares[ds[1].ip] / shares[ds[0].ip] < 3.5


def test_lblc_keeps_a_destination_on_its_server_until_overloaded() -> None:
    ds = dests(3, weight=2)
    ds[0].active = 1  # wlc picks the idle ds[1] first
    s = sched("lblc", ds)
    first = s.schedule(ds, "c", 0, "10.96.0.1")
    assert first is ds[1]
    first.active = 2  # at its weight: not overloaded, the address stays
    assert s.schedule(ds, "c", 0, "10.96.0.1") is ds[1]
    assert s.schedule(ds, "c", 0, "10.96.0.2") is ds[2]  # another address: wlc again
    ds[1].active = 3  # over its weight while ds[2] is under half of its: overloaded, reassigned by wlc
    ds[2].active = 0
    assert s.schedule(ds, "c", 0, "10.96.0.1") is ds[2]
    assert s.schedule(ds, "c", 0, "10.96.0.1") is ds[2]  # and remembered
    ds[2].weight = 0
    s.update(ds)
    assert s.schedule(ds, "c", 0, "10.96.0.1") is ds[0]  # quiesced: wlc among the others


def test_lblcr_grows_a_set_per_destination() -> None:
    ds = dests(3, weight=2)
    s = sched("lblcr", ds)
    vip = "10.96.0.1"
    a = s.schedule(ds, "c", 0, vip)
    assert a is ds[0]
    a.active = 3  # overloaded (ds[1], ds[2] idle): a second server joins the set
    b = s.schedule(ds, "c", 0, vip)
    assert b is ds[1] and s.sets[vip] == [(ds[0].ip, 80), (ds[1].ip, 80)]  # type: ignore[attr-defined]
    b.active = 1  # the least loaded member of the set serves
    assert s.schedule(ds, "c", 0, vip) is ds[1]
    del ds[1]
    s.update(ds)
    assert s.sets[vip] == [(ds[0].ip, 80)]  # type: ignore[attr-defined]


def test_siphash_reference_vectors_and_the_mh_hash() -> None:
    key = bytes(range(16))
    k0, k1 = int.from_bytes(key[:8], "little"), int.from_bytes(key[8:], "little")
    assert siphash(k0, k1, b"") == 0x726FDB47DD0E0E31  # SipHash-2-4 paper / reference vectors
    assert siphash(k0, k1, bytes(range(15))) == 0xA129CA6149BE45E5
    # ip_vs_mh hashes the 32-bit sum offset + port + address with SipHash-1-3, truncated to 32 bits
    v = (7 + 80 + 0x0AF40105).to_bytes(4, "little")
    assert mh_hashkey("10.244.1.5", 80, MH_KEY1, 7) == siphash(MH_KEY1, MH_KEY1, v, 1, 3) & 0xFFFFFFFF


def test_mh_quiesced_server_keeps_its_slots() -> None:
    ds = dests(3)
    s = sched("mh", ds)
    before = {c: s.schedule(ds, c) for c in CLIENTS}
    ds[1].weight = 0  # terminating: as in the kernel, its clients get nothing rather than moving
    s.update(ds)
    for c in CLIENTS:
        assert s.schedule(ds, c) is (None if before[c] is ds[1] else before[c])
    fb = MaglevHashing(fallback=True)
    ds2 = dests(3)
    fb.update(ds2)
    ds2[1].weight = 0
    fb.update(ds2)
    assert all(fb.schedule(ds2, c) in (ds2[0], ds2[2]) for c in CLIENTS[:300])  # mh-fallback: the next choice
    ds[1].weight = 1
    s.update(ds)
    assert {c: s.schedule(ds, c) for c in CLIENTS} == before
