"""The contract between the change tracker's sync loop and a proxy mode."""

from __future__ import annotations

from typing import Protocol

import trio

from kmesh.proxy.model import NodeContext, ProxyState, ServicePortName


class ProxyMode(Protocol):
    """One way of making Services reachable (userspace, iptables, ipvs, nftables).

    ``start`` installs what does not depend on Services (base chains,
    devices) and starts long-running work (listeners, the IPVS table's data
    path) in ``nursery``. ``sync`` makes the installed state equal
    ``state``: ``changed`` names the service ports added, removed or modified
    since the last successful sync; ``full`` asks to rewrite everything (first
    sync, after a failure, hourly). A sync that raises is retried as full.
    ``rules`` returns what is installed in the native tool's text
    (``iptables-save``, ``ipvsadm -Ln``, the userspace listener table).
    ``cleanup`` removes everything the mode installed.
    """

    name: str
    ctx: NodeContext

    async def start(self, nursery: trio.Nursery) -> None: ...

    async def sync(self, state: ProxyState, changed: frozenset[ServicePortName], full: bool) -> None: ...

    async def rules(self) -> str: ...

    async def cleanup(self) -> None: ...
