"""The child side of ``EngineWorkers``: one Engine driven by length-prefixed pickles on stdin.

Run as ``python -m kmesh.l7.worker`` by ``kmesh.l7.workers`` only; it ends when
its stdin closes (the parent went away) or it is killed.
"""

from __future__ import annotations

import gc
import os

import trio

from kmesh.l7.engine import Engine
from kmesh.l7.workers import receive_frames, send_frame


async def main() -> None:
    """Read options, then apply configs and endpoints as they come; reply to each apply."""
    stdin = trio.lowlevel.FdStream(os.dup(0))
    stdout = trio.lowlevel.FdStream(os.dup(1))
    inbox_send, inbox = trio.open_memory_channel[object](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_frames, stdin, inbox_send)
        engine: Engine | None = None
        async for msg in inbox:
            kind = msg[0]  # type: ignore[index]
            if kind == "options":
                opts = dict(msg[1])  # type: ignore[index]
                if opts.pop("netns"):
                    from kmesh.net import netns
                    netns.enter_for_good(msg[1]["netns"])  # type: ignore[index]
                engine = Engine(opts.pop("host"), reuse_port=True, **opts)
                await nursery.start(engine.serve)
            elif kind == "apply":
                assert engine is not None
                try:
                    await engine.apply(msg[1])  # type: ignore[index]
                    await send_frame(stdout, ("ok",))
                except Exception as e:  # the parent raises it
                    await send_frame(stdout, ("error", f"{type(e).__name__}: {e}"))
            elif kind == "endpoints":
                assert engine is not None
                engine.set_endpoints(*msg[1:])  # type: ignore[misc]
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    # A proxy allocates many short-lived objects per request: collect young garbage less often, and
    # keep what was loaded at start (modules, the engine) out of every collection.
    gc.freeze()
    gc.set_threshold(20000, 20, 20)
    trio.run(main)
