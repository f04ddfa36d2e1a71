"""Debian packages the tests unpack (never install) into a cache dir: fetched once, shared by test runs.

``apt-get download`` brings the ``.deb`` and ``dpkg-deb -x`` unpacks it under
``~/.cache/kmesh/<name>`` (or the directory an environment variable names);
a lock file lets overlapping test runs share the cache. When the download
fails the package lists are refreshed once (``apt-get update``, as root) and
it is tried again: stale lists are the usual cause.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def cache_dir(name: str, env: str) -> Path:
    """``$env`` or ``~/.cache/kmesh/<name>``, created if missing."""
    d = Path(os.environ.get(env) or Path.home() / ".cache" / "kmesh" / name)
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.contextmanager
def locked(cache: Path) -> Iterator[None]:
    """One process at a time fetches or builds in ``cache`` (test runs may overlap on one machine)."""
    with open(cache / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _download(package: str, dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["apt-get", "download", "-q", package], cwd=dest, capture_output=True, text=True, check=False)


def unpack_package(package: str | Callable[[], str], cache: Path, dest: Callable[[str], Path]) -> Path:
    """Download ``package`` (a name, or a function naming it, asked again after a refresh) and unpack it into
    ``dest(name)`` (replaced), which is returned. Raises RuntimeError when it cannot be had."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise RuntimeError("apt-get and dpkg-deb are needed to fetch Debian packages")
    name = package() if callable(package) else package
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        got = _download(name, Path(tmp))
        if got.returncode != 0 and os.geteuid() == 0:  # stale or missing package lists: refresh once
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
            name = package() if callable(package) else package
            got = _download(name, Path(tmp))
        if got.returncode != 0:
            raise RuntimeError(f"apt-get download {name}: {got.stderr.strip() or got.returncode}")
        deb = next(Path(tmp).glob("*.deb"))
        out = dest(name)
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(out)], check=True)
    return out
