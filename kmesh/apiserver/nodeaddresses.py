"""One address, one node: a Node may not announce a public IP another Node already has.

In a Vagrant lab every VM has 10.0.2.15 on its NAT interface; a node that
registers it (or that flannel would announce as its ``public-ip``) would take
the overlay traffic of another. kmesh refuses the write with an error that
names both nodes; upstream accepts it and the overlay breaks in silence
(docs/differences.md).
"""

from __future__ import annotations

from kmesh.api import errors as E
from kmesh.api.kinds import Kind
from kmesh.api.nodeaddrs import announced
from kmesh.api.validation.common import invalid
from kmesh.store.base import Obj, Store

class NodeAddressGuard:
    """Admission for Nodes: refuse an announced address that another Node announces already."""

    def __init__(self, store: Store, kind: Kind) -> None:
        self.store = store
        self.kind = kind

    async def _check(self, node: Obj) -> None:
        mine = announced(node)
        if not mine:
            return
        name = (node.get("metadata") or {}).get("name", "")
        others = (await self.store.list(self.kind.prefix(None))).items
        for other in others:
            other_name = (other.get("metadata") or {}).get("name", "")
            if other_name == name:
                continue
            theirs = {ip for _, ip in announced(other)}
            for path, ip in mine:
                if ip in theirs:
                    raise E.invalid_object("Node", name, "", [invalid(
                        path, ip, f'node "{other_name}" already has this address; node "{name}" must announce '
                                  "its own (kmesh join --node-ip IP or --iface IFACE)")])

    async def on_create(self, kind: Kind, obj: Obj) -> None:
        """Check a new Node."""
        await self._check(obj)

    async def on_update(self, kind: Kind, new: Obj, old: Obj) -> None:
        """Check a changed Node (its status or annotations may announce a new address)."""
        if announced(new) != announced(old):
            await self._check(new)

    async def on_delete(self, kind: Kind, obj: Obj) -> None:
        """Nothing to release."""

    async def on_create_failed(self, kind: Kind, obj: Obj) -> None:
        """Nothing to release."""
