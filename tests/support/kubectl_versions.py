"""The kubectl binaries the tests drive: the one on PATH, and Debian bookworm's own (1.20), fetched once.

Debian's ``kubernetes-client`` package is kubectl 1.20, what a user who takes
kubectl from Debian has. It validates manifests on the client against
``/openapi/v2`` and explains from it, so it tests the server's v2 document the
way a current kubectl cannot. The package is fetched with ``apt-get download``
and unpacked with ``dpkg-deb -x`` (never installed) into a cache dir
(``$KMESH_KUBECTL_CACHE`` or ``~/.cache/kmesh/kubectl-1.20``); if the download
fails once, the package lists are refreshed (``apt-get update``, as root) and
it is tried again. When it cannot be had the test is skipped, or fails under
``KMESH_REQUIRE_NETNS=1`` (CI).
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import require, require_binary
from tests.support import debcache

DEBIAN_PACKAGE = "kubernetes-client"


@dataclass(frozen=True)
class Kubectl:
    """One kubectl binary and the client version it reports."""

    path: str
    version: tuple[int, int]

    @property
    def label(self) -> str:
        """``1.20``-style, for test ids and messages."""
        return f"{self.version[0]}.{self.version[1]}"


def cache_dir() -> Path:
    """Where Debian's kubectl is unpacked (created if missing)."""
    return debcache.cache_dir("kubectl-1.20", "KMESH_KUBECTL_CACHE")


def client_version(path: str) -> tuple[int, int]:
    """(major, minor) of a kubectl binary, from ``kubectl version --client -o json``."""
    out = subprocess.run([path, "version", "--client", "-o", "json"], capture_output=True, text=True,
                         check=True, env=dict(os.environ, KUBECONFIG=os.devnull)).stdout
    info = json.loads(out)["clientVersion"]
    return int(re.sub(r"\D", "", info["major"])), int(re.sub(r"\D", "", info["minor"]))


def fetch_debian_kubectl(cache: Path | None = None) -> Path:
    """Download (once) and unpack Debian's kubectl into the cache; its path. Raises RuntimeError if it cannot."""
    cache = cache or cache_dir()
    binary = cache / "root" / "usr" / "bin" / "kubectl"
    with debcache.locked(cache):
        if (cache / ".unpacked").exists() and binary.exists():
            return binary
        debcache.unpack_package(DEBIAN_PACKAGE, cache, lambda _: cache / "root")
        if not binary.exists():
            raise RuntimeError(f"{DEBIAN_PACKAGE} holds no usr/bin/kubectl")
        (cache / ".unpacked").write_text(DEBIAN_PACKAGE + "\n")
        return binary


@functools.cache
def _debian() -> Kubectl | str:
    try:
        path = str(fetch_debian_kubectl())
        return Kubectl(path, client_version(path))
    except (RuntimeError, OSError, subprocess.CalledProcessError, ValueError) as exc:
        return str(exc)


def debian_kubectl() -> Kubectl:
    """Debian bookworm's kubectl (1.20); skips the test (fails in CI) if it cannot be fetched."""
    got = _debian()
    require(isinstance(got, Kubectl), f"Debian's kubectl ({DEBIAN_PACKAGE}): {got}")
    assert isinstance(got, Kubectl)
    return got


def installed_kubectl() -> Kubectl:
    """The kubectl on PATH (skips, or fails in CI, without one)."""
    path = require_binary("kubectl")
    return Kubectl(path, client_version(path))


KUBECTLS = {"installed": installed_kubectl, "debian": debian_kubectl}
"""Each kubectl the version tests run, by test id."""
