"""Stopping processes kmesh started, by PID, without polling loops."""

from __future__ import annotations

import os
import select
import signal


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
