"""The ``kmesh/dns`` image: the cluster DNS server as a built-in app of the node agent.

Args (Go-flag style, like CoreDNS's container would take a Corefile):
``--kubeconfig=PATH`` (else $KUBECONFIG; required: the server reads the API
through it), ``--zone``, ``--ttl``, ``--pods``, ``--port`` (53),
``--upstream`` (comma list; default /etc/resolv.conf; ``none`` disables),
``--allow`` (comma list of client networks), ``--metrics-port`` (9153, -1 off).
Sockets (DNS and metrics) are opened in the pod's network through the sandbox.
"""

from __future__ import annotations

import os

import trio

from kmesh.api.wellknown import CLUSTER_DOMAIN
from kmesh.client.api import Client
from kmesh.dns.config import DEFAULT_ALLOWED, DNSConfig
from kmesh.dns.server import run_dns
from kmesh.node.apps import IN_CLUSTER_KUBECONFIG, AppContext
from kmesh.node.apps.flags import FlagError, parse_flags

DEFAULTS = {"kubeconfig": "", "zone": CLUSTER_DOMAIN, "ttl": 5, "pods": "disabled", "port": 53,
            "upstream": "", "allow": "", "metrics-port": 9153}


def config_from_flags(flags: dict[str, object], host: str) -> DNSConfig:
    """A ``DNSConfig`` for the app's flags, listening on ``host``."""
    ups = str(flags["upstream"])
    allow = str(flags["allow"])
    port = int(flags["metrics-port"])  # type: ignore[call-overload]
    h = f"[{host}]" if ":" in host else host
    return DNSConfig(
        zone=str(flags["zone"]), ttl=int(flags["ttl"]), pods=str(flags["pods"]),  # type: ignore[arg-type,call-overload]
        listen=[f"{h}:{flags['port']}"],
        upstreams=None if not ups else ([] if ups == "none" else ups.split(",")),
        allowed_networks=allow.split(",") if allow else list(DEFAULT_ALLOWED),
        metrics_port=None if port < 0 else port, metrics_host=host,
        kubeconfig=str(flags["kubeconfig"]) or None,
    )


async def main(ctx: AppContext) -> int | None:
    """Serve cluster DNS in the pod until stopped."""
    try:
        flags, _ = parse_flags(ctx.args, DEFAULTS)
        if not flags["kubeconfig"]:  # else the pod's $KUBECONFIG, else the node's in-cluster credentials
            flags["kubeconfig"] = ctx.env.get("KUBECONFIG", "") or os.environ.get(IN_CLUSTER_KUBECONFIG, "")
        cfg = config_from_flags(flags, ctx.host)
    except (FlagError, ValueError) as exc:
        ctx.log(f"Error: {exc}")
        return 2
    if not cfg.kubeconfig:
        ctx.log("Error: --kubeconfig (or $KUBECONFIG) is required: the DNS server reads the API through it")
        return 2
    client = Client.from_kubeconfig(cfg.kubeconfig)
    try:
        async with trio.open_nursery() as n:
            running = await n.start(lambda task_status: run_dns(client, cfg, open_socket=ctx.sandbox.open_socket,
                                                                task_status=task_status))
            ctx.log(f"kmesh dns: zone {cfg.zone} on {running.addresses}, metrics :{running.metrics_port}")
            await ctx.sigterm.wait()
            n.cancel_scope.cancel()
    finally:
        await client.aclose()
    return 0
