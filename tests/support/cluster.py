"""An in-process API server for tests, and the real kubectl pointed at it."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from kmesh.apiserver.server import RunningServer, ServerConfig, run_server
from kmesh.client.api import Client
from kmesh.client.kubeconfig import Credentials, write_kubeconfig
from tests.conftest import require_binary


@dataclass
class Cluster:
    """A running API server, its kubeconfig and a client."""

    server: RunningServer
    kubeconfig: Path
    client: Client
    data_dir: Path

    async def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, binary: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl (the one on PATH, or ``binary``) against this server; returns its result (text)."""
        kubectl = binary or require_binary("kubectl")
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), HOME=str(self.data_dir))
        res = await trio.run_process(
            [kubectl, *args],
            stdin=stdin.encode() if stdin is not None else b"",
            capture_stdout=True, capture_stderr=True, check=False, env=env,
        )
        out = subprocess.CompletedProcess(res.args, res.returncode, res.stdout.decode(), res.stderr.decode())
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({res.returncode}):\n{out.stderr}{out.stdout}")
        return out


async def start_cluster(
    nursery: trio.Nursery, data_dir: Path, store_url: str = "memory://", **config: Any
) -> Cluster:
    """Start an API server on a free loopback port inside ``nursery`` (extra ServerConfig fields in ``config``)."""
    srv: RunningServer = await nursery.start(
        run_server, ServerConfig(data_dir=data_dir, store_url=store_url, port=0, **config)
    )
    kc = data_dir / "kubeconfig.yaml"
    creds = Credentials(srv.url, srv.pki.ca_pem(), srv.pki.token)
    write_kubeconfig(kc, "test", creds)
    return Cluster(srv, kc, Client(creds), data_dir)




class Stoppable:
    """Handle of a component a test runs under its own cancel scope, to stop it and await its clean-up."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.stopped = trio.Event()

    async def stop(self) -> None:
        """Cancel the component and wait until it has cleaned up (e.g. its store is closed)."""
        self.scope.cancel()
        await self.stopped.wait()


async def serve_stoppable(
    cfg: ServerConfig,
    *,
    task_status: trio.TaskStatus[tuple[RunningServer, Stoppable]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run an API server under its own cancel scope; hands back (server, handle)."""
    handle = Stoppable()
    try:
        with handle.scope:
            async with trio.open_nursery() as n:
                srv = await n.start(run_server, cfg)
                task_status.started((srv, handle))
    finally:
        handle.stopped.set()
