"""``kmesh down``: stop a lab and remove every file it made."""

from __future__ import annotations

import shutil

from kmesh.lab.datadir import DataDir
from kmesh.lab.procs import stop_pid

# Everything `kmesh up` creates in a data dir, and nothing else.
MADE_FILES = (
    "kubeconfig.yaml", "cluster.json", "up.json", "kmesh.pid",
    "store.db", "store.db-wal", "store.db-shm", "store.db-lock",
)
MADE_DIRS = ("pki", "logs", "etcd", "nodes", "run")


def teardown(dd: DataDir) -> list[str]:
    """Stop the supervisor and delete what the lab made; returns what was removed."""
    removed: list[str] = []
    pid = dd.supervisor_pid()
    if pid is not None and stop_pid(pid):
        removed.append(f"process {pid} (lab supervisor)")
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
