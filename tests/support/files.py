"""What in a lab's data dir other local users could read: the check of issue 12 point 9."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def exposed(root: Path) -> list[str]:
    """Every entry under ``root`` that group or others may read, write or (for files) execute, as
    ``"<mode> <path>"``.

    Left out is what ``kmesh.lab.access`` grants on purpose: search (x) on the
    data dir itself for the kubeconfig's readers, and ``kubeconfig.yaml``'s
    own mode (``--write-kubeconfig-mode``, tested in test_kubeconfig_access)."""
    out = []
    st = root.lstat()
    if st.st_mode & 0o066:
        out.append(f"{stat.S_IMODE(st.st_mode):04o} {root}")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p == root / "kubeconfig.yaml":
                continue
            try:
                mode = p.lstat().st_mode
            except FileNotFoundError:  # went while we looked (a port file rewritten, a pod's log dir removed)
                continue
            if stat.S_ISLNK(mode):
                continue
            if mode & 0o077:
                out.append(f"{stat.S_IMODE(mode):04o} {p}")
    return sorted(out)
