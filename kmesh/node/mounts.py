"""Where a container path lives on the machine: a container's ``volumeMounts`` over its pod's volume directories.

Built-in apps run in the agent's process and see the machine's files, so
a path such as ``/etc/secret-volume/crt`` from their env is looked up here:
the mount with the longest ``mountPath`` that holds it gives the directory
(plus ``subPath``) the node materialised for the volume.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

from kmesh.api.obj import Obj


@dataclass(frozen=True)
class Mount:
    """One volume mount of a container: its path in the container and the directory or file on the machine."""

    container_path: str
    host_path: Path
    read_only: bool = False


def container_mounts(container: Obj, volume_dirs: dict[str, Path]) -> list[Mount]:
    """The mounts of ``container`` whose volume the node has materialised (in ``volume_dirs``, by volume name)."""
    out = []
    for vm in container.get("volumeMounts") or []:
        base = volume_dirs.get(vm.get("name", ""))
        path = vm.get("mountPath") or ""
        if base is None or not path.startswith("/"):
            continue
        sub = posixpath.normpath("/" + (vm.get("subPath") or "")).lstrip("/")
        out.append(Mount(posixpath.normpath(path), base / sub if sub else base, bool(vm.get("readOnly"))))
    return out


def host_path(mounts: list[Mount], path: str) -> Path:
    """The file on the machine behind container path ``path`` (the path itself when no mount holds it)."""
    p = posixpath.normpath(path) if path.startswith("/") else path
    best: Mount | None = None
    for m in mounts:
        inside = m.container_path == "/" or p == m.container_path or p.startswith(m.container_path + "/")
        if inside and (best is None or len(m.container_path) > len(best.container_path)):
            best = m
    if best is None:
        return Path(p)
    rel = p[len(best.container_path):].lstrip("/") if best.container_path != "/" else p.lstrip("/")
    return best.host_path / rel if rel else best.host_path
