"""kube-proxy's nftables mode (GA upstream in 1.33): render the state (``nftables_rules``) and apply it.

Each sync is one ``nft -f -`` transaction inside the node's namespace
(``ctx.netns``; None = this process's own), so the table changes atomically.
As upstream's proxier, a full sync (the first one, one after a failure,
and whenever the runner asks) rewrites the Service-independent part, every
service port's chains and every set/map element, and deletes the chains and
affinity sets it finds installed that nothing uses; only a full sync looks
at the node's addresses (``nodeport-ips``). A partial sync rewrites only the
chains of service ports that changed, adds and deletes only the set/map
elements that differ from what it applied last, and deletes the chains and
affinity sets of removed endpoints and services (upstream defers deleting
chains by a second for kernels before 6.2; here they go in the same
transaction). Affinity sets survive a sync unless their timeout changed.
After the transaction, stale UDP conntrack entries are flushed, as in the
iptables mode.
"""

from __future__ import annotations

import time

import trio

from kmesh.net import netns
from kmesh.proxy import conntrack
from kmesh.proxy.model import NodeContext, ProxyState, ServicePortName
from kmesh.proxy.nftables_rules import (
    FAMILY,
    TABLE,
    Existing,
    Installed,
    ipv4_ports,
    nodeport_ips,
    parse_json_listing,
    render_service,
    setup,
    transaction,
)
from kmesh.proxy.nodeports import local_addresses_for


class NftablesError(Exception):
    """``nft`` failed; the message carries its stderr."""


class NftablesProxy:
    """The ``nftables`` proxy mode (``kmesh.proxy.base.ProxyMode``)."""

    name = "nftables"

    def __init__(self, ctx: NodeContext, *, flush_conntrack: bool = True) -> None:
        self.ctx = ctx
        self.flush_conntrack = flush_conntrack
        self.last_script = ""  # the last applied transaction (for tests and debugging)
        self.last_full = False  # whether the last applied transaction was a full sync
        self.last_sync_seconds = 0.0
        self.last_conntrack_error = ""
        self.syncs = 0
        self._installed = Installed()  # what the last successful transaction left in the table
        self._need_full = True
        self._base_recreated = False  # upstream recreates the base chains once per process
        self._lock = trio.Lock()

    async def _nft(self, argv: list[str], text: str | None = None) -> str:
        proc = await netns.run(self.ctx.netns, ["nft", *argv], input=text.encode() if text is not None else None,
                               check=False)
        if proc.returncode != 0:
            raise NftablesError(f"nft {' '.join(argv)}: {proc.stderr.decode(errors='replace').strip()}")
        return proc.stdout.decode()

    async def _listing(self) -> str:
        """The installed table as ``nft list table`` prints it; "" when there is none."""
        proc = await netns.run(self.ctx.netns, ["nft", "list", "table", FAMILY, TABLE], check=False)
        return proc.stdout.decode() if proc.returncode == 0 else ""

    async def _existing(self) -> Existing:
        """The names of the installed table's chains and sets, and the sets' timeouts (not the rules)."""
        chains = await self._nft(["-j", "list", "chains", FAMILY])
        sets = await self._nft(["-j", "list", "sets", FAMILY])
        return parse_json_listing(chains, sets)

    async def _nodeport_ips(self) -> list[str] | None:
        """The ``nodeport-ips`` addresses (None: every local address), from the node's addresses if needed."""
        return nodeport_ips(self.ctx, await local_addresses_for(self.ctx, self.name))

    async def start(self, nursery: trio.Nursery) -> None:
        """Install the table with its base chains (no services) when it is not there yet."""
        async with self._lock:
            if not await self._listing():
                await self._apply(ProxyState(), frozenset(), True)

    async def sync(self, state: ProxyState, changed: frozenset[ServicePortName], full: bool) -> None:
        """Make the table match ``state`` in one transaction (full, or only what changed)."""
        async with self._lock:
            t0 = time.perf_counter()
            old = self._installed.ports
            touched = await self._apply(state, changed, full)
            self.syncs += 1
            if self.flush_conntrack:
                self.last_conntrack_error = await conntrack.flush_stale(
                    self.ctx.netns, old, state.services, touched, self.ctx.node, self.name)
            self.last_sync_seconds = time.perf_counter() - t0

    async def _apply(self, state: ProxyState, changed: frozenset[ServicePortName], full: bool) -> set[ServicePortName]:
        """One transaction: everything when ``full`` (or after a failure), else only what changed; the
        service ports it rewrote (every one before and after a full sync)."""
        full = full or self._need_full
        before = self._installed
        ports = ipv4_ports(state)
        if full:
            setup_lines = setup(self.ctx, await self._nodeport_ips(), recreate_base=not self._base_recreated)
            rules = {n: render_service(sp, self.ctx) for n, sp in ports.items()}
            tx = transaction(ports, rules, rules, before, setup_lines=setup_lines, existing=await self._existing())
            touched = set(ports) | set(before.ports)
        else:
            # What changed: what the runner says, and anything that differs from what was applied.
            dirty = set(changed) | {n for n in ports.keys() | before.ports.keys() if ports.get(n) != before.ports.get(n)}
            rules = {n: before.rules[n] if n not in dirty else render_service(sp, self.ctx) for n, sp in ports.items()}
            tx = transaction(ports, rules, dirty, before)
            touched = dirty
        try:
            if tx.text:
                await self._nft(["-f", "-"], tx.text)
        except BaseException:
            self._need_full = True  # what is installed is unknown now
            raise
        if full:
            self._base_recreated = True
        self._installed, self._need_full = tx.after, False
        self.last_script, self.last_full = tx.text, full
        return touched

    async def rules(self) -> str:
        """``nft list table ip kube-proxy`` ("" when the table is absent)."""
        return await self._listing()

    async def cleanup(self) -> None:
        """Delete the table (and with it every chain, map and set of this mode)."""
        async with self._lock:
            if await self._listing():
                await self._nft(["delete", "table", FAMILY, TABLE])
            self._installed, self._need_full = Installed(), True


NftablesProxier = NftablesProxy  # upstream's name for it
