"""kube-proxy's iptables mode: render the state (``iptables_rules``) and apply it atomically.

Each sync is one ``iptables-restore --noflush --counters`` with the filter
and nat tables (and mangle's canary chain on a full sync), run inside the node's namespace (``ctx.netns``; None = this
process's own, as when the proxy runs inside its node namespace). A full sync
first reads ``iptables-save`` to find the jumps from built-in chains that are
missing and the per-service chains left over from earlier runs. After the
restore, stale UDP conntrack entries are flushed. Each full sync also reads
the node namespace's addresses to pick the ``--nodeport-addresses`` ones
(``kmesh.proxy.nodeports``); with localhost NodePorts on (upstream: when
those addresses reach loopback, as the default does), ``start`` sets
``route_localnet`` inside the node namespace — never in the root one. As upstream, empty
``KUBE-PROXY-CANARY`` chains in mangle, nat and filter are watched: when they
vanish, the tables were flushed by someone else and the next sync is full.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import trio

from kmesh.net import netns
from kmesh.proxy import conntrack, nodeports
from kmesh.proxy.iptables_rules import (
    CANARY,
    CANARY_TABLES,
    FILTER_CHAINS,
    FIREWALL,
    JUMPS,
    NAT_CHAINS,
    Jump,
    Plan,
    Planner,
    RenderConfig,
    constant_rules,
    is_service_chain,
    jump_lines,
    missing_jumps,
    parse_save,
    shared_chain_order,
)
from kmesh.proxy.model import NodeContext, ProxyState, ServicePort, ServicePortName

log = logging.getLogger("kmesh.proxy")
OWN_CHAINS = frozenset([*FILTER_CHAINS, *NAT_CHAINS, FIREWALL, CANARY])
RESTORE = ["iptables-restore", "-w", "5", "--noflush", "--counters"]


class IptablesError(Exception):
    """iptables-restore or iptables-save failed; the message carries its stderr."""


class IptablesProxy:
    """The ``iptables`` proxy mode (``kmesh.proxy.base.ProxyMode``)."""

    name = "iptables"

    def __init__(self, ctx: NodeContext, *, flush_conntrack: bool = True, monitor_interval: float = 30.0,
                 **render: object) -> None:
        self.ctx = ctx
        self.cfg = RenderConfig.from_context(ctx, **render)
        self.planner = Planner(self.cfg)
        self.flush_conntrack = flush_conntrack
        self.monitor_interval = monitor_interval  # seconds between canary checks (upstream: syncPeriod); 0 = off
        self.flushes_detected = 0
        self.last_restore = ""  # the text of the last applied restore (for tests and debugging)
        self.last_plan: Plan | None = None
        self.last_sync_seconds = 0.0
        self.last_timings: dict[str, float] = {}  # seconds per phase of the last sync
        self.syncs = 0
        self.last_conntrack_error = ""
        self._need_full = True
        self._lock = trio.Lock()

    async def _save(self, *tables: str) -> str:
        out = []
        for t in tables or ("filter", "nat"):
            proc = await netns.run(self.ctx.netns, ["iptables-save", "-t", t], check=False)
            if proc.returncode != 0:
                raise IptablesError(f"iptables-save -t {t}: {proc.stderr.decode(errors='replace').strip()}")
            out.append(proc.stdout.decode())
        return "".join(out)

    async def _restore(self, text: str, argv: list[str] | None = None) -> None:
        proc = await netns.run(self.ctx.netns, argv or RESTORE, input=text.encode(), check=False)
        if proc.returncode != 0:
            raise IptablesError(f"iptables-restore: {proc.stderr.decode(errors='replace').strip()}")

    async def start(self, nursery: trio.Nursery) -> None:
        """Create the shared chains (without flushing existing ones), their constant rules and the jumps."""
        async with self._lock:
            if self.cfg.localhost_nodeports:
                await self._route_localnet()
            saved = await self._save()
            tables = parse_save(saved)
            const = constant_rules(self.cfg)
            parts: list[str] = []
            jl = jump_lines(missing_jumps(saved, self.cfg))
            parts += ["*mangle", f":{CANARY} - [0:0]", "COMMIT"]
            for table, chains in shared_chain_order(self.cfg).items():
                parts.append(f"*{table}")
                parts.append(f":{CANARY} - [0:0]")
                body: list[str] = []
                for chain in chains:
                    if (table, chain) in const:
                        parts.append(f":{chain} - [0:0]")
                        body.extend(const[(table, chain)])
                    elif chain not in tables.get(table, {}):
                        parts.append(f":{chain} - [0:0]")
                parts.extend(body)
                parts.extend(jl[table])
                parts.append("COMMIT")
            await self._restore("\n".join(parts) + "\n")
        if self.monitor_interval > 0:
            nursery.start_soon(self._monitor)

    async def _route_localnet(self) -> None:
        """``net.ipv4.conf.all.route_localnet=1`` in the node namespace, so NodePorts answer on 127.0.0.1
        (upstream sets it whenever localhost NodePorts are on); skipped in the root namespace."""
        if self.ctx.netns is None and netns.in_root_namespace():
            log.warning("iptables proxy: in the root network namespace; not setting route_localnet "
                        "(NodePorts will not answer on 127.0.0.1)")
            return
        await netns.run(self.ctx.netns, ["sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"])

    async def _resolve_nodeport_ips(self) -> None:
        """Pick the ``--nodeport-addresses`` addresses among the namespace's current ones (full syncs)."""
        chosen = await nodeports.select_for(self.ctx, self.name)
        self.cfg = replace(self.cfg, nodeport_ips=None if chosen is None else tuple(chosen))
        self.planner.cfg = self.cfg

    async def canaries_present(self, tables: tuple[str, ...] = CANARY_TABLES) -> bool:
        """True when the KUBE-PROXY-CANARY chains are in ``tables`` (none was flushed since)."""
        for table in tables:
            proc = await netns.run(self.ctx.netns, ["iptables", "-w", "5", "-t", table, "-S", CANARY], check=False)
            if proc.returncode != 0:
                return False
        return True

    async def _monitor(self) -> None:
        """Upstream's iptables monitor: when the mangle canary vanishes (someone flushed the tables),
        the next sync is a full one, which also puts the canaries back."""
        while True:
            await trio.sleep(self.monitor_interval)
            try:
                present = await self.canaries_present(CANARY_TABLES[:1])  # mangle: small, cheap to read
            except (OSError, netns.NetnsError):  # the namespace is going away
                return
            if not present and not self._need_full:
                log.warning("iptables proxy: KUBE-PROXY-CANARY is gone (tables flushed?); next sync is full")
                self.flushes_detected += 1
                self._need_full = True

    async def sync(self, state: ProxyState, changed: frozenset[ServicePortName], full: bool) -> None:
        """Make the kernel's rules match ``state`` (a sync that raises must be retried as full)."""
        async with self._lock:
            t0 = time.perf_counter()
            full = full or self._need_full
            existing: list[str] = []
            jumps: list[Jump] = []
            if full:
                await self._resolve_nodeport_ips()
                saved = await self._save()
                existing = [c for c in parse_save(saved).get("nat", {}) if is_service_chain(c)]
                jumps = missing_jumps(saved, self.cfg)
            plan = self.planner.plan(state, changed, full, existing=existing, jumps=jumps)
            installed = self.planner.services
            names = set(installed) | set(state.services) if full else set(changed)
            old: dict[ServicePortName, ServicePort] = {n: installed[n][0] for n in names if n in installed}
            t1 = time.perf_counter()
            try:
                if not plan.empty:
                    await self._restore(plan.text)
            except BaseException:
                self._need_full = True
                raise
            t2 = time.perf_counter()
            self.planner.commit(plan)
            self._need_full = False
            self.last_restore = plan.text
            self.last_plan = plan
            self.syncs += 1
            if self.flush_conntrack:
                self.last_conntrack_error = await conntrack.flush_stale(
                    self.ctx.netns, old, state.services, names, self.ctx.node, self.name)
            t3 = time.perf_counter()
            self.last_sync_seconds = t3 - t0
            self.last_timings = {"prepare": t1 - t0, "restore": t2 - t1, "conntrack": t3 - t2}

    async def rules(self) -> str:
        """``iptables-save`` of the filter and nat tables."""
        return await self._save("filter", "nat")

    async def cleanup(self) -> None:
        """Remove every jump and ``KUBE-`` chain this mode adds (one restore; absent ones are skipped)."""
        async with self._lock:
            tables = parse_save(await self._save("mangle", "filter", "nat"))
            ours = {(j.table, j.src, f"-A {j.src} {j.spec()}") for j in JUMPS}
            parts: list[str] = []
            for table in ("mangle", "filter", "nat"):
                chains = tables.get(table, {})
                kube = sorted(c for c in chains if c in OWN_CHAINS or is_service_chain(c))
                dels = [f"-D {line[3:]}" for src, lines in chains.items() if not src.startswith("KUBE-")
                        for line in lines if (table, src, line) in ours]
                if not kube and not dels:
                    continue
                parts.append(f"*{table}")
                parts.extend(f":{c} - [0:0]" for c in kube)
                parts.extend(dels)
                parts.extend(f"-X {c}" for c in kube)
                parts.append("COMMIT")
            if parts:
                await self._restore("\n".join(parts) + "\n")
            self.planner.reset()
            self._need_full = True


IptablesProxier = IptablesProxy  # upstream's name for it
