"""Network namespaces: the one place kmesh creates, enters and removes them.

Namespaces are the named kind iproute2 makes (a bind mount under
``/run/netns/<name>``), so ``ip netns``, ``ip -n <name> ...`` and
``nsenter --net=/run/netns/<name>`` see them as a user expects.

Python 3.11 has no ``os.setns``: a thread enters a namespace with libc
``setns`` and leaves it again before the thread is reused (``entered``).
Sockets keep the namespace they were created in, so ``open_socket`` makes one
inside a namespace and hands it to trio in the calling thread.

Processes run in a namespace through ``exec_argv``: ``ip netns exec`` (which
also bind-mounts ``/etc/netns/<name>/*`` over ``/etc`` — how a pod gets its
resolv.conf) or, for long-running agents that must keep seeing the host's
mounts, ``nsenter_argv`` (network namespace only).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import trio

NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")
CLONE_NEWNET = 0x40000000
T = TypeVar("T")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class NetnsError(Exception):
    """A namespace operation failed; the message names the namespace and the command."""


def path(name: str) -> Path:
    """The bind-mount file of namespace ``name`` (a name starting with ``/`` is taken as the path of
    any namespace file, e.g. ``/proc/self/fd/N`` of a namespace kept open)."""
    return Path(name) if name.startswith("/") else NETNS_DIR / name


def exists(name: str) -> bool:
    """True when namespace ``name`` exists."""
    return path(name).exists()


def names(prefix: str = "") -> list[str]:
    """Namespaces whose name starts with ``prefix``, sorted."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        return []


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # umask 022: `ip netns add` makes /run/netns with the system's mode, whatever the caller's umask
    proc = subprocess.run(["ip", *args], check=False, capture_output=True, text=True, umask=0o022)
    if check and proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def add(name: str) -> None:
    """Create namespace ``name`` with ``lo`` up (no-op when it exists)."""
    if not exists(name):
        _ip("netns", "add", name)
    _ip("-n", name, "link", "set", "lo", "up")


def delete(name: str) -> bool:
    """Remove namespace ``name`` and its ``/etc/netns/<name>`` dir; False when there was none.

    Links inside it go with it (a veth's peer in another namespace too)."""
    gone = False
    if exists(name):
        proc = _ip("netns", "delete", name, check=False)
        if proc.returncode != 0 and exists(name):
            raise NetnsError(f"ip netns delete {name}: {proc.stderr.strip()}")
        gone = True
    etc = ETC_NETNS / name
    if etc.exists():
        shutil.rmtree(etc, ignore_errors=True)
    return gone


def write_etc(name: str, filename: str, text: str) -> Path:
    """Write ``/etc/netns/<name>/<filename>`` (``ip netns exec`` shows it as ``/etc/<filename>``)."""
    d = ETC_NETNS / name
    for made in (ETC_NETNS, d):  # the system's modes, whatever the caller's umask (a lab's is 077)
        try:
            made.mkdir(mode=0o755)
        except FileExistsError:
            continue
        os.chmod(made, 0o755)
    p = d / filename
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o644)
        f.write(text)
    return p


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body of the ``with`` in namespace ``name`` (this thread only), then come back."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            target = os.open(path(name), os.O_RDONLY)
        except FileNotFoundError:
            raise NetnsError(f"network namespace {name!r} does not exist") from None
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise NetnsError(f"setns into {name!r}: {os.strerror(err)}")
        finally:
            os.close(target)
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:  # pragma: no cover - would leave the thread in the wrong place
                err = ctypes.get_errno()
                raise SystemExit(f"kmesh: cannot return from namespace {name!r}: {os.strerror(err)}")
    finally:
        os.close(own)


def enter_for_good(name: str) -> None:
    """Move the calling thread into namespace ``name`` for the rest of its life.

    For a process that should live in the namespace: call it before starting
    other threads (they inherit the namespace of the thread that creates them)."""
    fd = os.open(path(name), os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise NetnsError(f"setns into {name!r}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


def call_in_private(fn: Callable[..., T], *args: Any) -> T:
    """Call ``fn(*args)`` in a new thread inside a new network namespace of its own, and return its result.

    The namespace has no name and nothing else in it: it and every link made
    in it go away when the thread ends, so a probe can try what the kernel
    supports without touching any namespace that outlives it. Raises
    ``NetnsError`` when no namespace can be made (never runs ``fn`` where we are)."""
    out: list[Any] = []

    def body() -> None:
        try:
            before = os.stat("/proc/thread-self/ns/net").st_ino
            if _libc.unshare(CLONE_NEWNET) != 0:
                raise NetnsError(f"unshare(CLONE_NEWNET): {os.strerror(ctypes.get_errno())}")
            if os.stat("/proc/thread-self/ns/net").st_ino == before:  # pragma: no cover - the kernel ignored it
                raise NetnsError("unshare(CLONE_NEWNET) left the thread in its namespace")
            out.append((True, fn(*args)))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            out.append((False, e))

    t = threading.Thread(target=body, name="kmesh-private-netns", daemon=True)
    t.start()
    t.join()
    ok, value = out[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def call_in(name: str | None, fn: Callable[..., T], *args: Any) -> T:
    """Call ``fn(*args)`` in namespace ``name`` (None: where we are), synchronously."""
    if name is None:
        return fn(*args)
    with entered(name):
        return fn(*args)


async def run_sync_in(name: str | None, fn: Callable[..., T], *args: Any) -> T:
    """``call_in`` in a worker thread, so trio keeps running."""
    return await trio.to_thread.run_sync(call_in, name, fn, *args)


def socket_in(name: str | None, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0) -> socket.socket:
    """A plain socket created inside namespace ``name``."""
    return call_in(name, socket.socket, family, type, proto)


async def open_socket(
    name: str | None, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0
) -> trio.socket.SocketType:
    """A trio socket created inside namespace ``name``."""
    sock = await run_sync_in(name, socket.socket, family, type, proto)
    return trio.socket.from_stdlib_socket(sock)


def exec_argv(name: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run by ``ip netns exec`` (network namespace plus /etc/netns files)."""
    return ["ip", "netns", "exec", name, *argv]


def nsenter_argv(name: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run in namespace ``name`` only (the host's mounts stay visible)."""
    return ["nsenter", f"--net={path(name)}", "--", *argv]


async def run(name: str | None, argv: Sequence[str], *, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` to completion in namespace ``name`` (None: here); raise ``NetnsError`` on failure when ``check``."""
    full = list(argv) if name is None else nsenter_argv(name, argv)
    proc = await trio.run_process(full, stdin=input, capture_stdout=True, capture_stderr=True, check=False)
    if check and proc.returncode != 0:
        where = f" in {name}" if name else ""
        raise NetnsError(f"{' '.join(argv)}{where}: {proc.stderr.decode(errors='replace').strip() or proc.returncode}")
    return proc


def add_veth(ns_a: str, name_a: str, ns_b: str, name_b: str, *, mtu: int | None = None) -> None:
    """A veth pair: ``name_a`` in ``ns_a`` and ``name_b`` in ``ns_b``, both up."""
    extra = ["mtu", str(mtu)] if mtu else []
    _ip("-n", ns_a, "link", "add", name_a, *extra, "type", "veth", "peer", "name", name_b, "netns", ns_b)
    _ip("-n", ns_a, "link", "set", name_a, "up")
    _ip("-n", ns_b, "link", "set", name_b, "up")


def ip(name: str | None, *args: str, check: bool = True) -> str:
    """``ip [-n name] args...``; its stdout (raises ``NetnsError`` on failure when ``check``)."""
    full = (["-n", name] if name else []) + list(args)
    return _ip(*full, check=check).stdout


def addresses(name: str | None, family: int = socket.AF_INET, *, except_link: str | None = None) -> list[str]:
    """The IP addresses (no prefix length) held by the links of namespace ``name`` (None: this one),
    all of them or all but ``except_link``'s (an address another link holds too stays in)."""
    flag = "-6" if family == socket.AF_INET6 else "-4"
    out: list[str] = []
    for link in json.loads(ip(name, "-j", flag, "addr", "show") or "[]"):
        if except_link is None or link.get("ifname") != except_link:
            out.extend(a["local"] for a in link.get("addr_info", []) if "local" in a)
    return out


INIT_NET_INO = 0xEFFFFFF9  # the initial namespace's inode number on newer kernels; others always get ≥ 0xF0000000
PF_KTHREAD = 0x00200000


def _ns_id(p: str | Path) -> tuple[int, int] | None:
    """(device, inode) of a network namespace file, which tells namespaces apart; None when unreadable."""
    try:
        st = os.stat(p)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _kthreadd_namespace() -> tuple[int, int] | None:
    """The network namespace of kthreadd, PID 2 where the PID namespace is the initial one: kernel
    threads always live in the initial network namespace. None when PID 2 is not that kernel thread."""
    try:
        stat = Path("/proc/2/stat").read_text()
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if comm != "kthreadd" or not int(rest[6]) & PF_KTHREAD:
            return None
    except (OSError, ValueError, IndexError):
        return None
    return _ns_id("/proc/2/ns/net")


def in_root_namespace() -> bool:
    """True when the calling thread is in the machine's initial network namespace, where kmesh changes nothing.

    Decided from the first thing that can be read: init's namespace
    (``/proc/1/ns/net``, which some sandboxes refuse even to root), kthreadd's
    (kernel threads live in the initial one), the initial namespace's fixed
    inode number (newer kernels), the named namespaces under ``/run/netns``
    (being in one of them means not the root). When nothing tells, True:
    callers use the answer to keep away from the root namespace."""
    own = _ns_id("/proc/thread-self/ns/net")  # this thread's: a thread may have entered a namespace
    if own is None:
        return True
    for reference in (_ns_id("/proc/1/ns/net"), _kthreadd_namespace()):
        if reference is not None:
            return own == reference
    if own[1] == INIT_NET_INO:
        return True
    try:
        named = list(NETNS_DIR.iterdir())
    except OSError:
        named = []
    return not any(_ns_id(p) == own for p in named)
