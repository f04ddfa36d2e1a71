"""kmesh's delayer: netem's delay, jitter and loss in userspace, over NFQUEUE, for kernels without netem.

iptables rules on the outside of the link (``kmesh.packet.shaping``) send
the link's packets to a queue, each rule with ``--queue-bypass`` so traffic
flows unshaped whenever no delayer listens. For each queued packet the
delayer draws, as netem does by default: with the loss probability it
drops the packet at once (NF_DROP); otherwise it holds the packet for
delay ± jitter (uniform) and then lets it go on (NF_ACCEPT) where the
kernel left it. Only the packet id crosses into userspace (metadata copy
mode); GSO packets come whole. With jitter, packets can overtake each
other, as with netem.

Its cost is per packet — a netlink message in, a verdict out (verdicts that
fall due together go in one ``send``) — and a held packet is kernel memory
until its verdict: queues hold at most ``maxlen`` packets each, beyond which
the kernel drops (netem's ``limit``, 1000 by default, does the same).

``run_shaper`` is the ``kmesh link shaper`` process: one per namespace that
holds queues (the underlay's for nodes, a node's for its pods), started
inside it; it reads its settings from a JSON file
(``{"generation": N, "device": "eth0", "queues": {"4200": spec}}``),
re-reads it on SIGHUP, writes what it applied (and its counters) to a
status file (and says ``generation N applied`` on its stdout while someone
reads it), releases every held packet when it ends (SIGTERM), and ends by
itself when its device goes away (``eth0``, ``br0``: its namespace is being
taken down).
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import os
import random
import signal
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import trio

from kmesh.packet import nfqueue
from kmesh.packet.linkspec import LinkSpec

log = logging.getLogger("kmesh.packet.delayer")

DEFAULT_MAXLEN = 4096
_SLACK = 0.0005  # release what falls due within half a millisecond in the same batch
_SEND_CHUNK = 32 * 1024  # verdicts per send: up to ~1000 messages of 32 bytes


@dataclass
class QueueStats:
    """Counters of one queue since it was bound."""

    received: int = 0
    dropped: int = 0
    released: int = 0


class Delayer:
    """Holds the packets of its bound queues for their spec's delay ± jitter, drops with its loss."""

    def __init__(self, sock: socket.socket, *, rng: random.Random | None = None, maxlen: int = DEFAULT_MAXLEN) -> None:
        self.sock = sock
        self.rng = rng or random.Random()
        self.maxlen = maxlen
        self.specs: dict[int, LinkSpec] = {}
        self.stats: dict[int, QueueStats] = {}
        self._heap: list[tuple[float, int, int, int]] = []  # (due, seq, queue, packet id)
        self._seq = 0
        self._out: list[bytes] = []
        self._wake = trio.Event()
        self._deadline = math.inf
        self._acks: dict[int, tuple[trio.Event, list[nfqueue.Ack]]] = {}
        self._nl_seq = 1

    @property
    def held(self) -> int:
        """Packets held right now."""
        return len(self._heap)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Receive packets and release them when due, until cancelled (run with ``nursery.start``)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._release_loop)
            task_status.started()
            await self._receive_loop()

    async def configure(self, specs: Mapping[int, LinkSpec]) -> None:
        """Serve exactly the queues of ``specs`` from now on: bind new ones, change the others' specs, let
        the packets held for a dropped queue go and unbind it. ``nfqueue.NfQueueError`` when the kernel
        refuses a bind (nothing of this call stays bound then)."""
        new = [q for q in specs if q not in self.specs]
        bound: list[int] = []
        try:
            for q in new:
                await self._request(nfqueue.bind_messages(q, self._next_seq(4), maxlen=self.maxlen), f"bind queue {q}",
                                    optional_last=True)
                bound.append(q)
        except BaseException:
            for q in bound:
                await self._request([nfqueue.unbind_message(q, self._next_seq(1))], f"unbind queue {q}")
            raise
        for q in [q for q in self.specs if q not in specs]:
            self.release_all(q)
            await self._request([nfqueue.unbind_message(q, self._next_seq(1))], f"unbind queue {q}")
            del self.specs[q]
            self.stats.pop(q, None)
        for q, spec in specs.items():
            self.specs[q] = spec
            self.stats.setdefault(q, QueueStats())

    async def close(self) -> None:
        """Let every held packet go and unbind every queue (new packets then bypass the queues)."""
        await self.configure({})

    def release_all(self, queue: int | None = None) -> None:
        """Accept every held packet (of ``queue``, or of all) now."""
        keep = []
        for item in self._heap:
            if queue is None or item[2] == queue:
                self._accept(item[2], item[3])
            else:
                keep.append(item)
        heapq.heapify(keep)
        self._heap = keep
        self._flush()

    # -- inside

    def _next_seq(self, n: int) -> int:
        seq = self._nl_seq
        self._nl_seq += n
        return seq

    async def _request(self, msgs: list[bytes], what: str, *, optional_last: bool = False) -> None:
        """Send config messages one by one and wait for each ack (the receive loop hands them over)."""
        for i, msg in enumerate(msgs):
            seq = nfqueue._NLMSGHDR.unpack_from(msg)[3]
            event = trio.Event()
            self._acks[seq] = (event, [])
            try:
                self.sock.send(msg)
                with trio.fail_after(5):
                    await event.wait()
                ack = self._acks[seq][1][0]
            finally:
                self._acks.pop(seq, None)
            if ack.error and optional_last and i == len(msgs) - 1:
                log.info("%s: the kernel takes no GSO flag (%s); GSO packets are segmented", what,
                         os.strerror(ack.error))
                continue
            nfqueue.check_ack(ack, what)

    async def _receive_loop(self) -> None:
        buf = bytearray(65536)
        view = memoryview(buf)
        while True:
            await trio.lowlevel.wait_readable(self.sock)
            for _ in range(512):  # then let the release loop and others run
                try:
                    n = self.sock.recv_into(buf)
                except BlockingIOError:
                    break
                except OSError as exc:  # ENOBUFS despite NETLINK_NO_ENOBUFS on old kernels: packets were lost
                    log.warning("nfqueue receive: %s", exc)
                    continue
                for item in nfqueue.parse(view[:n]):
                    if isinstance(item, nfqueue.Packet):
                        self._packet(item.queue, item.packet_id)
                    else:
                        waiting = self._acks.get(item.seq)
                        if waiting is not None:
                            waiting[1].append(item)
                            waiting[0].set()
                        elif item.error:
                            log.debug("nfqueue error %s for seq %s", item.error, item.seq)
            self._flush()

    def _packet(self, queue: int, packet_id: int) -> None:
        spec = self.specs.get(queue)
        if spec is None:  # bound a moment ago or being dropped: let it pass
            self._accept(queue, packet_id)
            return
        stats = self.stats[queue]
        stats.received += 1
        if spec.loss and self.rng.random() * 100.0 < spec.loss:
            stats.dropped += 1
            self._out.append(nfqueue.verdict(queue, packet_id, nfqueue.NF_DROP))
            return
        hold = spec.delay_ns
        if spec.jitter_ns:
            hold += self.rng.uniform(-spec.jitter_ns, spec.jitter_ns)
        if hold <= 0:
            self._accept(queue, packet_id)
            return
        due = trio.current_time() + hold / 1e9
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, queue, packet_id))
        if due < self._deadline:
            self._deadline = due
            self._wake.set()

    def _accept(self, queue: int, packet_id: int) -> None:
        st = self.stats.get(queue)
        if st is not None:
            st.released += 1
        self._out.append(nfqueue.verdict(queue, packet_id, nfqueue.NF_ACCEPT))

    def _flush(self) -> None:
        out, self._out = self._out, []
        chunk: list[bytes] = []
        size = 0
        for msg in out:
            chunk.append(msg)
            size += len(msg)
            if size >= _SEND_CHUNK:
                self._send(b"".join(chunk))
                chunk, size = [], 0
        if chunk:
            self._send(b"".join(chunk))

    def _send(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError as exc:  # the kernel drops what it cannot take; the packets are lost, as on a full queue
            log.warning("nfqueue verdicts: %s", exc)

    async def _release_loop(self) -> None:
        while True:
            now = trio.current_time()
            heap = self._heap
            while heap and heap[0][0] <= now + _SLACK:
                _, _, q, pid = heapq.heappop(heap)
                self._accept(q, pid)
            self._flush()
            self._deadline = heap[0][0] if heap else math.inf
            self._wake = trio.Event()
            with trio.move_on_at(self._deadline):
                await self._wake.wait()


# ---------------------------------------------------------------------------------------------- the process


def read_config(path: Path) -> tuple[int, str, dict[int, LinkSpec]]:
    """(generation, device, queue → spec) from a shaper config file; ``ValueError`` for a bad one."""
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("queues"), dict):
        raise ValueError(f"{path}: not a shaper config")
    queues: dict[int, LinkSpec] = {}
    for key, spec in doc["queues"].items():
        q = int(key)
        if not 0 <= q <= 65535:
            raise ValueError(f"{path}: queue number {q} outside 0..65535")
        queues[q] = LinkSpec.from_json(spec)
    return int(doc.get("generation", 0)), str(doc.get("device") or "eth0"), queues


def _generation_of(path: Path) -> int | None:
    """The generation a config file says it is, however bad the rest (for the failure report)."""
    try:
        doc = json.loads(path.read_text())
        return int(doc["generation"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_json(path: Path, doc: object) -> None:
    """Write ``doc`` to ``path`` atomically, 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def _status(delayer: Delayer, generation: int, error: str = "") -> dict[str, object]:
    held: dict[int, int] = {}
    for _, _, q, _ in delayer._heap:
        held[q] = held.get(q, 0) + 1
    return {
        "generation": generation, "pid": os.getpid(), "error": error,
        "queues": {str(q): {"received": s.received, "dropped": s.dropped, "released": s.released,
                            "held": held.get(q, 0)} for q, s in sorted(delayer.stats.items())},
    }


async def _watch_device(device: str, gone: trio.Event) -> None:
    """Set ``gone`` when ``device`` no longer exists in this namespace (woken by rtnetlink link events)."""
    RTMGRP_LINK = 1
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    sock.bind((0, RTMGRP_LINK))
    sock.setblocking(False)
    try:
        while True:
            try:
                socket.if_nametoindex(device)
            except OSError:
                gone.set()
                return
            await trio.lowlevel.wait_readable(sock)
            while True:
                try:
                    sock.recv(65536)
                except BlockingIOError:
                    break
                except OSError:
                    break
    finally:
        sock.close()


class _Teller:
    """Lines for whoever started the shaper (``shaper ready``, ``generation N applied``), while it listens:
    ``kmesh link set`` reads the first and closes the pipe; a test may read them all."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def __call__(self, line: bytes) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, line)
        except OSError:  # EPIPE: no one reads any more
            self.fd = None


async def run_shaper(config: Path, status: Path, *, ready_fd: int | None = 1) -> None:
    """The ``kmesh link shaper`` process (see the module docstring); in the namespace it shapes."""
    generation, device, specs = read_config(config)
    sock = nfqueue.open_socket()
    delayer = Delayer(sock)
    gone = trio.Event()
    with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(delayer.run)
            await delayer.configure(specs)
            write_json(status, _status(delayer, generation))
            tell = _Teller(ready_fd)
            tell(b"shaper ready\n")
            nursery.start_soon(_watch_device, device, gone)

            async def counters() -> None:
                last: dict[str, object] = {}
                while True:
                    await trio.sleep(1.0)
                    now = _status(delayer, generation)
                    if now != last:
                        write_json(status, now)
                        last = now

            nursery.start_soon(counters)

            async def stop_when_gone() -> None:
                await gone.wait()
                log.warning("%s is gone from this namespace; the shaper ends", device)
                os.kill(os.getpid(), signal.SIGTERM)

            nursery.start_soon(stop_when_gone)
            async for sig in signals:
                if sig != signal.SIGHUP:
                    break
                try:
                    new_gen, device, specs = read_config(config)
                    await delayer.configure(specs)
                    generation = new_gen
                    write_json(status, _status(delayer, generation))
                    tell(f"generation {generation} applied\n".encode())
                    log.info("generation %s: %s", generation,
                             ", ".join(f"queue {q}: {s.describe()}" for q, s in sorted(specs.items())))
                except (OSError, ValueError, trio.TooSlowError) as exc:
                    log.error("reload of %s failed, keeping the settings of generation %s: %s",
                              config, generation, exc)
                    failed = _status(delayer, generation, error=f"{type(exc).__name__}: {exc}")
                    failed["failedGeneration"] = _generation_of(config)
                    write_json(status, failed)
            with trio.CancelScope(shield=True):
                try:
                    await delayer.close()
                except (OSError, trio.TooSlowError) as exc:
                    log.warning("closing the queues: %s", exc)
            nursery.cancel_scope.cancel()
    sock.close()
