"""Several engine processes sharing the listening ports (SO_REUSEPORT), driven like one Engine.

A Python process serves HTTP on one CPU; to use more, ``EngineWorkers`` starts
``n`` child processes (``python -m kmesh.l7.worker``), each running an Engine
with ``reuse_port=True``, so the kernel spreads new connections over them.
``apply`` and ``set_endpoints`` are sent to every child over its stdin as
length-prefixed pickles (parent to its own children only) and ``apply``
waits until each child has applied or refused the config. A child can enter
a network namespace first (``netns``), as the gateway's pod would need.
Ports must be concrete: port 0 would give each child a different port.
"""

from __future__ import annotations

import math
import pickle
import struct
import subprocess
import sys
from collections.abc import Iterable

import trio

from kmesh.l7.model import Config, Endpoint

HEADER = struct.Struct(">I")


async def send_frame(stream: trio.abc.SendStream, obj: object) -> None:
    """Write one length-prefixed pickle."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    await stream.send_all(HEADER.pack(len(data)) + data)


async def receive_frames(stream: trio.abc.ReceiveStream, into: trio.MemorySendChannel) -> None:
    """Read length-prefixed pickles until end of stream, sending each object to ``into``."""
    buf = bytearray()
    async with into:
        while True:
            while len(buf) >= HEADER.size and len(buf) >= HEADER.size + HEADER.unpack_from(buf)[0]:
                size = HEADER.unpack_from(buf)[0]
                obj = pickle.loads(bytes(buf[HEADER.size:HEADER.size + size]))
                del buf[:HEADER.size + size]
                await into.send(obj)
            data = await stream.receive_some(65536)
            if not data:
                return
            buf += data


class WorkerDied(Exception):
    """A worker process ended while the engine was serving."""


class _Worker:
    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.outbox, self._outbox_recv = trio.open_memory_channel[object](math.inf)
        self.replies_send, self.replies = trio.open_memory_channel[object](math.inf)

    async def pump(self) -> None:
        assert self.proc.stdin is not None
        async for msg in self._outbox_recv:
            await send_frame(self.proc.stdin, msg)


class EngineWorkers:
    """``n`` Engine processes on ``host`` with the same config; the API mirrors ``Engine``'s."""

    def __init__(self, n: int, host: str = "127.0.0.1", *, netns: str | None = None,
                 policy: str = "round_robin", port_map: dict[int, int] | None = None,
                 idle_timeout: float = 75.0) -> None:
        if n < 1:
            raise ValueError("at least one worker")
        self.n = n
        self.options = {"host": host, "netns": netns, "policy": policy, "port_map": port_map or {},
                        "idle_timeout": idle_timeout}
        self.config = Config()
        self.endpoints: dict[tuple[str, str, int], tuple[Endpoint, ...]] = {}
        self._workers: list[_Worker] = []
        self._lock = trio.Lock()

    async def apply(self, config: Config) -> None:
        """Have every worker serve ``config``; raises RuntimeError naming a worker's error if one refused it."""
        async with self._lock:
            if self._workers:
                for w in self._workers:
                    w.outbox.send_nowait(("apply", config))
                errors = []
                for w in self._workers:
                    reply = await w.replies.receive()
                    if reply != ("ok",):
                        errors.append(reply)
                if errors:
                    raise RuntimeError(f"a worker refused the config: {errors[0]!r}")
            self.config = config

    def set_endpoints(self, namespace: str, service: str, port: int, endpoints: Iterable[Endpoint]) -> None:
        """Set one backend's ready endpoints in every worker."""
        eps = tuple(endpoints)
        self.endpoints[(namespace, service, port)] = eps
        for w in self._workers:
            w.outbox.send_nowait(("endpoints", namespace, service, port, eps))

    async def serve(self, *, task_status: trio.TaskStatus[EngineWorkers] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the workers, hand them the current state, and run until cancelled (then stop them)."""
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(self.n):
                    proc = await trio.lowlevel.open_process(
                        [sys.executable, "-m", "kmesh.l7.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                    w = _Worker(proc)
                    self._workers.append(w)
                    nursery.start_soon(w.pump)
                    assert proc.stdout is not None
                    nursery.start_soon(receive_frames, proc.stdout, w.replies_send)
                    nursery.start_soon(self._watch, w)
                    w.outbox.send_nowait(("options", self.options))
                for key, eps in self.endpoints.items():
                    self.set_endpoints(*key, eps)
                for w in self._workers:
                    w.outbox.send_nowait(("apply", self.config))
                for w in self._workers:
                    reply = await w.replies.receive()
                    if reply != ("ok",):
                        raise RuntimeError(f"a worker could not start: {reply!r}")
                task_status.started(self)
        finally:
            with trio.CancelScope(shield=True):
                for w in self._workers:
                    if w.proc.returncode is None:
                        w.proc.kill()
                    await w.proc.wait()
            self._workers.clear()

    async def _watch(self, w: _Worker) -> None:
        code = await w.proc.wait()
        raise WorkerDied(f"l7 worker {w.proc.pid} exited with {code}")
