"""kube-proxy's nftables mode (GA upstream in 1.33): render the state (``nftables_rules``) and apply it.

Each sync is one ``nft -f -`` transaction inside the node's namespace
(``ctx.netns``; None = this process's own), so the table changes atomically.
Every sync, full or partial, re-renders the whole table and reads the
installed one first (``nft list table``) to delete chains and sets no
longer rendered: correctness first, and it keeps a partial sync equal to a
full one. Upstream instead rewrites only changed services' chains; the
transaction here is the same shape, only larger. Affinity sets survive a
sync (their timeout is remembered; a changed timeout recreates the set).
After the transaction, stale UDP conntrack entries are flushed, as in the
iptables mode.
"""

from __future__ import annotations

import logging
import time

import trio

from kmesh.lab import netns
from kmesh.proxy import conntrack
from kmesh.proxy.model import NodeContext, ProxyState, ServicePort, ServicePortName
from kmesh.proxy.nftables_rules import (
    FAMILY,
    TABLE,
    Ruleset,
    parse_listing,
    render,
    script,
)

log = logging.getLogger("kmesh.proxy")


class NftablesError(Exception):
    """``nft`` failed; the message carries its stderr."""


class NftablesProxy:
    """The ``nftables`` proxy mode (``kmesh.proxy.base.ProxyMode``)."""

    name = "nftables"

    def __init__(self, ctx: NodeContext, *, flush_conntrack: bool = True) -> None:
        self.ctx = ctx
        self.flush_conntrack = flush_conntrack
        self.last_script = ""  # the last applied transaction (for tests and debugging)
        self.last_ruleset: Ruleset | None = None
        self.last_sync_seconds = 0.0
        self.last_conntrack_error = ""
        self.syncs = 0
        self._services: dict[ServicePortName, ServicePort] = {}
        self._timeouts: dict[str, int] = {}  # affinity set → the timeout it was created with
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

    async def start(self, nursery: trio.Nursery) -> None:
        """Install the table with its base chains (no services) when it is not there yet."""
        async with self._lock:
            if not await self._listing():
                rs = render(ProxyState(), self.ctx)
                await self._nft(["-f", "-"], script(rs))
                self._timeouts = {}

    async def sync(self, state: ProxyState, changed: frozenset[ServicePortName], full: bool) -> None:
        """Make the table match ``state`` in one transaction (partial syncs re-render everything too)."""
        async with self._lock:
            t0 = time.perf_counter()
            existing = parse_listing(await self._listing())
            rs = render(state, self.ctx)
            text = script(rs, existing, self._timeouts)
            try:
                await self._nft(["-f", "-"], text)
            except BaseException:
                self._timeouts = {}  # unknown now: the next sync recreates the affinity sets
                raise
            self._timeouts = dict(rs.affinity)
            old, self._services = self._services, dict(state.services)
            self.last_script, self.last_ruleset = text, rs
            self.syncs += 1
            if self.flush_conntrack:
                names = set(old) | set(state.services)
                try:
                    await conntrack.flush(self.ctx.netns, conntrack.stale_flushes(old, state.services, names, self.ctx.node))
                    self.last_conntrack_error = ""
                except conntrack.ConntrackError as exc:  # the rules are in; a stale UDP flow is not worth a resync
                    self.last_conntrack_error = str(exc)
                    log.warning("nftables proxy: %s", exc)
            self.last_sync_seconds = time.perf_counter() - t0

    async def rules(self) -> str:
        """``nft list table ip kube-proxy`` ("" when the table is absent)."""
        return await self._listing()

    async def cleanup(self) -> None:
        """Delete the table (and with it every chain, map and set of this mode)."""
        async with self._lock:
            if await self._listing():
                await self._nft(["delete", "table", FAMILY, TABLE])
            self._services, self._timeouts = {}, {}


NftablesProxier = NftablesProxy  # upstream's name for it
