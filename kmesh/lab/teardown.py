"""``kmesh down``: stop a lab and remove every file it made; and the failure path of ``kmesh up``.

Two rules hold here. No process is signalled before it is proven to be the
lab's: the supervisor only while it holds the data dir's lab lock and has the
start time kmesh.pid recorded (``DataDir.supervisor``), processes in the
lab's namespaces only while they are in them (``topology.sweep``). And a
failed ``kmesh up`` removes only what that run created (``Before``/
``undo_failed_up``): a store, PKI or logs an earlier run left are kept.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass

from kmesh.lab.access import PRIVATE_DIRS
from kmesh.lab.datadir import DataDir
from kmesh.lab.procs import stop
from kmesh.lab.topology import LabNames, lab_namespaces, sweep
from kmesh.net.netns_check import netns_usable

# Everything `kmesh up` creates in a data dir, and nothing else.
MADE_FILES = (
    "kubeconfig.yaml", "cluster.json", "up.json", "kmesh.pid", "network.json", "join-token", "server-token",
    "store.db", "store.db-wal", "store.db-shm", "store.db-lock",
)
MADE_DIRS = PRIVATE_DIRS  # ("pki", "logs", "etcd", "nodes", "run"), made 0700 by `kmesh up`


class LabNotProven(RuntimeError):
    """A process holds the lab lock, but kmesh.pid does not prove which: nothing is signalled or removed."""


def _up_json(dd: DataDir) -> dict:
    """up.json of the lab made in ``dd`` ({} for none)."""
    try:
        doc = json.loads(dd.config_file.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _netns_lab_name(dd: DataDir) -> str | None:
    """The name of the netns lab made in ``dd`` (from up.json); None for none or a sim lab."""
    try:
        doc = json.loads(dd.config_file.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return str(doc.get("name") or "kmesh") if doc.get("runtime") == "netns" else None


def teardown(dd: DataDir) -> list[str]:
    """Stop the supervisor and delete what the lab made; returns what was removed.

    Namespaces and the processes inside them are found by the lab's name
    prefix, so a lab whose processes were killed with SIGKILL is removed too.
    A PID file whose process is gone (or is another process now) is stale:
    nothing is signalled for it. Raises ``LabNotProven`` when the lab lock is
    held by a process kmesh.pid does not name (nothing is touched then)."""
    removed: list[str] = []
    name = _netns_lab_name(dd)
    names = LabNames(name) if name is not None and netns_usable() else None
    before = lab_namespaces(names) if names is not None else []
    sup = dd.supervisor()
    if sup is None and dd.locked():
        raise LabNotProven(f"a process holds the lab lock on {dd.root}, but {dd.pid_file} does not name it "
                           "(is a lab starting or stopping?); nothing was signalled or removed — try again, "
                           f"or find the holder of the lock on {dd.root} in /proc/locks")
    if sup is not None and stop(sup, grace=30.0):
        removed.append(f"process {sup.pid} (lab supervisor)")
    up = _up_json(dd)
    if up.get("runtime") == "host" and netns_usable():
        from kmesh.lab.hostlab import teardown_host

        removed += teardown_host(dd, up)
    if names is not None:
        swept = sweep(names)
        # the supervisor removes its namespaces on the way out: name them too
        removed += [f"namespace {ns}" for ns in before if f"namespace {ns}" not in swept] + swept
    removed += _remove(dd, keep=frozenset(), keep_root=False)
    return removed


def _remove(dd: DataDir, keep: frozenset[str], keep_root: bool) -> list[str]:
    """Delete the entries of ``dd`` a lab makes, except those named in ``keep``; then the dir itself if it
    is empty and not ``keep_root``."""
    removed: list[str] = []
    for name in MADE_FILES:
        p = dd.root / name
        if name not in keep and p.exists():
            p.unlink()
            removed.append(f"file {p}")
    for name in MADE_DIRS:
        p = dd.root / name
        if name not in keep and p.exists():
            shutil.rmtree(p)
            removed.append(f"directory {p}")
    if keep_root:
        return removed
    try:
        dd.root.rmdir()
        removed.append(f"directory {dd.root}")
    except OSError:
        pass
    return removed


@dataclass(frozen=True)
class Before:
    """What a data dir held before ``kmesh up`` began: its failure path removes only the rest."""

    existed: bool  # the data dir itself
    entries: frozenset[str]  # the names of MADE_FILES and MADE_DIRS that existed
    up_json: bytes | None  # up.json's content, put back (down reads the lab's name from it)

    @classmethod
    def look(cls, dd: DataDir) -> Before:
        """Note what ``dd`` holds now (call before ``kmesh up`` writes anything)."""
        entries = frozenset(n for n in (*MADE_FILES, *MADE_DIRS) if (dd.root / n).exists())
        try:
            up_json = dd.config_file.read_bytes()
        except FileNotFoundError:
            up_json = None
        return cls(dd.root.is_dir(), entries, up_json)


def undo_failed_up(dd: DataDir, before: Before) -> list[str]:
    """After a ``kmesh up`` whose supervisor (the caller's child) has exited: remove the lab's namespaces
    (``up`` refuses to start when any exist, so these are this run's) and the data dir entries this run
    created; entries that were there before, the store first of all, stay. Returns what was removed."""
    removed: list[str] = []
    name = _netns_lab_name(dd)
    if name is not None and netns_usable():
        removed += sweep(LabNames(name))
    up = _up_json(dd)
    if up.get("runtime") == "host" and netns_usable():
        from kmesh.lab.hostlab import teardown_host

        removed += teardown_host(dd, {**up, "role": "failed"})  # its Node may be another machine's: kept
    removed += _remove(dd, keep=before.entries, keep_root=before.existed)
    if before.up_json is not None and dd.root.exists():
        from kmesh.lab.access import write_private

        write_private(dd.config_file, before.up_json)
    return removed
