"""One API server in a process of its own, for tests that measure it from outside (fds, sockets, RSS).

``python -m tests.apiserver.server_proc DATA_DIR [--store URL] [--request-timeout S] [--write-stall S]``
writes DATA_DIR/kubeconfig.yaml, prints ``API server on URL`` once it
listens, and runs until SIGTERM (then closes its store and exits 0).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import trio

from kmesh.apiserver.server import ServerConfig, run_server
from kmesh.client.kubeconfig import Credentials, write_kubeconfig


async def main(args: argparse.Namespace) -> None:
    """Serve until SIGTERM."""
    data_dir = Path(args.data_dir)
    cfg = ServerConfig(data_dir=data_dir, store_url=args.store, port=0, request_timeout=args.request_timeout,
                       write_stall=args.write_stall)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            srv = await nursery.start(run_server, cfg)
            write_kubeconfig(data_dir / "kubeconfig.yaml", "test", Credentials(srv.url, srv.pki.ca_pem(), srv.pki.token))
            sys.stdout.write(f"API server on {srv.url}\n")
            sys.stdout.flush()
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("data_dir")
    p.add_argument("--store", default="")
    p.add_argument("--request-timeout", type=float, default=60.0)
    p.add_argument("--write-stall", type=float, default=30.0)
    trio.run(main, p.parse_args())
