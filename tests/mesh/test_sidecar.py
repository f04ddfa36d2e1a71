"""The sidecar in real namespaces: a "pod" with the redirect rules and the sidecar, a "peer" with backends,
and an API server (in-process, real) holding a Service and its EndpointSlice.

A client inside the pod connects to the Service's ClusterIP as an app would: HTTP on one keep-alive
connection is balanced per request over both endpoints, undeclared ports are sniffed, plain TCP is relayed
to one endpoint, a pod IP is passed through, a port with no ready endpoint is refused, and cancelling the
sidecar closes everything it held.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from kmesh.mesh.redirect import RedirectSpec, apply, render
from kmesh.mesh.sidecar import Sidecar, SidecarPorts
from kmesh.net import netns
from kmesh.net.netns_check import netns_usable
from tests.conftest import require, require_binary
from tests.support.cluster import Cluster, start_cluster
from tests.support.vethpair import veth_pair

pytestmark = pytest.mark.netns

POD_IP, PEER_IP = "10.250.9.1", "10.250.9.2"
VIP = "10.96.77.7"  # the Service's ClusterIP: routed out of the pod like any address, never answered by anyone
HTTP_PORTS = (8081, 8082)  # the two endpoints of the HTTP Service, both on the peer
TCP_PORT = 7000  # a line echo server on the peer (not HTTP)
TIMEOUT = 10


@dataclass
class Rig:
    pod: str
    peer: str
    sidecar: Sidecar
    cluster: Cluster


async def _serve_in(peer: str, port: int, serve: Callable[[trio.socket.SocketType], Awaitable[None]],
                    nursery: trio.Nursery) -> None:
    """Listen on PEER_IP:port inside ``peer`` and run ``serve`` for each connection, in ``nursery``."""
    sock = await netns.open_socket(peer, socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await sock.bind((PEER_IP, port))
    sock.listen(64)

    async def accept() -> None:
        with sock:
            while True:
                conn, _ = await sock.accept()
                nursery.start_soon(serve, conn)

    nursery.start_soon(accept)


async def _http_backend(peer: str, port: int, nursery: trio.Nursery) -> None:
    """Answers every request on a connection with ``port`` as the body (keep-alive); an upgrade request gets
    a 101 and then every byte echoed after ``port:`` (a stand-in for a WebSocket server)."""

    async def serve(conn: trio.socket.SocketType) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                if b"\r\nupgrade: websocket" in head.lower():
                    await conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                    b"Connection: Upgrade\r\n\r\n")
                    while data := buf or await conn.recv(65536):
                        buf = b""
                        await conn.send(b"%d:%b" % (port, data))
                    return
                body = str(port).encode()
                await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))

    await _serve_in(peer, port, serve, nursery)


async def _line_echo(peer: str, nursery: trio.Nursery) -> None:
    async def serve(conn: trio.socket.SocketType) -> None:
        with conn:
            while data := await conn.recv(65536):
                await conn.send(b"echo:" + data)

    await _serve_in(peer, TCP_PORT, serve, nursery)


SERVICES = f"""
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  clusterIP: {VIP}
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
  - {{name: other, port: 81, targetPort: 8080}}
  - {{name: tcp-echo, port: 7000, targetPort: 7000, appProtocol: tcp}}
  - {{name: none, port: 82, targetPort: 9999}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-a
  namespace: default
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{{name: http, port: {HTTP_PORTS[0]}, protocol: TCP}}, {{name: other, port: {HTTP_PORTS[0]}, protocol: TCP}},
        {{name: tcp-echo, port: {TCP_PORT}, protocol: TCP}}]
endpoints: [{{addresses: [{PEER_IP}], conditions: {{ready: true}}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-b
  namespace: default
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{{name: http, port: {HTTP_PORTS[1]}, protocol: TCP}}, {{name: other, port: {HTTP_PORTS[1]}, protocol: TCP}}]
endpoints: [{{addresses: [{PEER_IP}], conditions: {{ready: true}}}}]
"""


@pytest.fixture
async def rig(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Rig]:
    require(netns_usable(), "root and network namespaces")
    require_binary("iptables-restore")
    require_binary("kubectl")
    cluster = await start_cluster(nursery, tmp_path)
    await cluster.kubectl("apply", "-f", "-", stdin=SERVICES)
    with veth_pair("kmt-side-", f"{POD_IP}/30", f"{PEER_IP}/30") as (pod, peer):
        netns.ip(pod, "route", "add", "default", "via", PEER_IP)
        netns.ip(peer, "route", "add", "default", "via", POD_IP)
        await apply(pod, render(RedirectSpec(exclude_inbound_ports=(15001, 15006, 15020, 15021))))
        async with trio.open_nursery() as n:
            for port in HTTP_PORTS:
                await _http_backend(peer, port, n)
            await _line_echo(peer, n)

            async def pod_socket(family: int, type: int) -> trio.socket.SocketType:
                return await netns.open_socket(pod, family, type)

            sidecar = await n.start(Sidecar(cluster.client, pod_socket, SidecarPorts()).run)
            with trio.fail_after(TIMEOUT):  # the informers have listed; wait for the translation of all four ports
                while len(sidecar.table.by_address) < 4:
                    await trio.sleep(0.02)
            yield Rig(pod, peer, sidecar, cluster)
            n.cancel_scope.cancel()


async def _connect(rig: Rig, host: str, port: int) -> trio.SocketStream:
    sock = await netns.open_socket(rig.pod, socket.AF_INET, socket.SOCK_STREAM)
    await sock.connect((host, port))
    return trio.SocketStream(sock)


async def _get(stream: trio.SocketStream, buf: bytearray, host: str) -> bytes:
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: %b\r\n\r\n" % host.encode())
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        assert data, "closed before an answer"
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    size = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(rest) < size:
        data = await stream.receive_some(65536)
        assert data
        rest += data
    buf[:] = rest[size:]
    assert head.startswith(b"HTTP/1.1 200"), head
    return rest[:size]


@pytest.mark.parametrize("port", [80, 81])  # declared http by name; "other" is found by its first bytes
async def test_one_connection_is_balanced_per_request(rig: Rig, port: int) -> None:
    with trio.fail_after(TIMEOUT):
        stream = await _connect(rig, VIP, port)
        buf = bytearray()
        bodies = [await _get(stream, buf, "web") for _ in range(24)]
        await stream.aclose()
    # least request: with nothing in flight, a random one of the two (both unseen in 24: p = 2**-23)
    assert sorted(set(bodies)) == [str(p).encode() for p in HTTP_PORTS]
    opened = rig.sidecar.tcp_connections.labels("outbound", "http", "false")._value.get()
    assert opened >= 1


async def test_an_upgrade_becomes_a_tunnel_to_one_endpoint(rig: Rig) -> None:
    """A WebSocket handshake to the Service: the sidecar asks an endpoint for the upgrade, passes its 101 on
    and then relays bytes both ways on that endpoint."""
    with trio.fail_after(TIMEOUT):
        stream = await _connect(rig, VIP, 80)
        await stream.send_all(b"GET /chat HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += await stream.receive_some(65536)
        head, rest = buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101 ") and b"\r\nUpgrade: websocket" in head, head
        assert rest == b""
        replies = []
        for word in (b"one", b"two"):
            await stream.send_all(word)
            replies.append(await stream.receive_some(65536))
        await stream.aclose()
    port = replies[0].split(b":")[0]
    assert port in {str(p).encode() for p in HTTP_PORTS} and replies == [port + b":one", port + b":two"]


async def test_plain_tcp_is_relayed_to_an_endpoint(rig: Rig) -> None:
    with trio.fail_after(TIMEOUT):
        stream = await _connect(rig, VIP, 7000)
        await stream.send_all(b"hello\n")
        got = b""
        while not got.endswith(b"\n"):
            got += await stream.receive_some(100)
        await stream.send_eof()
        assert await stream.receive_some(100) == b""  # the half-close went through, and the answer ended
    assert got == b"echo:hello\n"


async def test_a_pod_ip_is_passed_through(rig: Rig) -> None:
    with trio.fail_after(TIMEOUT):
        stream = await _connect(rig, PEER_IP, HTTP_PORTS[1])
        assert await _get(stream, bytearray(), PEER_IP) == str(HTTP_PORTS[1]).encode()
        await stream.aclose()
    assert rig.sidecar.tcp_connections.labels("outbound", "passthrough", "false")._value.get() >= 1


async def test_no_ready_endpoint_is_refused(rig: Rig) -> None:
    with trio.fail_after(TIMEOUT):
        stream = await _connect(rig, VIP, 82)  # the redirect accepts; the sidecar then refuses with a reset
        with pytest.raises(trio.BrokenResourceError):
            await stream.send_all(b"x" * 10)
            while await stream.receive_some(100):
                pass


async def test_cancelling_the_sidecar_closes_what_it_held(tmp_path: Path, nursery: trio.Nursery) -> None:
    require(netns_usable(), "root and network namespaces")
    require_binary("iptables-restore")
    cluster = await start_cluster(nursery, tmp_path)
    await cluster.kubectl("apply", "-f", "-", stdin=SERVICES)
    with veth_pair("kmt-side-", f"{POD_IP}/30", f"{PEER_IP}/30") as (pod, peer):
        netns.ip(pod, "route", "add", "default", "via", PEER_IP)
        await apply(pod, render(RedirectSpec(exclude_inbound_ports=(15001, 15006, 15020, 15021))))
        async with trio.open_nursery() as backends:
            await _line_echo(peer, backends)

            async def pod_socket(family: int, type: int) -> trio.socket.SocketType:
                return await netns.open_socket(pod, family, type)

            with trio.fail_after(TIMEOUT):
                async with trio.open_nursery() as n:
                    sidecar = await n.start(Sidecar(cluster.client, pod_socket, SidecarPorts()).run)
                    while (VIP, 7000) not in sidecar.table.by_address:
                        await trio.sleep(0.02)
                    sock = await netns.open_socket(pod, socket.AF_INET, socket.SOCK_STREAM)
                    await sock.connect((VIP, 7000))
                    stream = trio.SocketStream(sock)
                    await stream.send_all(b"one\n")
                    assert await stream.receive_some(100) == b"echo:one\n"
                    n.cancel_scope.cancel()  # the sidecar stops: its relay of this connection must end too
                try:  # the relay ended: an end of stream or a reset, not a hang (fail_after)
                    while await stream.receive_some(100):
                        pass
                except trio.BrokenResourceError:
                    pass
                await stream.aclose()
                probe = await netns.open_socket(pod, socket.AF_INET, socket.SOCK_STREAM)
                with probe, pytest.raises(OSError):
                    await probe.connect(("127.0.0.1", 15001))  # nothing listens any more
            backends.cancel_scope.cancel()


async def test_admin_and_health_listen_in_the_pod_only(rig: Rig) -> None:
    from kmesh.net.http import http_get

    for port, path, want in ((15021, "/healthz/ready", b"ready\n"), (15020, "/metrics", b"kmesh_proxy_tcp")):
        sock = await netns.open_socket(rig.pod, socket.AF_INET, socket.SOCK_STREAM)
        with sock, trio.fail_after(TIMEOUT):
            status, body = await http_get(sock, "127.0.0.1", port, path)
        assert status == 200 and want in body
    root = socket.socket()
    with root, pytest.raises(OSError):
        root.settimeout(TIMEOUT)
        root.connect(("127.0.0.1", 15021))  # nothing of the sidecar's in the machine's own namespace


ROUTES = f"""
apiVersion: v1
kind: Service
metadata: {{name: web-b, namespace: default}}
spec:
  clusterIP: 10.96.77.8
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-b
  namespace: default
  labels: {{kubernetes.io/service-name: web-b}}
addressType: IPv4
ports: [{{name: http, port: {HTTP_PORTS[1]}, protocol: TCP}}]
endpoints: [{{addresses: [{PEER_IP}], conditions: {{ready: true}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: default}}
spec:
  parentRefs: [{{group: "", kind: Service, name: web, port: 80}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /b}}}}]
    backendRefs: [{{name: web-b, port: 80}}]
  - matches: [{{headers: [{{name: x-version, value: b}}]}}]
    backendRefs: [{{name: web-b, port: 80}}]
"""


async def test_a_route_attached_to_the_service_decides(rig: Rig) -> None:
    """GAMMA: an HTTPRoute whose parentRef is the Service takes over its HTTP; what matches no rule is 404."""
    await rig.cluster.kubectl("apply", "-f", "-", stdin=ROUTES)
    with trio.fail_after(TIMEOUT):
        while not any(e.rule.name.startswith("HTTPRoute default/web")
                      for ls in rig.sidecar.engine.config.listeners for e in ls.routes):
            await trio.sleep(0.02)  # the translation follows the watch
        stream = await _connect(rig, VIP, 80)
        for path, headers, want in (("/b/x", b"", b"8082"), ("/", b"x-version: b\r\n", b"8082")):
            await stream.send_all(b"GET %b HTTP/1.1\r\nHost: web\r\n%b\r\n" % (path.encode(), headers))
            buf = bytearray()
            while b"\r\n\r\n" not in buf or not buf.endswith(want):
                data = await stream.receive_some(65536)
                assert data, bytes(buf)
                buf += data
            assert buf.startswith(b"HTTP/1.1 200"), bytes(buf)
        await stream.send_all(b"GET /other HTTP/1.1\r\nHost: web\r\n\r\n")
        head = await stream.receive_some(65536)
        assert head.startswith(b"HTTP/1.1 404"), head
        await stream.aclose()
