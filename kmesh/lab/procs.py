"""Stopping processes kmesh started, by PID, without polling loops."""

from __future__ import annotations

import os
import select
import signal
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import trio


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until process ``pid`` has exited (True) or ``timeout`` passed (False)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def stop_pid(pid: int, grace: float = 10.0) -> bool:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; True if it was running."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if not wait_gone(pid, grace):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return True
        wait_gone(pid, 5.0)
    return True


async def start_until(cmd: list[str], marker: bytes, log: Path | None = None, timeout: float = 120.0) -> trio.Process:
    """Start a kmesh component and return once its stdout shows ``marker`` (stderr to ``log``)."""
    import subprocess

    import trio

    err = open(log, "wb") if log is not None else subprocess.STDOUT
    proc = await trio.lowlevel.open_process(
        cmd, stdout=subprocess.PIPE, stderr=err, env=dict(os.environ, COLUMNS="300")
    )
    assert proc.stdout is not None
    seen = b""
    with trio.fail_after(timeout):
        while marker not in seen:
            chunk = await proc.stdout.receive_some()
            if not chunk:
                detail = log.read_text()[-2000:] if log is not None else seen.decode(errors="replace")
                raise RuntimeError(f"{' '.join(cmd)} exited before it was ready:\n{detail}")
            seen += chunk
    proc.startup_output = seen  # type: ignore[attr-defined]
    return proc


async def stop_process(proc: trio.Process, grace: float = 10.0) -> None:
    """SIGTERM a process we started, then SIGKILL it after ``grace`` seconds."""
    import trio

    if proc.returncode is None:
        proc.terminate()
        with trio.move_on_after(grace):
            await proc.wait()
    if proc.returncode is None:
        proc.kill()
        await proc.wait()
