"""The ``kmesh`` command: bring labs up and down, and run single components in the foreground."""

from __future__ import annotations

import functools
import logging
import os
import select
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from kmesh.api.wellknown import CLUSTER_CIDR, CLUSTER_DNS_IP, CLUSTER_DOMAIN, SERVICE_CIDR
from kmesh.lab.datadir import DataDir, default_data_dir

console = Console(soft_wrap=True)  # whole lines, as kubectl prints them: a pipe or grep sees each on one line
err_console = Console(stderr=True, soft_wrap=True)

RUNTIMES = ("netns", "sim", "host")
PROXY_MODES = ("userspace", "iptables", "ipvs", "nftables")
BACKENDS = ("vxlan", "host-gw", "udp")
STORES = ("sqlite", "etcd", "memory")


def _data_dir_option(f):  # type: ignore[no-untyped-def]
    return click.option(
        "--data-dir", type=click.Path(path_type=Path), default=None,
        help="Where the lab keeps its files (default /var/lib/kmesh as root, else ~/.local/share/kmesh).",
    )(f)


def _parse_nodeport_addresses(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    from kmesh.proxy.nodeports import parse

    try:
        return parse(values)
    except ValueError as exc:
        raise click.BadParameter(str(exc).removeprefix("--nodeport-addresses: "), ctx=ctx, param=param) from None


def _nodeport_addresses_option(f):  # type: ignore[no-untyped-def]
    return click.option(
        "--nodeport-addresses", "nodeport_addresses", multiple=True, callback=_parse_nodeport_addresses,
        metavar="CIDR[,CIDR]|primary",
        help="kube-proxy: accept NodePorts only on the node addresses in these CIDRs, or on the node's own "
             "IP with 'primary' (repeatable; default: every local address, nftables: primary).",
    )(f)


def _parse_kubeconfig_mode(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    from kmesh.lab.access import parse_mode

    if value is None:
        return None
    try:
        return parse_mode(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _kubeconfig_mode_option(f):  # type: ignore[no-untyped-def]
    return click.option(
        "--write-kubeconfig-mode", "kubeconfig_mode", default=None, callback=_parse_kubeconfig_mode,
        metavar="MODE", envvar="KMESH_KUBECONFIG_MODE",
        help="File mode of D/kubeconfig.yaml, as k3s's flag (600 default, 640 adds its group, 644 every local "
             "user); under sudo it belongs to the user who ran sudo.",
    )(f)


_ETCD_TLS_FLAGS = (
    ("cafile", "the CA that verifies etcd's server certificate"),
    ("certfile", "the client certificate presented to etcd"),
    ("keyfile", "the client certificate's key"),
)


def _etcd_tls_options(f):  # type: ignore[no-untyped-def]
    """kube-apiserver's --etcd-cafile/--etcd-certfile/--etcd-keyfile (or $KMESH_ETCD_CAFILE, ...)."""
    for name, what in reversed(_ETCD_TLS_FLAGS):
        f = click.option(f"--etcd-{name}", f"etcd_{name}", default="", metavar="FILE",
                         envvar=f"KMESH_ETCD_{name.upper()}", help=f"An https etcd: {what}.")(f)
    return f


def _etcd_tls(url: str, cafile: str, certfile: str, keyfile: str, url_flag: str) -> Any:
    """The EtcdTLS the --etcd-* flags give (None without any), checked against ``url``; absolute paths."""
    from click.core import ParameterSource

    from kmesh.store.etcd_api import EtcdTLS, client_endpoints

    if not (cafile or certfile or keyfile):
        return None
    if not url:
        ctx = click.get_current_context()
        given = [f"--etcd-{n}" for n, _ in _ETCD_TLS_FLAGS
                 if ctx.get_parameter_source(f"etcd_{n}") == ParameterSource.COMMANDLINE]
        if given:
            raise click.BadParameter(f"{', '.join(given)} go with an etcd URL", param_hint=url_flag)
        return None  # $KMESH_ETCD_* set for another command
    try:
        tls = EtcdTLS(*(os.path.abspath(v) if v else "" for v in (cafile, certfile, keyfile)))
        tls.ssl_context()
        client_endpoints(url, tls)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--etcd-cafile/--etcd-certfile/--etcd-keyfile") from None
    return tls


def _resolve(data_dir: Path | None) -> DataDir:
    return DataDir((data_dir or default_data_dir()).expanduser().absolute())


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _preflight_or_exit(needs: Any, command: str, *, kernel: bool = True) -> None:
    """Exit with status 1 and one message naming every missing program (and its package) or kernel feature,
    before anything is made."""
    from kmesh.lab.preflight import check

    problem = check(needs, command, kernel=kernel)
    if problem:
        click.echo(problem, err=True)
        raise SystemExit(1)


def _default_runtime() -> str:
    from kmesh.net.netns_check import netns_usable

    return "netns" if netns_usable() else "sim"


_LAZY_COMMANDS = {  # name → (module, attribute)
    "dns": ("kmesh.dns.command", "dns"),
    "certs": ("kmesh.lab.etcdcerts", "certs"),
    "link": ("kmesh.lab.linkcmd", "link"),
    "trace": ("kmesh.lab.tracecmd", "trace"),
    "capture": ("kmesh.lab.capturecmd", "capture"),
    "mesh": ("kmesh.lab.meshcmd", "mesh"),
}


class _Group(click.Group):
    """The ``kmesh`` group; commands defined on lower floors are imported only when used (their imports are heavy)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command, the lazy ones included."""
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """A command by name, importing a lazy one on first use."""
        if cmd_name in _LAZY_COMMANDS:
            import importlib

            module, attr = _LAZY_COMMANDS[cmd_name]
            cmd: click.Command = getattr(importlib.import_module(module), attr)
            return cmd
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """kmesh: a Kubernetes networking lab on one Linux machine."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if verbose < 2:
        for noisy in ("httpx", "httpcore", "hypercorn.access"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


@main.command()
@_data_dir_option
@click.option("--port", type=int, default=6443, show_default=True, help="API server port on 127.0.0.1 (0 picks a free one).")
@click.option("--nodes", type=click.IntRange(1, 64), default=1, show_default=True, help="Number of nodes.")
@click.option("--runtime", type=click.Choice(RUNTIMES), default=None,
              help="netns (root) or sim; default: netns when possible. host: this machine is a node "
                   "(with --advertise-address; others join it with `kmesh join`).")
@click.option("--advertise-address", default="", metavar="IP",
              help="host: this machine's address the other machines reach the API on (IP:6443).")
@click.option("--node-name", default="", metavar="NAME", help="host: this machine's node name (default: the hostname).")
@click.option("--iface", default="", metavar="IFACE",
              help="host: the interface of the overlay (default: the one holding --advertise-address).")
@click.option("--server", "server_url", default="", metavar="URL",
              help="host: join the control plane of this server as another server (needs --token with the "
                   "server token and --store etcd --etcd URL,... shared by every server).")
@click.option("--token", default="", metavar="TOKEN", help="host, with --server: the server token (D/server-token).")
@click.option("--proxy-mode", type=click.Choice(PROXY_MODES), default=None, help="kube-proxy mode (sim: userspace only).")
@click.option("--ipvs-scheduler", default="rr", show_default=True,
              help="ipvs mode: rr, wrr, lc, wlc, lblc, lblcr, sh, dh, sed, nq or mh.")
@_nodeport_addresses_option
@click.option("--backend", type=click.Choice(BACKENDS), default="vxlan", show_default=True, help="Overlay backend.")
@click.option("--subnet-manager", type=click.Choice(("kube", "etcd")), default="kube", show_default=True)
@click.option("--store", type=click.Choice(STORES), default="sqlite", show_default=True, help="API storage backend.")
@click.option("--etcd", "etcd_url", default="",
              help="Use this etcd (https://host:port with --etcd-cafile/-certfile/-keyfile, or http://) "
                   "instead of starting one.")
@_etcd_tls_options
@click.option("--name", default="kmesh", show_default=True, help="Lab name; prefixes every namespace, link and rule.")
@click.option("--demo", is_flag=True, help="Also apply a sample Deployment and Service.")
@click.option("--node-grace-period", type=click.FloatRange(min=15, max=3600), default=40.0, show_default=True,
              metavar="SECONDS", help="How long a node's Lease may go unrenewed before the node "
                                      "is NotReady (the agents renew it every 10 s).")
@click.option("--lb-range", default="", metavar="CIDR|START-END",
              help="Addresses for LoadBalancer Services, announced with ARP (default: 192.168.56.240-192.168.56.254, "
                   "the top of the underlay; netns: must lie in 192.168.56.0/24).")
@click.option("--disable", default="", metavar="ADDON[,ADDON]",
              help="Leave out add-ons the lab otherwise ships, as k3s's --disable: ingress (the ingress controller "
                   "and IngressClass kmesh), gateway (the Gateway API controller and GatewayClass kmesh).")
@click.option("--mesh-cert-ttl", type=click.IntRange(min=4, max=31536000), default=86400, show_default=True,
              metavar="SECONDS", help="The longest a mesh certificate lives (the sidecars renew theirs at half of "
                                      "it); short to watch rotation, see docs/mesh.md.")
@click.option("--demo-timeout", type=click.FloatRange(min=0), default=120.0, hidden=True,
              help="Seconds to wait for the demo to be available.")
@click.option("--topology", type=click.Path(path_type=Path, dir_okay=False), default=None, metavar="FILE",
              help="A YAML file naming the nodes (names, zones, labels) and their link settings "
                   "(delay, jitter, loss, rate per node or node pair); see docs/lab.md.")
@_kubeconfig_mode_option
@click.pass_context
def up(
    ctx: click.Context, data_dir: Path | None, port: int, nodes: int, runtime: str | None, advertise_address: str,
    node_name: str, iface: str, server_url: str, token: str, proxy_mode: str | None, ipvs_scheduler: str,
    nodeport_addresses: tuple[str, ...], backend: str, subnet_manager: str, store: str, etcd_url: str,
    etcd_cafile: str, etcd_certfile: str, etcd_keyfile: str, name: str,
    demo: bool, node_grace_period: float, lb_range: str, disable: str, mesh_cert_ttl: int, demo_timeout: float,
    topology: Path | None, kubeconfig_mode: int | None,
) -> None:
    """Start a lab in the background and return when it is ready."""
    from kmesh.lab.supervisor import UpOptions

    etcd_tls = _etcd_tls(etcd_url, etcd_cafile, etcd_certfile, etcd_keyfile, "--etcd")
    topo = None
    if topology is not None:  # the whole file is checked before anything else happens
        from click.core import ParameterSource

        from kmesh.lab.topofile import TopologyError, load

        try:
            topo = load(topology, nodes=nodes,
                        nodes_given=ctx.get_parameter_source("nodes") not in (None, ParameterSource.DEFAULT))
        except TopologyError as exc:
            raise click.BadParameter(str(exc), param_hint="--topology") from None
        nodes = len(topo.nodes)

    dd = _resolve(data_dir)
    if dd.locked():  # the supervisor's lock on the data dir, not a PID that may be anyone's by now
        pid = dd.supervisor_pid()
        raise click.ClickException(f"a lab is already running in {dd.root} (pid {pid or 'unknown'}); "
                                   "run `kmesh down` first")
    if runtime is None and os.geteuid() == 0 and shutil.which("ip") is None:
        err_console.print("[yellow]note:[/] using the sim runtime: the netns runtime needs `ip` (Debian package "
                          "iproute2)", highlight=False)
    runtime = runtime or _default_runtime()
    if runtime in ("netns", "host") and os.geteuid() != 0:
        raise click.BadParameter(f"the {runtime} runtime needs root; use --runtime sim", param_hint="--runtime")
    if topo is not None and runtime == "host":
        raise click.BadParameter("the host runtime's nodes are machines that name themselves (--node-name, "
                                 "`kmesh join`) and its links are theirs: a topology file is for netns and sim labs",
                                 param_hint="--topology")
    if topo is not None and topo.links and runtime == "sim":
        raise click.BadParameter(f"{topology}: links: the sim runtime has no links (its pods share this machine's "
                                 "loopback); use --runtime netns, or leave links out", param_hint="--topology")
    _check_host_options(runtime, advertise_address, node_name, iface, server_url, token, nodes, store, etcd_url)
    if runtime == "sim" and proxy_mode not in (None, "userspace"):
        raise click.BadParameter("the sim runtime only has the userspace proxy mode", param_hint="--proxy-mode")
    proxy_mode = proxy_mode or ("userspace" if runtime == "sim" else "iptables")
    from kmesh.proxy.schedulers import SCHEDULERS

    if ipvs_scheduler not in SCHEDULERS:
        raise click.BadParameter(f"unknown scheduler {ipvs_scheduler!r} (one of {', '.join(sorted(SCHEDULERS))})",
                                 param_hint="--ipvs-scheduler")
    if runtime == "sim" and (backend != "vxlan" or subnet_manager != "kube"):
        err_console.print("[yellow]note:[/] the sim runtime has no overlay (pods are loopback addresses); "
                          "--backend and --subnet-manager apply to the netns runtime only")
    _check_lb_range(lb_range, runtime, nodes)
    from kmesh.lab.l7addons import ADDONS

    disabled = [a.strip() for a in disable.split(",") if a.strip()]
    unknown = [a for a in disabled if a not in ADDONS]
    if unknown:
        raise click.BadParameter(f"unknown add-on {unknown[0]!r} (one of {', '.join(ADDONS)})", param_hint="--disable")
    if port and not _port_free(port):
        raise click.BadParameter(f"127.0.0.1:{port} is already in use (another lab? use --port 0 for a free one)",
                                 param_hint="--port")
    if runtime == "netns":
        from kmesh.lab.topology import LabNames, lab_namespaces

        taken = lab_namespaces(LabNames(name))
        if taken:
            raise click.BadParameter(
                f"a lab named {name!r} already has namespaces ({', '.join(taken[:3])}{', …' if len(taken) > 3 else ''}); "
                "pick another --name, or stop that lab with `kmesh down --data-dir <its dir>`", param_hint="--name")
    from kmesh.lab import preflight

    _preflight_or_exit(preflight.lab_needs(
        runtime=runtime, proxy_mode=proxy_mode, backend=backend, subnet_manager=subnet_manager, store=store,
        etcd_url=etcd_url), "kmesh up")
    from kmesh.lab.access import kubeconfig_access
    from kmesh.lab.supervisor import network_problem

    access = kubeconfig_access(kubeconfig_mode)
    opts = UpOptions(
        data_dir=str(dd.root), name=name, port=port, nodes=nodes, runtime=runtime, proxy_mode=proxy_mode,
        ipvs_scheduler=ipvs_scheduler, nodeport_addresses=list(nodeport_addresses),
        backend=backend, subnet_manager=subnet_manager, store=store, etcd=etcd_url, demo=demo,
        etcd_cafile=etcd_tls.cafile if etcd_tls else "", etcd_certfile=etcd_tls.certfile if etcd_tls else "",
        etcd_keyfile=etcd_tls.keyfile if etcd_tls else "", kubeconfig_mode=access.mode, kubeconfig_owner=list(access.owner) if access.owner else None,
        advertise_address=advertise_address, node_name=node_name, iface=iface, server_url=server_url, token=token,
        node_grace_period=node_grace_period, node_specs=topo.node_specs() if topo is not None else [],
        lb_range=lb_range.strip(), disable=disabled, mesh_cert_ttl=mesh_cert_ttl,
    )
    problem = network_problem(opts, dd)  # a restart on a store made with ranges this start cannot have
    if problem:
        raise click.ClickException(problem)
    who_may = _run_supervisor(dd, opts, access, f"[bold]Starting lab {name!r}[/] ({runtime} runtime, "
                                            f"{nodes if runtime != 'host' else 1} node(s), store {store})")
    info = dd.read_cluster()
    assert info is not None
    link_problem = _apply_topology_links(dd, topo.links) if topo is not None and topo.links else None
    demo_problem = None
    if demo:
        with console.status("[bold]Waiting for the demo Deployment `web` to be available…"):
            from kmesh.lab.demo import wait_demo

            demo_problem = wait_demo(dd.kubeconfig, demo_timeout)
    if demo_problem:
        console.print(f"[yellow]![/] lab [bold]{name}[/] is up, but the demo is not ready: API {info.api}, "
                      f"{len(info.nodes)} node(s)")
    else:
        console.print(f"[green]✓[/] lab [bold]{name}[/] is up: API {info.api}, {len(info.nodes)} node(s)")
    zones = {n.name: n.zone for n in topo.nodes if n.zone} if topo is not None else {}
    for n in info.nodes:
        zone = f", zone {zones[n.name]}" if n.name in zones else ""
        console.print(f"  node {n.name}: {n.ip}, pods {n.podCIDR}{zone}", highlight=False)
    if info.dns:
        host, port = info.dns
        console.print(f"  cluster DNS: dig @{host} -p {port} kubernetes.default.svc.cluster.local", highlight=False)
    console.print(f"  kube-proxy: {info.proxyMode} mode (kmesh proxy rules --data-dir {dd.root})", highlight=False)
    if opts.lb_range or runtime != "sim":
        from kmesh.lab.supervisor import lab_lb_range

        console.print(f"  LoadBalancer addresses: {lab_lb_range(opts)} (kmesh status lists the Services)",
                      highlight=False)
    if info.metrics:
        console.print(f"  metrics: {len(info.metrics)} /metrics URLs in cluster.json (kmesh status lists them)",
                      highlight=False)
    if info.runtime == "host" and (dd.root / "join-token").exists():
        console.print("  join other machines to this cluster (as root on each):", highlight=False)
        console.print(f"    kmesh join {info.api} --token $(cat {dd.root / 'join-token'})   [dim](the token: "
                      f"{dd.root / 'join-token'})[/]", highlight=False, soft_wrap=True)
    if info.runtime in ("netns", "host"):
        console.print(f"  in pods: Services by name through kube-dns {CLUSTER_DNS_IP}, e.g. "
                      f"kmesh exec --data-dir {dd.root} <pod> -- curl -s http://web", highlight=False)
    console.print(f"  export KUBECONFIG={dd.kubeconfig}")
    _print_kubeconfig_access(dd, access, who_may)
    console.print("  kubectl get nodes,pods,services,endpointslices -o wide")
    console.print(f"  kmesh status --data-dir {dd.root}    kmesh down --data-dir {dd.root}")
    if demo_problem:
        click.echo(f"kmesh up: warning: {demo_problem}", err=True)
        click.echo(f"  the lab stays up: look with `kubectl get pods -l app=web -o wide`, remove it with "
                   f"`kmesh down --data-dir {dd.root}`", err=True)
    if link_problem:
        click.echo(f"kmesh up: warning: the topology file's links are not set: {link_problem}", err=True)
        click.echo(f"  the lab stays up without them: set them with `kmesh link set --data-dir {dd.root} ...`, "
                   f"or remove the lab with `kmesh down --data-dir {dd.root}`", err=True)
    if demo_problem or link_problem:
        raise SystemExit(1)


def _apply_topology_links(dd: DataDir, links: Any) -> str | None:
    """``kmesh up --topology``: set the file's links on the lab that just came up, as ``kmesh link set`` would;
    one line printed per link. On a failure, what was set goes again (the lab is left unshaped) and the
    reason is returned."""
    from kmesh.lab.links import LinkFailure, LinkUsage, NoLab, open_lab, reset_links, set_link
    from kmesh.net.netns import NetnsError
    from kmesh.packet.shaping import ShapingError

    try:
        lab = open_lab(dd)
    except (NoLab, LinkUsage) as exc:
        return str(exc)
    try:
        with console.status("[bold]Setting the topology file's links…"):
            for entry in links:
                set_link(lab, entry.node, entry.to, entry.spec)
                toward = f" to {entry.to}" if entry.to else ""
                console.print(f"[green]✓[/] link {entry.node}{toward}: {entry.spec.describe()} each way",
                              highlight=False)
    except (LinkUsage, LinkFailure, NoLab) as exc:
        try:
            reset_links(lab, None)
        except (LinkUsage, LinkFailure, NoLab, OSError, ShapingError, NetnsError) as again:
            return f"{exc} (and removing what was set failed: {again})"
        return str(exc)
    return None


def _read_if_there(path: str) -> str:
    """The stripped text of ``path``, or "" while it does not exist."""
    try:
        return Path(path).read_text().strip()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise click.BadParameter(f"{path}: {exc.strerror}", param_hint="--token-file") from None


def _run_supervisor(dd: DataDir, opts: Any, access: Any, title: str, timeout: float = 600.0) -> str:
    """Start the lab supervisor for ``opts`` in the background and follow its progress until it is ready;
    on failure remove what this start made (keeping what was there before) and exit 1. Returns who may read
    the kubeconfig."""
    from kmesh.lab.access import prepare_data_dir
    from kmesh.lab.teardown import Before, undo_failed_up

    before = Before.look(dd)  # a failed start removes only what is not here yet
    who_may = prepare_data_dir(dd.root, access)
    opts.save(dd.config_file)
    log_path = dd.log_dir / "kmesh.log"
    r, w = os.pipe()
    logfd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: covered by every test that runs `kmesh up`
        os.close(r)
        _become_supervisor(dd.root, logfd, w)
    os.close(logfd)
    os.close(w)
    ok, error = _follow_start(r, title, timeout)
    os.close(r)
    if not ok:
        _end_child(pid)
        if error:
            err_console.print(f"[red]the lab did not start:[/] {error}", highlight=False)
        else:
            tail = log_path.read_text(errors="replace").splitlines()[-25:] if log_path.exists() else []
            err_console.print("[red]the lab did not start.[/] Last lines of " + str(log_path) + ":")
            for t in tail:
                err_console.print("  " + t, markup=False, highlight=False)
        undo_failed_up(dd, before)  # leave nothing half-made behind, and keep what was there before
        if before.entries:
            err_console.print(f"  kept what {dd.root} held before this start "
                              f"({', '.join(sorted(before.entries))})", highlight=False)
        raise SystemExit(1)
    return who_may


def _become_supervisor(root: Path, logfd: int, ready_fd: int) -> NoReturn:
    """In a child forked by ``kmesh up``: go on as the lab's supervisor, in a session of its own with its
    output in ``logfd``, reporting on ``ready_fd``; never returns. Forked rather than a new interpreter:
    what this one imported already is seconds of start-up on a slow (emulated) VM."""
    code = 1
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(logfd, 1)
        os.dup2(logfd, 2)
        os.close(logfd)
        os.environ["KMESH_READY_FD"] = str(ready_fd)
        _run_supervise(root)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the child's end: say why in its log, never back into the CLI
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def _end_child(pid: int) -> None:
    """Stop the supervisor child of a failed start (SIGTERM, then SIGKILL after 30 s) and reap it."""
    import time

    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        os.kill(pid, signal.SIGTERM)  # our own unreaped child: the PID is still its own
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _check_host_options(runtime: str, advertise_address: str, node_name: str, iface: str, server_url: str,
                        token: str, nodes: int, store: str, etcd_url: str) -> None:
    """``click.BadParameter`` for host-runtime options given without the host runtime, or missing with it."""
    import ipaddress

    given = [flag for flag, v in (("--advertise-address", advertise_address), ("--node-name", node_name),
                                  ("--iface", iface), ("--server", server_url), ("--token", token)) if v]
    if runtime != "host":
        if given:
            raise click.BadParameter(f"only the host runtime takes {', '.join(given)}", param_hint="--runtime")
        return
    if not advertise_address:
        raise click.BadParameter("the host runtime needs this machine's address: --advertise-address IP "
                                 "(on a Vagrant VM, its eth1 address, e.g. 192.168.56.10)",
                                 param_hint="--advertise-address")
    try:
        ipaddress.IPv4Address(advertise_address)
    except ValueError:
        raise click.BadParameter(f"{advertise_address!r} is not an IPv4 address", param_hint="--advertise-address") from None
    if nodes != 1:
        raise click.BadParameter("the host runtime is one node per machine; add machines with `kmesh join`",
                                 param_hint="--nodes")
    if bool(server_url) != bool(token):
        raise click.BadParameter("--server and --token go together (another server joins with the server token)",
                                 param_hint="--token" if server_url else "--server")
    if server_url and not (store == "etcd" and etcd_url):
        raise click.BadParameter("servers of one cluster share one store: give every server --store etcd "
                                 "--etcd URL[,URL...]", param_hint="--store")


def _print_kubeconfig_access(dd: DataDir, access: Any, who_may: str) -> None:
    """Say who may use the kubeconfig, and warn when its owner cannot reach the data dir."""
    from kmesh.lab.access import unreachable_parent

    import pwd

    uid, _ = access.uid_gid()
    try:
        owner = pwd.getpwuid(uid).pw_name
    except KeyError:
        owner = f"uid {uid}"
    sudo = " (who ran sudo)" if access.owner else ""
    console.print(f"  [dim]kubeconfig: mode {access.mode:04o}, owner {owner}{sudo}; {who_may}[/]", highlight=False)
    blocked = unreachable_parent(dd.root, uid)
    if blocked is not None:
        err_console.print(f"[yellow]note:[/] uid {uid} cannot traverse {blocked}, so it cannot reach "
                          f"{dd.kubeconfig}; pick a --data-dir under a directory it can enter", highlight=False)


def _follow_start(fd: int, title: str, timeout: float = 600.0) -> tuple[bool, str | None]:
    """Show the supervisor's progress lines until it says the API is up (True) or gives up (False, with
    the reason it gave, if any)."""
    import json

    buf = b""
    with console.status(title + "…") as status:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return False, None
            chunk = os.read(fd, 4096)
            if not chunk:
                return False, None
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                if "api" in doc:
                    return True, None
                if "error" in doc:
                    return False, str(doc["error"])
                if "progress" in doc:
                    console.print(f"  [dim]·[/] {doc['progress']}", highlight=False)
                    status.update(f"{title}: {doc['progress']}…")




@main.command()
@click.argument("server_url", metavar="SERVER-URL")
@click.option("--token", default="", metavar="TOKEN",
              help="The join token (D/join-token on the first server; K10<CA hash>::<id>.<secret>).")
@click.option("--token-file", default="", metavar="FILE",
              help="Read the join token from FILE instead (as k3s's --token-file); if FILE is not there yet, "
                   "wait for it (a lab's first machine writes it into a shared folder).")
@click.option("--server-timeout", type=click.FloatRange(min=0), default=300.0, show_default=True, metavar="SECONDS",
              help="How long to wait for the token file and for SERVER-URL to answer (kubeadm's discovery "
                   "timeout).")
@click.option("--node-name", default="", metavar="NAME", help="This machine's node name (default: the hostname).")
@click.option("--iface", default="", metavar="IFACE",
              help="The interface of the overlay (default: the one whose subnet holds the server's address).")
@click.option("--node-ip", default="", metavar="IP", help="This node's address (default: --iface's, else as above).")
@click.option("--proxy-mode", type=click.Choice(PROXY_MODES), default="iptables", show_default=True)
@click.option("--ipvs-scheduler", default="rr", show_default=True, help="ipvs mode: the scheduler.")
@_nodeport_addresses_option
@click.option("--backend", type=click.Choice(BACKENDS), default="vxlan", show_default=True,
              help="Overlay backend (the same on every node).")
@click.option("--name", default="kmesh", show_default=True, help="Lab name; prefixes this node's pod namespaces.")
@_data_dir_option
def join(server_url: str, token: str, token_file: str, server_timeout: float, node_name: str, iface: str,
         node_ip: str, proxy_mode: str, ipvs_scheduler: str, nodeport_addresses: tuple[str, ...], backend: str,
         name: str, data_dir: Path | None) -> None:
    """Make this machine a node of the cluster at SERVER-URL; return when the node is Ready.

    It waits for SERVER-URL to answer (up to --server-timeout), so the machines of a lab can start together."""
    import ipaddress

    from kmesh.client.bootstrap import JoinError, JoinToken
    from kmesh.lab.access import kubeconfig_access
    from kmesh.lab.supervisor import UpOptions

    if os.geteuid() != 0:
        raise click.UsageError("kmesh join needs root: this machine's network becomes a node's")
    if bool(token) == bool(token_file):
        raise click.BadParameter("give the join token either inline (--token) or in a file (--token-file)",
                                 param_hint="--token/--token-file")
    if token_file:
        token_file = os.path.abspath(token_file)
        if os.path.isdir(token_file):
            raise click.BadParameter(f"{token_file} is a directory", param_hint="--token-file")
    given, flag = (token, "--token") if token else (_read_if_there(token_file), "--token-file")
    if given:  # a token file that is not there yet is checked once it is
        try:
            JoinToken.parse(given)
        except JoinError as exc:
            raise click.BadParameter(str(exc).removeprefix("--token: "), param_hint=flag) from None
    if not server_url.startswith("https://"):
        raise click.BadParameter(f"{server_url!r}: expected https://HOST:PORT, as `kmesh up --runtime host` "
                                 "prints it", param_hint="SERVER-URL")
    if node_ip:
        try:
            ipaddress.IPv4Address(node_ip)
        except ValueError:
            raise click.BadParameter(f"{node_ip!r} is not an IPv4 address", param_hint="--node-ip") from None
    dd = _resolve(data_dir)
    if dd.locked():
        raise click.ClickException(f"a lab is already running in {dd.root} (pid {dd.supervisor_pid() or 'unknown'}); "
                                   "run `kmesh down` first")
    from kmesh.lab import preflight

    _preflight_or_exit(preflight.agent_needs(runtime="netns", proxy_mode=proxy_mode, backend=backend), "kmesh join")
    access = kubeconfig_access(None)
    opts = UpOptions(
        data_dir=str(dd.root), name=name, runtime="host", role="agent", proxy_mode=proxy_mode,
        ipvs_scheduler=ipvs_scheduler, nodeport_addresses=list(nodeport_addresses), backend=backend,
        store="memory", node_name=node_name, iface=iface, node_ip=node_ip, server_url=server_url, token=token,
        token_file=token_file, server_timeout=server_timeout,
    )
    _run_supervisor(dd, opts, access, f"[bold]Joining {server_url}[/]", timeout=server_timeout + 600)
    info = dd.read_cluster()
    assert info is not None
    for n in info.nodes:
        console.print(f"[green]✓[/] node [bold]{n.name}[/] joined {server_url}: {n.ip}, pods {n.podCIDR}, "
                      f"kube-proxy {info.proxyMode}", highlight=False)
    console.print(f"  kmesh status --data-dir {dd.root}    kmesh down --data-dir {dd.root}  (removes this node)",
                  highlight=False)


@main.command()
@_data_dir_option
def down(data_dir: Path | None) -> None:
    """Stop the lab and remove everything it made. Running it twice is fine."""
    from kmesh.lab.teardown import LabNotProven, teardown

    dd = _resolve(data_dir)
    try:
        removed = teardown(dd)
    except LabNotProven as exc:
        raise click.ClickException(str(exc)) from None
    if not removed:
        console.print(f"nothing to remove in {dd.root}")
        return
    for what in removed:
        console.print(f"[green]removed[/] {what}")


def _node_subnet(dd: DataDir, node: str) -> str:
    """The subnet a netns node's overlay holds (from its subnet.env), or "-"."""
    from kmesh.cni.subnetenv import parse

    try:
        return str(parse((dd.root / "nodes" / node / "run" / "subnet.env").read_text()).subnet)
    except (OSError, ValueError):
        return "-"


def _proxy_endpoints(dd: DataDir, info: Any) -> dict[str, tuple[str | None, int]]:
    """Where each node's proxy endpoint listens: node → (its namespace, port) on 127.0.0.1.

    The sim lab has one proxy, under the node name "" (its port is in D/run/proxy.port)."""
    from kmesh.proxy.http import METRICS_PORT

    if info.runtime == "sim":
        try:
            return {"": (None, int((dd.root / "run" / "proxy.port").read_text()))}
        except (OSError, ValueError):
            return {}
    return {n.name: (n.netns, METRICS_PORT) for n in info.nodes}


def _proxy_healthz_port(dd: DataDir, info: Any) -> int | None:
    """Where the proxies' health servers listen (sim: D/run/proxy-healthz.port; netns: 10256 in each node)."""
    from kmesh.proxy.health import HEALTHZ_PORT

    if info.runtime != "sim":
        return HEALTHZ_PORT
    try:
        return int((dd.root / "run" / "proxy-healthz.port").read_text())
    except (OSError, ValueError):
        return None


async def _proxy_health(dd: DataDir, info: Any) -> dict[str, str]:
    """Each node's proxy as "<mode>, <n> syncs" from its endpoints ("" is the sim lab's one proxy)."""
    import trio

    from kmesh.proxy.http import summary

    where = _proxy_endpoints(dd, info)
    healthz = _proxy_healthz_port(dd, info)
    out: dict[str, str] = {}

    async def one(node: str, ns: str | None, port: int) -> None:
        try:
            with trio.fail_after(3):
                out[node] = await summary(netns_name=ns, metrics_port=port, healthz_port=healthz)
        except (OSError, ValueError, trio.TooSlowError):
            out[node] = "not answering"

    async with trio.open_nursery() as n:
        for node, (ns, port) in where.items():
            n.start_soon(one, node, ns, port)
    return out


def _check_lb_range(lb_range: str, runtime: str, nodes: int) -> None:
    """``--lb-range`` checked against the lab's ranges and addresses: a clear error naming the option, exit 2."""
    if not lb_range:
        return
    if runtime == "sim":
        raise click.BadParameter("the sim runtime has no LoadBalancer addresses (its network is loopback); "
                                 "use --runtime netns", param_hint="--lb-range")
    from kmesh.lab.loadbalancers import lb_range_problem

    problem = lb_range_problem(lb_range.strip(), runtime=runtime, nodes=nodes, service_cidr=SERVICE_CIDR,
                               cluster_cidr=CLUSTER_CIDR)
    if problem:
        raise click.BadParameter(problem, param_hint="--lb-range")


@main.command()
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print cluster.json (API, DNS, nodes, metrics, loadBalancers).")
def status(data_dir: Path | None, as_json: bool) -> None:
    """Show the lab's API, nodes and pods."""
    dd = _resolve(data_dir)
    info = dd.read_cluster()
    pid = dd.supervisor_pid()
    if info is None or pid is None:
        console.print(f"no lab is running in {dd.root}")
        raise SystemExit(1)
    if as_json:
        click.echo(info.to_json(), nl=False)
        return
    import trio

    from kmesh.client.api import APIUnavailable, Client

    async def fetch() -> tuple[dict, list, list, dict[str, str], dict[str, bool]]:
        async with Client.from_kubeconfig(info.kubeconfig) as c:
            ver = await c.request("GET", "/version")
            nodes, _ = await c.list_all("Node")
            pods, _ = await c.list_all("Pod")
        return ver, nodes, pods, await _proxy_health(dd, info), await _metrics_answer(info)

    try:
        ver, nodes, pods, proxies, answers = trio.run(fetch)
    except APIUnavailable as exc:
        console.print(f"[red]lab {info.name} (pid {pid}): API {info.api} does not answer[/]: {exc}")
        raise SystemExit(1) from None
    console.print(
        f"lab [bold]{info.name}[/] pid {pid}: API {info.api} ({ver['gitVersion']}), runtime {info.runtime}, "
        f"proxy {info.proxyMode}, services {info.serviceCIDR}, pods {info.clusterCIDR}"
    )
    t = Table("NODE", "READY", "IP", "POD CIDR", "SUBNET", "BACKEND", "PROXY", "NETNS", "PODS")
    by_node: dict[str, int] = {}
    for p in pods:
        n = (p.get("spec") or {}).get("nodeName") or ""
        by_node[n] = by_node.get(n, 0) + 1
    listed = {n.name: n for n in info.nodes}
    for node in nodes:
        name = node["metadata"]["name"]
        ni = listed.get(name)
        ready = next((c.get("status", "") for c in (node.get("status") or {}).get("conditions") or []
                      if c.get("type") == "Ready"), "")
        annotations = node["metadata"].get("annotations") or {}
        t.add_row(name, ready, ni.ip if ni else "", (node.get("spec") or {}).get("podCIDR", ""),
                  _node_subnet(dd, name), annotations.get("flannel.alpha.coreos.com/backend-type", "-"),
                  proxies.get(name, proxies.get("", "-")), (ni.netns or "-") if ni else "-", str(by_node.get(name, 0)))
    console.print(t)
    console.print(f"{len(pods)} pod(s); kubeconfig {info.kubeconfig}")
    if info.metrics:
        console.print("metrics (Prometheus):")
        width = max(len(k) for k in info.metrics)
        for component, url in info.metrics.items():
            note = "(kubectl get --raw /metrics)" if component == "apiserver" else \
                "" if answers.get(component, True) else "not answering"
            console.print(f"  {component.ljust(width)}  {url}  {note}".rstrip(), highlight=False, soft_wrap=True)
    _print_load_balancers(info)


def _print_load_balancers(info: Any) -> None:
    """cluster.json's LoadBalancer Services: address, announcing node, where the machine reaches each port."""
    if info.runtime == "host" and info.lbRange:
        console.print(f"LoadBalancer addresses from {info.lbRange}: reach them directly on this network "
                      "(kubectl get services shows each EXTERNAL-IP)", highlight=False)
    if not info.loadBalancers:
        return
    console.print("LoadBalancer Services (curl from this machine):")
    for svc, lb in sorted(info.loadBalancers.items()):
        ports = ", ".join(f"{p} → {addr}" for p, addr in (lb.get("ports") or {}).items()) or "no TCP port"
        console.print(f"  {svc}  {lb.get('ip')}  announced by {lb.get('node') or 'no node'}  {ports}",
                      highlight=False, soft_wrap=True)


async def _metrics_answer(info: Any) -> dict[str, bool]:
    """Whether each plain-HTTP metrics URL of cluster.json answers 200 (the API server's needs credentials)."""
    import httpx
    import trio

    out: dict[str, bool] = {}
    async with httpx.AsyncClient(timeout=3.0, trust_env=False) as http:
        async def one(component: str, url: str) -> None:
            try:
                out[component] = (await http.get(url)).status_code == 200
            except httpx.HTTPError:
                out[component] = False

        async with trio.open_nursery() as n:
            for component, url in info.metrics.items():
                if url.startswith("http://"):
                    n.start_soon(one, component, url)
    return out


def _pod_netns(data_dir: Path | None, namespace: str, pod: str, command: str) -> Any:
    """Where a pod of the running lab has its network (``kmesh.lab.podns.PodNetns``); a click error if nowhere."""
    from kmesh.lab.podns import PodNetnsError, find_pod_netns

    dd = _resolve(data_dir)
    info = dd.read_cluster()
    if info is None:
        raise click.ClickException(f"no lab is running in {dd.root}")
    try:
        return find_pod_netns(info, namespace, pod)
    except PodNetnsError as exc:
        raise click.ClickException(f"{command}: {exc}") from None


@main.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@_data_dir_option
@click.option("-n", "--namespace", default="default", show_default=True, help="The pod's namespace.")
@click.option("-c", "--container", default="", help="The container whose built-in tools COMMAND may name (default: the first).")
@click.argument("pod")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_in_pod(data_dir: Path | None, namespace: str, container: str, pod: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside POD's network namespace (netns runtime): kmesh exec web-1 -- curl ...

    A tool of the container's built-in image runs too: kmesh exec echo-v1-... -- client http://echo/"""
    from kmesh.net import netns
    from kmesh.node.apps import exec_argv

    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise click.BadParameter("give the command to run after --", param_hint="COMMAND")
    where = _pod_netns(data_dir, namespace, pod, "kmesh exec")
    containers = (where.pod.get("spec") or {}).get("containers") or []
    default = ((where.pod.get("metadata") or {}).get("annotations") or {}).get("kubectl.kubernetes.io/default-container")
    by_name = {c.get("name"): c for c in containers}
    chosen = by_name.get(container or default) or (None if container else (containers or [None])[0])
    if container and chosen is None:
        raise click.ClickException(f"kmesh exec: container {container} not found in pod {pod}")
    command = tuple(exec_argv(str((chosen or {}).get("image") or ""), list(command)))
    if where.netns is None:
        os.execvp(command[0], list(command))  # host runtime, hostNetwork: the machine's own network
    if where.host_network:
        argv = netns.exec_argv(where.netns, list(command))
    else:
        from kmesh.node.netns_runtime import pod_exec_prefix
        from kmesh.node.podspec import pod_hostname

        argv = pod_exec_prefix(where.netns, pod_hostname(where.pod)) + list(command)
    os.execvp(argv[0], argv)


@main.command()
@_data_dir_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=6443, show_default=True)
@click.option("--store", "store_url", default="",
              help="memory:// | sqlite:///path.db | etcd://host:port | https://host:port (default: SQLite in the data dir).")
@_etcd_tls_options
@click.option("--name", default="kmesh", show_default=True, help="Cluster name in the kubeconfig.")
@click.option("--service-cidr", default=SERVICE_CIDR, show_default=True, help="Range ClusterIPs come from.")
@click.option("--loopback-ok", is_flag=True, help="Accept 127.x endpoint addresses (the sim runtime's pods).")
@_kubeconfig_mode_option
def server(
    data_dir: Path | None, host: str, port: int, store_url: str, etcd_cafile: str, etcd_certfile: str,
    etcd_keyfile: str, name: str, service_cidr: str, loopback_ok: bool, kubeconfig_mode: int | None,
) -> None:
    """Run the API server in the foreground (writes D/kubeconfig.yaml)."""
    import trio

    from kmesh.store import store_kind

    etcd_url = store_url if store_url and store_kind(store_url) == "etcd" else ""
    etcd_tls = _etcd_tls(etcd_url, etcd_cafile, etcd_certfile, etcd_keyfile, "--store")

    from kmesh.apiserver.server import ServerConfig, run_server
    from kmesh.client.kubeconfig import Credentials, write_kubeconfig
    from kmesh.lab.access import grant_traverse, kubeconfig_access

    dd = _resolve(data_dir)
    os.umask(0o077)  # the store, PKI and logs it writes are private (the kubeconfig gets its own mode)
    dd.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    access = kubeconfig_access(kubeconfig_mode)
    grant_traverse(dd.root, access)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            cfg = ServerConfig(
                data_dir=dd.root, store_url=store_url, host=host, port=port,
                service_cidr=service_cidr, loopback_ok=loopback_ok, etcd_tls=etcd_tls,
                mesh_injection=not loopback_ok,  # the sim runtime cannot run the redirect rules
            )
            srv = await nursery.start(run_server, cfg)
            write_kubeconfig(dd.kubeconfig, name, Credentials(srv.url, srv.pki.ca_pem(), srv.pki.token),
                             mode=access.mode, owner=access.owner)
            console.print(f"API server on {srv.url}; export KUBECONFIG={dd.kubeconfig}", highlight=False)
            sys.stdout.flush()

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass


def _foreground(start: Any, kubeconfig: _KubeconfigRef, ready: str) -> None:
    """Run ``start(client, nursery)`` with a client from ``kubeconfig`` until Ctrl-C; print ``ready`` once up."""
    import trio

    from kmesh.client.api import Client
    from kmesh.client.kubeconfig import load_kubeconfig

    try:
        creds = load_kubeconfig(kubeconfig.files, kubeconfig.context)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"kubeconfig {kubeconfig.files}: {exc}") from None

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with Client(creds) as client, trio.open_nursery() as nursery:
                await start(client, nursery)
                console.print(ready, highlight=False)
                sys.stdout.flush()
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass


@dataclass(frozen=True)
class _KubeconfigRef:
    """The kubeconfig files (one path, or $KUBECONFIG's ``a:b`` list) and the context a component uses."""

    files: str
    context: str | None = None


def _kubeconfig_ref(explicit: str | None, context: str | None) -> _KubeconfigRef:
    """--kubeconfig, else $KUBECONFIG (read as kubectl does), else the default data dir's kubeconfig."""
    if explicit:
        if not Path(explicit).is_file():
            raise click.BadParameter(f"{explicit}: no such file", param_hint="--kubeconfig")
        return _KubeconfigRef(explicit, context)
    if os.environ.get("KUBECONFIG"):
        return _KubeconfigRef(os.environ["KUBECONFIG"], context)
    lab = DataDir(default_data_dir()).kubeconfig
    if lab.is_file():
        return _KubeconfigRef(str(lab), context)
    raise click.UsageError("no kubeconfig: pass --kubeconfig, set KUBECONFIG, or start a lab with `kmesh up`")


def _kubeconfig_option(f):  # type: ignore[no-untyped-def]
    """``--kubeconfig`` and ``--context``, handed to the command as one ``_KubeconfigRef`` named ``kubeconfig``."""

    @functools.wraps(f)
    def with_ref(*args: Any, kubeconfig: str | None, context: str | None, **kw: Any) -> Any:
        return f(*args, kubeconfig=_kubeconfig_ref(kubeconfig, context), **kw)

    with_ref = click.option("--context", default=None, help="kubeconfig context to use (default: its current one).")(
        with_ref)
    return click.option(
        "--kubeconfig", default=None, metavar="FILE",
        help="kubeconfig of the API server (default: $KUBECONFIG, read as kubectl does; else the lab's).",
    )(with_ref)


@main.command()
@_kubeconfig_option
@click.option("--cluster-cidr", default=CLUSTER_CIDR, show_default=True, help="Pod network; nodes get /24s of it.")
@click.option("--service-cidr", default=SERVICE_CIDR, show_default=True)
@click.option("--node-grace-period", type=click.FloatRange(min=1), default=40.0, show_default=True,
              help="Seconds without a lease renewal before a node is NotReady.")
@click.option("--lb-range", default="", metavar="CIDR|START-END",
              help="Give LoadBalancer Services addresses from this pool (default: none, they stay pending).")
@click.option("--bind-address", default="127.0.0.1", show_default=True, help="Where both /metrics endpoints listen.")
@click.option("--metrics-port", type=click.IntRange(min=-1, max=65535), default=10257, show_default=True,
              help="The controller-manager's /metrics, plain HTTP (upstream's port; 0: a free one; -1: off).")
@click.option("--scheduler-metrics-port", type=click.IntRange(min=-1, max=65535), default=10259, show_default=True,
              help="The scheduler's /metrics, plain HTTP (upstream's port; 0: a free one; -1: off).")
@click.option("--leader-elect/--no-leader-elect", default=False, show_default=True,
              help="Run the controllers only while holding the Lease kube-system/kube-controller-manager, the "
                   "scheduler only while holding kube-system/kube-scheduler (several servers, one active).")
@click.option("--leader-elect-lease-duration", type=click.FloatRange(min=0, min_open=True), default=15.0,
              show_default=True, metavar="SECONDS",
              help="How long a standby waits, after it last saw the leader renew, before taking the lease.")
@click.option("--leader-elect-renew-deadline", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, metavar="SECONDS",
              help="How long the leader retries renewing before it stops leading (less than the lease duration).")
@click.option("--leader-elect-retry-period", type=click.FloatRange(min=0, min_open=True), default=2.0,
              show_default=True, metavar="SECONDS", help="Time between tries to acquire or renew the lease.")
def controllers(kubeconfig: _KubeconfigRef, cluster_cidr: str, service_cidr: str, node_grace_period: float,
                lb_range: str, bind_address: str, metrics_port: int, scheduler_metrics_port: int, leader_elect: bool,
                leader_elect_lease_duration: float, leader_elect_renew_deadline: float,
                leader_elect_retry_period: float) -> None:
    """Run the controllers (endpoints, deployments, scheduler, node IPAM/lifecycle) in the foreground."""
    from kmesh.controllers.leaderelection import LeaderElectionConfig
    from kmesh.controllers.manager import ControllerConfig, run_controllers

    if leader_elect:
        try:  # upstream's checks, before anything starts
            LeaderElectionConfig("kube-controller-manager", "-", lease_duration=leader_elect_lease_duration,
                                 renew_deadline=leader_elect_renew_deadline,
                                 retry_period=leader_elect_retry_period)
        except ValueError as exc:
            raise click.UsageError(f"--leader-elect-*: {exc}") from None
    if lb_range.strip():
        from kmesh.controllers.lbipam import PoolError, check_range

        try:
            check_range(lb_range.strip(), {"--cluster-cidr": [cluster_cidr], "--service-cidr": [service_cidr]})
        except (PoolError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="--lb-range") from None
    cfg = ControllerConfig(cluster_cidr=cluster_cidr, service_cidr=service_cidr, node_grace_period=node_grace_period,
                           metrics_host=bind_address, metrics_port=None if metrics_port < 0 else metrics_port,
                           scheduler_metrics_port=None if scheduler_metrics_port < 0 else scheduler_metrics_port,
                           leader_elect=leader_elect, leader_elect_lease_duration=leader_elect_lease_duration,
                           leader_elect_renew_deadline=leader_elect_renew_deadline,
                           leader_elect_retry_period=leader_elect_retry_period, lb_range=lb_range.strip() or None)

    async def start(client: Any, nursery: Any) -> None:
        mgr = await nursery.start(run_controllers, client, cfg)
        for what, port in (("controller-manager", mgr.metrics_port), ("scheduler", mgr.scheduler_metrics_port)):
            if port:
                console.print(f"{what} metrics on http://{bind_address}:{port}/metrics", highlight=False)
        for lease, elector in mgr.electors.items():
            console.print(f"leader election: Lease kube-system/{lease} as {elector.identity}", highlight=False,
                          soft_wrap=True)

    _foreground(start, kubeconfig, "controllers running")


def _parse_node_labels(ctx: click.Context, param: click.Parameter, value: str) -> dict[str, str]:
    from kmesh.node.nodeinfo import parse_node_labels

    try:
        return parse_node_labels(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


@main.command()
@_kubeconfig_option
@click.option("--node", "node_name", required=True, help="Node name to register.")
@click.option("--node-ip", required=True, help="The node's IP (sim: a 127.x address; netns: its underlay address).")
@click.option("--runtime", type=click.Choice(("netns", "sim")), default="sim", show_default=True,
              help="sim, or netns: run inside the node's network namespace with the overlay and CNI "
                   "(the host runtime's agent runs inside `kmesh up`/`kmesh join`).")
@click.option("--lab", default="kmesh", show_default=True, help="netns: the lab name (prefix of pod namespaces).")
@click.option("--backend", type=click.Choice(BACKENDS), default="vxlan", show_default=True, help="netns: overlay backend.")
@click.option("--subnet-manager", type=click.Choice(("kube", "etcd")), default="kube", show_default=True,
              help="netns: where node subnets come from.")
@click.option("--etcd", "etcd_url", default="", help="netns with --subnet-manager etcd: the etcd URL.")
@_etcd_tls_options
@click.option("--iface", default="eth0", show_default=True, help="netns: the underlay interface.")
@click.option("--cluster-cidr", default=CLUSTER_CIDR, show_default=True, help="netns: the pod network.")
@click.option("--cluster-dns", default=CLUSTER_DNS_IP, show_default=True, help="netns: the DNS server pods' resolv.conf names.")
@click.option("--cluster-domain", default=CLUSTER_DOMAIN, show_default=True, help="netns: the cluster's DNS domain.")
@click.option("--proxy-mode", type=click.Choice((*PROXY_MODES, "none")), default="iptables", show_default=True,
              help="netns: the kube-proxy mode the agent runs (none: run `kmesh proxy` yourself).")
@click.option("--ipvs-scheduler", default="rr", show_default=True, help="netns, ipvs mode: the scheduler.")
@_nodeport_addresses_option
@click.option("--node-labels", "node_labels", default="", callback=_parse_node_labels, metavar="KEY=VALUE[,...]",
              help="Labels the Node is registered with, as the kubelet's flag (e.g. "
                   "topology.kubernetes.io/zone=zone-a,rack=r1).")
@_data_dir_option
def agent(
    kubeconfig: _KubeconfigRef, node_name: str, node_ip: str, runtime: str, lab: str, backend: str, subnet_manager: str,
    etcd_url: str, etcd_cafile: str, etcd_certfile: str, etcd_keyfile: str, iface: str, cluster_cidr: str,
    cluster_dns: str, cluster_domain: str, proxy_mode: str,
    ipvs_scheduler: str, nodeport_addresses: tuple[str, ...], node_labels: dict[str, str], data_dir: Path | None,
) -> None:
    """Run one node agent (kubelet-lite; netns: also the overlay and CNI) in the foreground."""
    from kmesh.node.agent import AgentConfig, run_agent

    root = _resolve(data_dir).root
    os.umask(0o077)  # pod logs, CNI and subnet state are private (pods' own processes get 022)
    node_dir = root / "nodes" / node_name
    node_dir.mkdir(parents=True, exist_ok=True)
    if runtime == "netns":
        if os.geteuid() != 0:
            raise click.BadParameter(f"the {runtime} runtime needs root", param_hint="--runtime")
        if subnet_manager == "etcd" and not etcd_url:
            raise click.BadParameter("--subnet-manager etcd needs --etcd URL", param_hint="--etcd")
        etcd_tls = _etcd_tls(etcd_url, etcd_cafile, etcd_certfile, etcd_keyfile, "--etcd")
        from kmesh.lab.preflight import agent_needs

        _preflight_or_exit(agent_needs(runtime="netns", proxy_mode=proxy_mode, backend=backend), "kmesh agent")
        from kmesh.lab.topology import LabNames
        from kmesh.node.apps import IN_CLUSTER_KUBECONFIG
        from kmesh.node.netns_agent import NetnsNodeConfig, run_netns_node

        if ":" not in kubeconfig.files and kubeconfig.context is None:
            # the node's credentials are its built-in apps' in-cluster credentials (the sidecar, the proxies)
            os.environ.setdefault(IN_CLUSTER_KUBECONFIG, str(Path(kubeconfig.files).resolve()))
        ncfg = NetnsNodeConfig(
            pod_netns_prefix=LabNames(lab).pod_prefix(node_name), node_name=node_name, node_ip=node_ip,
            node_dir=node_dir, backend=backend, subnet_manager=subnet_manager, etcd_url=etcd_url, etcd_tls=etcd_tls,
            iface=iface,
            network=cluster_cidr, dns_ip=cluster_dns, cluster_domain=cluster_domain, proxy_mode=proxy_mode,
            ipvs_scheduler=ipvs_scheduler, nodeport_addresses=nodeport_addresses, labels=node_labels,
        )

        async def start(client: Any, nursery: Any) -> None:
            await nursery.start(run_netns_node, client, ncfg)

        _foreground(start, kubeconfig, f"agent {node_name} running")
        return
    from kmesh.node.sim import SimRuntime

    cfg = AgentConfig(node_name=node_name, node_ip=node_ip, runtime=SimRuntime(node_dir), data_dir=node_dir,
                      labels=node_labels)

    async def start_sim(client: Any, nursery: Any) -> None:
        await nursery.start(run_agent, client, cfg)

    _foreground(start_sim, kubeconfig, f"agent {node_name} running")


@main.group()
def proxy() -> None:
    """kube-proxy: run it, or show what it installed on a node."""


@proxy.command("run")
@_kubeconfig_option
@click.option("--mode", type=click.Choice(PROXY_MODES), default="iptables", show_default=True)
@click.option("--node", "node_name", required=True, help="The node this proxy serves.")
@click.option("--node-ip", "node_ips", multiple=True, required=True, help="The node's IP (repeat for several).")
@click.option("--runtime", type=click.Choice(RUNTIMES), default="netns", show_default=True,
              help="netns: program this network namespace; sim: bind loopback Service IPs (userspace only).")
@click.option("--cluster-cidr", default=CLUSTER_CIDR, show_default=True, help="The pod network.")
@click.option("--ipvs-scheduler", default="rr", show_default=True)
@_nodeport_addresses_option
@click.option("--min-sync-period", type=click.FloatRange(min=0), default=1.0, show_default=True)
@click.option("--sync-period", type=click.FloatRange(min=1), default=30.0, show_default=True)
@click.option("--metrics-port", type=int, default=10249, show_default=True,
              help="/metrics, /healthz, /proxyMode, /rules on 127.0.0.1 (0: a free port; -1: off).")
@click.option("--healthz-bind-address", default="0.0.0.0:10256", show_default=True, metavar="HOST:PORT",
              help="/healthz and /livez, upstream's JSON (port 0: a free one; empty: off).")
def proxy_run(
    kubeconfig: _KubeconfigRef, mode: str, node_name: str, node_ips: tuple[str, ...], runtime: str, cluster_cidr: str,
    ipvs_scheduler: str, nodeport_addresses: tuple[str, ...], min_sync_period: float, sync_period: float,
    metrics_port: int, healthz_bind_address: str,
) -> None:
    """Run kube-proxy in the foreground in this network namespace."""
    from kmesh.lab.preflight import proxy_needs
    from kmesh.proxy.model import NodeContext
    from kmesh.proxy.modes import make_mode
    from kmesh.proxy.runner import SyncConfig, run_proxy

    _preflight_or_exit(proxy_needs(mode=mode, runtime=runtime), "kmesh proxy run", kernel=False)
    ctx = NodeContext(node=node_name, node_ips=node_ips, cluster_cidr=cluster_cidr, nodeport_addresses=nodeport_addresses)
    try:
        m = make_mode(mode, ctx, runtime=runtime, scheduler=ipvs_scheduler)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--mode") from None
    cfg = SyncConfig(min_sync_period=min_sync_period, sync_period=sync_period)
    healthz_host, healthz_port = "", None
    if healthz_bind_address:
        healthz_host, _, port_text = healthz_bind_address.rpartition(":")
        if not healthz_host or not port_text.isdigit() or int(port_text) > 65535:
            raise click.BadParameter(f"{healthz_bind_address!r} is not HOST:PORT", param_hint="--healthz-bind-address")
        healthz_host, healthz_port = healthz_host.strip("[]"), int(port_text)

    async def start(client: Any, nursery: Any) -> None:
        runner = await nursery.start(
            lambda task_status: run_proxy(client, m, cfg, metrics_port=None if metrics_port < 0 else metrics_port,
                                          healthz_port=healthz_port, healthz_host=healthz_host,
                                          task_status=task_status))
        if runner.metrics_port:
            console.print(f"metrics on 127.0.0.1:{runner.metrics_port}", highlight=False)
        if runner.healthz_port:
            console.print(f"healthz on {healthz_host}:{runner.healthz_port}", highlight=False)

    _foreground(start, kubeconfig, f"{mode} proxy running on {node_name}")


def _proxy_get(data_dir: Path | None, node: str | None, path: str) -> str:
    """GET ``path`` from the proxy of ``node`` in the lab (sim: the lab's one proxy)."""
    import trio

    from kmesh.proxy.http import fetch

    dd = _resolve(data_dir)
    info = dd.read_cluster()
    if info is None or dd.supervisor_pid() is None:
        raise click.ClickException(f"no lab is running in {dd.root}")
    endpoints = _proxy_endpoints(dd, info)
    if info.runtime == "sim":
        if "" not in endpoints:
            raise click.ClickException("the lab runs no proxy")
        node, where = "", "the sim lab's proxy"
    else:
        node = node or (info.nodes[0].name if info.nodes else "")
        if node not in endpoints:
            raise click.BadParameter(f"no node {node!r} in the lab (nodes: {', '.join(endpoints)})",
                                     param_hint="--node")
        where = f"node {node}"
    ns, port = endpoints[node]
    try:
        status, body = trio.run(lambda: fetch(path, netns_name=ns, port=port))
    except OSError as exc:
        raise click.ClickException(f"the proxy of {where} does not answer: {exc}") from None
    if status != 200:
        raise click.ClickException(body.strip())
    return body


@proxy.command("rules")
@_data_dir_option
@click.option("--node", default=None, help="Which node (default: the first).")
@click.option("--pod", default=None, help="A meshed pod: its sidecar's redirect rules (iptables-save -t nat).")
@click.option("-n", "--namespace", default="default", show_default=True, help="The pod's namespace (with --pod).")
def proxy_rules(data_dir: Path | None, node: str | None, pod: str | None, namespace: str) -> None:
    """What the proxy installed on a node, in the native tool's text (iptables-save, ipvsadm -Ln, listeners);
    with --pod, the service mesh's redirect rules in that pod's network namespace."""
    if pod is None:
        click.echo(_proxy_get(data_dir, node, "/rules"), nl=False)
        return
    if node is not None:
        raise click.BadParameter("give --node or --pod, not both", param_hint="--node")
    import subprocess

    from kmesh.net import netns

    where = _pod_netns(data_dir, namespace, pod, "kmesh proxy rules")
    if where.netns is None or where.host_network:
        raise click.ClickException(f"pod {namespace}/{pod} uses the node's network: a sidecar cannot run there")
    out = subprocess.run(netns.exec_argv(where.netns, ["iptables-save", "-t", "nat"]), capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise click.ClickException(f"iptables-save in {where.netns}: {out.stderr.strip()}")
    if "KMESH_" not in out.stdout:
        raise click.ClickException(f"pod {namespace}/{pod} has no redirect rules: it is not meshed "
                                   "(its namespace or itself needs kmesh.io/inject: enabled, then a new pod)")
    click.echo(out.stdout, nl=False)


@proxy.command("ipvs")
@_data_dir_option
@click.option("--node", default=None, help="Which node (default: the first).")
def proxy_ipvs(data_dir: Path | None, node: str | None) -> None:
    """The IPVS table of a node, as `ipvsadm -Ln` prints it (ipvs mode)."""
    click.echo(_proxy_get(data_dir, node, "/ipvs"), nl=False)


@main.command(hidden=True)
@click.option("--data-dir", type=click.Path(path_type=Path), required=True)
def supervise(data_dir: Path) -> None:
    """Run a lab described by D/up.json (started by `kmesh up`)."""
    _run_supervise(data_dir)


def _run_supervise(data_dir: Path) -> None:
    """The supervisor's work, in this process."""
    from kmesh.lab.supervisor import supervise as run

    logging.getLogger().setLevel(logging.INFO)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    run(data_dir)


@main.group()
def policy() -> None:
    """NetworkPolicy: why a connection is allowed or dropped, and the rules a node enforces."""


def _lab_info(data_dir: Path | None) -> Any:
    dd = _resolve(data_dir)
    info = dd.read_cluster()
    if info is None:
        raise click.ClickException(f"no lab is running in {dd.root}")
    return info


@policy.command("explain")
@_data_dir_option
@click.argument("src", metavar="FROM")
@click.argument("dst", metavar="TO")
@click.option("--port", type=click.IntRange(1, 65535), default=80, show_default=True, help="The destination port.")
@click.option("--udp", is_flag=True, help="A UDP connection (default TCP).")
@click.option("--sctp", is_flag=True, help="An SCTP connection (the model only: no probe is sent).")
@click.option("--no-probe", is_flag=True, help="Answer from the policy model only; send nothing.")
@click.option("--json", "json_out", is_flag=True, help="Print the answer as JSON.")
def policy_explain(data_dir: Path | None, src: str, dst: str, port: int, udp: bool, sctp: bool, no_probe: bool,
                   json_out: bool) -> None:
    """Is FROM → TO:PORT allowed? Which policies isolate each end and which rule allows it (the model), and
    what the kernel did with one real attempt (the rules' counters). FROM and TO: NS/POD, POD (namespace
    default) or an address (TO only). Exit 0 allowed, 1 denied, 3 when the kernel disagrees with the model."""
    import json

    from kmesh.lab.policycmd import ExplainError, explain_text, run_explain

    if udp and sctp:
        raise click.BadParameter("give --udp or --sctp, not both", param_hint="--sctp")
    protocol = "UDP" if udp else "SCTP" if sctp else "TCP"
    try:
        r = run_explain(_lab_info(data_dir), src, dst, port, protocol, probe=not (no_probe or sctp))
    except ExplainError as exc:
        raise click.ClickException(str(exc)) from None
    if json_out:
        click.echo(json.dumps(r, indent=2))
    else:
        console.print(explain_text(r))
    raise SystemExit(3 if r.get("agree") is False else 0 if r["allowed"] else 1)


@policy.command("show")
@_data_dir_option
@click.option("--node", default=None, help="Which node (default: the first).")
def policy_show(data_dir: Path | None, node: str | None) -> None:
    """The NetworkPolicy rules a node enforces, as `nft list table inet kmesh-netpol` prints them (with counters)."""
    from kmesh.lab.policycmd import ExplainError, run_show

    try:
        click.echo(run_show(_lab_info(data_dir), node), nl=False)
    except ExplainError as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def bench() -> None:
    """Load-balancing and performance experiments."""


@bench.command("modes")
@click.option("--services", "sizes", default="100,1000,5000,10000", show_default=True,
              help="Numbers of Services to measure at, comma-separated (grown in turn).")
@click.option("--endpoints", type=click.IntRange(1, 16), default=2, show_default=True, help="Endpoints per Service.")
@click.option("--modes", "modes", default="iptables,ipvs,nftables,userspace", show_default=True,
              help="Proxy modes to compare, comma-separated.")
@click.option("--samples", type=click.IntRange(10, 100000), default=200, show_default=True,
              help="New connections per measured Service (first, middle, last) and size.")
@click.option("--budget", type=click.FloatRange(min=1), default=120.0, show_default=True,
              help="Skip a size whose full sync would take longer than this many seconds (from the last size).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the charts (latency, full sync, change sync, memory against Services) to this PNG.")
@click.option("--json", "json_out", is_flag=True, help="Print the results as JSON instead of the table.")
def bench_modes(sizes: str, endpoints: int, modes: str, samples: int, budget: float, plot_path: Path | None,
                json_out: bool) -> None:
    """Compare kube-proxy modes as the number of Services grows: connect latency (first, middle, last
    Service), full and one-change sync time, CPU, rules installed, proxy memory.

    Runs on namespaces of its own (a node, a client pod, a server pod answering for every endpoint); needs
    root. Where the kernel has no ip_vs, IPVS is served by kmesh's own table and its rows say so. Exit 0 when
    every connection was answered, 1 when some were not, 2 on bad arguments."""
    import json

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from kmesh.bench.modes import ModesUsage, check_space, parse_modes, parse_sizes, plot, run, table_rows
    from kmesh.net.netns_check import netns_usable

    try:
        size_list, mode_list = parse_sizes(sizes), parse_modes(modes)
        check_space(size_list, endpoints)
    except ModesUsage as exc:
        raise click.BadParameter(exc.message, param_hint=exc.param) from None
    if not netns_usable():
        raise click.ClickException("kmesh bench modes makes network namespaces and rules: run it as root")
    err = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                  transient=True, disable=json_out) as prog:
        task = prog.add_task("starting", total=None)
        try:
            res = run(mode_list, size_list, endpoints=endpoints, samples=samples, budget=budget,
                      progress=lambda text: prog.update(task, description=text))
        except ModesUsage as exc:
            raise click.BadParameter(exc.message, param_hint=exc.param) from None
    if plot_path is not None:
        plot(res, str(plot_path))
    if json_out:
        click.echo(json.dumps(res.to_json(), indent=2))
    else:
        t = Table(title="kube-proxy modes against the number of Services (connect latency in µs)")
        for col in ("mode", "Services", "first p50", "middle p50", "last p50", "last p01–p99", "full sync s",
                    "change ms", "sync CPU s", "rules", "RSS MB", "served by"):
            t.add_column(col, justify="left" if col in ("mode", "served by") else "right")
        for row in table_rows(res):
            t.add_row(*row)
        console.print(t)
        for s in res.skipped:
            console.print(f"[yellow]skipped[/] {s['mode']} at {s['services']} Services: {s['reason']}")
        if plot_path is not None:
            console.print(f"charts in {plot_path}")
    raise SystemExit(1 if any(r.errors for r in res.results) else 0)


@bench.command("lb")
@_data_dir_option
@click.argument("service")
@click.option("-n", "--namespace", default="default", show_default=True, help="The Service's namespace.")
@click.option("--port", default=None, help="Service port (number or name); default: its first TCP (UDP) port.")
@click.option("--udp", is_flag=True, help="One UDP datagram per request instead of a TCP connection.")
@click.option("--protocol", type=click.Choice(("auto", "tcp", "http")), default="auto", show_default=True,
              help="TCP requests: read what the server says (tcp) or GET / (http); auto: http for http ports.")
@click.option("--requests", type=int, default=300, show_default=True, help="How many requests.")
@click.option("--concurrency", type=int, default=8, show_default=True, help="Concurrent workers.")
@click.option("--from", "from_pod", default=None, help="Send from this pod ([NS/]POD); default: any running pod.")
@click.option("--expect", default="uniform", show_default=True,
              help="uniform | sticky | weights:POD=W,POD=W | weights:SERVICE=W,SERVICE=W (judged per Service).")
@click.option("--via", default=None, metavar="gateway/[NS/]NAME|ingress",
              help="Send HTTP to this Gateway's (the lab's ingress controller's) LoadBalancer address, port 80, "
                   "instead of the ClusterIP; SERVICE may then list several Services (v1,v2).")
@click.option("--host", default=None, help="Host header of the HTTP requests.  [default: the --via address, else "
                                           "SERVICE.NAMESPACE]")
@click.option("--path", default=None, help="HTTP path; one ending in / is a prefix under which hostname is asked "
                                           "(agnhost netexec names its pod at /hostname).  [default: /]")
@click.option("--alpha", type=float, default=0.01, show_default=True, help="Significance of the chi-square test.")
@click.option("--timeout", type=float, default=2.0, show_default=True, help="Seconds per request.")
@click.option("--warmup", type=float, default=5.0, show_default=True,
              help="Wait up to this long for a first answer (not counted) before sending; 0: start at once.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a PNG bar chart of the split (--keepalive: requests per connection, stacked by endpoint).")
@click.option("--json", "json_out", is_flag=True, help="Print the result as JSON (for scripts) instead of the table.")
@click.option("--during", default=None, metavar="'link down NODE'",
              help="Cut NODE off the underlay under a steady load and time the Service's convergence "
                   "(errors, NotReady, endpoints); the node comes back at the end.")
@click.option("--rate", type=float, default=None, help="With --during: requests per second.  [default: 20]")
@click.option("--during-after", "during_after", type=float, default=None,
              help="With --during: seconds of baseline load before the cut.  [default: 5]")
@click.option("--settle", type=float, default=None,
              help="With --during: seconds of steady success that end an error window.  [default: 5]")
@click.option("--max-wait", "max_wait", type=float, default=None,
              help="With --during: longest wait for convergence after the cut and after link up.  [default: 120]")
@click.option("--no-restore", is_flag=True, default=False,
              help="With --during: leave the node cut off at the end (kmesh link up NODE brings it back).")
@click.option("--keepalive", is_flag=True, default=False,
              help="HTTP/1.1 GET /hostname requests over persistent connections: the split per connection beside "
                   "the split per request; --expect is judged over connections (each one's first endpoint), over "
                   "requests with --via (an L7 proxy picks per request).")
@click.option("--connections", type=int, default=None,
              help="With --keepalive: connections open at once, each sending its requests one after the other.  "
                   "[default: 8]")
@click.option("--per-connection", "per_connection", type=int, default=None,
              help="With --keepalive: requests per connection.  [default: --requests / --connections]")
def bench_lb(data_dir: Path | None, service: str, plot_path: Path | None, json_out: bool, during: str | None,
             rate: float | None, during_after: float | None, settle: float | None, max_wait: float | None,
             no_restore: bool, **options: Any) -> None:
    """Send requests through SERVICE's ClusterIP and test how they split over its endpoints.

    With --via gateway/[NS/]NAME or --via ingress: HTTP requests to that Gateway's (the ingress controller's)
    LoadBalancer address instead, with --host and --path; SERVICE may be a comma list (v1,v2) of the Services
    behind it, whose endpoints are all counted, and --expect weights:v1=90,v2=10 judges the split per Service.

    With --keepalive: HTTP requests over --connections persistent connections; kube-proxy (iptables, nftables,
    ipvs) picks an endpoint per connection, so each connection's requests stay on one endpoint. Shows the split
    by connections and by requests side by side and each connection's endpoints; --expect is judged over the
    connections (a connection the server closes is reopened and counted as a new one: a reconnect); with --via the
    proxy balances per request, so each connection's requests spread over endpoints, and --expect is judged over
    the requests.

    With --during 'link down NODE': a steady load through SERVICE while NODE is cut off the underlay; measures
    how long errors last (the node grace period decides it), when the Node went NotReady and its endpoints not
    ready, and when all was back after link up.

    Exit code 0 when the split matches --expect (with --during: the Service converged and the node came back),
    1 when not, 2 on bad arguments."""
    from kmesh.bench.lb import UsageError, check_request_args, load_shape
    from kmesh.bench.report import run_lb_command, run_partition_command
    from kmesh.client.api import APIUnavailable

    extra = {"--rate": rate, "--during-after": during_after, "--settle": settle, "--max-wait": max_wait,
             "--no-restore": no_restore or None}
    try:
        if options["keepalive"]:
            if during is not None:
                raise UsageError("--keepalive", "does not go with --during")
            source = click.get_current_context().get_parameter_source("concurrency")
            if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
                raise UsageError("--concurrency", "does not go with --keepalive: --connections says how many "
                                                  "connections are open at once")
        if during is not None:
            for flag in ("via", "host", "path"):
                if options[flag] is not None:
                    raise UsageError(f"--{flag}", "does not go with --during")
        load_shape(options["requests"], options["concurrency"], keepalive=options["keepalive"],
                   connections=options["connections"], per_connection=options["per_connection"],
                   udp=options["udp"], protocol=options["protocol"])  # before the lab is looked for
        check_request_args(service, namespace=options["namespace"], via=options["via"], host=options["host"],
                           path=options["path"], udp=options["udp"], protocol=options["protocol"],
                           keepalive=options["keepalive"])
        if during is None:
            given = [k for k, v in extra.items() if v is not None]
            if given:
                raise UsageError(given[0], "only goes with --during 'link down NODE'")
            code = run_lb_command(_resolve(data_dir), service, console=console, plot_path=plot_path,
                                  json_out=json_out, **options)
        else:
            timing = {k: v for k, v in (("rate", rate), ("after", during_after), ("settle", settle),
                                        ("max_wait", max_wait)) if v is not None}
            code = run_partition_command(_resolve(data_dir), service, during, console=console, plot_path=plot_path,
                                         json_out=json_out, restore=not no_restore, **timing, **options)
    except UsageError as exc:
        raise click.BadParameter(exc.message, param_hint=exc.param) from None
    except APIUnavailable as exc:
        raise click.ClickException(f"the API server does not answer: {exc}") from None
    except RuntimeError as exc:
        from kmesh.lab.links import LinkFailure, NoLab

        if isinstance(exc, (LinkFailure, NoLab)):
            raise click.ClickException(str(exc)) from None
        raise
    raise SystemExit(code)


@bench.command("churn")
@_data_dir_option
@click.argument("service")
@click.option("-n", "--namespace", default="default", show_default=True, help="The Service's namespace.")
@click.option("--during", default="rollout", show_default=True, metavar="rollout|scale:N|delete-pods:K",
              help="The change: restart the Deployment's pods (kubectl rollout restart), scale it to N, "
                   "or delete K of the Service's pods.")
@click.option("--rate", type=float, default=20.0, show_default=True, help="Requests per second.")
@click.option("--keepalive", is_flag=True,
              help="One persistent connection (HTTP keep-alive; UDP: one socket, one source port) instead of "
                   "a new one per request.")
@click.option("--udp", is_flag=True, help="One UDP datagram per request; reports stale conntrack entries after.")
@click.option("--port", default=None, help="Service port (number or name); default: its first TCP (UDP) port.")
@click.option("--protocol", type=click.Choice(("auto", "tcp", "http")), default="auto", show_default=True,
              help="TCP requests: read what the server says (tcp) or GET --path (http); auto: http for http ports.")
@click.option("--path", default="/hostname", show_default=True,
              help="HTTP path to ask (agnhost netexec names its pod at /hostname).")
@click.option("--from", "from_pod", default=None,
              help="Send from this pod ([NS/]POD); default: a running pod the Service does not select.")
@click.option("--duration", type=float, default=None,
              help="Run this many seconds in all; default: until the change is complete and --settle seconds "
                   "passed without an error.")
@click.option("--after", type=float, default=3.0, show_default=True, help="Seconds of baseline load before the change.")
@click.option("--settle", type=float, default=3.0, show_default=True,
              help="Seconds without a failure that end an error window (and the run).")
@click.option("--max-wait", "max_wait", type=float, default=120.0, show_default=True,
              help="Longest wait for the change to complete and the errors to stop.")
@click.option("--timeout", type=float, default=1.0, show_default=True, help="Seconds per request.")
@click.option("--warmup", type=float, default=5.0, show_default=True,
              help="Wait up to this long for a first answer (not counted) before the load.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a PNG of the load over time.")
@click.option("--json", "json_out", is_flag=True, help="Print the result as JSON (for scripts) instead of the table.")
def bench_churn(data_dir: Path | None, service: str, during: str, plot_path: Path | None, json_out: bool,
                **options: Any) -> None:
    """A steady load through SERVICE while its endpoints change (a rollout, a scale, deleted pods).

    Reports errors by kind (refused, reset, timeout, other) over time, the longest error window, the requests
    served by pods that were already terminating (named, beside when their deletion and their EndpointSlice's
    terminating condition were seen) and, for --udp, the conntrack entries left pointing at endpoints that are
    gone.

    Exit code 0 when the change completed and the errors stopped, 1 when not, 2 on bad arguments."""
    from kmesh.api.errors import APIError
    from kmesh.bench.lb import UsageError
    from kmesh.bench.report import run_churn_command
    from kmesh.client.api import APIUnavailable

    try:
        code = run_churn_command(_resolve(data_dir), service, during, console=console, plot_path=plot_path,
                                 json_out=json_out, **options)
    except UsageError as exc:
        raise click.BadParameter(exc.message, param_hint=exc.param) from None
    except APIUnavailable as exc:
        raise click.ClickException(f"the API server does not answer: {exc}") from None
    except APIError as exc:  # the change was refused (a patch, a delete): say so, no traceback
        raise click.ClickException(f"the API server refused the change: {exc}") from None
    raise SystemExit(code)


@bench.command("mesh")
@_data_dir_option
@click.argument("experiments", default="all")
@click.option("--requests", type=int, default=1000, show_default=True, help="canary: requests to Service canary.")
@click.option("--weights", default="90,10", show_default=True, help="canary: the route's weights for v1,v2.")
@click.option("--concurrency", type=int, default=4, show_default=True, help="canary: concurrent requests.")
@click.option("--retry-requests", "retry_requests", type=int, default=200, show_default=True,
              help="retries: requests per phase (without, then with the retry rule).")
@click.option("--retry-rate", "retry_rate", type=float, default=10.0, show_default=True,
              help="retries: requests per second (the retry budget allows 10 retries/s or 20 % of requests).")
@click.option("--attempts", type=int, default=2, show_default=True, help="retries: the rule's retry attempts.")
@click.option("--fail-ratio", "fail_ratio", type=float, default=0.5, show_default=True,
              help="retries: the share of requests the flaky endpoint answers 503.")
@click.option("--rate", type=float, default=500.0, show_default=True, help="latency: open-loop requests per second.")
@click.option("--seconds", type=float, default=10.0, show_default=True, help="latency: open-loop seconds per path.")
@click.option("--closed-seconds", "closed_seconds", type=float, default=5.0, show_default=True,
              help="latency: closed-loop (max rate) seconds per path; 0: none.")
@click.option("--connections", type=int, default=8, show_default=True,
              help="latency: keep-alive connections (open and closed loop).")
@click.option("--rounds", type=int, default=5, show_default=True,
              help="latency: the paths take turns this many times (seconds split between the turns).")
@click.option("--alpha", type=float, default=0.01, show_default=True, help="Significance of the tests.")
@click.option("--keep", is_flag=True, help="Leave the run's namespaces and workloads in place.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a PNG: the canary split, success rates, latency CDFs per path.")
@click.option("--json", "json_out", is_flag=True, help="Print the results as JSON instead of the tables.")
def bench_mesh(data_dir: Path | None, experiments: str, weights: str, plot_path: Path | None, json_out: bool,
               **options: Any) -> None:
    """The service mesh's experiments on a running netns lab: EXPERIMENTS is canary, retries, latency (a comma
    list) or all.

    canary: an HTTPRoute attached to Service canary splits it over canary-v1 and canary-v2 by --weights; requests
    from a meshed client, the split judged with a chi-square test as bench lb does. retries: a flaky endpoint
    (503 half the time), success rate without and with an HTTPRoute retry rule. latency: client to server direct,
    through the sidecar pair with mTLS and in plaintext, open loop at --rate and closed loop; what the pair adds
    at p50 and p99 against the goal (+1 ms, +3 ms at 500/s).

    The run creates its workloads in namespaces of its own (bench-mesh-XXXX; for latency also bench-direct-XXXX
    and bench-plain-XXXX, the latter with kmesh.io/mtls: disable) and deletes them at the end, also on Ctrl-C.
    Exit code 0 when every experiment passed, 1 when not, 2 on bad arguments."""
    from kmesh.bench.lb import UsageError
    from kmesh.bench.mesh import MeshOptions, parse_experiments, parse_weights
    from kmesh.bench.meshreport import run_mesh_command
    from kmesh.client.api import APIUnavailable

    try:
        opts = MeshOptions(experiments=tuple(parse_experiments(experiments)), weights=parse_weights(weights),
                           **options)
        opts.check()
        code = run_mesh_command(_resolve(data_dir), opts, console=console, plot_path=plot_path, json_out=json_out)
    except UsageError as exc:
        raise click.BadParameter(exc.message, param_hint=exc.param) from None
    except APIUnavailable as exc:
        raise click.ClickException(f"the API server does not answer: {exc}") from None
    except RuntimeError as exc:  # a workload that did not come up, a route that did not take effect
        raise click.ClickException(str(exc)) from None
    raise SystemExit(code)


if __name__ == "__main__":
    main()
