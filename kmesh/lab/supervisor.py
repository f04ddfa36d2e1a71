"""The background process ``kmesh up`` leaves running: it owns every component of one lab.

All components run as tasks of one nursery; SIGTERM or SIGINT cancels it, and
every component cleans up on the way out.
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
from typing import TYPE_CHECKING

import trio

from kmesh.apiserver.server import RunningServer, ServerConfig, run_server
from kmesh.client.api import Client
from kmesh.client.kubeconfig import Credentials, write_kubeconfig
from kmesh.controllers.manager import ControllerConfig, run_controllers
from kmesh.controllers.metrics import CONTROLLER_MANAGER_PORT, SCHEDULER_PORT
from kmesh.dns import DNSConfig, RunningDNS, run_dns
from kmesh.lab.access import write_private
from kmesh.lab.addons import apply_objects, coredns_objects, wait_cluster_dns
from kmesh.lab.datadir import (
    CLUSTER_CIDR,
    SERVICE_CIDR,
    ClusterInfo,
    DataDir,
)
from kmesh.lab.demo import apply_demo
from kmesh.lab.metrics import http_url, relay_node_metrics
from kmesh.lab.simnodes import start_sim_nodes
from kmesh.lab.simslots import claim as claim_sim_slot
from kmesh.lab.topology import CONTROL_PLANE_IP, UNDERLAY

if TYPE_CHECKING:
    from kmesh.lab.netnslab import NetnsLab

API_PORT = 6443
log = logging.getLogger("kmesh.lab")


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
    demo: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    kubeconfig_mode: int = 0o600  # D/kubeconfig.yaml's mode and owner (uid, gid): see kmesh.lab.access
    kubeconfig_owner: list[int] | None = None

    def save(self, path: Path) -> None:
        """Write the options as JSON (0600, as everything in the data dir)."""
        write_private(path, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> UpOptions:
        """Read options written by ``save``."""
        return cls(**json.loads(path.read_text()))


def lab_dns_config(cluster_cidr: str, service_cidr: str) -> DNSConfig:
    """The lab's DNS server: on a free loopback port, answering the lab's clients only."""
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

    ``lab``: the namespaces ``netnslab.prepare`` made (netns runtime); None for sim."""
    dd = DataDir(Path(opts.data_dir))
    dd.root.mkdir(parents=True, exist_ok=True)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
            sim = lab is None
            etcd_url = opts.etcd or None
            agents_etcd_url = etcd_url
            if (opts.store == "etcd" or (opts.subnet_manager == "etcd" and not sim)) and not etcd_url:
                from kmesh.store.etcd_server import EtcdServer

                progress("etcd")
                extra = () if sim else (CONTROL_PLANE_IP,)
                etcd = await stack.enter_async_context(
                    EtcdServer(dd.root / "etcd" / "data", die_with_parent=True, extra_hosts=extra))
                etcd_url = etcd.url
                if not sim:  # node agents reach it on the underlay
                    agents_etcd_url = f"http://{CONTROL_PLANE_IP}:{etcd.client_port}"
            simnet = None
            if sim:
                simnet, slot_fd = claim_sim_slot()
                stack.callback(os.close, slot_fd)
                if simnet.slot:
                    progress(f"sim address slot {simnet.slot} (another sim lab holds the default ranges)")
            service_cidr = simnet.service_cidr if simnet else SERVICE_CIDR
            cluster_cidr = simnet.cluster_cidr if simnet else CLUSTER_CIDR
            progress("API server")
            if lab is None:
                cfg = ServerConfig(
                    data_dir=dd.root, store_url=store_url(opts, dd, etcd_url), port=opts.port,
                    service_cidr=service_cidr, loopback_ok=True,
                )
            else:
                cfg = ServerConfig(
                    data_dir=dd.root, store_url=store_url(opts, dd, etcd_url), host=CONTROL_PLANE_IP, port=API_PORT,
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
                    scheduler_metrics_port=SCHEDULER_PORT, metrics_any_port_if_taken=True),
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
                nodes = await start_nodes(nursery, client, opts, dd, lab, lab_kubeconfig, agents_etcd_url, progress)
                open_socket = lab.open_root_socket
                metrics.update(await relay_node_metrics(nursery, lab, nodes))
                progress("CoreDNS Deployment and Service kube-dns")
                await apply_objects(client, coredns_objects(
                    lab_kubeconfig, allow=[cluster_cidr, service_cidr, str(UNDERLAY), "127.0.0.0/8"]))
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
            )
            dd.write_cluster(info)
            if opts.demo:
                progress("demo Deployment")
                await apply_demo(client, service_port=80 if lab is not None else 8080)
            if on_ready is not None:
                on_ready(info)
            async for sig in signals:
                log.info("signal %s: shutting down", sig)
                break
            nursery.cancel_scope.cancel()


def supervise(data_dir: Path) -> None:
    """Entry of the background process: run the lab described by up.json.

    Progress lines (``{"progress": ...}``) and finally ``{"api": ...}`` go to
    the pipe ``kmesh up`` passed in $KMESH_READY_FD."""
    dd = DataDir(data_dir)
    opts = UpOptions.load(dd.config_file)
    write_private(dd.pid_file, f"{os.getpid()}\n")
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

    lab = None
    try:
        if opts.runtime == "netns":
            from kmesh.lab.netnslab import prepare

            lab = prepare(opts, progress)
        trio.run(run_lab, opts, ready, lab, progress)
    finally:
        if lab is not None:
            from kmesh.lab.topology import sweep

            for what in sweep(lab.names):
                log.info("removed %s", what)
        try:
            if dd.pid_file.read_text().strip() == str(os.getpid()):
                dd.pid_file.unlink()
        except FileNotFoundError:
            pass
