"""Who may read the lab's kubeconfig: the user who ran sudo, `--write-kubeconfig-mode`, and nothing else exposed.

The tests run as root and act as other users with setpriv: uid 65534 (nobody)
stands for the user who ran `sudo kmesh up`, uid 1 for anyone else.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from kmesh.lab.access import KubeconfigAccess, grant_traverse, kubeconfig_access, parse_mode
from kmesh.lab.procs import start_until, stop_process
from tests.conftest import require, require_binary

KMESH = [sys.executable, "-m", "kmesh.cli"]
SUDOER = 65534  # nobody: the user who ran sudo
OTHER = 1  # someone else on the machine


def test_modes_as_k3s_takes_them() -> None:
    assert (parse_mode("644"), parse_mode("0640"), parse_mode("600"), parse_mode("400")) == (0o644, 0o640, 0o600, 0o400)
    for bad in ("666", "620", "755", "4600", "044", "rw", "9"):
        with pytest.raises(ValueError):
            parse_mode(bad)


def test_sudo_user_owns_the_kubeconfig_only_under_root() -> None:
    access = kubeconfig_access(None, {"SUDO_UID": "1000", "SUDO_GID": "1001"})
    if os.geteuid() == 0:
        assert access == KubeconfigAccess(0o600, (1000, 1001))
    else:
        assert access == KubeconfigAccess(0o600, None)  # a plain user cannot give files away
    assert kubeconfig_access(0o640, {"SUDO_UID": "0", "SUDO_GID": "0"}).owner is None
    assert kubeconfig_access(None, {}).owner is None


def as_user(uid: int, *cmd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` as ``uid`` (its own group, no supplementary groups)."""
    setpriv = require_binary("setpriv")
    return subprocess.run([setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *cmd],
                          capture_output=True, text=True, env=env, check=False, timeout=60)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory every user may traverse (pytest's tmp_path is root's alone), removed afterwards."""
    require(os.geteuid() == 0, "root (to act as other users)")
    d = Path(tempfile.mkdtemp(prefix="kmesh-access-", dir="/tmp"))
    try:
        d.chmod(0o755)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_traversal_is_granted_to_exactly_the_readers(shared_tmp: Path) -> None:
    root = shared_tmp / "lab"
    root.mkdir(mode=0o700)
    kc = root / "kubeconfig.yaml"
    kc.write_text("apiVersion: v1\n")
    secret = root / "store.db"
    secret.write_text("state")
    secret.chmod(0o644)  # even a file left readable stays out of reach of everyone but the kubeconfig's users
    os.chown(kc, SUDOER, SUDOER)
    kc.chmod(0o600)
    said = grant_traverse(root, KubeconfigAccess(0o600, (SUDOER, SUDOER)))
    assert "traversable by user nobody only" in said
    assert as_user(SUDOER, "cat", str(kc)).stdout == "apiVersion: v1\n"
    assert as_user(SUDOER, "ls", str(root)).returncode != 0  # search, not read
    assert as_user(OTHER, "cat", str(secret)).returncode != 0
    assert root.stat().st_mode & 0o007 == 0
    # 644: every user may read it, so every user may traverse (and a stale ACL goes)
    kc.chmod(0o644)
    said = grant_traverse(root, KubeconfigAccess(0o644, (SUDOER, SUDOER)))
    assert as_user(OTHER, "cat", str(kc)).returncode == 0
    assert as_user(OTHER, "ls", str(root)).returncode != 0
    # root's own lab again: nobody else gets in
    assert grant_traverse(root, KubeconfigAccess()) == f"{root}: mode 0700"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert as_user(SUDOER, "cat", str(kc)).returncode != 0


async def kmesh(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    res = await trio.run_process([*KMESH, *args], capture_stdout=True, capture_stderr=True, check=False,
                                 env=dict(env, COLUMNS="200"))
    return subprocess.CompletedProcess(res.args, res.returncode, res.stdout.decode(), res.stderr.decode())


def kubectl_as(uid: int, home: Path, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    kubectl = require_binary("kubectl")
    return as_user(uid, kubectl, "--kubeconfig", str(kubeconfig), *args,
                   env={"PATH": os.environ.get("PATH", ""), "HOME": str(home)})


async def test_sudo_kmesh_up_hands_the_kubeconfig_to_the_sudo_user(shared_tmp: Path) -> None:
    d = shared_tmp / "lab"
    home = shared_tmp / "home"
    home.mkdir()
    os.chown(home, SUDOER, SUDOER)
    env = dict(os.environ, SUDO_UID=str(SUDOER), SUDO_GID=str(SUDOER), SUDO_USER="nobody")
    try:
        up = await kmesh("up", "--data-dir", str(d), "--port", "0", "--runtime", "sim", env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "traversable by user nobody only" in up.stdout
        kc = d / "kubeconfig.yaml"
        st = kc.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (SUDOER, SUDOER, 0o600)
        got = await trio.to_thread.run_sync(kubectl_as, SUDOER, home, kc, "get", "nodes", "-o", "name")
        assert got.returncode == 0, got.stderr
        assert got.stdout.split() == ["node/node-1"]
        # the rest stays root's: the store, keys and token are out of reach, the dir cannot be listed
        for private in ("store.db", "cluster.json", "pki/token", "pki/ca.key", "up.json"):
            assert as_user(SUDOER, "cat", str(d / private)).returncode != 0, private
        assert as_user(SUDOER, "ls", str(d)).returncode != 0
        assert as_user(OTHER, "cat", str(kc)).returncode != 0
        for entry in d.iterdir():
            if entry.name != "kubeconfig.yaml":
                assert entry.lstat().st_mode & 0o077 == 0, f"{entry} is {oct(entry.lstat().st_mode)}"
        assert d.stat().st_mode & 0o007 == 0
    finally:
        down = await kmesh("down", "--data-dir", str(d), env=env)
    assert down.returncode == 0 and not d.exists()


async def test_server_write_kubeconfig_mode_644_lets_every_user_in(shared_tmp: Path) -> None:
    d = shared_tmp / "srv"
    home = shared_tmp / "home"
    home.mkdir()
    os.chown(home, OTHER, OTHER)
    bad = await kmesh("server", "--data-dir", str(d), "--write-kubeconfig-mode", "666", env=dict(os.environ))
    assert bad.returncode == 2 and "--write-kubeconfig-mode" in bad.stderr and "write" in bad.stderr
    not_sudo = ["env", "-u", "SUDO_UID", "-u", "SUDO_GID"]  # root's own lab, even if the tests run under sudo
    proc = await start_until([*not_sudo, *KMESH, "server", "--data-dir", str(d), "--port", "0",
                              "--write-kubeconfig-mode", "644"], b"API server on")
    try:
        kc = d / "kubeconfig.yaml"
        assert stat.S_IMODE(kc.stat().st_mode) == 0o644 and kc.stat().st_uid == 0
        assert stat.S_IMODE(d.stat().st_mode) == 0o711
        got = await trio.to_thread.run_sync(kubectl_as, OTHER, home, kc, "get", "ns", "-o", "name")
        assert got.returncode == 0 and "namespace/default" in got.stdout.split(), got.stderr
        assert as_user(OTHER, "cat", str(d / "store.db")).returncode != 0
        assert as_user(OTHER, "cat", str(d / "pki" / "token")).returncode != 0
    finally:
        await stop_process(proc)
