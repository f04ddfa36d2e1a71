"""The host runtime: this machine (a VM, a PC, or in tests a namespace acting as one) is a node of the cluster.

Two roles, both run by the lab supervisor in the machine's own network
namespace:

- ``server`` (``kmesh up --runtime host --advertise-address IP``): the API
  server on IP:6443 and 127.0.0.1:6443, the controllers and scheduler (leader
  elected, so several servers on one etcd can run them), the CoreDNS
  Deployment and kube-dns Service, and a node agent for this machine. It
  writes ``D/join-token`` (agents) and ``D/server-token`` (more servers). With
  ``--server URL --token SERVER-TOKEN`` it is an additional server of that
  cluster: it fetches the cluster's CA and tokens, and must share its store
  (``--store etcd --etcd URL,...``).
- ``agent`` (``kmesh join URL --token TOKEN``): the bootstrap exchange of
  ``kmesh.client.bootstrap`` gives the node its own certificate; a local API
  balancer (``kmesh.node.apilb``) on 127.0.0.1:6444 fails over between the
  servers; the node agent talks through it.

The node agent is the netns runtime's agent run here, inside the supervisor's
own process as k3s runs its agent inside the server's (``run_host_agent``):
``cni0``, ``flannel.<VNI>`` over the interface that reaches the cluster
(``kmesh.net.ifaces``), kube-proxy's rules in this namespace, pods as
namespaces named ``kmesh-<lab>-<node>-...``.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

import trio

from kmesh.api.wellknown import CLUSTER_CIDR, CLUSTER_DNS_IP, SERVICE_CIDR
from kmesh.client.api import Client
from kmesh.client.bootstrap import JoinError, JoinToken, NodeCredentials, ServerUnreachable, ca_hash, node_csr
from kmesh.client.informer import Informer
from kmesh.client.kubeconfig import Credentials, write_kubeconfig
from kmesh.lab.access import write_private
from kmesh.lab.datadir import ClusterInfo, DataDir, NodeInfo
from kmesh.lab.topology import LabNames
from kmesh.net import ifaces

if TYPE_CHECKING:
    from kmesh.lab.supervisor import UpOptions
    from kmesh.node.netns_agent import NetnsNodeConfig

log = logging.getLogger("kmesh.lab.host")
Progress = Callable[[str], None]
T = TypeVar("T")
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
NODE_READY_TIMEOUT = 300.0  # a slow VM (TCG) needs minutes for its first pods


class HostLabError(RuntimeError):
    """The host lab cannot start as asked; the message says why. Raised before anything is made."""


@dataclass(frozen=True)
class Machine:
    """Who this machine is in the cluster: its node name and the address/interface it uses."""

    node_name: str
    address: ifaces.Address


def this_machine(opts: UpOptions, server_host: str | None) -> Machine:
    """The node name (default: the hostname) and the address: ``--node-ip``/``--advertise-address``, else
    ``--iface``, else the interface whose subnet holds ``server_host``."""
    try:
        address = ifaces.choose(server=server_host, iface=opts.iface or None,
                                node_ip=(opts.node_ip or opts.advertise_address) or None,
                                node_ip_flag="--node-ip" if opts.node_ip else "--advertise-address")
    except ifaces.InterfaceError as exc:
        raise HostLabError(str(exc)) from None
    return Machine(opts.node_name or socket.gethostname().split(".")[0].lower(), address)


def node_config(opts: UpOptions, dd: DataDir, machine: Machine) -> NetnsNodeConfig:
    """This machine's node as the netns runtime's agent runs it, here in the machine's own namespace."""
    from kmesh.node.netns_agent import NetnsNodeConfig

    node_dir = dd.root / "nodes" / machine.node_name
    return NetnsNodeConfig(
        pod_netns_prefix=LabNames(opts.name).pod_prefix(machine.node_name), node_name=machine.node_name,
        node_ip=machine.address.ip, node_dir=node_dir, backend=opts.backend, subnet_manager=opts.subnet_manager,
        iface=machine.address.iface, proxy_mode=opts.proxy_mode, ipvs_scheduler=opts.ipvs_scheduler,
        nodeport_addresses=tuple(opts.nodeport_addresses),
    )


async def run_host_agent(cfg: NetnsNodeConfig, kubeconfig: Path, *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """This machine's node agent, in the supervisor's process (k3s runs its agent in the server's too: one
    interpreter less to start, which on an emulated VM is seconds); ``task_status`` once pods can start.

    A failure before that fails the start; after it the agent stops alone, logged, and its node goes
    NotReady as a node whose kubelet died does, while the control plane on this machine keeps serving."""
    from kmesh.client.kubeconfig import load_kubeconfig
    from kmesh.node.apps import IN_CLUSTER_KUBECONFIG
    from kmesh.node.netns_agent import run_netns_node

    os.environ[IN_CLUSTER_KUBECONFIG] = str(kubeconfig)  # the built-in apps' in-cluster credentials
    creds = load_kubeconfig(str(kubeconfig), None)
    started = False
    try:
        async with Client(creds) as client, trio.open_nursery() as nursery:
            await nursery.start(run_netns_node, client, cfg)
            started = True
            task_status.started()
    except Exception:
        if not started:
            raise
        log.exception("the node agent of %s stopped; the node goes NotReady", cfg.node_name)


def node_kubeconfig(path: Path, name: str, server: str, creds: NodeCredentials) -> None:
    """A kubeconfig with the node's own certificate."""
    write_kubeconfig(path, name, Credentials(server, creds.ca_pem, "", creds.cert_pem, creds.key_pem))


async def wait_node(client: Client, name: str, *, ready: bool, timeout: float = NODE_READY_TIMEOUT) -> dict:
    """The Node once it has a podCIDR (and, with ``ready``, the Ready condition True)."""
    def ok(inf: Informer) -> bool:
        node = inf.get(name) or {}
        if not (node.get("spec") or {}).get("podCIDR"):
            return False
        conds = (node.get("status") or {}).get("conditions") or []
        return not ready or any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)

    nodes = Informer(client, "Node", field_selector=f"metadata.name={name}")
    async with trio.open_nursery() as n:
        await n.start(nodes.run)
        try:
            with trio.fail_after(timeout):
                await nodes.wait_for(ok)
        except trio.TooSlowError:
            raise HostLabError(f"node {name} was not {'Ready' if ready else 'given a pod subnet'} within "
                               f"{timeout:.0f} s; see D/logs/kmesh.log") from None
        n.cancel_scope.cancel()
    return nodes.get(name) or {}


async def refuse_taken_address(client: Client, machine: Machine) -> None:
    """``HostLabError`` naming both nodes when another Node announces this machine's address already."""
    from kmesh.api.nodeaddrs import announced

    nodes, _ = await client.list_all("Node")
    for node in nodes:
        other = node["metadata"]["name"]
        if other != machine.node_name and machine.address.ip in {ip for _, ip in announced(node)}:
            raise HostLabError(
                f"node {other} already has the address {machine.address.ip}: node {machine.node_name} cannot "
                f"announce it too. Pass this machine's own address with --node-ip IP or --iface IFACE "
                f"(on Vagrant VMs: eth1, not the NAT interface eth0)")


async def run_host_lab(opts: UpOptions, dd: DataDir, on_ready: Callable[[ClusterInfo], None] | None,
                       progress: Progress) -> None:
    """Run this machine's part of the cluster until SIGTERM/SIGINT (see the module docstring).

    Raises ``HostLabError`` (not wrapped in an exception group) when it cannot start."""
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
                if opts.role == "agent":
                    info = await _start_agent_role(nursery, stack, opts, dd, progress)
                else:
                    info = await _start_server_role(nursery, stack, opts, dd, progress)
                    if opts.demo:
                        from kmesh.lab.demo import apply_demo

                        progress("demo Deployment")
                        async with Client.from_kubeconfig(str(dd.kubeconfig)) as client:
                            await apply_demo(client, service_port=80)
                dd.write_cluster(info)
                if on_ready is not None:
                    on_ready(info)
                async for sig in signals:
                    log.info("signal %s: shutting down", sig)
                    break
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        first = _first(group, HostLabError)
        if first is not None:
            raise first from None
        raise


def _first(group: BaseExceptionGroup, kind: type[BaseException]) -> BaseException | None:
    for exc in group.exceptions:
        if isinstance(exc, kind):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first(exc, kind)
            if found is not None:
                return found
    return None


async def _run_agent(nursery: trio.Nursery, opts: UpOptions, dd: DataDir, machine: Machine, kubeconfig: Path,
                     progress: Progress) -> None:
    write_private(agent_marker(dd), machine.node_name + "\n")  # from here on, this machine's network is ours
    node_sysctls()
    progress(f"node agent {machine.node_name} ({machine.address.iface} {machine.address.ip}, "
             f"MTU {machine.address.mtu})")
    cfg = node_config(opts, dd, machine)
    for d in (cfg.node_dir, dd.log_dir):
        d.mkdir(parents=True, exist_ok=True)
    await nursery.start(run_host_agent, cfg, kubeconfig)


async def _start_server_role(nursery: trio.Nursery, stack: AsyncExitStack, opts: UpOptions, dd: DataDir,
                             progress: Progress) -> ClusterInfo:
    # What the API server needs first; the rest is imported once the join token is out (below), so other
    # machines can start joining meanwhile (on an emulated VM, imports are seconds).
    from kmesh.apiserver.pki import ensure_join_secrets, install_cluster_secrets, sign_node_csr
    from kmesh.apiserver.server import RunningServer, ServerConfig, run_server
    from kmesh.lab.etcd import start_lab_etcd
    from kmesh.lab.supervisor import lab_dns_config, store_url

    machine = this_machine(opts, None)
    if opts.server_url:
        from kmesh.client.bootstrap import request_server_bootstrap

        progress(f"fetching the cluster's CA and tokens from {opts.server_url}")
        files = await until_server_answers(
            functools.partial(request_server_bootstrap, opts.server_url, _parse_token(opts.token, "--token")),
            opts.server_url, trio.current_time() + opts.server_timeout, opts.server_timeout, progress)
        install_cluster_secrets(dd.root, files)
    etcd = await start_lab_etcd(stack, opts, dd, None, progress)
    progress(f"API server on {machine.address.ip}:{opts.port}")
    loopback = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    loopback.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        loopback.bind(("127.0.0.1", opts.port))
    except OSError as exc:
        raise HostLabError(f"127.0.0.1:{opts.port} is taken ({exc.strerror}): is another API server running?") from None
    loopback.listen(1024)
    cfg = ServerConfig(
        data_dir=dd.root, store_url=store_url(opts, dd, etcd.api_url), etcd_tls=etcd.api_tls,
        host=machine.address.ip, port=opts.port, extra_sans=[machine.node_name], extra_sockets=[loopback],
        advertise_address=machine.address.ip, endpoint_leases=True,
    )
    srv: RunningServer = await nursery.start(run_server, cfg)
    ca_pem = srv.pki.ca_pem()
    secrets = ensure_join_secrets(dd.root)
    write_private(dd.root / "join-token", JoinToken(ca_hash(ca_pem), secrets.join_token).format() + "\n")
    write_private(dd.root / "server-token", JoinToken(ca_hash(ca_pem), secrets.server_token, True).format() + "\n")
    write_kubeconfig(dd.kubeconfig, opts.name, Credentials(srv.url, ca_pem, srv.pki.token), mode=opts.kubeconfig_mode,
                     owner=(opts.kubeconfig_owner[0], opts.kubeconfig_owner[1]) if opts.kubeconfig_owner else None)
    from kmesh.controllers.manager import ControllerConfig, run_controllers
    from kmesh.controllers.metrics import CONTROLLER_MANAGER_PORT, SCHEDULER_PORT
    from kmesh.dns import RunningDNS, run_dns
    from kmesh.lab.addons import apply_objects, coredns_objects, wait_cluster_dns
    from kmesh.lab.l7addons import l7_objects
    from kmesh.lab.loadbalancers import default_lb_range
    from kmesh.lab.metrics import http_url

    local = f"https://127.0.0.1:{opts.port}"
    client = await stack.enter_async_context(Client(Credentials(local, ca_pem, srv.pki.token)))
    progress("controllers and scheduler (leader elected)")
    mgr = await nursery.start(functools.partial(
        run_controllers, client, ControllerConfig(
            cluster_cidr=CLUSTER_CIDR, service_cidr=SERVICE_CIDR, metrics_port=CONTROLLER_MANAGER_PORT,
            scheduler_metrics_port=SCHEDULER_PORT, metrics_any_port_if_taken=True,
            leader_elect=True, leader_identity=f"{machine.node_name}_{machine.address.ip}",
            leader_elect_release_on_cancel=True, node_grace_period=opts.node_grace_period,
            lb_range=opts.lb_range or default_lb_range("host"), mesh_cert_max_ttl=float(opts.mesh_cert_ttl))))
    key_pem, csr_pem = node_csr(machine.node_name)
    creds = NodeCredentials(ca_pem, sign_node_csr(srv.pki, csr_pem, machine.node_name), key_pem)
    node_config = dd.root / "run" / "kubeconfig-node.yaml"
    node_kubeconfig(node_config, opts.name, local, creds)
    await refuse_taken_address(client, machine)
    await _run_agent(nursery, opts, dd, machine, node_config, progress)
    node = await wait_node(client, machine.node_name, ready=False)
    # the ROLES column: kubeadm labels its control-plane nodes so (a kubelet may not label itself a role)
    await client.patch("Node", machine.node_name, {"metadata": {"labels": {CONTROL_PLANE_LABEL: ""}}})
    progress("CoreDNS Deployment and Service kube-dns")
    await apply_objects(client, coredns_objects(
        None, allow=[CLUSTER_CIDR, SERVICE_CIDR, str(machine.address.network), "127.0.0.0/8"]))
    progress("ingress and Gateway API controllers (kmesh-system)")
    await apply_objects(client, l7_objects(None, disable=opts.disable))
    progress("kube-dns answering")
    await wait_cluster_dns([None], timeout=300.0)  # a VM under emulation takes minutes
    progress("cluster DNS for this machine")
    dns: RunningDNS = await nursery.start(functools.partial(
        run_dns, client, lab_dns_config(CLUSTER_CIDR, SERVICE_CIDR), spawn_workers=False))
    metrics = {"apiserver": f"{srv.url}/metrics", "controller-manager": http_url(mgr.metrics_port),
               "scheduler": http_url(mgr.scheduler_metrics_port)}
    if dns.metrics_port:
        metrics["coredns"] = http_url(dns.metrics_port)
    return ClusterInfo(
        name=opts.name, api=srv.url, kubeconfig=str(dd.kubeconfig), dns=list(dns.addresses[0]), runtime="host",
        proxyMode=opts.proxy_mode, serviceCIDR=SERVICE_CIDR, clusterCIDR=CLUSTER_CIDR,
        nodes=[NodeInfo(machine.node_name, machine.address.ip, node["spec"]["podCIDR"], None)], metrics=metrics,
        lbRange=opts.lb_range or default_lb_range("host"),
    )


async def join_token(opts: UpOptions, deadline: float, progress: Progress) -> JoinToken:
    """The join token: ``--token``'s, or what ``--token-file`` holds once it is there (a lab's first machine
    writes it into a shared folder while the others start; waited for until ``deadline``)."""
    if not opts.token_file:
        return _parse_token(opts.token, "--token")
    path = Path(opts.token_file)
    said = False
    while True:
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            raise HostLabError(f"--token-file {path}: {exc.strerror}") from None
        if text:
            return _parse_token(text, f"--token-file {path}")
        if trio.current_time() >= deadline:
            raise HostLabError(f"--token-file {path}: no token there after {opts.server_timeout:.0f} s "
                               "(--server-timeout)")
        if not said:
            progress(f"waiting for the join token in {path}")
            said = True
        await trio.sleep(0.5)  # a shared folder (9p, vboxsf) tells no one when another machine writes


def _parse_token(text: str, flag: str) -> JoinToken:
    try:
        return JoinToken.parse(text)
    except JoinError as exc:
        raise HostLabError(str(exc).replace("--token", flag, 1)) from None


async def until_server_answers(call: Callable[[], T], server: str, deadline: float, timeout: float,
                               progress: Progress) -> T:
    """``call()`` (blocking, in a thread), tried again while the server does not answer, until ``deadline``:
    kubeadm's discovery and k3s's agent wait for their server the same way, so the machines of a lab can
    start together."""
    said = False
    while True:
        try:
            return await trio.to_thread.run_sync(call)
        except ServerUnreachable as exc:
            if trio.current_time() >= deadline:
                raise HostLabError(f"{exc} (waited {timeout:.0f} s, --server-timeout)") from None
            if not said:
                progress(f"waiting for {server} to answer")
                said = True
            await trio.sleep(0.5)
        except JoinError as exc:
            raise HostLabError(str(exc)) from None


async def _start_agent_role(nursery: trio.Nursery, stack: AsyncExitStack, opts: UpOptions, dd: DataDir,
                            progress: Progress) -> ClusterInfo:
    from kmesh.client.bootstrap import request_node_credentials
    from kmesh.node.apilb import run_api_balancer
    from kmesh.node.netns_agent import run_netns_node  # noqa: F401 - loaded now, while the token and server are waited for

    deadline = trio.current_time() + opts.server_timeout
    url = urlsplit(opts.server_url)
    if url.scheme != "https" or not url.hostname:
        raise HostLabError(f"SERVER-URL {opts.server_url!r}: expected https://HOST:PORT (the server's advertised "
                           "address, as `kmesh up --runtime host` prints it)")
    server = (url.hostname, url.port or 6443)
    machine = this_machine(opts, url.hostname)
    progress(f"this machine is node {machine.node_name}, {machine.address.ip} on {machine.address.iface}")
    token = await join_token(opts, deadline, progress)
    progress(f"checking the CA of {opts.server_url} against the token; asking for this node's certificate")
    creds = await until_server_answers(
        functools.partial(request_node_credentials, opts.server_url, token, machine.node_name), opts.server_url,
        deadline, opts.server_timeout, progress)
    node_kubeconfig(dd.kubeconfig, opts.name, opts.server_url, creds)
    direct = await stack.enter_async_context(Client(Credentials(opts.server_url, creds.ca_pem, "", creds.cert_pem,
                                                                 creds.key_pem)))
    await refuse_taken_address(direct, machine)
    progress("API balancer on 127.0.0.1:6444")
    lb = await nursery.start(functools.partial(run_api_balancer, server, Credentials(
        opts.server_url, creds.ca_pem, "", creds.cert_pem, creds.key_pem)))
    node_config = dd.root / "run" / "kubeconfig-node.yaml"
    node_kubeconfig(node_config, opts.name, lb.url, creds)
    await _run_agent(nursery, opts, dd, machine, node_config, progress)
    progress(f"waiting for node {machine.node_name} to be Ready")
    node = await wait_node(direct, machine.node_name, ready=True)
    return ClusterInfo(
        name=opts.name, api=opts.server_url, kubeconfig=str(dd.kubeconfig), dns=[CLUSTER_DNS_IP, 53], runtime="host",
        proxyMode=opts.proxy_mode, serviceCIDR=SERVICE_CIDR, clusterCIDR=CLUSTER_CIDR,
        nodes=[NodeInfo(machine.node_name, machine.address.ip, node["spec"]["podCIDR"], None)],
    )


def node_sysctls() -> None:
    """What a node needs of its kernel, as kubeadm's preflight asks for: forwarding on, and bridged pod traffic
    through iptables (``br_netfilter``; without it, replies between pods of one node through a ClusterIP are
    lost). Loads the module when its sysctl is missing."""
    import subprocess

    bridge = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if not bridge.exists():
        subprocess.run(["modprobe", "br_netfilter"], capture_output=True, check=False)
    for path in (Path("/proc/sys/net/ipv4/ip_forward"), bridge):
        try:
            path.write_text("1")
        except OSError as exc:
            log.warning("cannot set %s: %s", path, exc)


def agent_marker(dd: DataDir) -> Path:
    """Written before the node agent starts: only then has this lab changed the machine's network."""
    return dd.root / "run" / "agent-started"


def host_teardown_prefix(lab: str, node: str) -> LabNames:
    """Names whose prefix is this machine's pods' (``kmesh-<lab>-<node>-``): what ``kmesh down`` sweeps here.

    Only this node's pods: in tests several machines share one /run/netns."""
    return LabNames(f"{lab}-{node}")


async def remove_host_network(proxy_mode: str) -> list[str]:
    """Remove what the node agent made in this namespace: kube-proxy's rules (every mode, as
    ``kube-proxy --cleanup``), flannel's masquerade chains, ``cni0`` and the overlay devices."""
    from kmesh.cni.backends.masq import remove_masq
    from kmesh.net import netns
    from kmesh.proxy.model import NodeContext
    from kmesh.proxy.modes import MODES, make_mode

    removed: list[str] = []
    for mode in MODES:
        try:
            await make_mode(mode, NodeContext(node="", node_ips=()), runtime="netns").cleanup()
        except Exception as exc:  # noqa: BLE001 - a mode whose tool is missing made nothing
            log.debug("cleanup %s: %s", mode, exc)
    removed.append("kube-proxy rules")
    await remove_masq(None)
    removed.append("flannel masquerade rules")
    links = netns.ip(None, "-o", "link", "show")
    for dev in ("cni0", "flannel.1", "flannel0"):
        if f" {dev}:" in links or f" {dev}@" in links:
            netns.ip(None, "link", "delete", dev, check=False)
            removed.append(f"link {dev}")
    return removed



def teardown_host(dd: DataDir, up: dict) -> list[str]:
    """``kmesh down`` on a host-runtime machine, after its supervisor stopped: this node's pods' namespaces,
    the agent's links and rules, and (for a joined node) its Node object; what was removed."""
    from kmesh.lab.topology import sweep

    try:
        node = agent_marker(dd).read_text().strip()
    except FileNotFoundError:
        return []  # the agent never ran: this start changed nothing on the machine
    removed = sweep(host_teardown_prefix(str(up.get("name") or "kmesh"), node))
    removed += trio.run(remove_host_network, str(up.get("proxy_mode") or "iptables"))
    if up.get("role") == "agent" and dd.kubeconfig.exists():
        removed += trio.run(_delete_node, dd.kubeconfig, node)
    return removed


async def _delete_node(kubeconfig: Path, node: str) -> list[str]:
    from kmesh.api import errors as E
    from kmesh.client.api import APIUnavailable

    try:
        with trio.fail_after(20):
            async with Client.from_kubeconfig(str(kubeconfig)) as client:
                await client.delete("Node", node)
    except E.APIError as exc:
        if exc.code == 404:
            return []
        log.warning("could not delete Node %s: %s", node, exc.message)
        return []
    except (APIUnavailable, OSError, trio.TooSlowError) as exc:
        log.warning("could not delete Node %s: the API does not answer (%s)", node, exc)
        return []
    return [f"Node {node}"]
