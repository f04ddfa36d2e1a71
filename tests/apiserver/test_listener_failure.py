"""A listener that cannot accept any more ends the whole API server: it never serves on one listener and not the other."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import trio

from kmesh.apiserver.server import ServerConfig, run_server


def _has(exc: BaseException, kind: type[BaseException]) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_has(e, kind) for e in exc.exceptions)
    return isinstance(exc, kind)


async def test_a_failed_listener_ends_the_server(tmp_path: Path) -> None:
    extra = socket.socket()
    try:
        extra.bind(("127.0.0.1", 0))
        extra.listen()
        failed: BaseException | None = None
        try:
            with trio.fail_after(60):  # a hang guard: the server must end, not wait
                async with trio.open_nursery() as nursery:
                    served = socket.socket(fileno=os.dup(extra.fileno()))
                    await nursery.start(run_server, ServerConfig(data_dir=tmp_path, store_url="memory://", port=0,
                                                                 extra_sockets=[served]))
                    served.detach()  # the server owns (and closes) this copy of the descriptor
                    extra.shutdown(socket.SHUT_RDWR)  # accept() on it now fails (EINVAL), as on a dead listener
        except BaseException as exc:  # noqa: BLE001 - what ended the server is the point
            failed = exc
        assert failed is not None and _has(failed, OSError) and not _has(failed, trio.TooSlowError), failed
    finally:
        extra.close()
