"""A lab's state survives what goes wrong around it, no one else's process is signalled, and its files are
private (issue 12 points 1, 2 and 9).

- A failed ``kmesh up`` removes only what that run made: a store (or anything
  else) already in the data dir stays, byte for byte.
- A sim lab restarted on its store gets the loopback slot the store was made
  with, or refuses clearly while another lab holds it.
- ``kmesh down``/``kmesh up`` treat a PID file that names someone else's
  process as stale: it is never signalled.
- After ``kmesh up --runtime sim --demo`` nothing in the data dir is readable
  by group or others but what ``kmesh.lab.access`` grants.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmesh.lab.datadir import DataDir, LabNetwork
from kmesh.lab.procs import ProcId, send, start_time, stop, wait_fd
from kmesh.lab.simslots import SlotsTaken, claim
from kmesh.lab.supervisor import LabError, UpOptions, claim_network, network_problem
from tests.conftest import require_binary
from tests.support.files import exposed

KMESH = [sys.executable, "-m", "kmesh.cli"]


def kmesh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The kmesh CLI, as a user runs it."""
    return subprocess.run([*KMESH, *args], capture_output=True, text=True, timeout=240, check=False,
                          env=dict(env if env is not None else os.environ, COLUMNS="300"))


def kubectl(d: Path, *args: str) -> str:
    """kubectl against the lab in ``d``; its stdout."""
    out = subprocess.run([require_binary("kubectl"), *args], capture_output=True, text=True, timeout=60, check=False,
                         env=dict(os.environ, KUBECONFIG=str(d / "kubeconfig.yaml")))
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data dir for one lab, taken down however the test ends."""
    d = tmp_path / "lab"
    try:
        yield d
    finally:
        kmesh("down", "--data-dir", str(d))


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process (``sleep 120``), ended by its PID afterwards."""
    proc = subprocess.Popen(["sleep", "120"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def contents(d: Path) -> dict[str, str]:
    """Every entry under ``d``: path → a hash of a file's bytes ("dir" for a directory)."""
    out = {}
    for p in sorted(d.rglob("*")):
        out[str(p.relative_to(d))] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def kill_9(proc: ProcId) -> None:
    """SIGKILL a lab's supervisor (proven by ``DataDir.supervisor``) and wait until it is gone."""
    fd = proc.open()
    assert fd is not None
    try:
        assert send(fd, signal.SIGKILL) and wait_fd(fd, 30.0)
    finally:
        os.close(fd)


# --- point 1: a failed start keeps what was there ------------------------------------------------------------

def test_a_restart_while_another_lab_holds_the_slot_refuses_and_keeps_the_store(data_dir: Path) -> None:
    """Kill -9 a sim lab; another lab takes its loopback slot; `kmesh up` on the first lab's data dir refuses,
    naming the slot, and changes nothing there. Once the slot is free, the lab restarts on its store."""
    d = data_dir
    up = kmesh("up", "--runtime", "sim", "--port", "0", "--data-dir", str(d))
    assert up.returncode == 0, up.stdout + up.stderr
    kubectl(d, "create", "configmap", "keep", "--from-literal=k=v")
    dd = DataDir(d)
    net, sup = dd.read_network("sqlite"), dd.supervisor()
    assert net is not None and net.simSlot is not None and sup is not None
    kill_9(sup)
    try:  # what a second sim lab started now does: take the free slot, the first lab's
        _, slot_fd = claim(slot=net.simSlot)
    except SlotsTaken:  # a lab of someone else on this machine was quicker: the same situation
        slot_fd = None
    before = contents(d)
    try:
        again = kmesh("up", "--runtime", "sim", "--port", "0", "--data-dir", str(d))
        assert again.returncode == 1, again.stdout + again.stderr
        assert f"sim address slot {net.simSlot}" in again.stderr and "is kept" in again.stderr, again.stderr
        assert "not in the valid range" not in again.stderr
        assert contents(d) == before  # store.db, its WAL, PKI, logs: every byte
    finally:
        if slot_fd is not None:
            os.close(slot_fd)
    if slot_fd is None:
        pytest.skip(f"another lab on this machine holds sim slot {net.simSlot}: cannot restart on it now")
    third = kmesh("up", "--runtime", "sim", "--port", "0", "--data-dir", str(d))
    assert third.returncode == 0, third.stdout + third.stderr
    assert dd.read_network("sqlite") == net
    info = dd.read_cluster()
    assert info is not None and (info.serviceCIDR, info.clusterCIDR) == (net.serviceCIDR, net.clusterCIDR)
    assert kubectl(d, "get", "configmap", "keep", "-o", "jsonpath={.data.k}") == "v"


def test_a_start_that_fails_removes_only_what_it_made(data_dir: Path) -> None:
    """A store `kmesh up` cannot open makes the supervisor fail after the data dir is prepared: the failure
    path removes the files and directories this run made, and keeps the store and everything else."""
    d = data_dir
    d.mkdir()
    (d / "store.db").write_bytes(b"someone's state, not an SQLite file\n" * 100)
    (d / "notes.txt").write_text("not the lab's\n")
    before = contents(d)
    up = kmesh("up", "--runtime", "sim", "--port", "0", "--data-dir", str(d))
    assert up.returncode == 1, up.stdout + up.stderr
    assert "did not start" in up.stderr and "store.db" in up.stderr
    assert contents(d) == before


def test_the_supervisor_takes_the_recorded_slot_or_refuses(tmp_path: Path) -> None:
    """The supervisor's own check (the CLI's is only a hint): the slot recorded with a store, or a LabError
    that names it; and never the other runtime on that store."""
    dd = DataDir(tmp_path)
    (tmp_path / "store.db").write_bytes(b"")
    held, fd = claim()
    try:
        dd.write_network("sqlite", LabNetwork("sim", held.service_cidr, held.cluster_cidr, held.slot))
        opts = UpOptions(data_dir=str(tmp_path), runtime="sim")
        with pytest.raises(LabError, match=f"slot {held.slot}.*is kept"):
            claim_network(opts, dd, sim=True)
        problem = network_problem(opts, dd)
        assert problem is not None and f"slot {held.slot}" in problem
        netns_opts = UpOptions(data_dir=str(tmp_path), runtime="netns")
        problem = network_problem(netns_opts, dd)
        assert problem is not None and "--runtime sim" in problem
        memory = UpOptions(data_dir=str(tmp_path), runtime="sim", store="memory")
        assert network_problem(memory, dd) is None  # nothing survives in memory: any slot will do
    finally:
        os.close(fd)
    net, simnet, fd = claim_network(UpOptions(data_dir=str(tmp_path), runtime="sim"), dd, sim=True)
    try:
        assert simnet is not None and simnet.slot == held.slot and net == dd.read_network("sqlite")
    finally:
        assert fd is not None
        os.close(fd)
    # a lab on another store (here: memory, nothing recorded; then a fresh etcd) leaves the SQLite record alone
    for store in ("memory", "etcd"):
        _, _, fd = claim_network(UpOptions(data_dir=str(tmp_path), runtime="sim", store=store), dd, sim=True)
        assert fd is not None
        os.close(fd)
    assert dd.read_network("sqlite") == net and dd.read_network("etcd") is not None
    assert dd.read_network("memory") is None


def test_the_supervisor_process_says_why_it_does_not_start(tmp_path: Path) -> None:
    """When the slot is taken between `kmesh up`'s check and the supervisor's claim, the supervisor reports a
    clear error through the ready pipe, exits 1, and leaves the data dir as it was."""
    dd = DataDir(tmp_path)
    (tmp_path / "store.db").write_bytes(b"state")
    held, fd = claim()
    try:
        dd.write_network("sqlite", LabNetwork("sim", held.service_cidr, held.cluster_cidr, held.slot))
        UpOptions(data_dir=str(tmp_path), runtime="sim", port=0).save(dd.config_file)
        before = contents(tmp_path)
        r, w = os.pipe()
        try:
            try:
                sup = subprocess.run([*KMESH, "supervise", "--data-dir", str(tmp_path)], pass_fds=(w,),
                                     env=dict(os.environ, KMESH_READY_FD=str(w)), capture_output=True, text=True,
                                     timeout=120, check=False)
            finally:
                os.close(w)
            said = os.read(r, 1 << 16).decode()
        finally:
            os.close(r)
    finally:
        os.close(fd)
    assert sup.returncode == 1, sup.stdout + sup.stderr
    error = json.loads(said.splitlines()[-1])["error"]
    assert f"sim address slot {held.slot}" in error and "is kept" in error
    assert contents(tmp_path) == before


# --- point 2: only the lab's own process is signalled ---------------------------------------------------------

def test_a_pid_file_naming_another_process_is_stale(data_dir: Path, sleeper: subprocess.Popen[bytes]) -> None:
    """kmesh.pid names an unrelated process (its PID reused): `kmesh down` leaves it alone, `kmesh up` starts
    the lab; the lab's own supervisor is the one `kmesh down` stops."""
    d = data_dir
    d.mkdir()
    start = start_time(sleeper.pid)
    assert start is not None
    (d / "kmesh.pid").write_text(f"{sleeper.pid} {start}\n")  # even its true start time: no lab lock is held
    down = kmesh("down", "--data-dir", str(d))
    assert down.returncode == 0, down.stderr
    assert "lab supervisor" not in down.stdout and sleeper.poll() is None
    d.mkdir()
    (d / "kmesh.pid").write_text(f"{sleeper.pid}\n")  # as an older kmesh wrote it
    up = kmesh("up", "--runtime", "sim", "--port", "0", "--data-dir", str(d))
    assert up.returncode == 0, up.stdout + up.stderr
    assert sleeper.poll() is None
    sup = DataDir(d).supervisor()
    assert sup is not None and sup.pid != sleeper.pid
    # a PID with another start time is another process: not signalled
    assert not ProcId(sup.pid, sup.start + 1).alive() and not stop(ProcId(sup.pid, sup.start + 1), grace=1.0)
    assert not stop(ProcId(sleeper.pid, start + 1), grace=1.0) and sleeper.poll() is None
    again = kmesh("up", "--runtime", "sim", "--port", "0", "--data-dir", str(d))
    assert again.returncode == 1 and f"already running in {d} (pid {sup.pid})" in again.stderr
    down = kmesh("down", "--data-dir", str(d))
    assert down.returncode == 0 and f"process {sup.pid} (lab supervisor)" in down.stdout, down.stdout + down.stderr
    assert sleeper.poll() is None and not d.exists()


# --- point 9: private files ------------------------------------------------------------------------------------

def test_nothing_in_a_sim_lab_is_readable_by_others(data_dir: Path) -> None:
    """After `kmesh up --runtime sim --demo` (pods running, writing logs): the data dir 0700, everything in it
    0600/0700 (a plain root start: no sudo user, default kubeconfig mode)."""
    d = data_dir
    env = {k: v for k, v in os.environ.items() if k not in ("SUDO_UID", "SUDO_GID", "KMESH_KUBECONFIG_MODE")}
    up = kmesh("up", "--runtime", "sim", "--port", "0", "--demo", "--data-dir", str(d), env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    assert list(d.glob("nodes/*/pods/*/*/*.log")), "the demo pods should have logs"
    for name in ("store.db", "store.db-wal", "store.db-shm", "logs/kmesh.log", "pki/ca.key", "cluster.json"):
        assert (d / name).exists(), name
    assert exposed(d) == []
    assert (d.stat().st_mode & 0o777, (d / "kubeconfig.yaml").stat().st_mode & 0o777) == (0o700, 0o600)
