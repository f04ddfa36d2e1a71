"""``python -m kmesh.dns --kubeconfig K [flags]``: run the cluster DNS server in the foreground.

The flags mirror ``DNSConfig`` one to one (``kmesh dns`` exposes the same ones).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import trio

from kmesh.client.api import Client
from kmesh.dns.config import DEFAULT_ALLOWED, DNSConfig
from kmesh.dns.server import run_dns


def build_parser() -> argparse.ArgumentParser:
    """The command line of the DNS server."""
    p = argparse.ArgumentParser(prog="kmesh-dns", description=__doc__)
    p.add_argument("--kubeconfig", required=True, help="API access (the only source of cluster data)")
    p.add_argument("--config", help="YAML/JSON file of DNSConfig fields; flags given override it")
    p.add_argument("--zone")
    p.add_argument("--ttl", type=int)
    p.add_argument("--pods", choices=["disabled", "insecure", "verified"])
    p.add_argument("--listen", action="append", help="host:port, repeatable (default 127.0.0.1:53)")
    p.add_argument("--upstream", action="append", help="host[:port], repeatable (default: /etc/resolv.conf)")
    p.add_argument("--no-forward", action="store_true", help="answer only cluster names (REFUSED otherwise)")
    p.add_argument("--allow", action="append", help=f"client network allowed to recurse (default {', '.join(DEFAULT_ALLOWED)})")
    p.add_argument("--metrics-port", type=int, help="default 9153; -1 disables")
    p.add_argument("--workers", type=int, help="SO_REUSEPORT processes (default 1)")
    return p


def config_from_args(ns: argparse.Namespace) -> DNSConfig:
    """A ``DNSConfig`` from parsed flags (over ``--config``'s file, over the defaults)."""
    given: dict[str, object] = {
        "zone": ns.zone, "ttl": ns.ttl, "pods": ns.pods, "listen": ns.listen, "allowed_networks": ns.allow,
        "upstreams": [] if ns.no_forward else ns.upstream, "workers": ns.workers, "kubeconfig": ns.kubeconfig,
    }
    if ns.metrics_port is not None:
        given["metrics_port"] = None if ns.metrics_port < 0 else ns.metrics_port
    if ns.config:
        cfg = DNSConfig.from_file(ns.config, **given)
        if ns.metrics_port is not None and ns.metrics_port < 0:
            cfg.metrics_port = None
        return cfg
    return DNSConfig(**{k: v for k, v in given.items() if v is not None or k == "metrics_port"})


async def serve(cfg: DNSConfig) -> None:
    """Run until cancelled (Ctrl-C / SIGTERM via trio's KeyboardInterrupt)."""
    assert cfg.kubeconfig
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


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = config_from_args(build_parser().parse_args(argv))
    try:
        trio.run(serve, cfg)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
