"""`kmesh up / status / down / server` as a user runs them, with the real kubectl."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from kmesh.client.api import Client
from kmesh.lab.datadir import DataDir
from kmesh.lab.procs import start_until, stop_process
from tests.conftest import require_binary
from tests.support.metrics import check_metrics


async def kmesh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the kmesh CLI; returns its (text) result."""
    res = await trio.run_process(
        [sys.executable, "-m", "kmesh.cli", *args], capture_stdout=True, capture_stderr=True, check=False,
        env=dict(os.environ, COLUMNS="200"),
    )
    out = subprocess.CompletedProcess(res.args, res.returncode, res.stdout.decode(), res.stderr.decode())
    if check and out.returncode != 0:
        raise AssertionError(f"kmesh {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out


async def kubectl(kubeconfig: Path, *args: str) -> str:
    res = await trio.run_process(
        [require_binary("kubectl"), *args], capture_stdout=True, capture_stderr=True,
        env=dict(os.environ, KUBECONFIG=str(kubeconfig)),
    )
    return res.stdout.decode()


@pytest.mark.parametrize("store", ["sqlite", pytest.param("etcd", marks=pytest.mark.etcd)])
async def test_up_status_down(tmp_path: Path, store: str) -> None:
    if store == "etcd":
        require_binary("etcd")
    d = tmp_path / "lab"
    try:
        out = await kmesh("up", "--data-dir", str(d), "--port", "0", "--runtime", "sim", "--store", store)
        assert "is up" in out.stdout
        info = json.loads((d / "cluster.json").read_text())
        assert info["runtime"] == "sim" and info["api"].startswith("https://127.0.0.1:")
        net = DataDir(d).read_network(store)
        assert net is not None and net.simSlot is not None
        slot = net.simSlot  # 0 unless other sim labs run on this machine
        assert info["serviceCIDR"] == f"127.{96 + slot}.0.0/16" and info["clusterCIDR"] == f"127.{244 + slot}.0.0/16"
        assert info["kubeconfig"] == str(d / "kubeconfig.yaml")
        names = (await kubectl(d / "kubeconfig.yaml", "get", "ns", "-o", "name")).split()
        assert "namespace/default" in names and "namespace/kube-system" in names
        host, port = info["dns"]
        assert f"dig @{host} -p {port}" in out.stdout
        res = await trio.run_process(
            [require_binary("dig"), f"@{host}", "-p", str(port), "+short", "kubernetes.default.svc.cluster.local"],
            capture_stdout=True,
        )
        assert res.stdout.decode().split() == [f"127.{96 + slot}.0.1"]
        await trio.to_thread.run_sync(check_metrics, info, d / "kubeconfig.yaml")
        healthz = int((d / "run" / "proxy-healthz.port").read_text())
        async with httpx.AsyncClient(trust_env=False) as http:
            resp = await http.get(f"http://127.0.0.1:{healthz}/healthz")
        assert resp.status_code == 200 and resp.json()["nodeEligible"] is True

        again = await kmesh("up", "--data-dir", str(d), "--port", "0", "--runtime", "sim", check=False)
        assert again.returncode != 0 and "already running" in again.stderr

        st = await kmesh("status", "--data-dir", str(d))
        assert info["api"] in st.stdout.replace("\n", "")
        assert "userspace, " in st.stdout and " syncs" in st.stdout and "not answering" not in st.stdout, st.stdout
        for component, url in info["metrics"].items():
            assert f"{component}" in st.stdout and url in st.stdout, st.stdout
    finally:
        down = await kmesh("down", "--data-dir", str(d))
    assert "lab supervisor" in down.stdout
    assert not d.exists()
    twice = await kmesh("down", "--data-dir", str(d))
    assert "nothing to remove" in twice.stdout


async def test_bad_arguments_are_named(tmp_path: Path) -> None:
    out = await kmesh("up", "--data-dir", str(tmp_path), "--nodes", "0", check=False)
    assert out.returncode == 2 and "--nodes" in out.stderr
    out = await kmesh("up", "--data-dir", str(tmp_path), "--runtime", "sim", "--proxy-mode", "iptables", check=False)
    assert out.returncode == 2 and "--proxy-mode" in out.stderr
    out = await kmesh("up", "--data-dir", str(tmp_path), "--store", "bogus", check=False)
    assert out.returncode == 2 and "--store" in out.stderr
    out = await kmesh("up", "--data-dir", str(tmp_path), "--runtime", "sim", "--ipvs-scheduler", "fifo", check=False)
    assert out.returncode == 2 and "--ipvs-scheduler" in out.stderr and "wlc" in out.stderr
    assert not (tmp_path / "up.json").exists()
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = await kmesh("up", "--data-dir", str(tmp_path), "--runtime", "sim", "--port", str(port), check=False)
    assert out.returncode == 2 and "--port" in out.stderr and "in use" in out.stderr
    assert not (tmp_path / "cluster.json").exists()


async def _start_server(data_dir: Path, port: int) -> tuple[trio.Process, str]:
    """Start `kmesh server` and return once it prints its URL."""
    proc = await start_until(
        [sys.executable, "-m", "kmesh.cli", "server", "--data-dir", str(data_dir), "--port", str(port)], b"API server on"
    )
    url = proc.startup_output.decode().split("API server on ", 1)[1].split(";")[0].strip()  # type: ignore[attr-defined]
    return proc, url


@pytest.mark.slow
async def test_kill_9_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    proc, url = await _start_server(tmp_path, 0)
    port = int(url.rsplit(":", 1)[1])
    acked: list[str] = []
    enough = trio.Event()
    client = Client.from_kubeconfig(tmp_path / "kubeconfig.yaml")
    try:
        async def writer(w: int) -> None:
            i = 0
            while True:
                name = f"w{w}-{i}"
                await client.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"i": str(i)}})
                acked.append(name)
                if len(acked) >= 300:
                    enough.set()
                i += 1

        async with trio.open_nursery() as nursery:
            for w in range(4):
                nursery.start_soon(writer, w)
            with trio.fail_after(60):
                await enough.wait()
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            nursery.cancel_scope.cancel()
    except* Exception as eg:  # the writers fail once the server is gone; that is expected
        if not all("Unavailable" in type(e).__name__ or "Transport" in type(e).__name__ for e in eg.exceptions):
            raise
    finally:
        await client.aclose()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    proc2, _ = await _start_server(tmp_path, port)
    try:
        async with Client.from_kubeconfig(tmp_path / "kubeconfig.yaml") as c:
            items, _ = await c.list_all("ConfigMap", "default")
        stored = {o["metadata"]["name"] for o in items}
        missing = [n for n in acked if n not in stored]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    finally:
        await stop_process(proc2)


def test_data_dir_paths(tmp_path: Path) -> None:
    dd = DataDir(tmp_path)
    assert dd.kubeconfig.name == "kubeconfig.yaml" and dd.cluster_json.name == "cluster.json"
    assert dd.read_cluster() is None and dd.supervisor_pid() is None


@pytest.mark.slow
async def test_components_run_as_separate_processes(tmp_path: Path) -> None:
    """server, controllers and an agent as their own processes, as on Vagrant VMs or under systemd."""
    py = [sys.executable, "-m", "kmesh.cli"]
    procs = []
    try:
        procs.append(await start_until(
            py + ["server", "--data-dir", str(tmp_path), "--port", "0", "--service-cidr", "127.96.0.0/16", "--loopback-ok"],
            b"API server on"))
        kc = str(tmp_path / "kubeconfig.yaml")
        procs.append(await start_until(
            py + ["controllers", "--kubeconfig", kc, "--cluster-cidr", "127.244.0.0/16", "--service-cidr", "127.96.0.0/16",
                  "--metrics-port", "0", "--scheduler-metrics-port", "0"],  # free ports: a lab may hold 10257/10259
            b"controllers running"))
        procs.append(await start_until(
            py + ["agent", "--kubeconfig", kc, "--node", "solo", "--node-ip", "127.1.0.9", "--data-dir", str(tmp_path)],
            b"agent solo running"))
        async with Client.from_kubeconfig(kc) as c:
            await c.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "echo"},
                            "spec": {"containers": [{"name": "e", "image": "kmesh/echo"}]}})
            with trio.fail_after(60):
                async with c.watch("Pod", "default", field_selector="metadata.name=echo") as events:
                    async for _, pod in events:
                        st = pod.get("status") or {}
                        if any(cd["type"] == "Ready" and cd["status"] == "True" for cd in st.get("conditions") or []):
                            break
        assert pod["spec"]["nodeName"] == "solo"
        assert st["podIP"].startswith("127.244.")
    finally:
        for p in reversed(procs):
            await stop_process(p)
