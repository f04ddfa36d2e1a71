"""A small TCP forwarder: what one listener accepts is relayed to one fixed address, maybe in another namespace.

The netns lab uses it to make endpoints that live inside a node's namespace
(a kubelet's or a kube-proxy's ``/metrics``) reachable on the machine's
loopback without an address, route or rule in the root namespace: the
listener is a socket made in the root namespace, and each accepted
connection gets a peer socket made inside the node's namespace
(``connect_socket``, e.g. a ``NamespaceSockets``). Bytes move with
``kmesh.net.pump``, as in the proxy's relays.
"""

from __future__ import annotations

import logging
import socket

import trio

from kmesh.net.pump import pump
from kmesh.net.sockets import OpenSocket, default_open_socket, family_of

log = logging.getLogger("kmesh.net.portforward")
CONNECT_TIMEOUT = 5.0


async def _one(client: trio.SocketStream, host: str, port: int, connect_socket: OpenSocket) -> None:
    async with client:
        sock = await connect_socket(family_of(host), socket.SOCK_STREAM)
        try:
            with trio.move_on_after(CONNECT_TIMEOUT) as scope:
                await sock.connect((host, port))
        except OSError:
            sock.close()
            return
        if scope.cancelled_caught:
            sock.close()
            return
        with sock:
            try:
                async with trio.open_nursery() as n:
                    n.start_soon(pump, client.socket, sock)
                    n.start_soon(pump, sock, client.socket)
            except* (trio.ClosedResourceError, OSError):
                pass  # either side went away: the other is closed on the way out


async def forward(
    listener: trio.socket.SocketType, host: str, port: int, connect_socket: OpenSocket = default_open_socket,
    *, task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Relay every connection accepted on ``listener`` (already listening) to ``host:port`` until cancelled.

    The peer socket of each connection comes from ``connect_socket``; a
    connection whose peer cannot be reached is closed at once, and no
    failure of one connection stops the others."""

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await _one(stream, host, port, connect_socket)
        except Exception as exc:  # noqa: BLE001 - e.g. the peer's namespace is gone: this connection ends
            log.debug("forward to %s:%d: %r", host, port, exc)

    listeners = [trio.SocketListener(listener)]
    await trio.serve_listeners(handle, listeners, task_status=task_status)  # type: ignore[arg-type]
