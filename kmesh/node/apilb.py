"""A joined node's way to the API: a local TCP balancer over every control-plane server, as k3s's agent has.

The node agent and the pods' built-in apps talk to ``https://127.0.0.1:6444``;
each connection goes to the first server that answers, starting with the
one that answered last. The servers are the one ``kmesh join`` was given
plus every address in the ``default/kubernetes`` Endpoints (each API server
adds its own), read through the balancer itself, so a node keeps its API
when the server it joined through is gone. The servers' certificates name
127.0.0.1, so TLS checks still hold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from kmesh.client.api import Client
from kmesh.client.informer import Informer
from kmesh.client.kubeconfig import Credentials
from kmesh.net.portforward import Failover, forward
from kmesh.net.sockets import tcp_listener

log = logging.getLogger("kmesh.node.apilb")
LB_PORT = 6444  # k3s's agent load balancer port


@dataclass
class RunningBalancer:
    """The balancer's address and its current list of servers, preferred first."""

    host: str
    port: int
    servers: Failover

    @property
    def url(self) -> str:
        """What the agent's kubeconfig names."""
        return f"https://{self.host}:{self.port}"


def endpoint_servers(endpoints: dict | None) -> list[tuple[str, int]]:
    """(ip, port) of every ready address of the ``kubernetes`` Endpoints."""
    out: list[tuple[str, int]] = []
    for subset in (endpoints or {}).get("subsets") or []:
        ports = [int(p["port"]) for p in subset.get("ports") or [] if p.get("port")]
        for a in subset.get("addresses") or []:
            out += [(a["ip"], p) for p in ports[:1]]
    return out


async def run_api_balancer(
    first: tuple[str, int], creds: Credentials, *, host: str = "127.0.0.1", port: int = LB_PORT,
    task_status: trio.TaskStatus[RunningBalancer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Balance ``host:port`` over the servers until cancelled; ``first`` is the server joined through and
    ``creds`` the node's credentials (their server is replaced by the balancer's own address)."""
    servers = Failover([first])
    listener = await tcp_listener(host, port)
    running = RunningBalancer(host, listener.getsockname()[1], servers)
    async with trio.open_nursery() as n:
        await n.start(forward, listener, servers)
        own = Credentials(running.url, creds.ca_pem, creds.token, creds.client_cert_pem, creds.client_key_pem)
        client = Client(own)

        def update(_: object = None) -> None:
            found = endpoint_servers(endpoints.get("kubernetes", "default"))
            if found:
                servers.replace([*found, *([first] if first not in found else [])])
                log.info("API servers: %s", ", ".join(f"{h}:{p}" for h, p in servers.order()))

        endpoints = Informer(client, "Endpoints", namespace="default", field_selector="metadata.name=kubernetes",
                             handlers=[update])
        n.start_soon(endpoints.run)
        task_status.started(running)
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()
