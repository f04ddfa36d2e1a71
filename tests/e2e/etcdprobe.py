"""Looking at a lab's own etcd from outside, as a local user or a pod would: its process, its URLs, etcdctl.

The lab's etcd is found by its data dir (``D/etcd/data``) on its command
line; ``etcdctl`` runs as the user and in the namespace a test asks for,
with or without client certificate files.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from kmesh.lab.datadir import DataDir
from kmesh.net import netns
from tests.conftest import require_binary


def lab_etcd_argv(dd: DataDir) -> list[str]:
    """The command line of the etcd whose data dir is the lab's (the test fails when there is none)."""
    flag = f"--data-dir={dd.root / 'etcd' / 'data'}"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv and argv[0].endswith("etcd") and flag in argv:
            return argv
    raise AssertionError(f"no etcd runs with {flag}")


def flag_value(argv: Sequence[str], flag: str) -> str:
    """``--flag=value``'s value on a command line ("" when absent)."""
    return next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{flag}=")), "")


def client_urls(argv: Sequence[str]) -> list[str]:
    """Where etcd listens for clients."""
    return flag_value(argv, "listen-client-urls").split(",")


def etcdctl(
    url: str, *args: str, files: tuple[Path, Path, Path] | None = None, user: str | None = None,
    namespace: str | None = None, timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``etcdctl --endpoints url args...``; ``files``: (CA, certificate, key); ``user``: run as that user
    (runuser); ``namespace``: inside that network namespace."""
    argv = [require_binary("etcdctl"), f"--endpoints={url}", "--dial-timeout=3s", "--command-timeout=5s"]
    if files is not None:
        ca, cert, key = files
        argv += [f"--cacert={ca}", f"--cert={cert}", f"--key={key}"]
    else:
        argv += ["--insecure-skip-tls-verify"]  # nothing to verify with: only the client certificate is missing
    argv += list(args)
    if user is not None:
        argv = [require_binary("runuser"), "-u", user, "--", *argv]
    if namespace is not None:
        argv = netns.exec_argv(namespace, argv)
    env = dict(os.environ, ETCDCTL_API="3")
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)


def apiserver_files(dd: DataDir) -> tuple[Path, Path, Path]:
    """etcd's CA and the API server's etcd client pair in the lab's data dir."""
    pki = dd.root / "pki"
    return pki / "etcd" / "ca.crt", pki / "apiserver-etcd-client.crt", pki / "apiserver-etcd-client.key"
