"""The background process ``kmesh up`` leaves running: it owns every component of one lab.

All components run as tasks of one nursery; SIGTERM or SIGINT cancels it, and
every component cleans up on the way out.

The supervisor proves it is the lab's: it holds an exclusive ``flock`` on the
data dir for its whole life and writes ``<pid> <start time>`` to kmesh.pid
(``DataDir.supervisor``). Everything it and its children create is private
(umask 077). A lab restarted on its store gets the address ranges it was made
with (``D/network.json``), or refuses with a ``LabError`` that names them.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from kmesh.client.api import Client
from kmesh.client.kubeconfig import Credentials, write_kubeconfig
from kmesh.lab.access import write_private
from kmesh.lab.datadir import (
    CLUSTER_CIDR,
    SERVICE_CIDR,
    ClusterInfo,
    DataDir,
    LabLocked,
    LabNetwork,
)
from kmesh.lab.procs import ProcId
from kmesh.lab.simslots import SimNet, SlotsTaken
from kmesh.lab.simslots import claim as claim_sim_slot
from kmesh.lab.topology import CONTROL_PLANE_IP, UNDERLAY

if TYPE_CHECKING:
    from kmesh.dns import DNSConfig
    from kmesh.lab.netnslab import NetnsLab

API_PORT = 6443
PRIVATE_UMASK = 0o077  # files 0600, directories 0700: the lab's state is its owner's alone
log = logging.getLogger("kmesh.lab")


class LabError(RuntimeError):
    """The lab cannot start as asked; the message says why and what to do. Nothing was changed."""


@dataclass
class UpOptions:
    """The options of ``kmesh up``, saved as up.json for the supervisor."""

    data_dir: str
    name: str = "kmesh"
    port: int = 6443
    nodes: int = 1
    runtime: str = "sim"
    proxy_mode: str = "userspace"
    ipvs_scheduler: str = "rr"
    nodeport_addresses: list[str] = field(default_factory=list)  # kube-proxy's --nodeport-addresses, for every node
    backend: str = "vxlan"
    subnet_manager: str = "kube"
    store: str = "sqlite"
    etcd: str = ""
    etcd_cafile: str = ""  # with --etcd: kube-apiserver's --etcd-cafile, --etcd-certfile, --etcd-keyfile
    etcd_certfile: str = ""
    etcd_keyfile: str = ""
    demo: bool = False
    lb_range: str = ""  # LoadBalancer addresses (`--lb-range`); "": kmesh.lab.loadbalancers.default_lb_range
    mesh_cert_ttl: int = 86400  # seconds: the mesh CA's cap on certificate lifetimes (`--mesh-cert-ttl`)
    disable: list[str] = field(default_factory=list)  # add-ons left out (`--disable`: ingress, gateway)
    node_grace_period: float = 40.0  # the node lifecycle controller's grace period (kube-controller-manager's --node-monitor-grace-period)
    extra: dict[str, str] = field(default_factory=dict)
    # a topology file's nodes, [{"name": ..., "labels": {...}}] (kmesh.lab.topofile); empty: node-1..node-N
    node_specs: list[dict[str, Any]] = field(default_factory=list)
    kubeconfig_mode: int = 0o600  # D/kubeconfig.yaml's mode and owner (uid, gid): see kmesh.lab.access
    kubeconfig_owner: list[int] | None = None
    # the host runtime (kmesh.lab.hostlab): a server (`up --runtime host`) or an agent (`join`)
    role: str = "server"
    advertise_address: str = ""
    node_name: str = ""
    iface: str = ""
    node_ip: str = ""
    server_url: str = ""  # `join URL`, or `up --server URL` for another control-plane server
    token: str = ""  # the join token (agent) or server token (another server)
    token_file: str = ""  # agent: read the join token from this file (waiting for it, see server_timeout)
    server_timeout: float = 300.0  # agent: how long to wait for the token file and the server to answer

    def save(self, path: Path) -> None:
        """Write the options as JSON (0600, as everything in the data dir)."""
        write_private(path, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> UpOptions:
        """Read options written by ``save``."""
        return cls(**json.loads(path.read_text()))


def lab_dns_config(cluster_cidr: str, service_cidr: str) -> DNSConfig:
    """The lab's DNS server: on a free loopback port, answering the lab's clients only."""
    from kmesh.dns import DNSConfig

    return DNSConfig(
        listen=["127.0.0.1:0"], metrics_port=0,
        allowed_networks=[cluster_cidr, service_cidr, "127.0.0.0/8", "::1/128"],
    )


def store_url(opts: UpOptions, dd: DataDir, etcd_url: str | None) -> str:
    """The store URL the API server should use."""
    if opts.store == "memory":
        return "memory://"
    if opts.store == "etcd":
        assert etcd_url
        return etcd_url
    return f"sqlite://{dd.root / 'store.db'}"


def state_key(opts: UpOptions) -> str | None:
    """Which state the lab starts on: ``"sqlite"`` (D/store.db), ``"etcd"`` (the lab's etcd, data in
    D/etcd) or ``"etcd <url>"`` (the user's etcd); None for the memory store, whose state dies with the lab."""
    if opts.store == "sqlite":
        return "sqlite"
    if opts.store == "etcd":
        return f"etcd {opts.etcd}" if opts.etcd else "etcd"
    return None


def state_persists(opts: UpOptions, dd: DataDir) -> bool:
    """Whether the lab starts on state an earlier run left (SQLite file or etcd data dir in D, or an
    etcd of the user's): its objects hold addresses from the ranges that run had."""
    if opts.store == "sqlite":
        return (dd.root / "store.db").exists()
    if opts.store == "etcd":
        return bool(opts.etcd) or (dd.root / "etcd" / "data").exists()
    return False


def recorded_network(opts: UpOptions, dd: DataDir) -> LabNetwork | None:
    """The ranges the state in ``dd`` was made with, when this start reuses that state; None otherwise."""
    key = state_key(opts)
    return dd.read_network(key) if key is not None and state_persists(opts, dd) else None


def network_problem(opts: UpOptions, dd: DataDir, *, check_slot: bool = True) -> str | None:
    """Why ``kmesh up`` cannot restart on the state in ``dd`` as asked, or None.

    ``check_slot``: also say when another lab holds the sim slot now (a hint; ``claim_network`` decides)."""
    from kmesh.lab import simslots

    rec = recorded_network(opts, dd)
    if rec is None:
        return None
    if rec.runtime != opts.runtime:
        return (f"{dd.root} holds the state of a {rec.describe()}; start it with --runtime {rec.runtime}, "
                f"or remove it first with `kmesh down --data-dir {dd.root}`")
    if rec.simSlot is not None and check_slot and not simslots.is_free(rec.simSlot):
        return slot_taken(dd, rec)
    return None


def slot_taken(dd: DataDir, rec: LabNetwork) -> str:
    """The refusal when the sim slot the state in ``dd`` was made with is held by another lab."""
    from kmesh.lab import simslots

    assert rec.simSlot is not None
    return (f"{dd.root} holds the state of a {rec.describe()}, and its Services keep those addresses; "
            f"{simslots.taken_message(rec.simSlot)}: stop that lab (`kmesh down --data-dir <its dir>`) and run "
            f"`kmesh up` here again. The state in {dd.root} is kept.")


def claim_network(opts: UpOptions, dd: DataDir, *, sim: bool) -> tuple[LabNetwork, SimNet | None, int | None]:
    """The lab's ranges (those its state was made with, on a restart), recorded in D/network.json for its
    store; for a sim lab also its slot and the descriptor holding it (close it to give the slot back)."""
    problem = network_problem(opts, dd, check_slot=False)
    if problem:
        raise LabError(problem)
    rec = recorded_network(opts, dd)
    key = state_key(opts)
    if not sim:
        net = LabNetwork(opts.runtime, SERVICE_CIDR, CLUSTER_CIDR)
        if key is not None:
            dd.write_network(key, net)
        return net, None, None
    try:
        simnet, fd = claim_sim_slot(slot=rec.simSlot if rec is not None else None)
    except SlotsTaken as exc:
        raise LabError(slot_taken(dd, rec) if rec is not None else str(exc)) from None
    net = LabNetwork("sim", simnet.service_cidr, simnet.cluster_cidr, simnet.slot)
    try:
        if key is not None:
            dd.write_network(key, net)
    except BaseException:
        os.close(fd)
        raise
    return net, simnet, fd


Progress = Callable[[str], None]


async def start_sim_proxy(nursery: trio.Nursery, client: Client, dd: DataDir, node_ips: list[str], cluster_cidr: str,
                          nodeport_addresses: Sequence[str] = ()) -> int:
    """The sim lab's one userspace proxy (Service IPs are loopback addresses, bound once per machine);
    its metrics endpoint's port (/metrics, /rules) goes to D/run/proxy.port and is returned, its health
    server's (/healthz, /livez) to D/run/proxy-healthz.port."""
    from kmesh.proxy.model import NodeContext
    from kmesh.proxy.modes import make_mode
    from kmesh.proxy.runner import run_proxy

    ctx = NodeContext(node="", node_ips=tuple(node_ips), cluster_cidr=cluster_cidr,
                      nodeport_addresses=tuple(nodeport_addresses))
    runner = await nursery.start(functools.partial(run_proxy, client, make_mode("userspace", ctx, runtime="sim"),
                                                   metrics_port=0, healthz_port=0, healthz_host="127.0.0.1"))
    (dd.root / "run").mkdir(parents=True, exist_ok=True)
    (dd.root / "run" / "proxy.port").write_text(f"{runner.metrics_port}\n")
    (dd.root / "run" / "proxy-healthz.port").write_text(f"{runner.healthz_port}\n")
    return int(runner.metrics_port)


def _no_progress(msg: str) -> None:
    pass


async def run_lab(
    opts: UpOptions, on_ready: Callable[[ClusterInfo], None] | None = None, lab: NetnsLab | None = None,
    progress: Progress = _no_progress,
) -> None:
    """Run the lab until SIGTERM/SIGINT; ``on_ready`` is called once it answers.

    ``lab``: the namespaces ``netnslab.prepare`` made (netns runtime); None for sim.
    Raises ``LabError`` before starting anything when the lab's state needs ranges it cannot have."""
    dd = DataDir(Path(opts.data_dir))
    dd.root.mkdir(parents=True, exist_ok=True)
    if opts.runtime == "host":
        from kmesh.lab.hostlab import HostLabError, run_host_lab

        claim_network(opts, dd, sim=False)
        try:
            await run_host_lab(opts, dd, on_ready, progress)
        except HostLabError as exc:
            raise LabError(str(exc)) from None
        return
    _, simnet, slot_fd = claim_network(opts, dd, sim=lab is None)
    if simnet is not None and simnet.slot:
        progress(f"sim address slot {simnet.slot} (another sim lab holds the default ranges)")
    try:
        await _run_lab(opts, dd, simnet, on_ready, lab, progress)
    finally:
        if slot_fd is not None:
            os.close(slot_fd)


async def _run_lab(
    opts: UpOptions, dd: DataDir, simnet: SimNet | None, on_ready: Callable[[ClusterInfo], None] | None,
    lab: NetnsLab | None, progress: Progress,
) -> None:
    # the sim and netns labs' parts, imported here: `kmesh join` and the host runtime load this module too
    from kmesh.apiserver.server import RunningServer, ServerConfig, run_server
    from kmesh.controllers.manager import ControllerConfig, run_controllers
    from kmesh.controllers.metrics import CONTROLLER_MANAGER_PORT, SCHEDULER_PORT
    from kmesh.dns import RunningDNS, run_dns
    from kmesh.lab.addons import apply_objects, coredns_objects, wait_cluster_dns
    from kmesh.lab.demo import apply_demo
    from kmesh.lab.l7addons import l7_objects
    from kmesh.lab.etcd import start_lab_etcd
    from kmesh.lab.metrics import http_url, relay_node_metrics
    from kmesh.lab.simnodes import start_sim_nodes

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
            etcd = await start_lab_etcd(stack, opts, dd, lab, progress)
            service_cidr = simnet.service_cidr if simnet else SERVICE_CIDR
            cluster_cidr = simnet.cluster_cidr if simnet else CLUSTER_CIDR
            progress("API server")
            if lab is None:
                cfg = ServerConfig(
                    data_dir=dd.root, store_url=store_url(opts, dd, etcd.api_url), port=opts.port,
                    service_cidr=service_cidr, loopback_ok=True, etcd_tls=etcd.api_tls, mesh_injection=False,
                )
            else:
                cfg = ServerConfig(
                    data_dir=dd.root, store_url=store_url(opts, dd, etcd.api_url), etcd_tls=etcd.api_tls,
                    host=CONTROL_PLANE_IP, port=API_PORT,
                    service_cidr=service_cidr, extra_sans=["127.0.0.1"], extra_sockets=[lab.api_socket],
                    advertise_address=CONTROL_PLANE_IP,
                )
            srv: RunningServer = await nursery.start(run_server, cfg)
            creds = Credentials(srv.url, srv.pki.ca_pem(), srv.pki.token)
            user_url = srv.url if lab is None else f"https://127.0.0.1:{lab.api_port}"
            write_kubeconfig(dd.kubeconfig, opts.name, Credentials(user_url, creds.ca_pem, creds.token),
                             mode=opts.kubeconfig_mode,
                             owner=(opts.kubeconfig_owner[0], opts.kubeconfig_owner[1]) if opts.kubeconfig_owner else None)
            client = await stack.enter_async_context(Client(creds))
            progress("controllers")
            mgr = await nursery.start(functools.partial(
                run_controllers, client, ControllerConfig(
                    cluster_cidr=cluster_cidr, service_cidr=service_cidr, metrics_port=CONTROLLER_MANAGER_PORT,
                    scheduler_metrics_port=SCHEDULER_PORT, metrics_any_port_if_taken=True,
                    node_grace_period=opts.node_grace_period, lb_range=lab_lb_range(opts),
                    mesh_cert_max_ttl=float(opts.mesh_cert_ttl)),
                open_socket=None if lab is None else lab.open_root_socket))
            metrics = {"apiserver": f"{user_url}/metrics", "controller-manager": http_url(mgr.metrics_port),
                       "scheduler": http_url(mgr.scheduler_metrics_port)}
            if lab is None:
                assert simnet is not None
                nodes = await start_sim_nodes(nursery, client, opts, dd, simnet.node_ip, metrics)
                open_socket = None
                progress("userspace proxy")
                metrics["kube-proxy"] = http_url(await start_sim_proxy(
                    nursery, client, dd, [n.ip for n in nodes], cluster_cidr, opts.nodeport_addresses))
            else:
                from kmesh.lab.netnslab import start_nodes

                lab_kubeconfig = dd.root / "run" / "kubeconfig-lab.yaml"
                lab_kubeconfig.parent.mkdir(parents=True, exist_ok=True)
                write_kubeconfig(lab_kubeconfig, opts.name, creds)
                nodes = await start_nodes(nursery, client, opts, dd, lab, lab_kubeconfig, etcd.agents_url, progress,
                                          etcd_tls=etcd.agents_tls)
                open_socket = lab.open_root_socket
                metrics.update(await relay_node_metrics(nursery, lab, nodes))
                progress("CoreDNS Deployment and Service kube-dns")
                await apply_objects(client, coredns_objects(
                    lab_kubeconfig, allow=[cluster_cidr, service_cidr, str(UNDERLAY), "127.0.0.0/8"]))
                progress("ingress and Gateway API controllers (kmesh-system)")
                await apply_objects(client, l7_objects(lab_kubeconfig, disable=opts.disable))
                progress("kube-dns answering on every node")
                await wait_cluster_dns([n.netns for n in nodes if n.netns])
            progress("cluster DNS")
            dns: RunningDNS = await nursery.start(
                functools.partial(run_dns, client, lab_dns_config(cluster_cidr, service_cidr), spawn_workers=False,
                                  open_socket=open_socket)
            )
            info = ClusterInfo(
                name=opts.name,
                api=user_url,
                kubeconfig=str(dd.kubeconfig),
                dns=list(dns.addresses[0]),
                runtime=opts.runtime,
                proxyMode=opts.proxy_mode,
                serviceCIDR=service_cidr,
                clusterCIDR=cluster_cidr,
                nodes=nodes,
                metrics={**metrics, "coredns": http_url(dns.metrics_port)} if dns.metrics_port else metrics,
                lbRange=lab_lb_range(opts) or "",
            )
            dd.write_cluster(info)
            if lab is not None:
                await start_lb_forwards(nursery, client, lab, dd, info)
            if opts.demo:
                progress("demo Deployment")
                await apply_demo(client, service_port=80 if lab is not None else 8080)
            if on_ready is not None:
                on_ready(info)
            async for sig in signals:
                log.info("signal %s: shutting down", sig)
                break
            nursery.cancel_scope.cancel()


def lab_lb_range(opts: UpOptions) -> str | None:
    """The LoadBalancer address pool of the lab (None: no pool)."""
    from kmesh.lab.loadbalancers import default_lb_range

    return opts.lb_range or default_lb_range(opts.runtime) or None


async def start_lb_forwards(nursery: trio.Nursery, client: Client, lab: NetnsLab, dd: DataDir,
                            info: ClusterInfo) -> None:
    """Forward loopback ports to every LoadBalancer address and keep cluster.json's ``loadBalancers`` current."""
    from kmesh.lab.loadbalancers import LoadBalancerForwards

    def listed(listing: dict[str, dict[str, object]]) -> None:
        info.loadBalancers = listing
        dd.write_cluster(info)

    await nursery.start(LoadBalancerForwards(client, lab.open_root_socket, lab.names.underlay, listed).run)


def supervise(data_dir: Path) -> None:
    """Entry of the background process: run the lab described by up.json.

    Progress lines (``{"progress": ...}``) and finally ``{"api": ...}`` go to
    the pipe ``kmesh up`` passed in $KMESH_READY_FD."""
    os.umask(PRIVATE_UMASK)  # inherited by the agents, etcd and the CNI plugins; pods get 022 back
    dd = DataDir(data_dir)
    opts = UpOptions.load(dd.config_file)
    ready_fd = int(os.environ.pop("KMESH_READY_FD", "-1"))

    def say(doc: dict[str, object]) -> None:
        if ready_fd >= 0:
            try:
                os.write(ready_fd, (json.dumps(doc) + "\n").encode())
            except OSError:
                pass

    def progress(msg: str) -> None:
        log.info("up: %s", msg)
        say({"progress": msg})

    def ready(info: ClusterInfo) -> None:
        say({"api": info.api})
        if ready_fd >= 0:
            os.close(ready_fd)

    try:
        lock_fd = dd.hold_lab_lock()  # held until this process exits, however it exits
    except LabLocked as exc:
        log.error("%s", exc)
        say({"error": str(exc)})
        raise SystemExit(1) from None
    me = ProcId.of(os.getpid())
    assert me is not None
    write_private(dd.pid_file, me.format())
    lab = None
    try:
        try:
            problem = network_problem(opts, dd, check_slot=False)
            if problem:  # before anything is made
                raise LabError(problem)
            if opts.runtime == "netns":
                from kmesh.lab.netnslab import prepare

                lab = prepare(opts, progress)
            trio.run(run_lab, opts, ready, lab, progress)
        except LabError as exc:
            log.error("%s", exc)
            say({"error": str(exc)})
            raise SystemExit(1) from None
    finally:
        if lab is not None:
            from kmesh.lab.topology import sweep

            for what in sweep(lab.names):
                log.info("removed %s", what)
        try:
            if ProcId.parse(dd.pid_file.read_text()) == me:
                dd.pid_file.unlink()
        except FileNotFoundError:
            pass
        os.close(lock_fd)
