"""A watcher that stops reading is dropped by the server, and kmesh's informer recovers by watching again."""

from __future__ import annotations

import subprocess
from pathlib import Path

import trio

from kmesh.client.api import Client
from kmesh.client.informer import Change, Informer
from tests.apiserver.rawhttp import wait_until
from tests.conftest import require_binary
from tests.support.cluster import start_cluster

OBJECTS = 600
VALUE = "v" * 16 * 1024  # 600 x 16 KiB: more than the socket buffers hold, so the server's writes stall


def _server_side(port: int, client_port: int) -> bool:
    """Whether the server still has the connection from ``client_port`` open (once closed it is FIN-WAIT)."""
    out = subprocess.run([require_binary("ss"), "-Htan", "state", "established",
                          f"( sport = :{port} and dport = :{client_port} )"], capture_output=True, text=True, check=True).stdout
    return any(line.strip() for line in out.splitlines())


def _close_wait(port: int) -> int:
    out = subprocess.run([require_binary("ss"), "-Htan", "state", "close-wait", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return len([line for line in out.splitlines() if line.strip()])


def _watch_ports(port: int) -> set[int]:
    """Client ports of the established connections to the server."""
    out = subprocess.run([require_binary("ss"), "-Htan", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return {int(line.split()[2].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}


async def test_a_stalled_informer_is_dropped_and_watches_again(nursery: trio.Nursery, tmp_path: Path) -> None:
    api = await start_cluster(nursery, tmp_path, write_stall=1.0)
    port = int(api.server.url.rsplit(":", 1)[1])
    client = api.client
    watching = Client(client.creds)  # a pool of its own: its one connection is the watch's
    release = trio.Event()
    first_seen = trio.Event()

    async def stuck_handler(change: Change) -> None:
        if change.obj["metadata"]["name"] == "cm-0":
            first_seen.set()
            await release.wait()  # the informer reads nothing until released

    try:
        await client.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "before"}})
        before = _watch_ports(port)
        informer = Informer(watching, "ConfigMap", namespace="default", handlers=[stuck_handler])
        await nursery.start(informer.run)
        with trio.fail_after(120):
            await wait_until(lambda: len(_watch_ports(port) - before) == 1, "the informer's watch connected")
            (watch_port,) = _watch_ports(port) - before
            for i in range(OBJECTS):
                await client.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i}"},
                                     "data": {"k": VALUE}})
            await first_seen.wait()
            await wait_until(lambda: not _server_side(port, watch_port), "the server dropped the stalled watch")
            relists = informer.relists
            release.set()
            await informer.wait_for(lambda inf: len(inf.cache) == OBJECTS + 1)
        assert {name for _, name in informer.cache} == {"before", *(f"cm-{i}" for i in range(OBJECTS))}
        assert informer.relists == relists  # it watched again from its resourceVersion, without a list
    finally:
        release.set()
        await watching.aclose()
        await client.aclose()


async def test_a_watch_the_client_closes_ends_on_the_server(nursery: trio.Nursery, tmp_path: Path) -> None:
    api = await start_cluster(nursery, tmp_path)
    port = int(api.server.url.rsplit(":", 1)[1])
    store = api.server.registry.store
    creds = api.client.creds
    try:
        baseline = store.active_watches
        stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=creds.ssl_context(),
                                                     https_compatible=True)
        await stream.send_all(f"GET /api/v1/namespaces/default/configmaps?watch=1 HTTP/1.1\r\nHost: x\r\n"
                              f"Authorization: Bearer {creds.token}\r\n\r\n".encode())
        with trio.fail_after(30):
            assert b" 200 " in await stream.receive_some(65536)
            await wait_until(lambda: store.active_watches == baseline + 1, "the watch started")
            await stream.aclose()  # the client goes away while the watch is idle (no event to write)
            await wait_until(lambda: store.active_watches == baseline, "the server ended the watch")
            await wait_until(lambda: not _watch_ports(port) and not _close_wait(port), "the server closed its socket")
    finally:
        await api.client.aclose()

