"""The namespace helpers every lab part builds on, against real namespaces."""

from __future__ import annotations

import os
import socket
import uuid

import pytest
import trio

from kmesh.net import netns
from kmesh.net.netns_check import netns_usable
from tests.conftest import require

pytestmark = pytest.mark.netns


@pytest.fixture
def two_ns():
    require(netns_usable(), "root and network namespaces")
    tag = uuid.uuid4().hex[:6]
    a, b = f"kmt-{tag}-a", f"kmt-{tag}-b"
    try:
        netns.add(a)
        netns.add(b)
        yield a, b
    finally:
        netns.delete(a)
        netns.delete(b)


async def test_veth_and_socket_inside(two_ns) -> None:
    a, b = two_ns
    netns.add_veth(a, "v-a", b, "v-b")
    netns.ip(a, "addr", "add", "10.9.0.1/24", "dev", "v-a")
    netns.ip(b, "addr", "add", "10.9.0.2/24", "dev", "v-b")
    assert "v-a" in netns.ip(a, "link", "show")
    assert "v-a" not in netns.ip(b, "link", "show")
    server = await netns.open_socket(b)
    await server.bind(("10.9.0.2", 0))
    server.listen()
    port = server.getsockname()[1]
    client = await netns.open_socket(a)
    with trio.fail_after(5):
        await client.connect(("10.9.0.2", port))
        conn, peer = await server.accept()
    assert peer[0] == "10.9.0.1"
    for s in (server, client, conn):
        s.close()
    out = await netns.run(a, ["ip", "-o", "addr", "show", "dev", "v-a"])
    assert b"10.9.0.1/24" in out.stdout


async def test_entered_restores_and_names(two_ns) -> None:
    a, _ = two_ns
    before = os.readlink("/proc/thread-self/ns/net")
    with netns.entered(a):
        inside = os.readlink("/proc/thread-self/ns/net")
        assert socket.if_nameindex() == [(1, "lo")]
    assert inside != before
    assert os.readlink("/proc/thread-self/ns/net") == before
    assert a in netns.names(a[:10])
    with pytest.raises(netns.NetnsError, match="does not exist"):
        with netns.entered(a + "-nope"):
            pass


async def test_delete_is_idempotent_and_removes_etc(two_ns) -> None:
    a, _ = two_ns
    p = netns.write_etc(a, "resolv.conf", "nameserver 10.96.0.10\n")
    out = await trio.run_process(netns.exec_argv(a, ["cat", "/etc/resolv.conf"]), capture_stdout=True)
    assert out.stdout == b"nameserver 10.96.0.10\n"
    assert netns.delete(a) is True
    assert not p.exists()
    assert netns.delete(a) is False
