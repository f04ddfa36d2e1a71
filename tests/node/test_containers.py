"""Process containers: they run until stopped, and commands run to completion or their timeout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from kmesh.node.containers import run_command, start_process

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


@pytest.mark.slow
async def test_a_process_container_outlives_trios_idle_worker_threads(tmp_path: Path) -> None:
    # The parent-death signal that ties a container to its agent follows the thread that forked it; trio's
    # idle worker threads end after 10 s, and containers forked from one were SIGKILLed then (exit 137).
    async with trio.open_nursery() as nursery:
        c = await start_process(nursery, ["sleep", "60"], ENV, None, tmp_path / "c.log")
        with trio.move_on_after(12):
            code = await c.wait()
            pytest.fail(f"the container ended by itself after less than 12 s, with {code}")
        assert await c.stop(5) == 143  # SIGTERM, which sleep obeys


async def test_run_command_output_exit_code_and_timeout(tmp_path: Path) -> None:
    assert await run_command(["sh", "-c", "echo hi; exit 3"], ENV, None, 10) == (3, b"hi\n", False)
    code, out, timed_out = await run_command(["sleep", "30"], ENV, None, 0.3)
    assert (code, out, timed_out) == (137, b"", True)
    assert (await run_command(["no-such-command-here"], ENV, None, 5))[0] == 126
    assert (await run_command(["pwd"], ENV, str(tmp_path), 5))[1] == f"{tmp_path}\n".encode()
