"""The kernel's IPVS schedulers, so kmesh's own data path picks real servers the way ip_vs would.

Each scheduler follows its ``net/netfilter/ipvs/ip_vs_<name>.c`` definition:
the order of the destination list matters (rr, wrr, sh, dh, mh walk it),
connection counts matter (lc, wlc, sed, nq, lblc, lblcr), and a destination with weight 0
is never chosen (how a terminating endpoint drains). A scheduler instance
belongs to one virtual server and keeps that server's state (rr's position,
wrr's current weight, the sh/dh/mh lookup tables, the lblc/lblcr caches); ``update`` is called
whenever the destination list or a weight changes, as the kernel calls
``add_dest``/``del_dest``/``upd_dest``.

mh uses the kernel's hash (hsiphash as 64-bit kernels compute it,
SipHash-1-3, with ip_vs_mh's fixed keys); lblc/lblcr entries never expire
here (the kernel drops them after a day unused).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Sequence
from typing import Protocol

GOLDEN_RATIO_32 = 0x61C88647
HASH_TAB_BITS = 8  # CONFIG_IP_VS_SH_TAB_BITS / CONFIG_IP_VS_DH_TAB_BITS default
HASH_TAB_SIZE = 1 << HASH_TAB_BITS
MH_TAB_SIZE = 4093  # primes[CONFIG_IP_VS_MH_TAB_INDEX(12) - 8]
MH_TAB_BITS = 12 // 2  # CONFIG_IP_VS_MH_TAB_INDEX / 2: weight/gcd is shifted to keep within these bits


class Dest(Protocol):
    """What a scheduler reads of a real server (``ipvs_table.RealServer`` is one)."""

    ip: str
    port: int
    weight: int
    active: int
    inactive: int


def available(d: Dest) -> bool:
    """Whether the kernel would schedule to ``d`` (weight > 0; kmesh sets no thresholds, so never overloaded)."""
    return d.weight > 0


def conn_overhead(d: Dest) -> int:
    """``ip_vs_dest_conn_overhead``: active connections weigh 256 times an inactive one."""
    return (d.active << 8) + d.inactive


def hash_32(value: int, bits: int) -> int:
    """The kernel's ``hash_32``: multiplicative hashing keeping the top ``bits`` bits."""
    return ((value * GOLDEN_RATIO_32) & 0xFFFFFFFF) >> (32 - bits)


def addr_fold(ip: str) -> int:
    """An address as the 32-bit number the hash functions use (IPv6 folded by XOR of its words)."""
    a = ipaddress.ip_address(ip)
    n = int(a)
    if a.version == 4:
        return n
    return (n >> 96 ^ n >> 64 ^ n >> 32 ^ n) & 0xFFFFFFFF


class Scheduler:
    """Base: one virtual server's scheduling state."""

    name = ""

    def update(self, dests: Sequence[Dest]) -> None:
        """The destination list or a weight changed (the kernel's add/del/upd_dest hooks)."""

    def schedule(self, dests: Sequence[Dest], client_ip: str, client_port: int = 0, vip: str = "") -> Dest | None:
        """The real server for a new connection from ``client_ip`` to ``vip``; None when none is available."""
        raise NotImplementedError


class RoundRobin(Scheduler):
    """rr: the next available destination after the last one chosen, in list order."""

    name = "rr"

    def __init__(self) -> None:
        self.keys: list[tuple[str, int]] = []
        self.pos = -1  # index of the last choice; -1 = the list head

    def update(self, dests: Sequence[Dest]) -> None:
        keys = [(d.ip, d.port) for d in dests]
        old, pos = self.keys, self.pos
        self.keys, self.pos = keys, -1
        # like ip_vs_rr_del_dest: when the last choice goes, continue from the nearest earlier survivor
        for i in range(min(pos, len(old) - 1), -1, -1):
            if old[i] in keys:
                self.pos = keys.index(old[i])
                return

    def schedule(self, dests: Sequence[Dest], client_ip: str, client_port: int = 0, vip: str = "") -> Dest | None:
        n = len(dests)
        for step in range(1, n + 1):
            i = (self.pos + step) % n
            if available(dests[i]):
                self.pos = i
                return dests[i]
        return None


class WeightedRoundRobin(Scheduler):
    """wrr: passes over the list with a current weight ``cw`` lowered by the weights' gcd each pass;
    a server is chosen while its weight >= ``cw`` (so weights 4,3,2 give A A B A B C A B C)."""

    name = "wrr"

    def __init__(self) -> None:
        self.cl = -1  # position of the last choice; -1 = the list head
        self.cw = 0
        self.mw = 0
        self.di = 1
        self.fresh = True

    def update(self, dests: Sequence[Dest]) -> None:
        weights = [d.weight for d in dests if d.weight > 0]
        self.di = math.gcd(*weights) if weights else 1
        self.mw = max(weights, default=0) - (self.di - 1) if weights else 0
        self.cl = -1
        if self.fresh:
            self.cw, self.fresh = self.mw, False
        elif self.cw > self.mw:
            self.cw = 0

    def schedule(self, dests: Sequence[Dest], client_ip: str, client_port: int = 0, vip: str = "") -> Dest | None:
        n = len(dests)
        if self.mw == 0 or n == 0:
            return None
        last = self.cl if self.cl < n else -1
        stop: int | None = None
        last_pass = restarted = False
        i = last
        while True:
            for j in range(i + 1, n):
                d = dests[j]
                if available(d) and d.weight >= self.cw:
                    self.cl = j
                    return d
                if j == stop:
                    return None
            i = -1
            self.cw -= self.di
            if self.cw <= 0:
                self.cw = self.mw
                if last_pass or last == -1:
                    return None
                restarted = True
            last_pass = self.cw <= self.di
            if last_pass and restarted and last != -1:
                stop = last


class LeastConnection(Scheduler):
    """lc: the smallest (active*256 + inactive); the first in list order wins a tie."""

    name = "lc"

    def schedule(self, dests: Sequence[Dest], client_ip: str, client_port: int = 0, vip: str = "") -> Dest | None:
        best: Dest | None = None
        for d in dests:
            if available(d) and (best is None or conn_overhead(d) < conn_overhead(best)):
                best = d
        return best


def _least_weighted(dests: Sequence[Dest], overhead: Callable[[Dest], int]) -> Dest | None:
    """The destination with the smallest overhead/weight (compared by cross-multiplying, as the kernel does)."""
    best: Dest | None = None
    for d in dests:
        if not available(d):
            continue
        if best is None or overhead(best) * d.weight > overhead(d) * best.weight:
            best = d
    return best


class WeightedLeastConnection(Scheduler):
    """wlc: the smallest (active*256 + inactive) / weight."""

    name = "wlc"

    def schedule(self, dests: Sequence[Dest], client_ip: str, client_port: int = 0, vip: str = "") -> Dest | None:
        return _least_weighted(dests, conn_overhead)


class ShortestExpectedDelay(Scheduler):
    """sed: the smallest (active + 1) / weight; inactive connections do not count."""

    name = "sed"

    def schedule(self, dests: Sequence[Dest], client_ip: str, client_port: int = 0, vip: str = "") -> Dest | None:
        return _least_weighted(dests, lambda d: d.active + 1)


class NeverQueue(Scheduler):
    """nq: the first idle server (no active connection); otherwise as sed."""

    name = "nq"

    def schedule(self, dests: Sequence[Dest], client_ip: str, client_port: int = 0, vip: str = "") -> Dest | None:
        for d in dests:
            if available(d) and d.active == 0:
                return d
        return _least_weighted(dests, lambda d: d.active + 1)


def _overloaded(d: Dest, dests: Sequence[Dest]) -> bool:
    """lblc/lblcr: more active connections than weight while some server is under half its weight."""
    return d.active > d.weight and any(o.active * 2 < o.weight for o in dests)


class LocalityBasedLeastConnection(Scheduler):
    """lblc: each destination address keeps the server it was given (wlc) until that one is overloaded."""

    name = "lblc"

    def __init__(self) -> None:
        self.cache: dict[str, tuple[str, int]] = {}

    def update(self, dests: Sequence[Dest]) -> None:
        keys = {(d.ip, d.port) for d in dests}
        self.cache = {ip: k for ip, k in self.cache.items() if k in keys}

    def schedule(self, dests: Sequence[Dest], client_ip: str, client_port: int = 0, vip: str = "") -> Dest | None:
        cached = self.cache.get(vip)
        for d in dests:
            if cached == (d.ip, d.port) and available(d) and not _overloaded(d, dests):
                return d
        d = _least_weighted(dests, conn_overhead)
        if d is not None:
            self.cache[vip] = (d.ip, d.port)
        return d


class LocalityBasedLeastConnectionReplication(Scheduler):
    """lblcr: each destination address keeps a set of servers; the least loaded of the set serves,
    and a server chosen by wlc joins the set when all of it is overloaded."""

    name = "lblcr"

    def __init__(self) -> None:
        self.sets: dict[str, list[tuple[str, int]]] = {}

    def update(self, dests: Sequence[Dest]) -> None:
        keys = {(d.ip, d.port) for d in dests}
        self.sets = {ip: [k for k in ks if k in keys] for ip, ks in self.sets.items()}

    def schedule(self, dests: Sequence[Dest], client_ip: str, client_port: int = 0, vip: str = "") -> Dest | None:
        members = self.sets.get(vip)
        if members:
            best = _least_weighted([d for d in dests if (d.ip, d.port) in members], conn_overhead)
            if best is not None and not _overloaded(best, dests):
                return best
        d = _least_weighted(dests, conn_overhead)
        if d is not None:
            group = self.sets.setdefault(vip, [])
            if (d.ip, d.port) not in group:
                group.append((d.ip, d.port))
        return d


class _HashTable(Scheduler):
    """A 256-bucket table filled from the destination list; sh and dh differ in the key and the fill."""

    weighted = False

    def __init__(self, fallback: bool = False, use_port: bool = False) -> None:
        self.buckets: list[Dest | None] = [None] * HASH_TAB_SIZE
        self.fallback = fallback
        self.use_port = use_port

    def update(self, dests: Sequence[Dest]) -> None:
        self.buckets = [None] * HASH_TAB_SIZE
        if not dests:
            return
        p, count = 0, 0
        for i in range(HASH_TAB_SIZE):
            d = dests[p % len(dests)]
            self.buckets[i] = d
            count += 1
            if not self.weighted or count >= d.weight:  # sh: a server fills `weight` consecutive buckets
                p, count = p + 1, 0

    def lookup(self, ip: str, port: int) -> Dest | None:
        """The bucket's server when available; with fallback, the next available one by offset."""
        tries = HASH_TAB_SIZE if self.fallback else 1
        for offset in range(tries):
            d = self.buckets[self.key(ip, port, offset)]
            if d is not None and available(d):
                return d
        return None

    def key(self, ip: str, port: int, offset: int) -> int:
        """The bucket index."""
        return (offset + hash_32(((port if self.use_port else 0) + addr_fold(ip)) & 0xFFFFFFFF, HASH_TAB_BITS)) % HASH_TAB_SIZE


class SourceHashing(_HashTable):
    """sh: the bucket of the client's address (and port with sh-port); weights give more buckets."""

    name = "sh"
    weighted = True

    def schedule(self, dests: Sequence[Dest], client_ip: str, client_port: int = 0, vip: str = "") -> Dest | None:
        return self.lookup(client_ip, client_port)


class DestinationHashing(_HashTable):
    """dh: the bucket of the destination (virtual) address; one bucket per server per turn."""

    name = "dh"

    def schedule(self, dests: Sequence[Dest], client_ip: str, client_port: int = 0, vip: str = "") -> Dest | None:
        return self.lookup(vip, 0)


_M64 = (1 << 64) - 1
SIPHASH_CONSTS = (0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573)
MH_KEY1 = 2654435761  # generate_hash_secret(): both words of hash1
MH_KEY2 = 2654446892  # ... and of hash2


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def siphash(k0: int, k1: int, data: bytes, c: int = 2, d: int = 4) -> int:
    """SipHash-c-d of ``data`` under the key words ``k0``, ``k1`` (64-bit result)."""
    v0, v1, v2, v3 = (SIPHASH_CONSTS[0] ^ k0, SIPHASH_CONSTS[1] ^ k1, SIPHASH_CONSTS[2] ^ k0, SIPHASH_CONSTS[3] ^ k1)

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _M64
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _M64
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _M64
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _M64
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)

    full = len(data) - len(data) % 8
    for i in range(0, full, 8):
        m = int.from_bytes(data[i:i + 8], "little")
        v3 ^= m
        rounds(c)
        v0 ^= m
    b = (len(data) << 56) & _M64 | int.from_bytes(data[full:], "little")
    v3 ^= b
    rounds(c)
    v0 ^= b
    v2 ^= 0xFF
    rounds(d)
    return v0 ^ v1 ^ v2 ^ v3


def mh_hashkey(ip: str, port: int, key: int, offset: int = 0) -> int:
    """``ip_vs_mh_hashkey``: hsiphash (SipHash-1-3 on 64-bit kernels) of offset + port + address."""
    v = (offset + port + addr_fold(ip)) & 0xFFFFFFFF
    return siphash(key, key, v.to_bytes(4, "little"), 1, 3) & 0xFFFFFFFF


class MaglevHashing(Scheduler):
    """mh: Maglev consistent hashing of the client address over a prime-sized lookup table.

    Each server walks its own permutation of the table (offset and skip from
    two hashes of its address:port) and takes ``weight/gcd`` free slots per
    turn, so adding or removing one server moves only about its share of the
    clients. As in the kernel, the table is built from each server's last
    non-zero weight: a quiesced server (weight 0) keeps its slots, and the
    clients hashing to them get no server (unless ``fallback``)."""

    name = "mh"

    def __init__(self, fallback: bool = False, use_port: bool = False, size: int = MH_TAB_SIZE) -> None:
        self.size = size
        self.table: list[Dest | None] = [None] * size
        self.fallback = fallback
        self.use_port = use_port
        self.last_weight: dict[tuple[str, int], int] = {}

    def update(self, dests: Sequence[Dest]) -> None:
        last = {}
        for d in dests:  # __ip_vs_update_dest: "keep the last_weight with latest non-0 weight"
            k = (d.ip, d.port)
            last[k] = d.weight if (k not in self.last_weight or d.weight != 0) else self.last_weight[k]
        self.last_weight = last
        m = self.size
        self.table = [None] * m
        weights = [w for w in last.values() if w > 0]
        if not weights:
            return
        gcd = math.gcd(*weights)
        shift = max(0, (max(weights) // gcd).bit_length() - MH_TAB_BITS)
        setups = []
        for d in dests:
            lw = last[(d.ip, d.port)]
            turns = ((lw // gcd) >> shift) or (1 if lw else 0)
            offset = mh_hashkey(d.ip, d.port, MH_KEY1) % m
            skip = mh_hashkey(d.ip, d.port, MH_KEY2) % (m - 1) + 1
            setups.append([d, turns, offset, skip])
        taken = [False] * m
        n = 0
        while n < m:
            for s in setups:
                d, turns = s[0], s[1]
                for _ in range(turns):
                    c = s[2]
                    while taken[c]:
                        s[2] = (s[2] + s[3]) % m
                        c = s[2]
                    taken[c] = True
                    self.table[c] = d
                    n += 1
                    if n == m:
                        return

    def schedule(self, dests: Sequence[Dest], client_ip: str, client_port: int = 0, vip: str = "") -> Dest | None:
        port = client_port if self.use_port else 0
        ihash = mh_hashkey(client_ip, port, MH_KEY1) % self.size
        d = self.table[ihash]
        if d is None or available(d) or not self.fallback:
            return d if d is not None and available(d) else None
        for offset in range(self.size):  # mh-fallback: walk the table from the first choice
            d = self.table[mh_hashkey(client_ip, port, MH_KEY1, (offset + ihash) % self.size) % self.size]
            if d is None:
                return None
            if available(d):
                return d
        return None


SCHEDULERS: dict[str, Callable[[], Scheduler]] = {
    "rr": RoundRobin,
    "wrr": WeightedRoundRobin,
    "lc": LeastConnection,
    "wlc": WeightedLeastConnection,
    "sed": ShortestExpectedDelay,
    "nq": NeverQueue,
    "sh": SourceHashing,
    "dh": DestinationHashing,
    "mh": MaglevHashing,
    "lblc": LocalityBasedLeastConnection,
    "lblcr": LocalityBasedLeastConnectionReplication,
}


def make_scheduler(name: str) -> Scheduler:
    """A fresh scheduler by its ipvsadm name (``rr``, ``wrr``, ``lc``, ``wlc``, ``sed``, ``nq``, ``sh``, ``dh``, ``mh``,
    ``lblc``, ``lblcr``)."""
    try:
        return SCHEDULERS[name]()
    except KeyError:
        raise ValueError(f"unknown IPVS scheduler {name!r}; known: {', '.join(SCHEDULERS)}") from None
