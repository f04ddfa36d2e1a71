"""A Gateway API rig on loopback: the translation of a world served by real L7 engines, one per Gateway, in
front of real echo-basic servers (kmesh's built-in image code), one per Service, on 127.0.0.1.

It skips the cluster (API server, kube-proxy, pods) so upstream's whole
HTTPRoute table runs in seconds as a plain user; the netns lab tests send a
sample of the same requests through the real path.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import h11
import trio

from kmesh.gateway.dataplane import backends
from kmesh.gateway.gatewayapi import Translation, translate
from kmesh.gateway.world import World
from kmesh.l7.engine import Engine
from kmesh.l7.model import Config, Endpoint
from kmesh.node.apps.echobasic_h1 import serve_h1
from kmesh.node.apps.echobasic_handler import EchoServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Reply:
    """What a client got: status, headers (lower-case names), and the echo's JSON when a backend answered."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def echo(self) -> dict[str, Any] | None:
        """The echo server's JSON document, if the body is one."""
        try:
            doc = json.loads(self.body)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) and "pod" in doc else None


@dataclass
class Rig:
    """Engines per Gateway and echo servers per Service; ``ports[gateway][listener port]`` is where to send."""

    world: World
    translation: Translation
    engines: dict[tuple[str, str], Engine] = field(default_factory=dict)
    ports: dict[tuple[str, str], dict[int, int]] = field(default_factory=dict)
    echo_ports: dict[tuple[str, str], int] = field(default_factory=dict)
    seen: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # request targets each Service's echo got
    _seen_event: trio.Event = field(default_factory=trio.Event)

    async def wait_seen(self, service: tuple[str, str], targets: list[str]) -> None:
        """Return once ``service``'s echo got each of ``targets`` (e.g. mirrored copies, which arrive on their own)."""
        while not all(t in self.seen.get(service, []) for t in targets):
            await self._seen_event.wait()

    async def request(self, gateway: tuple[str, str], path: str, *, host: str = "", method: str = "GET",
                      headers: tuple[tuple[str, str], ...] = (), port: int = 80,
                      tls: ssl.SSLContext | None = None) -> Reply:
        """One HTTP/1.1 request to a Gateway's listener port (a fresh connection; over TLS with SNI ``host``
        when ``tls`` is given)."""
        target = self.ports[gateway][port]
        stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", target)
        if tls is not None:
            stream = trio.SSLStream(stream, tls, server_hostname=host or None, https_compatible=True)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            hdrs = [("Host", host or f"127.0.0.1:{target}"), *headers, ("Connection", "close")]
            data = conn.send(h11.Request(method=method, target=path, headers=hdrs))
            data += conn.send(h11.EndOfMessage())
            await stream.send_all(data)
            status, body = 0, b""
            resp_headers: dict[str, str] = {}
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                    continue
                if isinstance(event, h11.Response):
                    status = event.status_code
                    for n, v in event.headers:  # repeated lines joined, as Go's Header.Values + Join
                        k = n.decode().lower()
                        resp_headers[k] = resp_headers[k] + "," + v.decode() if k in resp_headers else v.decode()
                elif isinstance(event, h11.Data):
                    body += bytes(event.data)
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    return Reply(status, resp_headers, body)


@asynccontextmanager
async def rig(objects: list[dict[str, Any]]) -> AsyncIterator[Rig]:
    """Serve every Gateway of ``objects`` (which include the GatewayClass) until the block ends."""
    world = World.of(objects)
    t = translate(world, {k: ["127.0.0.1"] for k in world.gateways})
    async with serve(world, {k: g.config for k, g in t.gateways.items()}, t) as r:
        yield r


@asynccontextmanager
async def serve(world: World, configs: dict[tuple[str, str], Config], t: Translation | None = None
                ) -> AsyncIterator[Rig]:
    """Serve each config on an engine of its own (its listener ports mapped to free ones) until the block ends."""
    r = Rig(world, t or Translation())
    async with trio.open_nursery() as n:
        for (ns, name), svc in world.services.items():
            port = _free_port()
            server = EchoServer({"POD_NAME": f"{name}-pod", "NAMESPACE": ns}, str(port))
            seen = r.seen.setdefault((ns, name), [])

            async def handle(req: Any, server: EchoServer = server, seen: list[str] = seen) -> Any:
                seen.append(req.target)
                r._seen_event.set()
                r._seen_event = trio.Event()
                return await server.handle(req)

            listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
            await n.start(trio.serve_listeners, lambda s, handle=handle: serve_h1(s, handle), listeners)
            r.echo_ports[(ns, name)] = port
        for key, config in configs.items():
            mapping = {ls.port: _free_port() for ls in config.listeners}
            engine = Engine("127.0.0.1", port_map=mapping)
            await n.start(engine.serve)
            await engine.apply(config)
            for ns, svc, port in backends(config):
                if (ns, svc) in r.echo_ports:
                    engine.set_endpoints(ns, svc, port, [Endpoint("127.0.0.1", r.echo_ports[(ns, svc)], f"{svc}-pod")])
            r.engines[key] = engine
            r.ports[key] = {p: engine.address(p)[1] for p in mapping}
        try:
            yield r
        finally:
            n.cancel_scope.cancel()
