"""The mesh's redirect rules: their text, the proxy-init app, and what they do to real packets.

The real tests make a "pod" and a "peer" namespace joined by a veth, load the
rules into the pod's nat table through the ``kmesh/proxy-init`` app, and send
TCP and UDP across: redirected connections land on the sidecar's ports with
their original destination readable by SO_ORIGINAL_DST, the rest go straight.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from kmesh.mesh.origdst import conntrack_dst, mark_socket, original_dst
from kmesh.mesh.redirect import RedirectSpec, parse_ports, render
from kmesh.net import netns
from kmesh.net.netns_check import netns_usable
from kmesh.node.apps import AppContext, lookup
from kmesh.node.netns_runtime import NetnsSandbox
from kmesh.node.runtime import Sandbox
from tests.conftest import require, require_binary
from tests.support.vethpair import veth_pair

POD_IP, PEER_IP = "10.250.7.1", "10.250.7.2"
SPEC_ARGS = ["--exclude-inbound-ports=15021", "--exclude-outbound-ports=8443"]
TIMEOUT = 5


# ---------------------------------------------------------------------- the text


def test_render_puts_the_chains_in_istio_init_order() -> None:
    text = render(RedirectSpec(exclude_inbound_ports=(15021, 15090), exclude_outbound_ports=(8443,)))
    lines = text.splitlines()
    assert lines[0] == "*nat" and lines[-1] == "COMMIT" and text.endswith("\n")
    for chain in ("KMESH_INBOUND", "KMESH_IN_REDIRECT", "KMESH_OUTPUT", "KMESH_REDIRECT"):
        assert f":{chain} - [0:0]" in lines
    rules = [line for line in lines if line.startswith("-A ")]
    assert rules == [
        "-A PREROUTING -p tcp -j KMESH_INBOUND",
        "-A KMESH_INBOUND -p tcp --dport 15021 -j RETURN",
        "-A KMESH_INBOUND -p tcp --dport 15090 -j RETURN",
        "-A KMESH_INBOUND -p tcp -j KMESH_IN_REDIRECT",
        "-A KMESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A OUTPUT -p tcp -j KMESH_OUTPUT",
        "-A KMESH_OUTPUT -m mark --mark 0x539 -j RETURN",
        "-A KMESH_OUTPUT -o lo -j RETURN",
        "-A KMESH_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "-A KMESH_OUTPUT -p tcp --dport 8443 -j RETURN",
        "-A KMESH_OUTPUT -j KMESH_REDIRECT",
        "-A KMESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
    ]
    assert "udp" not in text


def test_render_uses_the_spec_ports_and_mark() -> None:
    text = render(RedirectSpec(inbound_port=16006, outbound_port=16001, mark=0x10))
    assert "-A KMESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 16006" in text
    assert "-A KMESH_REDIRECT -p tcp -j REDIRECT --to-ports 16001" in text
    assert "-A KMESH_OUTPUT -m mark --mark 0x10 -j RETURN" in text
    assert "--dport" not in text
    with pytest.raises(ValueError, match="70000"):
        render(RedirectSpec(exclude_outbound_ports=(70000,)))


def test_parse_ports() -> None:
    assert parse_ports("") == ()
    assert parse_ports("15021") == (15021,)
    assert parse_ports("15021, 15090,22") == (15021, 15090, 22)
    for text, bad in (("80,http", "'http'"), ("80,,81", "''"), ("0", "'0'"), ("65536", "'65536'"), ("-1", "'-1'")):
        with pytest.raises(ValueError, match=bad):
            parse_ports(text)


# ---------------------------------------------------------------------- the app without a namespace


def _ctx(tmp_path: Path, sandbox: Sandbox, args: list[str]) -> AppContext:
    return AppContext(pod={}, container={}, args=args, env={}, sandbox=sandbox,
                      log_path=tmp_path / "init.log", hostname="pod")


async def _run_app(tmp_path: Path, sandbox: Sandbox, args: list[str]) -> tuple[int | None, str]:
    app = lookup("docker.io/kmesh/proxy-init:1.0")
    assert app is not None and app.entrypoints == ("kmesh-proxy-init",)
    ctx = _ctx(tmp_path, sandbox, args)
    try:
        code = await app.resolve()(ctx)
    finally:
        ctx.close()
    return code, (tmp_path / "init.log").read_text()


async def test_app_without_a_namespace_fails_and_says_why(tmp_path: Path) -> None:
    sim = Sandbox("uid", "default", "web", "127.0.0.1", "127.0.0.1", tmp_path, "web")  # the sim runtime's kind
    code, log = await _run_app(tmp_path, sim, SPEC_ARGS)
    assert code == 1
    assert "no network namespace" in log and "-A " not in log


async def test_app_on_a_host_network_pod_refuses(tmp_path: Path) -> None:
    host = NetnsSandbox("uid", "default", "web", "10.0.0.1", "0.0.0.0", tmp_path, "web", netns=None, host_network=True)
    code, log = await _run_app(tmp_path, host, [])
    assert code == 1 and "no network namespace" in log


@pytest.mark.parametrize("args, flag", [
    (["--mark=banana"], "--mark"),
    (["--exclude-outbound-ports=80,x"], "--exclude-outbound-ports"),
    (["--exclude-inbound-ports=99999"], "--exclude-inbound-ports"),
    (["--inbound-port=0"], "--inbound-port"),
    (["--outbound-port=abc"], "-outbound-port"),
    (["--no-such-flag=1"], "-no-such-flag"),
])
async def test_app_with_a_bad_flag_exits_2_naming_it(tmp_path: Path, args: list[str], flag: str) -> None:
    code, log = await _run_app(tmp_path, Sandbox("uid", "default", "web", "127.0.0.1", "127.0.0.1", tmp_path, "web"),
                               args)
    assert code == 2
    assert log.startswith("Error: ") and flag in log


# ---------------------------------------------------------------------- real namespaces


@dataclass
class Pod:
    """The pod namespace (rules applied) and its peer."""

    pod: str
    peer: str


def _require_real() -> None:
    require(netns_usable(), "root and network namespaces")
    require_binary("iptables-restore")
    require_binary("iptables-save")


@pytest.fixture
def pair() -> Iterator[Pod]:
    _require_real()
    with veth_pair("kmt-mesh-", f"{POD_IP}/30", f"{PEER_IP}/30", a_dev="eth0", b_dev="eth0") as (pod, peer):
        # default routes inside the two test namespaces only (never in the root one)
        netns.ip(pod, "route", "add", "default", "via", PEER_IP)
        netns.ip(peer, "route", "add", "default", "via", POD_IP)
        yield Pod(pod, peer)


@pytest.fixture
async def meshed(pair: Pod, tmp_path: Path) -> AsyncIterator[Pod]:
    """The pair with the rules loaded into the pod by the app (its NetnsSandbox, as the netns runtime makes)."""
    sandbox = NetnsSandbox("uid", "default", "web", POD_IP, "0.0.0.0", tmp_path, "web", netns=pair.pod)
    code, log = await _run_app(tmp_path, sandbox, SPEC_ARGS)
    assert code == 0, log
    assert f"network namespace {pair.pod}" in log
    assert "-A KMESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in log  # `kubectl logs -c kmesh-init` shows it
    yield pair


async def _nat(ns: str) -> list[str]:
    out = (await netns.run(ns, ["iptables-save", "-t", "nat"])).stdout.decode()
    return [line for line in out.splitlines() if not line.startswith("#")]


async def _listener(ns: str, port: int, host: str = "0.0.0.0") -> trio.socket.SocketType:
    sock = await netns.open_socket(ns)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await sock.bind((host, port))
    sock.listen(16)
    return sock


async def _connect(ns: str, addr: tuple[str, int], *, mark: int | None = None) -> trio.socket.SocketType:
    sock = await netns.open_socket(ns)
    if mark is not None:
        mark_socket(sock, mark)
    await sock.connect(addr)
    return sock


async def _exchange(client: trio.socket.SocketType, listener: trio.socket.SocketType) -> trio.socket.SocketType:
    """Accept the client's connection on ``listener`` and pass a line each way; the accepted socket."""
    conn, peer = await listener.accept()
    assert peer == client.getsockname()  # this very client, not another connection
    await client.send(b"ping\n")
    assert await conn.recv(16) == b"ping\n"
    await conn.send(b"pong\n")
    assert await client.recv(16) == b"pong\n"
    return conn


@pytest.mark.netns
async def test_applying_twice_gives_the_same_table(pair: Pod, tmp_path: Path) -> None:
    sandbox = NetnsSandbox("uid", "default", "web", POD_IP, "0.0.0.0", tmp_path, "web", netns=pair.pod)
    saved = []
    for run in ("first", "again"):  # an init container may run again
        (tmp_path / run).mkdir()
        code, log = await _run_app(tmp_path / run, sandbox, SPEC_ARGS)
        assert code == 0, log
        saved.append(await _nat(pair.pod))
    assert saved[0] == saved[1]
    rules = [line for line in saved[0] if line.startswith("-A ")]
    assert rules[:2] == ["-A PREROUTING -p tcp -j KMESH_INBOUND", "-A OUTPUT -p tcp -j KMESH_OUTPUT"]
    assert "-A KMESH_OUTPUT -m mark --mark 0x539 -j RETURN" in rules
    assert "-A KMESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in rules
    assert sum("REDIRECT --to-ports" in line for line in rules) == 2  # not doubled
    assert not any("KMESH" in line for line in await _nat(pair.peer))  # only the pod got them


@pytest.mark.netns
async def test_outbound_goes_to_15001_with_its_original_destination(meshed: Pod) -> None:
    with trio.fail_after(TIMEOUT):
        sidecar = await _listener(meshed.pod, 15001)
        server = await _listener(meshed.peer, 8080)  # a real server there: the redirect still wins
        with sidecar, server:
            client = await _connect(meshed.pod, (PEER_IP, 8080))
            with client:
                assert client.getpeername() == (PEER_IP, 8080)  # the app sees no NAT
                with await _exchange(client, sidecar) as conn:
                    assert original_dst(conn) == (PEER_IP, 8080)
                    assert conn.getsockname() == ("127.0.0.1", 15001)  # REDIRECT of a local packet: to 127.0.0.1
            # (b) the sidecar's own socket, marked, reaches the real server
            marked = await _connect(meshed.pod, (PEER_IP, 8080), mark=0x539)
            with marked, await _exchange(marked, server) as conn:
                assert conn.getpeername() == (POD_IP, marked.getsockname()[1])
                with pytest.raises(OSError) as err:
                    conntrack_dst(conn)  # the peer has no nat rules: conntrack knows nothing
                assert err.value.errno == errno.ENOENT


@pytest.mark.netns
async def test_excluded_outbound_port_and_loopback_go_straight(meshed: Pod) -> None:
    with trio.fail_after(TIMEOUT):
        sidecar = await _listener(meshed.pod, 15001)
        server = await _listener(meshed.peer, 8443)
        local = await _listener(meshed.pod, 7070, "127.0.0.1")
        with sidecar, server, local:
            client = await _connect(meshed.pod, (PEER_IP, 8443))
            with client, await _exchange(client, server):
                pass
            # traffic inside the pod stays direct
            client = await _connect(meshed.pod, ("127.0.0.1", 7070))
            with client, await _exchange(client, local) as conn:
                with pytest.raises(OSError):
                    original_dst(conn)


@pytest.mark.netns
async def test_inbound_goes_to_15006_except_excluded_ports(meshed: Pod) -> None:
    with trio.fail_after(TIMEOUT):
        sidecar = await _listener(meshed.pod, 15006)
        health = await _listener(meshed.pod, 15021)
        with sidecar, health:
            client = await _connect(meshed.peer, (POD_IP, 9090))  # nothing listens on 9090 in the pod
            with client, await _exchange(client, sidecar) as conn:
                assert original_dst(conn) == (POD_IP, 9090)
                assert conn.getsockname() == (POD_IP, 15006)  # REDIRECT in PREROUTING: the arriving link's address
            client = await _connect(meshed.peer, (POD_IP, 15021))
            with client, await _exchange(client, health) as conn:
                # conntrack (on in the pod since it has nat rules) answers with the connection's own address
                assert conntrack_dst(conn) == (POD_IP, 15021)
                with pytest.raises(OSError) as err:
                    original_dst(conn)
                assert err.value.errno == errno.ENOENT


@pytest.mark.netns
async def test_udp_is_not_redirected(meshed: Pod) -> None:
    with trio.fail_after(TIMEOUT):
        receiver = await netns.open_socket(meshed.peer, socket.AF_INET, socket.SOCK_DGRAM)
        sender = await netns.open_socket(meshed.pod, socket.AF_INET, socket.SOCK_DGRAM)
        with receiver, sender:
            await receiver.bind(("0.0.0.0", 53))
            await sender.sendto(b"dns?", (PEER_IP, 53))
            data, src = await receiver.recvfrom(64)
            assert data == b"dns?" and src == (POD_IP, sender.getsockname()[1])
