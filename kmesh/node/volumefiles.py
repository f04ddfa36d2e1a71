"""The files of Secret, ConfigMap, downwardAPI and projected volumes, and writing them as the kubelet does.

``*_files`` turn a volume spec and its source object into ``{relative path:
(content, mode)}`` (or raise ``MountError`` with upstream's message);
``write_atomic`` puts them in a directory the way upstream's AtomicWriter
does: the files live in a fresh ``..<timestamp>`` directory, ``..data`` is a
symlink to it swapped with one rename, and each top-level name is a symlink
into ``..data`` — so a reader sees the old set or the new set, never a mix.
"""

from __future__ import annotations

import base64
import os
import posixpath
import shutil
import tempfile
import time
from pathlib import Path

from kmesh.api.obj import Obj
from kmesh.node.podspec import field_value

Files = dict[str, tuple[bytes, int]]
DEFAULT_MODE = 0o644
DATA_DIR = "..data"


class MountError(Exception):
    """A volume cannot be set up yet (its source is missing or lacks a key): upstream's message."""


def source_data(kind: str, obj: Obj) -> dict[str, bytes]:
    """The key → bytes of a Secret (``data`` base64, ``stringData``) or a ConfigMap (``data``, ``binaryData``)."""
    out: dict[str, bytes] = {}
    if kind == "Secret":
        for k, v in (obj.get("data") or {}).items():
            out[k] = base64.b64decode(v or "")
        for k, v in (obj.get("stringData") or {}).items():
            out[k] = str(v).encode()
    else:
        for k, v in (obj.get("data") or {}).items():
            out[k] = str(v).encode()
        for k, v in (obj.get("binaryData") or {}).items():
            out[k] = base64.b64decode(v or "")
    return out


def _clean(path: str) -> str:
    """A relative item path with no ``..`` escape (validation rejects those; this keeps the writer safe)."""
    p = posixpath.normpath("/" + path).lstrip("/")
    if not p or p.startswith(".."):
        raise MountError(f"invalid item path {path!r}")
    return p


def keyed_files(kind: str, source: Obj, obj: Obj | None, default_mode: int) -> Files:
    """The files of a secret/configMap volume (or projection) ``source`` given the object (None: not found)."""
    name = source.get("secretName") if kind == "Secret" else source.get("name")
    optional = bool(source.get("optional"))
    noun = "secret" if kind == "Secret" else "configmap"
    if obj is None:
        if optional:
            return {}
        raise MountError(f'{noun} "{name}" not found' if kind == "Secret" else f'configmap "{name}" not found')
    data = source_data(kind, obj)
    items = source.get("items")
    if not items:
        return {_clean(k): (v, default_mode) for k, v in data.items()}
    out: Files = {}
    for item in items:
        key = item.get("key", "")
        if key not in data:
            if optional:
                continue
            raise MountError(f"references non-existent {noun} key: {key}" if kind == "Secret"
                             else f"configmap references non-existent config key: {key}")
        mode = item.get("mode")
        out[_clean(item.get("path") or key)] = (data[key], int(mode) if mode is not None else default_mode)
    return out


def downward_files(source: Obj, pod: Obj, default_mode: int) -> Files:
    """The files of a downwardAPI volume (or projection): one per item with a ``fieldRef``."""
    status = pod.get("status") or {}
    out: Files = {}
    for item in source.get("items") or []:
        ref = item.get("fieldRef") or {}
        path = ref.get("fieldPath", "")
        if path in ("metadata.labels", "metadata.annotations"):
            values = (pod.get("metadata") or {}).get(path.split(".")[1]) or {}
            text = "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
        else:
            text = field_value(pod, path, status.get("podIP", ""), status.get("hostIP", "")) if ref else ""
        mode = item.get("mode")
        out[_clean(item.get("path", ""))] = (text.encode(), int(mode) if mode is not None else default_mode)
    return out


def write_atomic(directory: Path, files: Files) -> bool:
    """Make ``directory`` hold exactly ``files`` (see the module docstring); False when it already did."""
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    if read_current(directory) == files:
        return False
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())
    new_dir = Path(tempfile.mkdtemp(prefix=stamp, dir=directory))
    os.chmod(new_dir, 0o755)
    for rel, (content, mode) in files.items():
        target = new_dir / rel
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.chmod(target, mode & 0o777)
    data_link = directory / DATA_DIR
    old = os.readlink(data_link) if data_link.is_symlink() else None
    tmp_link = directory / (DATA_DIR + "_tmp")
    if tmp_link.is_symlink():
        tmp_link.unlink()
    os.symlink(new_dir.name, tmp_link)
    os.rename(tmp_link, data_link)
    tops = {rel.split("/", 1)[0] for rel in files}
    for top in tops:
        link = directory / top
        if not link.is_symlink():
            os.symlink(f"{DATA_DIR}/{top}", link)
    for entry in directory.iterdir():
        if entry.name.startswith(".."):
            continue
        if entry.is_symlink() and entry.name not in tops:
            entry.unlink()
    if old and old != new_dir.name:
        shutil.rmtree(directory / old, ignore_errors=True)
    return True


def read_current(directory: Path) -> Files | None:
    """The files ``directory`` shows now (None when it was never written)."""
    data = directory / DATA_DIR
    if not data.is_symlink():
        return None
    root = data.resolve()
    out: Files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            out[p.relative_to(root).as_posix()] = (p.read_bytes(), p.stat().st_mode & 0o777)
    return out
