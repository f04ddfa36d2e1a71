"""flannel's etcd subnet manager, on etcd's v3 JSON gateway.

Keys (flannel's, under ``prefix`` = ``/coreos.com/network``)::

    <prefix>/config                  net-conf JSON (see ``ensure_config``)
    <prefix>/subnets/10.244.3.0-24   {"PublicIP", "BackendType", "BackendData", "KmeshNode"}

A lease key is attached to an etcd lease of ``ttl`` (24 h, as flannel) and is
created only if absent (txn: ``create_revision == 0``). The subnet is the one
this node's public IP already holds (a restart keeps its subnet; its backend
data is rewritten), else the one a previous run wrote to subnet.env if still
free, else a random one of up to 100 free subnets between SubnetMin and
SubnetMax. ``keep_lease`` renews ``renew_margin`` before expiry (flannel: 1 h)
the way flannel does: a fresh etcd lease and the value written again, so peers
also see the renewal as a change event.

Duplicate public IPs: flannel's value has no owner, so two VMs that both
report VirtualBox's 10.0.2.15 silently share one lease. kmesh adds one field,
``KmeshNode`` (the node name), to the value — flannel's decoder ignores
unknown fields, so real flanneld still reads these leases — and refuses a
lease whose public IP is already held under another node name.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

from kmesh.cni.lease import Lease
from kmesh.cni.netconf import NetConf
from kmesh.cni.subnets.base import (
    DuplicatePublicIP,
    LeaseLost,
    PeerHandler,
    SubnetError,
    SubnetsExhausted,
)
from kmesh.cni.subnets.kube import peer_event
from kmesh.store.base import Gone, RevisionTooLarge, StoreError, Unavailable
from kmesh.store.etcd_api import EtcdClient, b64, range_end, unb64

log = logging.getLogger("kmesh.cni.subnets.etcd")

PREFIX = "/coreos.com/network"
TTL = 24 * 3600.0
RENEW_MARGIN = 3600.0
NODE_FIELD = "KmeshNode"
RACE_RETRIES = 10
MAX_CANDIDATES = 100

Json = dict[str, Any]
T = TypeVar("T")


async def ensure_config(etcd: EtcdClient, netconf: NetConf | None = None, *, prefix: str = PREFIX) -> NetConf:
    """Write ``<prefix>/config`` unless it exists (default: 10.244.0.0/16, vxlan); return the stored config."""
    key = b64(f"{prefix}/config".encode())
    value = b64((netconf or NetConf.default()).to_json().encode())
    resp = await etcd.call("/v3/kv/txn", {
        "compare": [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": 0}],
        "success": [{"request_put": {"key": key, "value": value}}],
        "failure": [{"request_range": {"key": key}}],
    })
    if resp.get("succeeded"):
        return netconf or NetConf.default()
    kv = resp["responses"][0]["response_range"]["kvs"][0]
    return NetConf.parse(unb64(kv.get("value", "")))


@dataclass(frozen=True)
class Record:
    """One lease key as read from etcd."""

    lease: Lease
    mod_revision: int
    create_revision: int
    lease_id: str

    @property
    def owner(self) -> str:
        """The KmeshNode marker ("" for leases written by flannel itself)."""
        return self.lease.node


def encode(lease: Lease) -> bytes:
    """The value flannel stores for a lease, plus kmesh's node marker."""
    doc: Json = {"PublicIP": lease.public_ip, "BackendType": lease.backend_type, "BackendData": lease.backend_data}
    if lease.node:
        doc[NODE_FIELD] = lease.node
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(name: str, value: bytes) -> Lease | None:
    """The lease stored under ``subnets/<name>`` (None when unreadable)."""
    try:
        net, _, plen = name.partition("-")
        subnet = ipaddress.IPv4Network(f"{net}/{plen}")
        doc = json.loads(value)
        data = doc.get("BackendData") or {}
        return Lease(subnet, str(doc.get("PublicIP") or ""), str(doc.get("BackendType") or ""),
                     data if isinstance(data, dict) else {}, node=str(doc.get(NODE_FIELD) or ""))
    except (ValueError, AttributeError):
        log.warning("ignoring unreadable subnet lease %s", name)
        return None


class EtcdSubnetManager:
    """The subnet manager of one node, backed by etcd."""

    def __init__(
        self, etcd: EtcdClient, node: str, public_ip: str, *, prefix: str = PREFIX,
        ttl: float = TTL, renew_margin: float = RENEW_MARGIN,
        prev_subnet: ipaddress.IPv4Network | None = None, retry_max: float = 5.0,
    ) -> None:
        if renew_margin >= ttl:
            raise ValueError(f"renew_margin {renew_margin}s must be shorter than the lease TTL {ttl}s")
        self.etcd = etcd
        self.node = node
        self.public_ip = public_ip
        self.prefix = prefix.rstrip("/")
        self.ttl = ttl
        self.renew_margin = renew_margin
        self.prev_subnet = prev_subnet
        self.retry_max = retry_max
        self.config: NetConf | None = None
        self.lease: Lease | None = None
        self.renewals = 0
        self.expires_at = 0.0  # trio clock
        self._record: Record | None = None
        self._renewed = trio.Condition()

    # ------------------------------------------------------------- etcd access

    def _subnets_prefix(self) -> bytes:
        return f"{self.prefix}/subnets/".encode()

    def _key(self, lease: Lease) -> str:
        return b64(self._subnets_prefix() + lease.key.encode())

    def _record_of(self, kv: Json) -> Record | None:
        name = unb64(kv["key"])[len(self._subnets_prefix()):].decode()
        lease = decode(name, unb64(kv.get("value", "")))
        if lease is None:
            return None
        return Record(lease, int(kv.get("mod_revision", 0)), int(kv.get("create_revision", 0)), str(kv.get("lease", "0")))

    async def _list(self) -> tuple[dict[str, Record], int]:
        p = self._subnets_prefix()
        resp = await self.etcd.call("/v3/kv/range", {"key": b64(p), "range_end": b64(range_end(p))})
        out = {}
        for kv in resp.get("kvs") or []:
            rec = self._record_of(kv)
            if rec is not None:
                out[rec.lease.key] = rec
        return out, int(resp["header"]["revision"])

    async def _grant(self) -> str:
        resp = await self.etcd.call("/v3/lease/grant", {"TTL": max(1, round(self.ttl))})
        return str(resp["ID"])

    async def _revoke(self, lease_id: str) -> None:
        if lease_id in ("", "0"):
            return
        try:
            await self.etcd.call("/v3/lease/revoke", {"ID": lease_id})
        except StoreError as exc:  # expired already, or etcd away: it expires on its own
            log.debug("revoke %s: %s", lease_id, exc)

    async def _write(self, lease: Lease, compare: Json) -> Record | None:
        """Put ``lease`` under a fresh etcd lease if ``compare`` holds; the new record or None."""
        granted_at = trio.current_time()  # the etcd lease's clock starts at the grant, at the latest
        lease_id = await self._grant()
        key = self._key(lease)
        resp = await self.etcd.call("/v3/kv/txn", {
            "compare": [{"key": key, **compare}],
            "success": [{"request_put": {"key": key, "value": b64(encode(lease)), "lease": lease_id}}],
        })
        if not resp.get("succeeded"):
            await self._revoke(lease_id)
            return None
        rev = int(resp["header"]["revision"])
        self.expires_at = granted_at + self.ttl
        create_rev = rev if compare.get("target") == "CREATE" else (self._record.create_revision if self._record else rev)
        return Record(lease, rev, create_rev, lease_id)

    async def _retrying(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` until etcd answers (flanneld waits out etcd outages the same way)."""
        delay = 0.1
        while True:
            try:
                return await fn()
            except Unavailable as exc:
                log.info("%s: etcd unreachable (%s); retrying", what, exc)
            await trio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.retry_max)

    # ---------------------------------------------------------------- config

    async def get_config(self) -> NetConf:
        """The network config from ``<prefix>/config``; waits until someone writes it."""
        key = b64(f"{self.prefix}/config".encode())
        delay = 0.1
        while True:
            resp = await self._retrying("read config", lambda: self.etcd.call("/v3/kv/range", {"key": key}))
            kvs = resp.get("kvs")
            if kvs:
                self.config = NetConf.parse(unb64(kvs[0].get("value", "")))
                return self.config
            log.info("no network config at %s/config yet; waiting", self.prefix)
            await trio.sleep(delay)
            delay = min(delay * 2, self.retry_max)

    # ---------------------------------------------------------------- acquire

    def _check_duplicate(self, records: dict[str, Record], mine: Record | None = None) -> None:
        for rec in records.values():
            if rec.lease.public_ip != self.public_ip or rec.owner in ("", self.node):
                continue
            if mine is not None and rec.create_revision > mine.create_revision:
                continue  # the later claimant is the one refused
            raise DuplicatePublicIP(
                f"node {self.node}: public IP {self.public_ip} already holds subnet {rec.lease.subnet} for node "
                f"{rec.owner}; every node needs its own public IP (choose the underlay interface explicitly, "
                "e.g. not VirtualBox's NAT address 10.0.2.15)"
            )

    def _candidates(self, cfg: NetConf, taken: set[str]) -> list[ipaddress.IPv4Network]:
        if self.prev_subnet is not None and cfg.allows(self.prev_subnet):
            key = f"{self.prev_subnet.network_address}-{self.prev_subnet.prefixlen}"
            if key not in taken:
                return [self.prev_subnet]
        free: list[ipaddress.IPv4Network] = []
        for subnet in cfg.subnets():
            if f"{subnet.network_address}-{subnet.prefixlen}" not in taken:
                free.append(subnet)
                if len(free) >= MAX_CANDIDATES:
                    break
        if not free:
            raise SubnetsExhausted(
                f"no free subnet: all {cfg.count()} /{cfg.SubnetLen} subnets of Network {cfg.Network} "
                f"between SubnetMin {cfg.SubnetMin} and SubnetMax {cfg.SubnetMax} are leased"
            )
        return [random.choice(free)]

    async def _try_acquire(self, cfg: NetConf, backend_type: str, backend_data: dict[str, Any]) -> Record | None:
        records, _ = await self._list()
        self._check_duplicate(records)
        ours = [r for r in records.values() if r.lease.public_ip == self.public_ip]
        for rec in ours:
            if not cfg.allows(rec.lease.subnet):
                log.info("lease %s no longer fits the config; deleting it", rec.lease.key)
                await self.etcd.call("/v3/kv/deleterange", {"key": self._key(rec.lease)})
                continue
            lease = Lease(rec.lease.subnet, self.public_ip, backend_type, dict(backend_data), node=self.node)
            self._record = rec
            new = await self._write(lease, {"target": "MOD", "result": "EQUAL", "mod_revision": rec.mod_revision})
            if new is not None:
                await self._revoke(rec.lease_id)
            return new
        (subnet,) = self._candidates(cfg, set(records))
        lease = Lease(subnet, self.public_ip, backend_type, dict(backend_data), node=self.node)
        self._record = None
        new = await self._write(lease, {"target": "CREATE", "result": "EQUAL", "create_revision": 0})
        if new is None:
            return None
        try:
            # Two nodes with one public IP may have raced past the check above: the later one yields.
            self._check_duplicate((await self._list())[0], new)
        except DuplicatePublicIP:
            await self._revoke(new.lease_id)
            raise
        return new

    async def acquire(self, backend_type: str, backend_data: dict[str, Any]) -> Lease:
        """Reuse or create this node's lease (see the module doc); waits out etcd outages.

        Raises SubnetsExhausted, DuplicatePublicIP, or SubnetError after repeated lost races.
        """
        cfg = self.config or await self.get_config()
        # Every lost race means another node took a subnet: at most count() of them, then exhaustion.
        attempts = RACE_RETRIES + cfg.count()
        for _ in range(attempts):
            rec = await self._retrying("acquire", lambda: self._try_acquire(cfg, backend_type, backend_data))
            if rec is not None:
                self._record = rec
                self.lease = rec.lease
                log.info("node %s: subnet %s (etcd, public IP %s)", self.node, rec.lease.subnet, self.public_ip)
                return rec.lease
        raise SubnetError(f"node {self.node}: lost {attempts} races for a subnet in {cfg.Network}")

    # ------------------------------------------------------------------ renew

    async def renew(self) -> Lease:
        """Renew the lease now (fresh etcd lease, value rewritten); LeaseLost if another node took the subnet."""
        rec = self._record
        if rec is None or self.lease is None:
            raise SubnetError("renew before acquire")
        new = await self._write(self.lease, {"target": "MOD", "result": "EQUAL", "mod_revision": rec.mod_revision})
        if new is None:  # expired meanwhile (etcd was away), or changed by someone
            records, _ = await self._list()
            cur = records.get(self.lease.key)
            if cur is None:
                new = await self._write(self.lease, {"target": "CREATE", "result": "EQUAL", "create_revision": 0})
            elif cur.owner == self.node or (not cur.owner and cur.lease.public_ip == self.public_ip):
                new = await self._write(self.lease, {"target": "MOD", "result": "EQUAL", "mod_revision": cur.mod_revision})
            else:
                raise LeaseLost(f"node {self.node}: subnet {self.lease.subnet} now belongs to {cur.owner or cur.lease.public_ip}")
            if new is None:
                raise LeaseLost(f"node {self.node}: subnet {self.lease.subnet} changed hands while renewing")
        else:
            await self._revoke(rec.lease_id)
        self._record = new
        self.renewals += 1
        async with self._renewed:
            self._renewed.notify_all()
        return new.lease

    async def wait_renewed(self, count: int) -> None:
        """Return once the lease has been renewed ``count`` times in all (for tests and status)."""
        async with self._renewed:
            while self.renewals < count:
                await self._renewed.wait()

    async def keep_lease(self) -> None:
        """Renew ``renew_margin`` before each expiry; on errors retry until it works (LeaseLost ends it)."""
        while True:
            await trio.sleep_until(self.expires_at - self.renew_margin)
            delay = 0.1
            while True:
                try:
                    await self.renew()
                    break
                except StoreError as exc:  # unreachable, or an error of the moment: the lease has time left
                    log.warning("renewing %s: %s; retrying", self.lease and self.lease.key, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, self.retry_max, max(self.renew_margin / 4, 0.1))

    async def release(self) -> None:
        """Delete this node's lease key (if still ours) and its etcd lease."""
        rec, self._record, self.lease = self._record, None, None
        if rec is None:
            return
        key = self._key(rec.lease)
        await self.etcd.call("/v3/kv/txn", {
            "compare": [{"key": key, "target": "MOD", "result": "EQUAL", "mod_revision": rec.mod_revision}],
            "success": [{"request_delete_range": {"key": key}}],
        })
        await self._revoke(rec.lease_id)

    # ------------------------------------------------------------------ peers

    def _is_self(self, lease: Lease) -> bool:
        return lease.node == self.node or (self.lease is not None and lease.key == self.lease.key)

    async def watch_peers(self, on_event: PeerHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Peers from a range then a gateway watch resumed after the last revision seen (re-listed if compacted)."""
        cache: dict[str, Lease] = {}
        started = False
        need_list = True
        next_rev = 0
        delay = 0.1

        async def emit(key: str, new: Lease | None) -> None:
            old = cache.pop(key, None)
            if new is not None:
                cache[key] = new
            if (new is not None and self._is_self(new)) or (new is None and old is not None and self._is_self(old)):
                return
            ev = peer_event(old, new)
            if ev is not None:
                await on_event(ev)

        p = self._subnets_prefix()
        while True:
            try:
                if need_list:
                    records, rev = await self._list()
                    for key in list(cache):
                        if key not in records:
                            await emit(key, None)
                    for key, rec in records.items():
                        await emit(key, rec.lease)
                    next_rev, need_list = rev + 1, False
                    if not started:
                        started = True
                        task_status.started()
                req = {"key": b64(p), "range_end": b64(range_end(p)), "start_revision": next_rev}
                async with self.etcd.watch(req) as stream:
                    delay = 0.1
                    async for result in stream:
                        for ev in result.get("events") or []:
                            kv = ev["kv"]
                            name = unb64(kv["key"])[len(p):].decode()
                            if ev.get("type") == "DELETE":
                                await emit(name, None)
                            else:
                                rec = self._record_of(kv)
                                await emit(name, rec.lease if rec else None)
                            next_rev = max(next_rev, int(kv.get("mod_revision", 0)) + 1)
            except (Gone, RevisionTooLarge):  # compacted, or etcd restored from an older backup: start over
                need_list = True
            except StoreError as exc:
                log.info("subnet watch: %s; resuming at revision %d", exc, next_rev)
                await trio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.retry_max)
