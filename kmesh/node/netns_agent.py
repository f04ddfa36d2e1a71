"""A netns node: the flanneld-like overlay, the CNI set-up and the kubelet, in one agent process.

``kmesh agent --runtime netns`` runs this inside the node's network namespace
(the lab supervisor starts it with ``nsenter``). What it does is what a
Kubernetes node runs as flanneld + the flannel CNI plugin + the kubelet:

1. the overlay (kmesh.cni.overlay): takes the node's subnet from the subnet
   manager (kube: the Node's podCIDR; etcd: a lease), programs the backend
   (vxlan / host-gw / udp) towards every other node, masquerades pod traffic
   leaving the cluster network and writes ``subnet.env``;
2. the CNI config (``10-kmesh.conflist``: kmesh-cni → bridge + host-local,
   then portmap) in the node's CNI conf dir;
3. the kubelet with the netns runtime, whose pods wait until 1 and 2 are done;
4. kube-proxy in the chosen mode, and the NetworkPolicy agent (kmesh.policy.agent),
   as k3s embeds a policy controller beside flannel.

Files live in the node's dir ``D/nodes/<node>/``: ``run/subnet.env``,
``cni/net.d/``, ``cni/results/`` (ADD results for DEL), ``cni/networks/``
(host-local leases), ``cni/flannel/`` (kmesh-cni's saved delegate configs).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import trio

from kmesh.api.wellknown import CLUSTER_CIDR, CLUSTER_DNS_IP, CLUSTER_DOMAIN
from kmesh.client.api import Client
from kmesh.cni.backends import make_backend
from kmesh.cni.backends.masq import apply_masq
from kmesh.cni.caller import CNIChain, default_cni_path, install_launcher, write_conflist
from kmesh.cni.netconf import NetConf
from kmesh.cni.overlay import OverlayConfig, run_overlay
from kmesh.node.agent import AgentConfig, run_agent
from kmesh.node.metrics import KUBELET_PORT
from kmesh.node.netns_runtime import NetnsRuntime
from kmesh.policy.agent import PolicyAgent
from kmesh.proxy.health import HEALTHZ_PORT
from kmesh.proxy.http import METRICS_PORT
from kmesh.proxy.model import NodeContext
from kmesh.proxy.modes import make_mode
from kmesh.proxy.runner import run_proxy
from kmesh.store.etcd_api import EtcdTLS

log = logging.getLogger("kmesh.node.netns")


@dataclass
class NetnsNodeConfig:
    """What one netns node needs; the agent runs in the namespace it programs.

    The node knows nothing of the lab that started it: the names of its pods'
    namespaces (``pod_netns_prefix``), the pod network and the cluster DNS
    address all come in here.
    """

    pod_netns_prefix: str  # every pod namespace of this node starts with it (a lab: ``kmesh-<lab>-<node>-``)
    node_name: str
    node_ip: str
    node_dir: Path
    backend: str = "vxlan"
    subnet_manager: str = "kube"
    etcd_url: str = ""
    etcd_tls: EtcdTLS | None = None  # an https etcd's CA and this node's client certificate
    iface: str = "eth0"
    network: str = CLUSTER_CIDR  # the pod network (flannel's Network)
    dns_ip: str = CLUSTER_DNS_IP  # the kubelet's --cluster-dns
    cluster_domain: str = CLUSTER_DOMAIN  # the kubelet's --cluster-domain
    ip_masq: bool = True
    proxy_mode: str = "iptables"  # userspace | iptables | ipvs | nftables | none
    ipvs_scheduler: str = "rr"
    nodeport_addresses: tuple[str, ...] = ()  # kube-proxy's --nodeport-addresses (parsed)
    kubelet_metrics_port: int | None = KUBELET_PORT  # the kubelet's /metrics on node_ip (plain HTTP; None: off)
    labels: dict[str, str] = field(default_factory=dict)  # the kubelet's --node-labels: set on the Node it registers
    network_policy: bool = True  # enforce NetworkPolicies for this node's pods (k3s: --disable-network-policy)

    @property
    def subnet_env(self) -> Path:
        """flannel's subnet.env of this node."""
        return self.node_dir / "run" / "subnet.env"

    @property
    def cni_dir(self) -> Path:
        """Where this node keeps CNI config and state."""
        return self.node_dir / "cni"

    @property
    def conflist(self) -> Path:
        """The conflist the kubelet runs for each pod."""
        return self.cni_dir / "net.d" / "10-kmesh.conflist"


async def run_netns_node(client: Client, cfg: NetnsNodeConfig, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the node (overlay, CNI config, kubelet) until cancelled; ``task_status`` once pods can start."""
    for d in (cfg.subnet_env.parent, cfg.conflist.parent, cfg.cni_dir / "results", cfg.cni_dir / "flannel"):
        d.mkdir(parents=True, exist_ok=True)
    netconf = NetConf.default(cfg.network, cfg.backend)
    backend = make_backend(
        cfg.backend, netns=None, iface=cfg.iface, public_ip=cfg.node_ip, network=cfg.network,
        vni=netconf.Backend.VNI, port=netconf.Backend.Port or None,
    )
    write_conflist(cfg.conflist, subnet_file=cfg.subnet_env, data_dir=cfg.cni_dir / "flannel",
                   ipam_data_dir=cfg.cni_dir / "networks")
    # The node's own kmesh-cni first: the same plugin, started without site-packages (see install_launcher).
    fast = install_launcher(cfg.cni_dir / "bin")
    cni_path = [str(fast.parent), *default_cni_path()] if fast is not None else default_cni_path()
    chain = CNIChain(cfg.conflist, cni_path=cni_path, cache_dir=cfg.cni_dir / "results")
    runtime = NetnsRuntime(cfg.node_dir, netns_prefix=cfg.pod_netns_prefix, node=cfg.node_name, cni=chain,
                           dns_ip=cfg.dns_ip, cluster_domain=cfg.cluster_domain,
                           node_ip=cfg.node_ip)
    network_ready = trio.Event()
    agent_cfg = AgentConfig(node_name=cfg.node_name, node_ip=cfg.node_ip, runtime=runtime, data_dir=cfg.node_dir,
                            network_ready=network_ready, metrics_port=cfg.kubelet_metrics_port,
                            labels=dict(cfg.labels), lb_speaker_iface=cfg.iface)
    overlay_cfg = OverlayConfig(
        node=cfg.node_name, public_ip=cfg.node_ip, subnet_manager=cfg.subnet_manager,  # type: ignore[arg-type]
        netconf=netconf, etcd_url=cfg.etcd_url, etcd_tls=cfg.etcd_tls, subnet_env=cfg.subnet_env, ip_masq=cfg.ip_masq,
    )
    async with trio.open_nursery() as n:
        agent = await n.start(run_agent, client, agent_cfg)
        live = {p["metadata"].get("uid", "") for p in agent.pods.list()}
        reaped = await runtime.reap_orphans(live)
        if reaped:
            log.info("%s: removed sandboxes of pods that are gone: %s", cfg.node_name, ", ".join(reaped))
        overlay = await n.start(run_overlay, client, overlay_cfg, backend)
        if cfg.ip_masq:
            await apply_masq(None, str(overlay.network.Network), str(overlay.lease.subnet))
        network_ready.set()
        log.info("%s: pod network ready: subnet %s, %s backend", cfg.node_name, overlay.lease.subnet, cfg.backend)
        if cfg.proxy_mode != "none":
            ctx = NodeContext(node=cfg.node_name, node_ips=(cfg.node_ip,), cluster_cidr=str(overlay.network.Network),
                              nodeport_addresses=cfg.nodeport_addresses)
            mode = make_mode(cfg.proxy_mode, ctx, runtime="netns", scheduler=cfg.ipvs_scheduler)
            await n.start(functools.partial(run_proxy, client, mode, metrics_port=METRICS_PORT,
                                            healthz_port=HEALTHZ_PORT))
            log.info("%s: %s proxy running", cfg.node_name, cfg.proxy_mode)
        if cfg.network_policy:
            await n.start(PolicyAgent(client, cfg.node_name).run)
            log.info("%s: network policy agent running", cfg.node_name)
        task_status.started()
