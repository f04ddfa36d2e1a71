"""``kubectl logs`` against a sim cluster: whole log, tail, byte limit, follow until the pod goes, and errors."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import trio

from kmesh.api import errors as E
from kmesh.apiserver.podlogs import LogOptions, log_file
from kmesh.client.informer import Informer
from kmesh.node.podspec import log_path
from tests.conftest import require_binary
from tests.support.simcluster import start_sim_cluster

LOGGER = """\
apiVersion: v1
kind: Pod
metadata: {name: logger}
spec:
  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'echo first; echo second; i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.1; done']
"""


async def test_kubectl_logs_tail_limit_follow_and_errors(nursery: trio.Nursery, tmp_path: Path) -> None:
    sim = await start_sim_cluster(nursery, tmp_path, nodes=1)
    await sim.kubectl("apply", "-f", "-", stdin=LOGGER)
    pods = Informer(sim.client, "Pod", namespace="default")
    nursery.start_soon(pods.run)
    with trio.fail_after(30):
        await pods.wait_for(lambda i: ((i.get("logger", "default") or {}).get("status") or {}).get("phase") == "Running")

    async def logs(*args: str) -> str:
        return (await sim.kubectl("logs", "logger", *args)).stdout

    with trio.fail_after(30):
        while "tick 2\n" not in (whole := await logs()):
            await trio.sleep(0.1)  # the container's own output: no event to await
    assert whole.startswith("first\nsecond\ntick 1\n")
    assert (await logs("--tail=1")).count("\n") == 1 and (await logs("--tail=1")).startswith("tick ")
    assert await logs("--limit-bytes=3") == "fir"
    assert await logs("-c", "main", "--tail=0") == ""

    bad = await sim.kubectl("logs", "logger", "-c", "nope", check=False)
    assert bad.returncode != 0 and "container nope is not valid for pod logger" in bad.stderr
    bad = await sim.kubectl("logs", "logger", "--timestamps", check=False)
    assert bad.returncode != 0 and "timestamps" in bad.stderr
    bad = await sim.kubectl("logs", "logger", "--previous", check=False)
    assert bad.returncode != 0 and 'previous terminated container "main" in pod "logger" not found' in bad.stderr

    # -f goes on with new lines and ends when the pod is deleted.
    last = int(whole.strip().splitlines()[-1].split()[1])
    env = dict(os.environ, KUBECONFIG=str(sim.api.kubeconfig), HOME=str(tmp_path))
    follower = await trio.lowlevel.open_process([require_binary("kubectl"), "logs", "-f", "logger"],
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        seen = b""
        with trio.fail_after(30):
            while f"tick {last + 3}\n".encode() not in seen:
                chunk = await follower.stdout.receive_some(4096)  # type: ignore[union-attr]
                assert chunk, "the follower ended early"
                seen += chunk
        await sim.client.delete("Pod", "logger", "default", grace_period=0)
        with trio.fail_after(30):
            while await follower.stdout.receive_some(4096):  # type: ignore[union-attr]
                pass
            assert await follower.wait() == 0
    finally:
        if follower.returncode is None:
            follower.kill()
            await follower.wait()
    assert seen.startswith(b"first\nsecond\n")


def test_previous_is_the_restart_before_and_unknown_nodes_are_named(tmp_path: Path) -> None:
    pod = {"metadata": {"name": "p", "namespace": "default", "uid": "u1"},
           "spec": {"nodeName": "node-1", "containers": [{"name": "a"}, {"name": "b"}]}}
    node_dir = tmp_path / "node-1"
    for restart in (0, 1, 2):
        log_path(node_dir, pod, "a", restart).write_text(f"run {restart}\n")
    assert log_file(tmp_path, pod, LogOptions("a")).read_text() == "run 2\n"
    assert log_file(tmp_path, pod, LogOptions("a", previous=True)).read_text() == "run 1\n"
    with pytest.raises(E.APIError, match=r"a container name must be specified for pod p, choose one of: \[a b\]"):
        log_file(tmp_path, pod, LogOptions())
    with pytest.raises(E.APIError, match='container "b" in pod "p" is waiting to start'):
        log_file(tmp_path, pod, LogOptions("b"))
    elsewhere = {**pod, "spec": {**pod["spec"], "nodeName": "vm-2"}}
    with pytest.raises(E.APIError, match='the logs of node "vm-2" are not on this machine'):
        log_file(tmp_path, elsewhere, LogOptions("a"))
    with pytest.raises(E.APIError, match="tailLines"):
        LogOptions.parse({"tailLines": "x"})
