"""Run the cluster DNS server: informers → snapshot → prepared answers, served over UDP and TCP on trio.

``run_dns(client, cfg)`` is the whole server in one task tree: the shared
informers (the only source of cluster data), a rebuild task that turns their
changes into a new snapshot and prepared answers, UDP loops (batched
non-blocking reads), TCP listeners, the upstream forwarder, the metrics
endpoint and, with ``cfg.workers > 1``, SO_REUSEPORT worker processes.
"""

from __future__ import annotations

import functools
import json
import logging
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field

import trio

from kmesh.client.api import Client
from kmesh.client.informer import Change, Informer
from kmesh.dns import mmsg
from kmesh.dns.config import DNSConfig, parse_hostport
from kmesh.dns.forward import Forwarder
from kmesh.dns.metrics import Stats, registry_for, serve_metrics
from kmesh.dns.model import Snapshot, SnapshotBuilder
from kmesh.dns.resolver import Pending, Resolver

log = logging.getLogger("kmesh.dns")
OpenSocket = Callable[[int, int], Awaitable[trio.socket.SocketType]]
BATCH = 64
# TCP deadlines, miekg/dns's defaults that CoreDNS serves with: the first message (length prefix and
# body) must arrive within TCP_READ_TIMEOUT of the accept, each later one within TCP_IDLE_TIMEOUT of the
# previous answer, and an answer must be taken within TCP_WRITE_TIMEOUT. A deadline bounds the whole
# message, not the gap between two bytes, so a client dribbling bytes cannot hold a connection.
TCP_READ_TIMEOUT = 2.0
TCP_IDLE_TIMEOUT = 8.0
TCP_WRITE_TIMEOUT = 2.0


@dataclass
class RunningDNS:
    """A started server: where it listens, its resolver, and waits tests and tools can await."""

    addresses: list[tuple[str, int]]
    resolver: Resolver
    metrics_port: int | None
    informers: list[Informer]
    _changed: trio.Condition = field(default_factory=trio.Condition)

    async def wait_for(self, predicate: Callable[[Snapshot], bool]) -> None:
        """Return once the snapshot being served satisfies ``predicate`` (answers are current from then on)."""
        async with self._changed:
            while self.resolver.snapshot is None or not predicate(self.resolver.snapshot):
                await self._changed.wait()

    async def wait_synced(self) -> None:
        """Return once the first snapshot (after every informer listed) is served."""
        await self.wait_for(lambda s: True)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()


async def _bind(host: str, port: int, kind: int, reuseport: bool, open_socket: OpenSocket | None) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if open_socket is not None:
        tsock = await open_socket(family, kind)
        sock = socket.socket(family, kind, fileno=tsock.detach())
    else:
        sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_DGRAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(512)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_udp(sock: socket.socket, resolver: Resolver, nursery: trio.Nursery, *, batched: bool = True) -> None:
    """Answer datagrams: drain the socket in batches between waits; slow answers finish in their own task."""
    recv, send, handle = sock.recvfrom, sock.sendto, resolver.handle

    async def finish(p: Pending, addr: tuple[str, int]) -> None:
        out = await resolver.finish(p)
        if out:
            try:
                send(out, addr)
            except OSError:
                pass

    def slow(data: bytes, addr: tuple[str, int]) -> bytes | None:
        out = handle(data, addr[0], False)
        if out is None or out.__class__ is bytes:
            return out  # type: ignore[return-value]
        nursery.start_soon(finish, out, addr)
        return None

    try:
        if batched and mmsg.available():
            batch = mmsg.Batch(sock, BATCH)
            fast = resolver.fast
            while True:
                await trio.lowlevel.wait_readable(sock)  # also the checkpoint that lets other tasks run
                for _ in range(64):  # read until the socket is empty (cheaper than another trip through trio)
                    if not batch.serve(fast, slow):
                        break
                else:
                    await trio.lowlevel.checkpoint()
        while True:
            await trio.lowlevel.wait_readable(sock)
            for _ in range(BATCH):
                try:
                    data, addr = recv(65535)
                except BlockingIOError:
                    break
                except OSError:
                    continue  # ICMP errors surfacing on the socket
                out = slow(data, addr)
                if out is not None:
                    try:
                        send(out, addr)
                    except OSError:
                        pass  # send buffer full: drop, as any UDP server under overload
            else:
                await trio.lowlevel.checkpoint()
    finally:
        sock.close()


async def _read_message(stream: trio.SocketStream, buf: bytearray) -> bytes | None:
    """One length-prefixed message out of ``buf`` + the stream (None: the client closed first)."""
    while len(buf) < 2 or len(buf) < 2 + int.from_bytes(buf[:2], "big"):
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        buf += chunk
    n = int.from_bytes(buf[:2], "big")
    msg = bytes(buf[2:2 + n])
    del buf[:2 + n]
    return msg


async def _tcp_conn(stream: trio.SocketStream, resolver: Resolver, read_timeout: float, idle_timeout: float,
                    write_timeout: float) -> None:
    try:
        peer = stream.socket.getpeername()[0]
    except OSError:
        await trio.aclose_forcefully(stream)
        return
    buf = bytearray()
    timeout = read_timeout
    async with stream:
        try:
            while True:
                msg = None
                with trio.move_on_after(timeout):
                    msg = await _read_message(stream, buf)
                if msg is None:
                    return  # the whole message did not arrive in time, or the client closed
                out = resolver.handle(msg, peer, True)
                if isinstance(out, Pending):
                    out = await resolver.finish(out)
                if out is None:
                    return  # silently dropped: close, as CoreDNS does
                with trio.move_on_after(write_timeout) as writing:
                    await stream.send_all(struct.pack("!H", len(out)) + out)
                if writing.cancelled_caught:
                    return
                timeout = idle_timeout
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return


async def serve_tcp(sock: socket.socket, resolver: Resolver, *, read_timeout: float = TCP_READ_TIMEOUT,
                    idle_timeout: float = TCP_IDLE_TIMEOUT, write_timeout: float = TCP_WRITE_TIMEOUT) -> None:
    """Answer length-prefixed messages on TCP connections (several per connection), each message within
    its deadline (``read_timeout`` for the first, ``idle_timeout`` after an answer), else close."""
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    await trio.serve_listeners(
        lambda s: _tcp_conn(s, resolver, read_timeout, idle_timeout, write_timeout), [listener])


PREPARE_SLICE = 0.002
"""Seconds of answer preparation between two turns of the scheduler (queries and watch events go on meanwhile)."""
REBUILD_SHARE = 1 / 3
"""Share of a CPU that rebuilds may take over a long burst of changes."""
REBUILD_BURST = 0.1
"""Seconds of rebuilding allowed back to back before the share applies (isolated changes never wait)."""


async def _keep_current(resolver: Resolver, informers: list[Informer], running: RunningDNS,
                        dirty: list[trio.Event]) -> None:
    """Rebuild the snapshot after changes (at once, paced only in a long burst); prepare hot answers in slices."""
    for inf in informers:
        await inf.synced.wait()
    builder = SnapshotBuilder()
    by = {inf.kind.kind: inf for inf in informers}
    budget, last = REBUILD_BURST, time.perf_counter()
    while True:
        dirty[0] = trio.Event()
        started = time.perf_counter()
        snap = builder.build(
            by["Service"].cache.values(), by["EndpointSlice"].cache.values(), by["Namespace"].cache.values(),
            by["Pod"].cache.values() if "Pod" in by else (),
        )
        changed = resolver.install(snap)
        last = time.perf_counter()
        budget -= last - started
        await running._notify()
        if changed:
            await _prepare(resolver, dirty)
        await dirty[0].wait()
        await trio.sleep(0)  # events that arrived together land in the same rebuild
        now = time.perf_counter()
        budget, last = min(REBUILD_BURST, budget + (now - last) * REBUILD_SHARE), now
        if budget < 0:
            await trio.sleep(-budget / REBUILD_SHARE)
            budget, last = 0.0, time.perf_counter()


async def _prepare(resolver: Resolver, dirty: list[trio.Event]) -> None:
    """Encode the hot answers of the installed snapshot, a slice at a time, until done or the data changes."""
    gen = resolver.generation
    names = resolver.hot_names()
    i = 0
    while i < len(names):
        if resolver.generation != gen or dirty[0].is_set():
            return
        until = time.perf_counter() + PREPARE_SLICE
        while i < len(names) and time.perf_counter() < until:
            resolver.prepare(names[i:i + 4])
            i += 4
        await trio.lowlevel.checkpoint()


def _worker_argv(cfg: DNSConfig, addresses: list[tuple[str, int]]) -> list[str]:
    wcfg = asdict(cfg)
    wcfg.update(workers=1, metrics_port=None, listen=[f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in addresses])
    return [sys.executable, "-m", "kmesh.dns.worker", json.dumps(wcfg)]


async def run_dns(
    client: Client, cfg: DNSConfig, *, open_socket: OpenSocket | None = None, spawn_workers: bool = True,
    task_status: trio.TaskStatus[RunningDNS] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve cluster DNS until cancelled; ``task_status`` gets a ``RunningDNS`` once the sockets are bound.

    Until every informer has listed once, cluster names get SERVFAIL (never a
    false NXDOMAIN). ``open_socket`` makes sockets somewhere else (a pod's
    network namespace); by default they are plain host sockets.
    """
    ups = cfg.upstream_addresses()
    forwarder = Forwarder(ups, timeout=cfg.forward_timeout, cache_size=cfg.cache_size) if ups else None
    hosts = [parse_hostport(a) for a in cfg.listen]
    ns_ips = tuple(h for h, _ in hosts if h not in ("0.0.0.0", "::")) or ("127.0.0.1",)
    stats = Stats(f"dns://:{hosts[0][1]}", cfg.zone)
    resolver = Resolver(cfg, stats, forwarder, ns_ips)
    dirty = [trio.Event()]

    def on_change(_: Change) -> None:
        dirty[0].set()

    kinds = ["Service", "EndpointSlice", "Namespace"] + (["Pod"] if cfg.pods == "verified" else [])
    informers = [Informer(client, k, handlers=[on_change]) for k in kinds]
    reuse = cfg.workers > 1
    async with trio.open_nursery() as n:
        addresses: list[tuple[str, int]] = []
        for host, want in hosts:
            for attempt in range(50):  # port 0: find one free for both UDP and TCP
                udp = await _bind(host, want, socket.SOCK_DGRAM, reuse, open_socket)
                port = udp.getsockname()[1]
                try:
                    tcp = await _bind(host, port, socket.SOCK_STREAM, reuse, open_socket)
                    break
                except OSError:
                    udp.close()
                    if want or attempt == 49:
                        raise
                except BaseException:
                    udp.close()
                    raise
            addresses.append((host, port))
            n.start_soon(serve_udp, udp, resolver, n)
            n.start_soon(serve_tcp, tcp, resolver)
        metrics_port = None
        if cfg.metrics_port is not None:
            metrics_port = await n.start(functools.partial(
                serve_metrics, registry_for(stats), cfg.metrics_host, cfg.metrics_port, open_socket=open_socket))
        running = RunningDNS(addresses, resolver, metrics_port, informers)
        for inf in informers:
            n.start_soon(inf.run)
        n.start_soon(_keep_current, resolver, informers, running, dirty)
        if cfg.workers > 1 and spawn_workers:
            if not cfg.kubeconfig:
                raise ValueError("workers > 1 needs cfg.kubeconfig (each worker process watches the API itself)")
            for _ in range(cfg.workers - 1):
                n.start_soon(functools.partial(trio.run_process, _worker_argv(cfg, addresses), check=False))
        log.info("cluster DNS for %s on %s", cfg.zone, addresses)
        task_status.started(running)
