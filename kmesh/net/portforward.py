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
from collections.abc import Sequence

import trio

from kmesh.net.pump import pump
from kmesh.net.sockets import OpenSocket, default_open_socket, family_of

log = logging.getLogger("kmesh.net.portforward")
CONNECT_TIMEOUT = 5.0


class Failover:
    """Where a forwarder may connect, in order of preference: the first that answers takes the connection.

    One that fails goes to the back of the line, so later connections try the
    others first (how k3s's agent load balancer treats API servers)."""

    def __init__(self, targets: Sequence[tuple[str, int]]) -> None:
        self._targets = list(dict.fromkeys(targets))

    def order(self) -> list[tuple[str, int]]:
        """The targets, preferred first."""
        return list(self._targets)

    def replace(self, targets: Sequence[tuple[str, int]]) -> None:
        """A new set of targets; those known keep their place, new ones go to the back, gone ones leave."""
        want = list(dict.fromkeys(targets))
        if want:
            self._targets = [t for t in self._targets if t in want] + [t for t in want if t not in self._targets]

    def failed(self, target: tuple[str, int]) -> None:
        """``target`` did not answer: try it last from now on."""
        if target in self._targets and len(self._targets) > 1:
            self._targets.remove(target)
            self._targets.append(target)


async def _connect(host: str, port: int, connect_socket: OpenSocket) -> trio.socket.SocketType | None:
    sock = await connect_socket(family_of(host), socket.SOCK_STREAM)
    try:
        with trio.move_on_after(CONNECT_TIMEOUT) as scope:
            await sock.connect((host, port))
    except OSError:
        sock.close()
        return None
    if scope.cancelled_caught:
        sock.close()
        return None
    return sock


async def _one(client: trio.SocketStream, targets: Failover, connect_socket: OpenSocket) -> None:
    async with client:
        sock = None
        for host, port in targets.order():
            sock = await _connect(host, port, connect_socket)
            if sock is not None:
                break
            targets.failed((host, port))
        if sock is None:
            return
        with sock:
            try:
                async with trio.open_nursery() as n:
                    n.start_soon(pump, client.socket, sock)
                    n.start_soon(pump, sock, client.socket)
            except* (trio.ClosedResourceError, OSError):
                pass  # either side went away: the other is closed on the way out


async def forward(
    listener: trio.socket.SocketType, host: str | Failover, port: int = 0, connect_socket: OpenSocket = default_open_socket,
    *, task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Relay every connection accepted on ``listener`` (already listening) to ``host:port`` until cancelled;
    ``host`` may be a ``Failover``, whose targets are tried in its order.

    The peer socket of each connection comes from ``connect_socket``; a
    connection whose peer cannot be reached is closed at once, and no
    failure of one connection stops the others."""
    targets = host if isinstance(host, Failover) else Failover([(host, port)])

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await _one(stream, targets, connect_socket)
        except Exception as exc:  # noqa: BLE001 - e.g. the peer's namespace is gone: this connection ends
            log.debug("forward to %s: %r", targets.order(), exc)

    listeners = [trio.SocketListener(listener)]
    await trio.serve_listeners(handle, listeners, task_status=task_status)  # type: ignore[arg-type]
