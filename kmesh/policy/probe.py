"""One connection attempt from inside a network namespace: what ``explain`` sends to see the kernel decide.

TCP: a connect within the timeout (a dropped SYN times out; a refusal is an
answer, so it counts as reached). UDP: a datagram and an answer within the
timeout (``serve-hostname``-style servers answer every datagram; a drop and a
silent server look the same).
"""

from __future__ import annotations

import socket

import trio

from kmesh.net import netns


async def reaches(ns: str | None, ip: str, port: int, protocol: str = "TCP", timeout: float = 1.0) -> bool:
    """Whether ``ip``:``port`` answers a connection from namespace ``ns`` (None: this one) within ``timeout``."""
    udp = protocol.upper() == "UDP"
    sock = await netns.open_socket(ns, socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    with sock:
        with trio.move_on_after(timeout):
            try:
                await sock.connect((ip, port))
                if not udp:
                    return True
                await sock.send(b"hostname")
                await sock.recv(512)
                return True
            except ConnectionRefusedError:
                return not udp  # TCP: the host answered (with a reset); UDP: an ICMP error, nobody listens
            except OSError:
                return False
    return False
