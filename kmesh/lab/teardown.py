"""``kmesh down``: stop a lab and remove every file it made."""

from __future__ import annotations

import json
import shutil

from kmesh.lab.access import PRIVATE_DIRS
from kmesh.lab.datadir import DataDir
from kmesh.lab.procs import stop_pid
from kmesh.lab.topology import LabNames, lab_namespaces, sweep
from kmesh.net.netns_check import netns_usable

# Everything `kmesh up` creates in a data dir, and nothing else.
MADE_FILES = (
    "kubeconfig.yaml", "cluster.json", "up.json", "kmesh.pid",
    "store.db", "store.db-wal", "store.db-shm", "store.db-lock",
)
MADE_DIRS = PRIVATE_DIRS  # ("pki", "logs", "etcd", "nodes", "run"), made 0700 by `kmesh up`


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
    prefix, so a lab whose processes were killed with SIGKILL is removed too."""
    removed: list[str] = []
    name = _netns_lab_name(dd)
    names = LabNames(name) if name is not None and netns_usable() else None
    before = lab_namespaces(names) if names is not None else []
    pid = dd.supervisor_pid()
    if pid is not None and stop_pid(pid, grace=30.0):
        removed.append(f"process {pid} (lab supervisor)")
    if names is not None:
        swept = sweep(names)
        # the supervisor removes its namespaces on the way out: name them too
        removed += [f"namespace {ns}" for ns in before if f"namespace {ns}" not in swept] + swept
    for name in MADE_FILES:
        p = dd.root / name
        if p.exists():
            p.unlink()
            removed.append(f"file {p}")
    for name in MADE_DIRS:
        p = dd.root / name
        if p.exists():
            shutil.rmtree(p)
            removed.append(f"directory {p}")
    try:
        dd.root.rmdir()
        removed.append(f"directory {dd.root}")
    except OSError:
        pass
    return removed
