"""``kmesh dns`` (also ``python -m kmesh.dns``): run the cluster DNS server in the foreground.

The flags map one to one onto ``DNSConfig``; ``--config`` loads a file of the
same fields and flags given on the command line override it.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import click
import trio

from kmesh.client.api import Client
from kmesh.dns.config import DEFAULT_ALLOWED, DNSConfig
from kmesh.dns.server import run_dns


def config_from_flags(
    *, kubeconfig: str | None, config: str | None = None, zone: str | None = None, ttl: int | None = None,
    pods: str | None = None, listen: tuple[str, ...] = (), upstream: tuple[str, ...] = (), no_forward: bool = False,
    allow: tuple[str, ...] = (), metrics_port: int | None = None, workers: int | None = None,
) -> DNSConfig:
    """A ``DNSConfig`` from the command's flags (over ``--config``'s file, over the defaults)."""
    given: dict[str, Any] = {
        "zone": zone, "ttl": ttl, "pods": pods, "listen": list(listen) or None,
        "allowed_networks": list(allow) or None, "upstreams": [] if no_forward else (list(upstream) or None),
        "workers": workers, "kubeconfig": kubeconfig,
    }  # None: not given
    if config:
        cfg = DNSConfig.from_file(config, **given)
    else:
        cfg = DNSConfig(**{k: v for k, v in given.items() if v is not None})
    if metrics_port is not None:  # it wins over the file; -1 turns metrics off (None above means "not given")
        cfg.metrics_port = None if metrics_port < 0 else metrics_port
    return cfg


async def serve(cfg: DNSConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    client = Client.from_kubeconfig(cfg.kubeconfig)
    try:
        async with trio.open_nursery() as n:
            n.start_soon(run_dns, client, cfg)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    n.cancel_scope.cancel()  # stops the workers too (trio kills its child processes)
                    break
    finally:
        await client.aclose()


@click.command("dns", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--kubeconfig", envvar="KUBECONFIG", show_envvar=True, metavar="FILE[:FILE...]",
              help="API access, the only source of cluster data (default: $KUBECONFIG, read as kubectl does).")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML/JSON file of DNSConfig fields; flags given override it.")
@click.option("--zone", default=None, help="The cluster domain (default cluster.local).")
@click.option("--ttl", type=int, default=None, help="TTL of cluster records (default 5).")
@click.option("--pods", type=click.Choice(["disabled", "insecure", "verified"]), default=None,
              help="Pod records a-b-c-d.<ns>.pod.<zone> (default disabled).")
@click.option("--listen", multiple=True, metavar="HOST:PORT", help="Repeatable (default 127.0.0.1:53).")
@click.option("--upstream", multiple=True, metavar="HOST[:PORT]", help="Repeatable (default: /etc/resolv.conf).")
@click.option("--no-forward", is_flag=True, help="Answer only cluster names (REFUSED otherwise).")
@click.option("--allow", multiple=True, metavar="CIDR",
              help=f"Client network allowed to recurse, repeatable (default {', '.join(DEFAULT_ALLOWED)}).")
@click.option("--metrics-port", type=int, default=None, help="Prometheus /metrics port (default 9153; -1 disables).")
@click.option("--workers", type=int, default=None, help="SO_REUSEPORT processes (default 1).")
def dns(kubeconfig: str | None, **flags: Any) -> None:
    """Run the cluster DNS server in the foreground."""
    if not kubeconfig:
        raise click.UsageError("no kubeconfig: pass --kubeconfig or set KUBECONFIG")
    try:
        cfg = config_from_flags(kubeconfig=kubeconfig, **flags)
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")  # no-op under `kmesh -v`
    try:
        trio.run(serve, cfg)
    except KeyboardInterrupt:
        pass
