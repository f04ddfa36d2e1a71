"""Container handles shared by runtimes: a built-in app as a trio task, a command as a process.

Each start function runs a supervising task in the caller's nursery, so a
cancelled nursery (the agent stopping) always ends the container: an app task
is cancelled, a process group gets SIGKILL and is reaped.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from kmesh.node import apps
from kmesh.node.apps import AppContext, AppMain
from kmesh.node.mounts import container_mounts
from kmesh.node.podspec import container_argv, expand, open_log
from kmesh.node.runtime import (
    ContainerHandle,
    ExecResult,
    Obj,
    Sandbox,
    StartError,
    exit_code_of,
    new_container_id,
)

log = logging.getLogger("kmesh.node.containers")
SIGKILLED = 137


class _ExitRecord:
    """The exit code both kinds of container record once, and ``wait`` for it."""

    def __init__(self, pid: int | None) -> None:
        self.id = new_container_id()
        self.pid = pid
        self._done = trio.Event()
        self.exit_code: int | None = None

    def _exited(self, code: int) -> None:
        self.exit_code = code
        self._done.set()

    async def wait(self) -> int:
        """The exit code once the container has exited (128+N when killed by signal N)."""
        await self._done.wait()
        assert self.exit_code is not None
        return self.exit_code


class AppContainer(_ExitRecord):
    """A built-in app running as a task; see ``kmesh.node.apps.AppMain`` for its stop semantics."""

    def __init__(self, main: AppMain, ctx: AppContext) -> None:
        super().__init__(None)
        self.ctx = ctx
        self._main = main
        self._scope = trio.CancelScope()
        self._killed = False

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        ctx = self.ctx
        ctx._scope = self._scope
        code: int | None = None
        try:
            with self._scope:
                task_status.started()
                try:
                    code = await self._main(ctx)
                    code = 0 if code is None else int(code)
                except Exception as exc:  # noqa: BLE001 - an app's crash is its container's exit, not the agent's
                    ctx.log("".join(traceback.format_exception(exc)).rstrip())  # as a crashed process prints it
                    log.info("app %s exited with an error: %r", ctx.container.get("name"), exc)
                    code = 1
        finally:
            if code is None:  # cancelled: by ctx.exit, by stop, or the agent is going away
                if ctx.exit_code is not None:
                    code = ctx.exit_code
                elif ctx.sigterm.is_set() and not ctx.handles_sigterm and not self._killed:
                    code = 0
                else:
                    code = SIGKILLED
            ctx.close()
            self._exited(code)

    async def stop(self, grace: float) -> int:
        """Signal ``sigterm``; an app that handles it gets ``grace`` seconds, others are cancelled now."""
        self.ctx.sigterm.set()
        if self.ctx.handles_sigterm:
            with trio.move_on_after(max(grace, 0)):
                return await self.wait()
            self._killed = True
        self._scope.cancel()
        return await self.wait()


async def start_app(nursery: trio.Nursery, main: AppMain, ctx: AppContext) -> AppContainer:
    """Run ``main(ctx)`` as a container task in ``nursery``."""
    c = AppContainer(main, ctx)
    await nursery.start(c._run)
    return c


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def _until_exited(proc: subprocess.Popen[bytes]) -> None:
    """Wait until ``proc`` has exited, without reaping it: as long as it is not reaped its PID, which is
    also its process group's ID, stays reserved, so killing the group cannot reach a process that took
    the number since."""
    try:
        fd = os.pidfd_open(proc.pid)
    except ProcessLookupError:  # reaped already
        return
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


class ProcessContainer(_ExitRecord):
    """A container command running as a process (its own process group, killed with the agent)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        super().__init__(proc.pid)
        self.proc = proc

    async def _supervise(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await _until_exited(self.proc)
        finally:
            # The rest of the group dies with its main process, as in a container's PID namespace (and
            # all of it when the agent stops); the main process is reaped only after that.
            _killpg(self.proc.pid, signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await _until_exited(self.proc)
            code = self.proc.poll()  # reaps it; no checkpoint until stop() sees the exit recorded
            self._exited(exit_code_of(code if code is not None else -9))

    async def stop(self, grace: float) -> int:
        """SIGTERM the process group, wait up to ``grace`` seconds, then SIGKILL."""
        if not self._done.is_set():
            _killpg(self.proc.pid, signal.SIGTERM)
            with trio.move_on_after(max(grace, 0)):
                return await self.wait()
            _killpg(self.proc.pid, signal.SIGKILL)
        return await self.wait()


_SETPRIV = shutil.which("setpriv")


def _with_pdeathsig(argv: list[str]) -> list[str]:
    """Make the process die with the agent even if the agent is SIGKILLed (util-linux setpriv)."""
    if _SETPRIV is None:
        return argv
    return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]


def _spawn(argv: list[str], env: dict[str, str], cwd: str | None, stdout: Any) -> subprocess.Popen[bytes]:
    """Start a container's process (its own session, umask 022, dying with the agent) from the agent's own
    thread. The parent-death signal follows the *thread* that forked the process, and trio forks from
    worker threads that end after 10 s idle: a process started there was SIGKILLed 10 s later."""
    return subprocess.Popen(_with_pdeathsig(argv), env=env, cwd=cwd or None, stdin=subprocess.DEVNULL,
                            stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True, umask=0o022)


def resolve_executable(argv0: str, env: dict[str, str]) -> str:
    """The executable ``argv0`` names, looked up on the container's PATH; StartError if none."""
    if "/" in argv0:
        if os.access(argv0, os.X_OK) and not os.path.isdir(argv0):
            return argv0
    else:
        found = shutil.which(argv0, path=env.get("PATH"))
        if found:
            return found
    raise StartError(
        f'failed to create containerd task: exec: "{argv0}": executable file not found in $PATH', exit_code=128
    )


async def start_process(
    nursery: trio.Nursery, argv: list[str], env: dict[str, str], cwd: str | None, log_path: Path,
    *, prefix: Sequence[str] = (),
) -> ProcessContainer:
    """Start ``argv`` with stdout/stderr appended to ``log_path``; its supervisor runs in ``nursery``.

    ``prefix`` is a wrapper that must ``exec`` the command in the end (e.g. entering a pod
    namespace), so the PID and process group stay those of the command.
    """
    if not argv:
        raise StartError("no command given")
    exe = resolve_executable(argv[0], env)
    if cwd and not os.path.isdir(cwd):
        raise StartError(f"failed to create containerd task: chdir to cwd ({cwd!r}) set in config.json failed: no such file or directory")
    with open_log(log_path) as out:  # opening a local log file does not block for long
        try:  # umask 022, as a container runtime gives its containers (the agent's own is 077)
            proc = _spawn([*prefix, exe, *argv[1:]], env, cwd, out)
        except OSError as exc:
            raise StartError(f"failed to start {argv[0]!r}: {exc}") from None
    c = ProcessContainer(proc)
    await nursery.start(c._supervise)
    return c


async def run_command(
    argv: list[str], env: dict[str, str], cwd: str | None, timeout: float, *, prefix: Sequence[str] = (),
) -> tuple[int, bytes, bool]:
    """Run ``argv`` to completion within ``timeout``: (exit code, output, timed out). Killed on timeout.

    ``prefix``: an exec-ing wrapper as in ``start_process``."""
    try:
        exe = resolve_executable(argv[0], env) if argv else ""
    except StartError as exc:
        return 126, exc.message.encode(), False
    if not exe:
        return 126, b"no command", False
    try:
        proc = _spawn([*prefix, exe, *argv[1:]], env, cwd, subprocess.PIPE)
    except OSError as exc:
        return 126, str(exc).encode(), False
    assert proc.stdout is not None
    stream = trio.lowlevel.FdStream(os.dup(proc.stdout.fileno()))
    proc.stdout.close()
    output = bytearray()
    timed_out = False
    try:
        with trio.move_on_after(timeout) as scope:
            async with stream:
                while chunk := await stream.receive_some(65536):
                    if len(output) < 1 << 16:
                        output += chunk
            await _until_exited(proc)
        timed_out = scope.cancelled_caught
    finally:
        _killpg(proc.pid, signal.SIGKILL)  # not reaped yet (_until_exited): the group's ID is still its own
        with trio.CancelScope(shield=True):
            await stream.aclose()
            await _until_exited(proc)
        code = proc.wait()  # exited: reaps it at once
    return exit_code_of(code) if not timed_out else 137, bytes(output), timed_out


async def start_container(
    nursery: trio.Nursery, sandbox: Sandbox, pod: Obj, container: Obj, env: dict[str, str], log_path: Path,
    *, prefix: Callable[[], Sequence[str]] = tuple,
) -> ContainerHandle:
    """Start one container as every runtime does: a built-in app image as a task, else its command as a process.

    ``prefix`` gives the exec-ing wrapper of the process (see ``start_process``); it is asked only for a process."""
    app = apps.lookup(container.get("image", ""))
    app_argv = apps.app_args(app, container) if app is not None else None
    if app is not None and app_argv is not None:
        try:
            main = app.resolve()
        except (ImportError, AttributeError) as exc:
            raise StartError(f"built-in image {container.get('image')} is not available in this kmesh: {exc}") from None
        ctx = AppContext(
            pod=pod, container=container, args=[expand(str(a), env) for a in app_argv], env=env,
            sandbox=sandbox, log_path=log_path, hostname=sandbox.hostname,
            mounts=container_mounts(container, sandbox.volumes),
        )
        return await start_app(nursery, main, ctx)
    argv = container_argv(container, env)
    return await start_process(nursery, argv, env, container.get("workingDir"), log_path, prefix=prefix())


async def exec_in_container(
    container: Obj, argv: list[str], env: dict[str, str], timeout: float, *, prefix: Sequence[str] = (),
) -> ExecResult:
    """Run ``argv`` to completion with the container's env and working dir (when it exists): an exec into it.

    A command of the container's built-in image (``client`` of echo-advanced) runs as its module does
    (``apps.exec_argv``), still behind ``prefix``, so inside the pod's namespace."""
    argv = apps.exec_argv(str(container.get("image") or ""), argv)
    cwd = container.get("workingDir")
    if cwd and not os.path.isdir(cwd):
        cwd = None
    code, out, timed_out = await run_command(argv, env, cwd, timeout, prefix=prefix)
    return ExecResult(code, out, timed_out)
