"""Stopping processes kmesh started, by PID, without polling loops, and only once they are proven ours.

A PID alone proves nothing: after its process exits the number is free for
any other. kmesh records a PID together with the process's start time
(``/proc/<pid>/stat`` field 22, clock ticks since boot) as a ``ProcId``, and
signals it only through a pidfd opened *before* the start time is checked
again, so the signal reaches exactly the process that was checked, never a
newcomer that took the number.
"""

from __future__ import annotations

import os
import select
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import trio


def start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
    fields = stat[stat.rindex(b")") + 2:].split()
    return int(fields[19])  # field 22 of the whole line


@dataclass(frozen=True)
class ProcId:
    """One process, told apart from any later process that reuses its PID."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> ProcId | None:
        """The running process ``pid``, None when there is none."""
        start = start_time(pid)
        return None if start is None else cls(pid, start)

    def format(self) -> str:
        """The PID file form: ``<pid> <start time>``."""
        return f"{self.pid} {self.start}\n"

    @classmethod
    def parse(cls, text: str) -> ProcId | None:
        """Read ``format``'s text; None for anything else (an old PID-only file proves nothing)."""
        parts = text.split()
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            return None
        return cls(int(parts[0]), int(parts[1]))

    def alive(self) -> bool:
        """True while this very process runs (not another that took its PID)."""
        return start_time(self.pid) == self.start

    def open(self) -> int | None:
        """A pidfd of this process, or None when it is gone (its PID free or someone else's).

        The pidfd is opened first and the start time checked after: a pidfd
        names the process that held the PID when it was opened, so if the
        start time still matches, the pidfd is this process's."""
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return None
        if not self.alive():
            os.close(fd)
            return None
        return fd


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until process ``pid`` has exited (True) or ``timeout`` passed (False)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return wait_fd(fd, timeout)
    finally:
        os.close(fd)


def wait_fd(pidfd: int, timeout: float) -> bool:
    """Wait until the process behind ``pidfd`` has exited (True) or ``timeout`` passed (False)."""
    ready, _, _ = select.select([pidfd], [], [], timeout)
    return bool(ready)


def send(pidfd: int, sig: int) -> bool:
    """Signal the process behind ``pidfd``; False when it has exited already."""
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        return False
    return True


def stop_fd(pidfd: int, grace: float = 10.0) -> bool:
    """SIGTERM the process behind ``pidfd``, wait up to ``grace`` seconds, then SIGKILL; True if it was running."""
    if not send(pidfd, signal.SIGTERM):
        return False
    if not wait_fd(pidfd, grace) and send(pidfd, signal.SIGKILL):
        wait_fd(pidfd, 5.0)
    return True


def stop(proc: ProcId, grace: float = 10.0) -> bool:
    """Stop ``proc`` (SIGTERM, SIGKILL after ``grace`` seconds) if it is still that process; True if it was."""
    fd = proc.open()
    if fd is None:
        return False
    try:
        return stop_fd(fd, grace)
    finally:
        os.close(fd)


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
    try:
        with trio.fail_after(timeout):
            while marker not in seen:
                chunk = await proc.stdout.receive_some()
                if not chunk:
                    detail = log.read_text()[-2000:] if log is not None else seen.decode(errors="replace")
                    raise RuntimeError(f"{' '.join(cmd)} exited before it was ready:\n{detail}")
                seen += chunk
    except BaseException:  # not ready in time, or cancelled: the process is ours, so it goes too
        with trio.CancelScope(shield=True):
            await stop_process(proc)
        raise
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


async def run_agent_process(argv: list[str], name: str, log: Path, *, task_status: trio.TaskStatus[None]) -> None:
    """One node agent process (``argv``), started once it prints ``agent <name> running``, until cancelled
    (then SIGTERM, SIGKILL after 10 s); run it with ``nursery.start``.

    An agent that exits is not restarted: its node goes NotReady, as a node
    whose kubelet died does, and ``kmesh status`` shows it."""
    import logging

    import trio

    proc = await start_until(argv, f"agent {name} running".encode(), log)
    try:
        task_status.started()
        await proc.wait()
        logging.getLogger("kmesh.lab").error("the agent of %s exited with %s; see %s", name, proc.returncode, log)
    finally:
        with trio.CancelScope(shield=True):
            await stop_process(proc)
