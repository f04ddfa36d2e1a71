"""kube-proxy's IPVS mode: a virtual server per service address, ipsets, and a constant handful of iptables rules.

As upstream: every Service address (ClusterIP, externalIPs, load-balancer
IPs) is bound /32 on ``kube-ipvs0`` in the node namespace, so the node owns
it; one virtual server per address:port (and per node IP:NodePort) holds the
endpoints as "Masq" real servers with weight 1, scheduled by the mode's
scheduler (default rr), persistent for ClientIP affinity. Removed endpoints
drain (weight 0) and go once idle. NodePort virtual servers go on the node
addresses ``--nodeport-addresses`` selects (without the flag: every local
address but loopback and kube-ipvs0's, as upstream), re-read at each full
sync; the ipsets and iptables rules do not depend on it. The ipsets (``kmesh.proxy.ipsets``) and
nat/filter chains ``KUBE-SERVICES``, ``KUBE-NODE-PORT``,
``KUBE-LOAD-BALANCER``, ``KUBE-MARK-MASQ``, ``KUBE-POSTROUTING``,
``KUBE-FORWARD``, ``KUBE-IPVS-FILTER`` are rewritten each sync.

Data path: where the kernel has ip_vs, the table is programmed into it
(``kmesh.proxy.ipvs_kernel``). Where it has not (these lab machines), kmesh
serves the same table itself: a listener on each virtual server address —
bound inside the node namespace, where the address is local thanks to
kube-ipvs0 — picks the real server with the table's scheduler (honouring
the connection counters and persistence) and relays with
``kmesh.proxy.relay``. A virtual server without real servers has no
listener, so clients are refused as ip_vs refuses them. Unlike ip_vs's NAT,
the relay connects from the node, so endpoints see the node's address as the
client; the counters (ActiveConn, InActConn) follow the kernel's meaning.

The CLI's ``kmesh proxy ipvs`` prints ``table_text()`` (``render_table``);
``rules()`` adds the ipsets and the iptables rules after the table.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter, defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from kmesh.net import netns as nsmod
from kmesh.proxy import ipsets as ipsetmod
from kmesh.proxy import nodeports
from kmesh.net.sockets import NamespaceSockets, OpenSocket, default_open_socket, tcp_listener, udp_socket
from kmesh.proxy.relay import Stats, TcpRelay, UdpRelay
from kmesh.proxy.ipsets import IPSets, ip_port, ip_port_ip
from kmesh.proxy.ipvs_kernel import KernelIPVS, kernel_has_ipvs
from kmesh.proxy.ipvs_table import INACTIVE_LINGER, DesiredVS, IPVSTable, VSKey, render_table
from kmesh.proxy.model import MASQ_MARK, Endpoint, NodeContext, ProxyState, ServicePort, ServicePortName
from kmesh.proxy.schedulers import SCHEDULERS

__all__ = ["IPVSConfig", "IpvsProxy", "desired_state", "iptables_text", "render_table"]

log = logging.getLogger("kmesh.proxy.ipvs")
DEVICE = "kube-ipvs0"
MARK = f"{MASQ_MARK:#x}/{MASQ_MARK:#x}"

NAT_CHAINS = ("KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-NODE-PORT", "KUBE-LOAD-BALANCER", "KUBE-MARK-MASQ")
FILTER_CHAINS = ("KUBE-FORWARD", "KUBE-NODE-PORT", "KUBE-IPVS-FILTER")
JUMPS: dict[str, tuple[str, ...]] = {  # table -> jump rules, as iptables-save prints them (inserted first when missing)
    "nat": (
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    ),
    "filter": (
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        '-A INPUT -m comment --comment "kubernetes health check rules" -j KUBE-NODE-PORT',
        '-A INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER',
    ),
}


@dataclass
class IPVSConfig:
    """The mode's knobs: scheduler (``--ipvs-scheduler``), data path (auto: the kernel's when it has ip_vs)."""

    scheduler: str = "rr"
    data_path: str = "auto"  # auto | kernel | userspace
    sweep_interval: float = 1.0  # how often draining real servers are checked (upstream: every minute)
    linger: float = INACTIVE_LINGER  # userspace data path: how long a closed TCP connection counts as InActConn


# ---------------------------------------------------------------------------------------------- what a sync wants


def desired_state(state: ProxyState, ctx: NodeContext, scheduler: str = "rr",
                  nodeport_ips: Sequence[str] | None = None) -> tuple[list[DesiredVS], IPSets, set[str]]:
    """The virtual servers, ipset members and kube-ipvs0 addresses ``state`` calls for on node ``ctx``;
    NodePorts on ``nodeport_ips`` (None: ``ctx.node_ips``)."""
    vss: list[DesiredVS] = []
    sets = IPSets()
    addrs: set[str] = set()
    node_ips = tuple(ctx.node_ips if nodeport_ips is None else nodeport_ips)
    for sp in state.services.values():
        _service_port(sp, ctx, scheduler, vss, sets, addrs, node_ips)
    for a in addrs:
        if _v4(a):
            sets.add(ipsetmod.IPVS_IPS, a)
    return vss, sets, addrs


def _v4(ip: str) -> bool:
    return ":" not in ip  # the ipsets are family inet


def _service_port(sp: ServicePort, ctx: NodeContext, scheduler: str, vss: list[DesiredVS], sets: IPSets, addrs: set[str],
                  node_ips: tuple[str, ...]) -> None:
    """One service port's virtual servers, set members and addresses."""
    proto = sp.protocol
    make = functools.partial(DesiredVS, protocol=proto, scheduler=scheduler, comment=str(sp.name),
                             persistent=int(sp.affinity_timeout) if sp.session_affinity else 0)
    internal = tuple((e.ip, e.port) for e in sp.internal_endpoints(ctx.node))
    external = tuple((e.ip, e.port) for e in sp.external_endpoints(ctx.node))
    vss.append(make(ip=sp.cluster_ip, port=sp.port, dests=internal))
    addrs.add(sp.cluster_ip)
    if _v4(sp.cluster_ip):
        sets.add(ipsetmod.CLUSTER_IP, ip_port(sp.cluster_ip, proto, sp.port))
    # External and load-balancer IPs: a virtual server each, and their (Local) ipset members.
    for ips, all_set, local_set in ((sp.external_ips, ipsetmod.EXTERNAL_IP, ipsetmod.EXTERNAL_IP_LOCAL),
                                    (sp.load_balancer_ips, ipsetmod.LOAD_BALANCER, ipsetmod.LOAD_BALANCER_LOCAL)):
        for ip in ips:
            vss.append(make(ip=ip, port=sp.port, dests=external))
            addrs.add(ip)
            if _v4(ip):
                sets.add(all_set, ip_port(ip, proto, sp.port))
                if sp.external_local:
                    sets.add(local_set, ip_port(ip, proto, sp.port))
    if sp.node_port:
        for nip in node_ips:
            vss.append(make(ip=nip, port=sp.node_port, dests=external))
        if proto in ("TCP", "UDP"):
            tcp = proto == "TCP"
            sets.add(ipsetmod.NODE_PORT_TCP if tcp else ipsetmod.NODE_PORT_UDP, str(sp.node_port))
            if sp.external_local:
                sets.add(ipsetmod.NODE_PORT_LOCAL_TCP if tcp else ipsetmod.NODE_PORT_LOCAL_UDP, str(sp.node_port))
    for e in sp.endpoints:
        if e.node == ctx.node and _v4(e.ip):
            sets.add(ipsetmod.LOOP_BACK, ip_port_ip(e.ip, proto, e.port, e.ip))


def iptables_text(sets: IPSets, cluster_cidr: str, masquerade_all: bool = False) -> str:
    """The nat and filter chains of the IPVS mode as ``iptables-restore --noflush`` input (declaring a chain flushes it)."""
    cip = '-m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst'
    nat = ["*nat", *(f":{c} - [0:0]" for c in NAT_CHAINS)]
    if masquerade_all or not cluster_cidr:
        nat.append(f"-A KUBE-SERVICES {cip} -j KUBE-MARK-MASQ")
    else:
        nat.append(f"-A KUBE-SERVICES {cip} ! -s {cluster_cidr} -j KUBE-MARK-MASQ")
    if sets.of(ipsetmod.EXTERNAL_IP):
        nat.append('-A KUBE-SERVICES -m comment --comment "Kubernetes service external ip + port for masquerade and filter purpose" '
                   "-m set --match-set KUBE-EXTERNAL-IP dst,dst -j KUBE-MARK-MASQ")
    if sets.of(ipsetmod.LOAD_BALANCER):
        nat.append('-A KUBE-SERVICES -m comment --comment "Kubernetes service lb portal" -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER')
    nat.append("-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT")
    nat.append("-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT")
    if sets.of(ipsetmod.LOAD_BALANCER):
        nat.append("-A KUBE-SERVICES -m set --match-set KUBE-LOAD-BALANCER dst,dst -j ACCEPT")
    for proto, np, local in (("tcp", ipsetmod.NODE_PORT_TCP, ipsetmod.NODE_PORT_LOCAL_TCP),
                             ("udp", ipsetmod.NODE_PORT_UDP, ipsetmod.NODE_PORT_LOCAL_UDP)):
        if sets.of(local):
            nat.append(f'-A KUBE-NODE-PORT -p {proto} -m comment --comment "{local.comment}" -m set --match-set {local.name} dst -j RETURN')
        if sets.of(np):
            nat.append(f'-A KUBE-NODE-PORT -p {proto} -m comment --comment "{np.comment}" -m set --match-set {np.name} dst -j KUBE-MARK-MASQ')
    if sets.of(ipsetmod.LOAD_BALANCER_LOCAL):
        nat.append(f'-A KUBE-LOAD-BALANCER -m comment --comment "{ipsetmod.LOAD_BALANCER_LOCAL.comment}" '
                   "-m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst -j RETURN")
    nat += [
        "-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ",
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK:#x}",
        f'-A KUBE-POSTROUTING -m comment --comment "{ipsetmod.LOOP_BACK.comment}" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE',
        f"-A KUBE-POSTROUTING -m mark ! --mark {MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK:#x}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE',
        "COMMIT",
    ]
    filt = ["*filter", *(f":{c} - [0:0]" for c in FILTER_CHAINS)]
    filt += [
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        f'-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark {MARK} -j ACCEPT',
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
        f'-A KUBE-NODE-PORT -m comment --comment "{ipsetmod.HEALTH_CHECK_NODE_PORT.comment}" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT',
        "-A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN",
        "-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN",
        "-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP dst,dst -j RETURN",
        "-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -j RETURN",
        "-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN",
        "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT",
        "COMMIT",
    ]
    return "\n".join(nat + filt) + "\n"


def _with_jumps(text: str, saved: dict[str, str]) -> str:
    """``text`` plus an insert (``-I <chain> 1``) for every jump ``saved`` (iptables-save per table) lacks."""
    out: list[str] = []
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        if line == "COMMIT":
            for jump in JUMPS.get(table, ()):
                if jump not in saved.get(table, "").splitlines():
                    chain, rest = jump[3:].split(" ", 1)
                    out.append(f"-I {chain} 1 {rest}")
        out.append(line)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------- userspace data path


class TablePicker:
    """The forward relays' view of one virtual server: pick = the table's schedule, release = connection closed.

    It also keeps the real servers' counters as the kernel would show them:
    ActiveConn = connections established both ways (the relay's own count);
    InActConn = connections still connecting or half-closed, plus closed TCP
    ones for the table's ``linger`` (TIME_WAIT); UDP flows are all InActConn.
    """

    def __init__(self, table: IPVSTable, key: VSKey) -> None:
        self.table = table
        self.key = key
        self.tcp = key[0] == "TCP"
        self.stats: Stats | None = None  # the relay's per-endpoint counters, once the relay exists
        self.held: Counter[tuple[str, int]] = Counter()  # picked and not yet released
        self._clients: dict[str, deque[str]] = defaultdict(deque)

    def refresh(self) -> None:
        """Bring the real servers' ActiveConn/InActConn up to date from the relay."""
        vs = self.table.services.get(self.key)
        if vs is None:
            return
        self.table.expire(self.key)
        for rs in vs.dests:
            held = self.held.get(rs.key, 0)
            st = self.stats.get(Endpoint(rs.ip, rs.port).addr) if self.stats is not None and self.tcp else None
            established = min(st.active, held) if st is not None else 0
            rs.active = established
            rs.inactive = held - established + rs.lingering

    def pick(self, client_ip: str, retry: bool = False) -> Endpoint | None:
        """The real server the table schedules (``retry``: a connect failed, schedule afresh)."""
        self.refresh()
        rs = self.table.schedule(self.key, client_ip, ignore_persistence=retry)
        if rs is None:
            return None
        self.table.opened(self.key, rs, client_ip, active=False)  # connecting: inactive until established
        self.held[rs.key] += 1
        ep = Endpoint(rs.ip, rs.port)
        self._clients[ep.addr].append(client_ip)
        return ep

    def release(self, endpoint: Endpoint) -> None:
        """A connection to ``endpoint`` ended (or failed to connect)."""
        q = self._clients.get(endpoint.addr)
        client = q.popleft() if q else ""
        key = (endpoint.ip, endpoint.port)
        if self.held.get(key, 0) > 0:
            self.held[key] -= 1
        vs = self.table.services.get(self.key)
        rs = vs.dest(endpoint.ip, endpoint.port) if vs is not None else None
        if rs is not None:
            self.table.closed(self.key, rs, client, active=self.tcp)  # lingering, persistence templates
            self.refresh()


@dataclass
class Served:
    """One virtual server kmesh serves itself: its relay and picker."""

    relay: TcpRelay | UdpRelay
    picker: TablePicker


# ---------------------------------------------------------------------------------------------- the mode


class IpvsProxy:
    """The IPVS proxy mode for one node (see the module docstring)."""

    name = "ipvs"

    def __init__(self, ctx: NodeContext, scheduler: str = "rr", config: IPVSConfig | None = None) -> None:
        self.ctx = ctx
        self.config = config or IPVSConfig(scheduler=scheduler)
        if self.config.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown IPVS scheduler {self.config.scheduler!r}")
        self.table = IPVSTable(linger=self.config.linger)
        self.sets = IPSets()
        self.addresses: set[str] = set()
        self.kernel: KernelIPVS | None = None
        self.served: dict[VSKey, Served] = {}
        self.device_kind = ""  # dummy | bridge, once made
        self.nodeport_ips: list[str] | None = None  # where NodePorts are served; picked at each full sync
        self._applied_rules = ""
        self._nursery: trio.Nursery | None = None
        self._background = trio.CancelScope()
        self._lock = trio.Lock()
        # sockets inside the node namespace, made a batch per namespace trip (connect latency)
        self._open_socket: OpenSocket = NamespaceSockets(ctx.netns) if ctx.netns is not None else default_open_socket

    @property
    def data_path(self) -> str:
        """``kernel`` or ``userspace`` (known after ``start``)."""
        return "kernel" if self.kernel is not None else "userspace"

    def served_addresses(self) -> set[str]:
        """The addresses kmesh's own data path listens on now (userspace path)."""
        return {key[1] for key in self.served}

    # -- lifecycle --------------------------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        """Make kube-ipvs0, the ipsets and the constant rules; pick the data path; start the drain sweeper."""
        self._nursery = nursery
        use_kernel = self.config.data_path == "kernel" or (
            self.config.data_path == "auto" and await trio.to_thread.run_sync(kernel_has_ipvs, self.ctx.netns))
        self.kernel = KernelIPVS(self.ctx.netns) if use_kernel else None
        if self.kernel is not None:
            await self.kernel.set_sysctls()
        await self._ensure_device()
        await self._apply_rules()
        self._background = trio.CancelScope()
        nursery.start_soon(self._sweeper)

    async def sync(self, state: ProxyState, changed: frozenset[ServicePortName], full: bool) -> None:
        """Make addresses, virtual servers, ipsets and rules equal ``state`` (always whole: the table is small)."""
        async with self._lock:
            if full or not self.device_kind:
                await self._ensure_device()
            if full or self.nodeport_ips is None:
                self.nodeport_ips = await self._pick_nodeport_ips()
            vss, sets, addrs = desired_state(state, self.ctx, self.config.scheduler, self.nodeport_ips)
            await self._bind_addresses(addrs, full)
            if self.kernel is not None:  # graceful termination decides on the kernel's connection counts
                await self.kernel.read_counters(self.table)
            self.table.reconcile(vss)
            self.sets = sets
            await self._apply_rules()
            await self._apply_data_path()

    async def _pick_nodeport_ips(self) -> list[str]:
        """The node addresses NodePort virtual servers go on: ``--nodeport-addresses``' choice, or without
        it every local address but kube-ipvs0's; loopback never (as upstream's IPVS mode)."""
        chosen = await nodeports.select_for(self.ctx, self.name)
        if chosen is None:
            chosen = await nodeports.local_addresses(self.ctx, except_link=DEVICE)
        return [ip for ip in dict.fromkeys(chosen) if not nodeports.is_loopback(ip)]

    async def rules(self) -> str:
        """The ``ipvsadm -Ln`` table, then the ipsets (``ipset save`` form), then the iptables rules."""
        return "\n".join([await self.table_text(), self.sets.save_text(), self._applied_rules or iptables_text(
            self.sets, self.ctx.cluster_cidr, self.ctx.masquerade_all)])

    async def table_text(self) -> str:
        """The virtual servers as ``ipvsadm -Ln`` prints them (counters read from the kernel on the kernel path)."""
        if self.kernel is not None:
            try:
                await self.kernel.read_counters(self.table)
            except Exception as exc:  # noqa: BLE001  # pragma: no cover - needs a kernel with ip_vs
                log.warning("ipvs: reading kernel counters: %s", exc)
        self._refresh_counters()
        return render_table(self.table)

    def _refresh_counters(self) -> None:
        """Userspace data path: the counters from the relays, as the kernel would count them."""
        for served in self.served.values():
            served.picker.refresh()

    async def cleanup(self) -> None:
        """Stop serving, delete the virtual servers, rules, ipsets and kube-ipvs0."""
        self._background.cancel()
        for served in self.served.values():
            served.relay.abort()
        self.served.clear()
        if isinstance(self._open_socket, NamespaceSockets):
            self._open_socket.close()
        self.table = IPVSTable(linger=self.config.linger)
        self.sets = IPSets()
        self.device_kind = ""
        self.nodeport_ips = None
        self.addresses.clear()
        if self.ctx.netns is not None and not nsmod.exists(self.ctx.netns):
            return  # the node namespace is gone, and everything in it
        if self.kernel is not None:
            try:
                await self.kernel.flush()
            finally:
                self.kernel.close()
        await self._remove_rules()
        await ipsetmod.destroy(self.ctx.netns)
        await nsmod.run(self.ctx.netns, ["ip", "link", "del", DEVICE], check=False)

    # -- kube-ipvs0 -------------------------------------------------------------------------------------

    async def _ensure_device(self) -> None:
        """kube-ipvs0: a dummy link where the kernel has dummy, else a bridge without ports (both stay down)."""
        ns = self.ctx.netns
        shown = await nsmod.run(ns, ["ip", "-d", "-o", "link", "show", DEVICE], check=False)
        if shown.returncode == 0:
            out = shown.stdout.decode()
            self.device_kind = "bridge" if " bridge " in out else "dummy"
            return
        made = await nsmod.run(ns, ["ip", "link", "add", DEVICE, "type", "dummy"], check=False)
        if made.returncode == 0:
            self.device_kind = "dummy"
        else:
            await nsmod.run(ns, ["ip", "link", "add", DEVICE, "type", "bridge"])
            self.device_kind = "bridge"
        self.addresses.clear()

    async def _bind_addresses(self, want: set[str], full: bool) -> None:
        """Bind every service address /32 (/128) on kube-ipvs0 and unbind the ones no longer used."""
        if full or not self.addresses:
            self.addresses = await self._bound()
        cmds = []
        for a in sorted(want - self.addresses):
            cmds.append(f"address add {a}/{128 if ':' in a else 32} dev {DEVICE}")
        for a in sorted(self.addresses - want):
            cmds.append(f"address del {a}/{128 if ':' in a else 32} dev {DEVICE}")
        if cmds:
            await nsmod.run(self.ctx.netns, ["ip", "-force", "-batch", "-"], input=("\n".join(cmds) + "\n").encode())
        self.addresses = set(want)

    async def _bound(self) -> set[str]:
        proc = await nsmod.run(self.ctx.netns, ["ip", "-o", "address", "show", "dev", DEVICE], check=False)
        return set(re.findall(r"\binet6? ([0-9a-fA-F.:]+)/", proc.stdout.decode()))

    # -- ipsets and iptables ------------------------------------------------------------------------------

    async def _saved(self) -> dict[str, str]:
        out = {}
        for table in ("nat", "filter"):
            proc = await nsmod.run(self.ctx.netns, ["iptables-save", "-t", table])
            out[table] = proc.stdout.decode()
        return out

    async def _apply_rules(self) -> None:
        """ipsets first (the rules reference them), then one ``iptables-restore --noflush``."""
        await ipsetmod.apply(self.ctx.netns, self.sets)
        text = iptables_text(self.sets, self.ctx.cluster_cidr, self.ctx.masquerade_all)
        await nsmod.run(self.ctx.netns, ["iptables-restore", "--noflush"], input=_with_jumps(text, await self._saved()).encode())
        self._applied_rules = text

    async def _remove_rules(self) -> None:
        """Delete the jumps that exist, then flush and delete the chains."""
        saved = await self._saved()
        lines: list[str] = []
        for table, chains in (("nat", NAT_CHAINS), ("filter", FILTER_CHAINS)):
            have = saved[table].splitlines()
            present = [c for c in chains if f":{c} " in saved[table]]
            lines.append(f"*{table}")
            lines += ["-D " + j[3:] for j in JUMPS[table] if j in have]
            lines += [f":{c} - [0:0]" for c in present]
            lines += [f"-X {c}" for c in present]
            lines.append("COMMIT")
        await nsmod.run(self.ctx.netns, ["iptables-restore", "--noflush"], input=("\n".join(lines) + "\n").encode())
        self._applied_rules = ""

    # -- data path --------------------------------------------------------------------------------------

    async def _apply_data_path(self) -> None:
        if self.kernel is not None:
            await self.kernel.sync(self.table)
            return
        want = {k for k, vs in self.table.services.items() if vs.dests and k[0] in ("TCP", "UDP")}
        for key in [k for k, sv in self.served.items() if sv.relay.closed.is_set()]:
            del self.served[key]  # its relay stopped on an error: serve it afresh
        for key in [k for k in self.served if k not in want]:
            _stop(self.served.pop(key).relay)  # established connections finish, new ones are refused
        failed = []
        for key in sorted(want - set(self.served)):
            try:
                self.served[key] = await self._serve(key)
            except OSError as exc:
                failed.append(f"{key[0]} {key[1]}:{key[2]}: {exc}")
        if failed:
            raise OSError("ipvs: cannot listen on " + "; ".join(failed))

    async def _serve(self, key: VSKey) -> Served:
        """A listener on a virtual server's address inside the node namespace, relaying with the table's choices."""
        assert self._nursery is not None, "start() first"
        proto, ip, port = key

        open_socket = self._open_socket
        picker = TablePicker(self.table, key)
        relay: TcpRelay | UdpRelay
        if proto == "TCP":
            relay = TcpRelay(await tcp_listener(ip, port, open_socket), picker, open_socket=open_socket)
        else:
            relay = UdpRelay(await udp_socket(ip, port, open_socket), picker, open_socket=open_socket)
        picker.stats = relay.stats
        await self._nursery.start(_serve_relay, relay, key)
        return Served(relay, picker)

    async def _sweeper(self) -> None:
        """Delete drained real servers once idle (and stop serving virtual servers left without any)."""
        with self._background:
            while True:
                await trio.sleep(self.config.sweep_interval)
                async with self._lock:
                    try:
                        if self.kernel is not None and self.table.draining():
                            await self.kernel.read_counters(self.table)
                        self._refresh_counters()
                        if self.table.sweep():
                            await self._apply_data_path()
                    except Exception as exc:  # noqa: BLE001 - keep sweeping; the next sync retries
                        log.warning("ipvs: sweeping drained real servers: %s", exc)


def _stop(relay: TcpRelay | UdpRelay) -> None:
    """Stop accepting and free the address at once (a virtual server may be served again right away)."""
    relay.close()  # cancels the waiting accept/recv first, so closing the socket under it is safe
    (relay.listener if isinstance(relay, TcpRelay) else relay.sock).close()


async def _serve_relay(relay: TcpRelay | UdpRelay, key: VSKey, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Run a relay; a socket closed under it ends only that relay, never the proxy."""
    try:
        await relay.serve(task_status=task_status)
    except (trio.ClosedResourceError, OSError) as exc:
        log.warning("ipvs: serving %s %s:%d stopped: %s", key[0], key[1], key[2], exc)
