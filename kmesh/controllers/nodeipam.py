"""Node IPAM: each Node gets a subnet of the cluster CIDR in ``spec.podCIDR`` / ``spec.podCIDRs``.

As upstream's range allocator: subnets (``/24`` by default) are handed out in
order, the search continuing after the last one given (so a freed subnet is
not reused at once); subnets that Nodes already hold are taken first (the
informer's initial list is the repair), subnets overlapping the service CIDR
are never used, and a deleted Node's subnet is released.
"""

from __future__ import annotations

import ipaddress
import logging

from kmesh.api import errors as E
from kmesh.api.obj import Obj
from kmesh.client.api import Client
from kmesh.client.informer import Change
from kmesh.controllers import podutil
from kmesh.controllers.base import Controller
from kmesh.controllers.events import EventRecorder
from kmesh.controllers.informers import InformerFactory

log = logging.getLogger("kmesh.controllers.nodeipam")
RESERVED = "<service-cidr>"


class NodeIPAM(Controller[str]):
    """Allocates one pod subnet per Node."""

    name = "nodeipam"
    queue_name = "cidrallocator_node"

    def __init__(self, client: Client, factory: InformerFactory, cluster_cidr: str, *, mask: int = 24,
                 service_cidr: str | None = None, events: EventRecorder | None = None) -> None:
        super().__init__(workers=1)
        self.client = client
        self.events = events
        self.net = ipaddress.ip_network(cluster_cidr, strict=False)
        if mask < self.net.prefixlen or mask > self.net.max_prefixlen:
            raise ValueError(f"node CIDR mask /{mask} does not fit in the cluster CIDR {self.net}")
        self.mask = mask
        self.count = 2 ** (mask - self.net.prefixlen)
        self.used: dict[int, str] = {}
        self.by_node: dict[str, int] = {}
        self.next = 0
        self.waiting: set[str] = set()
        if service_cidr:
            svc = ipaddress.ip_network(service_cidr, strict=False)
            if svc.version == self.net.version and svc.overlaps(self.net):
                for i in range(self.count):
                    if self.subnet(i).overlaps(svc):
                        self.used[i] = RESERVED
        self.nodes = factory.informer("Node")
        self.nodes.add_handler(self._on_node)

    def subnet(self, index: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """The ``index``-th subnet of the cluster CIDR."""
        size = 2 ** (self.net.max_prefixlen - self.mask)
        return ipaddress.ip_network((int(self.net.network_address) + index * size, self.mask))

    def index_of(self, cidr: str) -> int | None:
        """The index of a node subnet, or None when it is not one of ours."""
        try:
            sub = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return None
        if sub.version != self.net.version or sub.prefixlen != self.mask or not sub.subnet_of(self.net):  # type: ignore[arg-type]
            return None
        size = 2 ** (self.net.max_prefixlen - self.mask)
        return (int(sub.network_address) - int(self.net.network_address)) // size

    def _held(self, node: Obj) -> list[int]:
        spec = node.get("spec") or {}
        cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
        return [i for i in (self.index_of(c) for c in cidrs) if i is not None]

    def _on_node(self, ch: Change) -> None:
        name = podutil.md(ch.obj).get("name", "")
        if ch.new is None:
            for i in self._held(ch.obj) + ([self.by_node[name]] if name in self.by_node else []):
                if self.used.get(i) == name:
                    del self.used[i]
            self.by_node.pop(name, None)
            self.waiting.discard(name)
            for other in list(self.waiting):
                self.queue.add(other)
            return
        held = self._held(ch.new)
        for i in held:
            owner = self.used.get(i)
            if owner is not None and owner != name:
                log.error("node %s holds pod CIDR %s, which node %s holds too", name, self.subnet(i), owner)
                continue
            self.used[i] = name
            self.by_node[name] = i
        if not (ch.new.get("spec") or {}).get("podCIDR") and not (ch.new.get("spec") or {}).get("podCIDRs"):
            self.queue.add(name)

    def _allocate(self, name: str) -> int | None:
        for step in range(self.count):
            i = (self.next + step) % self.count
            if i not in self.used:
                self.used[i] = name
                self.by_node[name] = i
                self.next = (i + 1) % self.count
                return i
        return None

    async def sync(self, key: str) -> None:
        """Give one Node its subnet."""
        node = self.nodes.get(key)
        if node is None:
            return
        spec = node.get("spec") or {}
        if spec.get("podCIDR") or spec.get("podCIDRs"):
            return
        idx = self.by_node.get(key)
        fresh = idx is None
        if idx is None:
            idx = self._allocate(key)
        if idx is None:
            self.waiting.add(key)
            log.warning("no pod CIDR left in %s for node %s", self.net, key)
            if self.events:
                self.events.event(node, "Normal", "CIDRNotAvailable",
                                  f"Node {key} status is now: CIDRNotAvailable")
            return
        cidr = str(self.subnet(idx))
        try:
            await self.client.patch("Node", key, {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})
        except BaseException as exc:
            if fresh or (isinstance(exc, E.APIError) and exc.code == 404):
                self.used.pop(idx, None)
                self.by_node.pop(key, None)
            if isinstance(exc, E.APIError) and exc.code == 404:
                return
            raise
        self.waiting.discard(key)
        log.info("node %s: pod CIDR %s", key, cidr)
