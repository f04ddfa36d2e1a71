"""The flanneld of one node: lease a subnet, program the backend, follow the peers.

    backend.prepare()            -> backend data (vxlan: {"VNI", "VtepMAC"})
    manager.acquire(type, data)  -> this node's Lease
    backend.configure(lease)     -> pod MTU, written with the subnet to subnet.env
    then, in one nursery:  peers -> backend.add_peer / remove_peer
                           manager.keep_lease()  (etcd: renew before expiry)
                           backend.run()         (udp loop, host-gw recheck)

Peers' leases come from the subnet manager's watch; a peer whose public IP,
VTEP MAC or subnet changes is removed then added again. While the API server
or etcd is unreachable the watches retry and nothing programmed is taken
down. Errors the node cannot fix — no free subnet, a duplicate public IP, a
lease taken over — end ``run_overlay`` with that error (the supervisor
restarts it, as kubelet restarts flanneld). On exit the backend removes what
it made; the lease stays, so a restart keeps the subnet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import trio

from kmesh.client.api import Client
from kmesh.cni import subnetenv
from kmesh.cni.lease import Lease
from kmesh.cni.netconf import NetConf
from kmesh.cni.subnets.base import PeerEvent, SubnetManager
from kmesh.cni.subnets.etcd import (
    PREFIX,
    RENEW_MARGIN,
    TTL,
    EtcdSubnetManager,
    ensure_config,
)
from kmesh.cni.subnets.kube import KubeSubnetManager
from kmesh.store.etcd_api import EtcdTLS

log = logging.getLogger("kmesh.cni.overlay")

RETRY_SECONDS = 2.0


class Backend(Protocol):
    """How a node reaches the other nodes' pod subnets (implemented in kmesh/cni/backends/)."""

    type: str                       # "vxlan" | "host-gw" | "udp"
    async def prepare(self) -> dict[str, Any]: ...        # create devices; return backend_data to publish (vxlan: {"VNI":1,"VtepMAC":mac})
    async def configure(self, local: Lease) -> int: ...    # address the devices for the local subnet; return the pod MTU for subnet.env
    async def add_peer(self, lease: Lease) -> None: ...
    async def remove_peer(self, lease: Lease) -> None: ...
    async def run(self) -> None: ...                        # long-running work (udp loop, host-gw recheck); may just sleep forever
    async def close(self) -> None: ...                      # remove what the backend made


@dataclass
class OverlayConfig:
    """What one node's overlay needs to know.

    ``netconf``: kube — the net-conf.json (default 10.244.0.0/16, vxlan);
    etcd — written to ``<etcd_prefix>/config`` if nobody has yet, else the
    stored one wins. ``subnet_env``: where the CNI plugin reads it.
    ``lease_ttl`` / ``renew_margin``: etcd lease timing (flannel: 24 h / 1 h).
    """

    node: str
    public_ip: str
    subnet_manager: Literal["kube", "etcd"] = "kube"
    netconf: NetConf | None = None
    etcd_url: str = ""
    etcd_tls: EtcdTLS | None = None  # an https etcd's CA and this node's client certificate
    etcd_prefix: str = PREFIX
    subnet_env: Path = subnetenv.DEFAULT_PATH
    ip_masq: bool = True
    lease_ttl: float = TTL
    renew_margin: float = RENEW_MARGIN


def same_path(a: Lease, b: Lease) -> bool:
    """Whether programming ``b`` would give the same routes/neighbours as ``a``."""
    return (a.subnet, a.public_ip, a.backend_type, a.vtep_mac) == (b.subnet, b.public_ip, b.backend_type, b.vtep_mac)


@dataclass
class Overlay:
    """A running overlay, handed out by ``task_status.started``: the local lease and the programmed peers."""

    lease: Lease
    mtu: int
    network: NetConf
    manager: SubnetManager
    backend: Backend
    peers: dict[str, Lease] = field(default_factory=dict)    # lease key -> what is programmed
    failed: dict[str, Lease] = field(default_factory=dict)   # lease key -> waiting for a retry
    _changed: trio.Condition = field(default_factory=trio.Condition, repr=False)

    async def wait_for(self, predicate: Callable[[Overlay], bool]) -> None:
        """Return once ``predicate(self)`` holds (checked after every peer change)."""
        async with self._changed:
            while not predicate(self):
                await self._changed.wait()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _add(self, lease: Lease) -> None:
        try:
            await self.backend.add_peer(lease)
        except Exception as exc:  # noqa: BLE001 - one bad peer must not stop the node
            log.warning("adding peer %s (%s) failed: %s; will retry", lease.key, lease.public_ip, exc)
            self.failed[lease.key] = lease
            return
        self.failed.pop(lease.key, None)
        self.peers[lease.key] = lease

    async def _remove(self, key: str) -> None:
        self.failed.pop(key, None)
        lease = self.peers.get(key)
        if lease is None:
            return
        try:
            await self.backend.remove_peer(lease)
        except Exception as exc:  # noqa: BLE001
            log.warning("removing peer %s failed: %s", key, exc)
        self.peers.pop(key, None)  # only now: ``peers`` never shows a removal still under way

    async def apply(self, ev: PeerEvent) -> None:
        """Program one peer event into the backend."""
        new = ev.lease
        if ev.kind == "removed":
            await self._remove(new.key)
        else:
            old = ev.old if ev.old is not None else self.peers.get(new.key)
            programmed = self.peers.get(old.key) if old is not None else None
            if new.subnet == self.lease.subnet:
                log.warning("peer %s claims this node's subnet %s; ignored", new.node or new.public_ip, new.subnet)
                if old is not None:
                    await self._remove(old.key)
            elif new.backend_type != self.backend.type:
                log.warning("peer %s uses backend %r, this node %r; ignored",
                            new.node or new.public_ip, new.backend_type, self.backend.type)
                if old is not None:
                    await self._remove(old.key)
            elif programmed is not None and same_path(programmed, new):
                self.peers.pop(programmed.key)
                self.peers[new.key] = new
            else:
                if old is not None:
                    await self._remove(old.key)
                await self._add(new)
        await self._notify()

    async def retry_failed(self, every: float = RETRY_SECONDS) -> None:
        """Try again, now and then, the peers the backend could not add."""
        while True:
            await trio.sleep(every)
            if self.failed:
                for lease in list(self.failed.values()):
                    await self._add(lease)
                await self._notify()


def make_manager(client: Client | None, cfg: OverlayConfig, etcd: Any = None) -> SubnetManager:
    """The subnet manager ``cfg`` names (``etcd``: an EtcdClient for etcd mode)."""
    if cfg.subnet_manager == "kube":
        if client is None:
            raise ValueError("the kube subnet manager needs an API client")
        return KubeSubnetManager(client, cfg.node, cfg.public_ip, cfg.netconf)
    if cfg.subnet_manager == "etcd":
        if etcd is None:
            raise ValueError("the etcd subnet manager needs an etcd URL")
        return EtcdSubnetManager(
            etcd, cfg.node, cfg.public_ip, prefix=cfg.etcd_prefix, ttl=cfg.lease_ttl,
            renew_margin=cfg.renew_margin, prev_subnet=subnetenv.read_subnet(cfg.subnet_env),
        )
    raise ValueError(f"unknown subnet manager {cfg.subnet_manager!r} (expected kube or etcd)")


async def run_overlay(
    client: Client | None,
    cfg: OverlayConfig,
    backend: Backend,
    *,
    manager: SubnetManager | None = None,
    task_status: trio.TaskStatus[Overlay] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one node's overlay until cancelled; ``task_status`` gets the Overlay once the
    subnet is leased, subnet.env written and the current peers programmed.

    ``manager`` overrides the one ``cfg`` describes (tests, or a shared EtcdClient).
    """
    etcd = None
    try:
        if manager is None:
            if cfg.subnet_manager == "etcd":
                from kmesh.store.etcd_api import EtcdClient

                etcd = EtcdClient(cfg.etcd_url, cfg.etcd_tls)
            manager = make_manager(client, cfg, etcd)
        if isinstance(manager, EtcdSubnetManager):
            if cfg.netconf is not None:
                await ensure_config(manager.etcd, cfg.netconf, prefix=manager.prefix)
            network = await manager.get_config()
        else:
            network = cfg.netconf or NetConf.default()
        data = await backend.prepare()
        local = await manager.acquire(backend.type, data)
        mtu = await backend.configure(local)
        subnetenv.write(cfg.subnet_env, subnetenv.SubnetEnv(network.Network, local.subnet, mtu, cfg.ip_masq))
        log.info("node %s: subnet %s, MTU %d, backend %s", cfg.node, local.subnet, mtu, backend.type)
        overlay = Overlay(local, mtu, network, manager, backend)
        async with trio.open_nursery() as n:
            await n.start(manager.watch_peers, overlay.apply)
            n.start_soon(manager.keep_lease)
            n.start_soon(backend.run)
            n.start_soon(overlay.retry_failed)
            task_status.started(overlay)
    finally:
        with trio.CancelScope(shield=True):
            try:
                await backend.close()
            except Exception as exc:  # noqa: BLE001 - clean-up must finish
                log.warning("backend %s close: %s", backend.type, exc)
            if etcd is not None:
                await etcd.aclose()
