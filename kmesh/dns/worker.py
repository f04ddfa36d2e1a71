"""An extra SO_REUSEPORT worker process: ``python -m kmesh.dns.worker '<DNSConfig as JSON>'``.

It builds its own client from ``kubeconfig`` and runs the same server on the
same ports; the kernel spreads datagrams and connections across workers.
"""

from __future__ import annotations

import ctypes
import json
import signal
import sys

import trio

from kmesh.client.api import Client
from kmesh.dns.config import DNSConfig


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM us when the parent server dies (no orphaned workers holding the port)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> None:
    """Run one worker until killed."""
    args = sys.argv[1:] if argv is None else argv
    _die_with_parent()
    cfg = DNSConfig(**json.loads(args[0]))
    cfg.workers = max(cfg.workers, 2)  # keep SO_REUSEPORT on; spawn_workers=False starts no more
    try:
        trio.run(_run_single, cfg)
    except KeyboardInterrupt:
        pass


async def _run_single(cfg: DNSConfig) -> None:
    from kmesh.dns import server

    assert cfg.kubeconfig
    client = Client.from_kubeconfig(cfg.kubeconfig)
    try:
        await server.run_dns(client, cfg, spawn_workers=False)
    finally:
        await client.aclose()


if __name__ == "__main__":
    main()
