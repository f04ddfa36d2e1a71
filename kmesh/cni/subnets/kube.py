"""flannel's kube subnet manager: the Node object is the lease.

The node's subnet is ``spec.podCIDR``, given by kmesh's node IPAM controller;
the manager waits for it, then publishes what peers need as annotations on
the Node (``flannel.alpha.coreos.com/{backend-type, backend-data, public-ip,
kube-subnet-manager}``) and reports ``NetworkUnavailable=False`` (reason
``FlannelIsUp``) through the status subresource. Peers are the other Nodes
with a podCIDR and ``kube-subnet-manager: "true"``, seen through the shared
Informer. There is nothing to renew: the subnet lives as long as the Node.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import logging
from typing import Any

import trio

from kmesh.api import errors as E
from kmesh.api.meta import now
from kmesh.api.obj import Obj
from kmesh.client.api import APIUnavailable, Client
from kmesh.client.informer import Change, Informer
from kmesh.cni.lease import Lease
from kmesh.cni.netconf import NetConf
from kmesh.cni.subnets.base import PeerEvent, PeerHandler, SubnetError

log = logging.getLogger("kmesh.cni.subnets.kube")

PREFIX = "flannel.alpha.coreos.com/"
BACKEND_TYPE = PREFIX + "backend-type"
BACKEND_DATA = PREFIX + "backend-data"
PUBLIC_IP = PREFIX + "public-ip"
KUBE_MANAGED = PREFIX + "kube-subnet-manager"



def lease_of(node: Obj | None) -> Lease | None:
    """The lease a Node publishes, or None when it has no podCIDR or no flannel annotations."""
    if not node:
        return None
    ann = (node.get("metadata") or {}).get("annotations") or {}
    cidr = (node.get("spec") or {}).get("podCIDR")
    if ann.get(KUBE_MANAGED) != "true" or not cidr or not ann.get(PUBLIC_IP):
        return None
    try:
        subnet = ipaddress.IPv4Network(cidr)
        data = json.loads(ann.get(BACKEND_DATA) or "{}")
    except ValueError:
        log.warning("node %s: bad podCIDR %r or backend-data", node["metadata"].get("name"), cidr)
        return None
    return Lease(subnet, ann[PUBLIC_IP], ann.get(BACKEND_TYPE) or "", data if isinstance(data, dict) else {},
                 node=node["metadata"].get("name", ""))


def same_lease(a: Lease | None, b: Lease | None) -> bool:
    """Equal including backend data (Lease's own equality leaves it out)."""
    if a is None or b is None:
        return a is b
    return a == b and a.backend_data == b.backend_data


def peer_event(old: Lease | None, new: Lease | None) -> PeerEvent | None:
    """The peer event between two states of one peer's lease (None when nothing changed)."""
    if old is None and new is None:
        return None
    if old is None:
        assert new is not None
        return PeerEvent("added", new)
    if new is None:
        return PeerEvent("removed", old)
    if same_lease(old, new):
        return None
    return PeerEvent("changed", new, old)


class KubeSubnetManager:
    """The subnet manager of one node, backed by its Node object."""

    def __init__(self, client: Client, node: str, public_ip: str, netconf: NetConf | None = None,
                 *, retry_max: float = 5.0) -> None:
        self.client = client
        self.node = node
        self.public_ip = public_ip
        self.netconf = netconf
        self.lease: Lease | None = None
        self.retry_max = retry_max

    async def _pod_cidr(self) -> ipaddress.IPv4Network:
        """Wait (through outages) until this node's Node has a podCIDR."""
        inf = Informer(self.client, "Node", field_selector=f"metadata.name={self.node}", backoff_max=self.retry_max)
        async with trio.open_nursery() as n:
            n.start_soon(inf.run)
            await inf.wait_for(lambda i: bool(((i.get(self.node) or {}).get("spec") or {}).get("podCIDR")))
            n.cancel_scope.cancel()
        cidr = inf.get(self.node)["spec"]["podCIDR"]  # type: ignore[index]
        subnet = ipaddress.IPv4Network(cidr)
        if self.netconf is not None and not subnet.subnet_of(self.netconf.Network):
            raise SubnetError(f"node {self.node}: podCIDR {subnet} is not in the flannel Network {self.netconf.Network}")
        return subnet

    async def _retrying(self, what: str, fn: Any) -> Any:
        delay = 0.1
        while True:
            try:
                return await fn()
            except APIUnavailable as exc:
                log.info("%s: API unreachable (%s); retrying", what, exc)
            except E.APIError as exc:
                if exc.code not in (404, 409, 429, 500, 503):
                    raise
                log.info("%s: %s; retrying", what, exc.message)
            await trio.sleep(delay)
            delay = min(delay * 2, self.retry_max)

    async def _annotate(self, backend_type: str, backend_data: dict[str, Any]) -> None:
        want = {
            BACKEND_TYPE: backend_type,
            BACKEND_DATA: json.dumps(backend_data, separators=(",", ":")),
            PUBLIC_IP: self.public_ip,
            KUBE_MANAGED: "true",
        }
        node = await self.client.get("Node", self.node)
        have = (node.get("metadata") or {}).get("annotations") or {}
        if any(have.get(k) != v for k, v in want.items()):
            await self.client.patch("Node", self.node, {"metadata": {"annotations": want}})

    async def _set_condition(self) -> None:
        node = copy.deepcopy(await self.client.get("Node", self.node))
        status = node.setdefault("status", {})
        conds = [c for c in status.get("conditions") or [] if c.get("type") != "NetworkUnavailable"]
        prev = next((c for c in status.get("conditions") or [] if c.get("type") == "NetworkUnavailable"), None)
        t = now()
        conds.append({
            "type": "NetworkUnavailable", "status": "False", "reason": "FlannelIsUp",
            "message": "Flannel is running on this node", "lastHeartbeatTime": t,
            "lastTransitionTime": prev["lastTransitionTime"]
            if prev and prev.get("status") == "False" and prev.get("lastTransitionTime") else t,
        })
        status["conditions"] = conds
        await self.client.update_status(node)

    async def acquire(self, backend_type: str, backend_data: dict[str, Any]) -> Lease:
        """Wait for the podCIDR, publish the annotations and the FlannelIsUp condition."""
        subnet = await self._pod_cidr()
        await self._retrying(f"annotate node {self.node}", lambda: self._annotate(backend_type, backend_data))
        await self._retrying(f"status of node {self.node}", self._set_condition)
        self.lease = Lease(subnet, self.public_ip, backend_type, dict(backend_data), node=self.node)
        log.info("node %s: subnet %s (kube)", self.node, subnet)
        return self.lease

    async def watch_peers(self, on_event: PeerHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Peers from an Informer on Nodes; the initial list arrives as "added" before ``task_status``."""

        async def handle(change: Change) -> None:
            name = change.obj["metadata"].get("name")
            if name == self.node:
                return
            ev = peer_event(lease_of(change.old), lease_of(change.new))
            if ev is not None:
                await on_event(ev)

        inf = Informer(self.client, "Node", handlers=[handle], backoff_max=self.retry_max)
        async with trio.open_nursery() as n:
            await n.start(inf.run)
            task_status.started()

    async def keep_lease(self) -> None:
        """Nothing to renew: the podCIDR is the Node's for as long as it exists."""
        await trio.sleep_forever()

    async def release(self) -> None:
        """Nothing to give back: node IPAM frees the podCIDR when the Node is deleted."""
        self.lease = None
