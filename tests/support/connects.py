"""One TCP connection attempt from inside a network namespace, for tests that tell allowed from denied."""

from __future__ import annotations

import trio

from kmesh.net import netns


async def connects(ns: str, ip: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a TCP connection from namespace ``ns`` to ip:port is accepted within ``timeout`` (a drop, a
    refusal or a reject: not)."""
    sock = await netns.open_socket(ns)
    with sock:
        with trio.move_on_after(timeout):
            try:
                await sock.connect((ip, port))
                return True
            except OSError:
                return False
    return False
