"""Pod lifecycle on a real agent: status fields, restart policies, processes, graceful deletion."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import pytest
import trio

from kmesh.api import errors as E
from tests.node.conftest import (
    agnhost,
    command,
    condition,
    create_bound,
    cstatus,
    node1_cidr,
    pod,
    running_ready,
    wait_pod,
)
from tests.node.netutil import pid_alive, wait_file


def phase(p) -> str:
    return ((p or {}).get("status") or {}).get("phase", "")


async def test_pod_runs_and_reports_full_status(api, node1, pods) -> None:
    await create_bound(api.client, pod("web", agnhost("app", "serve-hostname", ports=[{"containerPort": 9376}])))
    p = await wait_pod(pods, "web", running_ready)
    st = p["status"]
    net = ipaddress.ip_network(node1_cidr())
    assert ipaddress.ip_address(st["podIP"]) in net
    assert st["podIP"] != str(net.network_address + 1)  # the gateway address is never handed out
    assert st["podIPs"] == [{"ip": st["podIP"]}]
    assert st["hostIP"] == "127.0.0.1" and st["hostIPs"] == [{"ip": "127.0.0.1"}]
    assert st["startTime"]
    types = {c["type"]: c for c in st["conditions"]}
    for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready"):
        assert types[t]["status"] == "True" and types[t]["lastTransitionTime"]
    cs = cstatus(p, "app")
    assert cs["containerID"].startswith("kmesh://") and cs["imageID"]
    assert cs["image"].startswith("registry.k8s.io/e2e-test-images/agnhost")
    assert cs["ready"] and cs["started"] and cs["restartCount"] == 0
    assert cs["state"]["running"]["startedAt"]
    # kubectl sees it the way users know it.
    out = (await api.kubectl("get", "pod", "web", "-o", "wide")).stdout
    assert "Running" in out and "1/1" in out and st["podIP"] in out and "node-1" in out


async def test_pods_stay_pending_until_the_node_has_a_pod_cidr(api, nursery, tmp_path, pods) -> None:
    from tests.node.conftest import agent_config, set_pod_cidr, start_agent

    ra = await start_agent(nursery, api.client, agent_config(tmp_path, "node-9"))
    try:
        await create_bound(api.client, pod("early", agnhost("app", "pause")), node="node-9")
        with trio.move_on_after(0.5):
            await pods.wait_for(lambda i: phase(i.get("early", "default")) != "Pending")
        assert phase(pods.get("early", "default")) == "Pending"
        assert not pods.get("early", "default")["status"].get("podIP")
        await set_pod_cidr(api.client, "node-9", "127.244.209.0/24")
        p = await wait_pod(pods, "early", running_ready)
        assert p["status"]["podIP"].startswith("127.244.209.")
    finally:
        await ra.stop()


async def test_restart_policy_never_and_on_failure(api, node1, pods) -> None:
    py = sys.executable
    await create_bound(api.client, pod("never-ok", command("c", py, "-c", "pass"), restartPolicy="Never"))
    await create_bound(api.client, pod("never-fail", command("c", py, "-c", "raise SystemExit(4)"), restartPolicy="Never"))
    await create_bound(api.client, pod("onfail-ok", command("c", py, "-c", "pass"), restartPolicy="OnFailure"))
    await create_bound(api.client, pod("onfail-fail", command("c", py, "-c", "raise SystemExit(5)"), restartPolicy="OnFailure"))
    await create_bound(api.client, pod("always-ok", command("c", py, "-c", "pass")))

    p = await wait_pod(pods, "never-ok", lambda p: phase(p) == "Succeeded")
    assert cstatus(p, "c")["state"]["terminated"]["reason"] == "Completed"
    assert condition(p, "Ready") == "False"
    p = await wait_pod(pods, "never-fail", lambda p: phase(p) == "Failed")
    assert cstatus(p, "c")["state"]["terminated"]["exitCode"] == 4 and cstatus(p, "c")["restartCount"] == 0
    p = await wait_pod(pods, "onfail-ok", lambda p: phase(p) == "Succeeded")
    assert cstatus(p, "c")["restartCount"] == 0
    # OnFailure restarts a failing container: first at once, then in CrashLoopBackOff.
    p = await wait_pod(pods, "onfail-fail", lambda p: cstatus(p, "c").get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff")
    cs = cstatus(p, "c")
    assert cs["restartCount"] >= 1 and cs["lastState"]["terminated"]["exitCode"] == 5
    assert "back-off" in cs["state"]["waiting"]["message"]
    assert phase(p) == "Running"
    p = await wait_pod(pods, "onfail-fail", lambda p: cstatus(p, "c").get("restartCount", 0) >= 2)
    # Always restarts even containers that succeed.
    await wait_pod(pods, "always-ok", lambda p: cstatus(p, "c").get("restartCount", 0) >= 2)
    assert phase(pods.get("always-ok", "default")) == "Running"


async def test_command_container_gets_env_and_is_stopped_by_sigterm_on_delete(api, node1, pods, tmp_path) -> None:
    out = tmp_path / "out"
    script = (
        "import os, signal, sys, time\n"
        "def term(*a):\n"
        "    open(sys.argv[1] + '.term', 'w').write('bye')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        "open(sys.argv[1] + '.tmp', 'w').write(' '.join([str(os.getpid()), os.environ['MY_NAME'], os.environ['MY_NS'],\n"
        "    os.environ['MY_IP'], os.environ['MY_NODE'], os.environ['GREETING'], os.environ['HOSTNAME'], os.getcwd(),\n"
        "    os.environ['MY_HOST']]))\n"
        "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
        "while True: time.sleep(1)\n"
    )
    env = [
        {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "MY_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        {"name": "WHO", "value": "world"},
        {"name": "GREETING", "value": "hello-$(WHO)"},
    ]
    c = command("proc", sys.executable, "-c", script, str(out), env=env, workingDir=str(tmp_path))
    await create_bound(api.client, pod("proc", c, terminationGracePeriodSeconds=10))
    p = await wait_pod(pods, "proc", running_ready)
    pid_s, name, ns, ip, node, greeting, hostname, cwd, host = (await wait_file(out)).split(" ")
    assert (name, ns, ip, node, greeting, hostname, cwd, host) == (
        "proc", "default", p["status"]["podIP"], "node-1", "hello-world", "proc", str(tmp_path), "127.0.0.1")
    pid = int(pid_s)
    assert pid_alive(pid)

    await api.client.delete("Pod", "proc", "default")
    p = await wait_pod(pods, "proc", lambda p: p is None)
    assert Path(str(out) + ".term").read_text() == "bye"  # it got SIGTERM and exited by itself
    assert not pid_alive(pid)


async def test_process_ignoring_sigterm_is_killed_after_the_grace_period(api, node1, pods, tmp_path) -> None:
    out = tmp_path / "pid"
    script = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid())); os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
        "while True: time.sleep(1)\n"
    )
    await create_bound(api.client, pod("stubborn", command("c", sys.executable, "-c", script, str(out)), terminationGracePeriodSeconds=1))
    await wait_pod(pods, "stubborn", running_ready)
    pid = int(await wait_file(out))
    started = trio.current_time()
    await api.client.delete("Pod", "stubborn", "default")
    # Terminating: the object stays, not ready, until the kubelet has killed the process.
    p = await wait_pod(pods, "stubborn", lambda p: p is None or condition(p, "Ready") == "False")
    if p is not None:
        assert p["metadata"].get("deletionTimestamp")
    await wait_pod(pods, "stubborn", lambda p: p is None)
    assert trio.current_time() - started >= 0.9  # the grace period was given
    assert not pid_alive(pid)


async def test_graceful_deletion_of_app_pod_and_missing_executable(api, node1, pods, tmp_path) -> None:
    marker = tmp_path / "prestop"
    pre = {"preStop": {"exec": {"command": ["sh", "-c", f"echo $HOSTNAME > {marker}"]}}}
    await create_bound(api.client, pod("gone", agnhost("app", "netexec", "--delay-shutdown=1", lifecycle=pre)))
    await wait_pod(pods, "gone", running_ready)
    with trio.fail_after(10):
        await api.client.delete("Pod", "gone", "default", grace_period=5)
        p = await wait_pod(pods, "gone", lambda p: p is None or condition(p, "Ready") == "False")
        if p is not None:
            assert p["metadata"]["deletionGracePeriodSeconds"] == 5
        await wait_pod(pods, "gone", lambda p: p is None)
    with pytest.raises(E.APIError) as err:
        await api.client.get("Pod", "gone", "default")
    assert err.value.code == 404
    assert marker.read_text().strip() == "gone"  # the preStop hook ran, with the pod's env

    await create_bound(api.client, pod("noexe", command("c", "/no/such/binary"), restartPolicy="Never"))
    p = await wait_pod(pods, "noexe", lambda p: phase(p) == "Failed")
    term = cstatus(p, "c")["state"]["terminated"]
    assert term["reason"] == "StartError" and term["exitCode"] == 128 and "/no/such/binary" in term["message"]


async def test_pod_deleted_before_it_ran_is_removed(api, nursery, tmp_path, pods) -> None:
    from tests.node.conftest import agent_config, start_agent

    ra = await start_agent(nursery, api.client, agent_config(tmp_path, "node-8"))  # no podCIDR: nothing starts
    try:
        await create_bound(api.client, pod("never-started", agnhost("app", "pause")), node="node-8")
        await api.client.delete("Pod", "never-started", "default")
        await wait_pod(pods, "never-started", lambda p: p is None)
    finally:
        await ra.stop()


async def test_init_containers_run_first(api, node1, pods, tmp_path) -> None:
    marker = tmp_path / "init-done"
    init = command("init", sys.executable, "-c", f"open({str(marker)!r}, 'w').write('x')")
    main = command("main", sys.executable, "-c", f"import os, time; assert os.path.exists({str(marker)!r}); time.sleep(60)")
    await create_bound(api.client, pod("with-init", main, initContainers=[init]))
    p = await wait_pod(pods, "with-init", running_ready)
    ics = p["status"]["initContainerStatuses"][0]
    assert ics["state"]["terminated"]["reason"] == "Completed" and condition(p, "Initialized") == "True"
    await create_bound(api.client, pod("init-fails", main, initContainers=[command("init", sys.executable, "-c", "raise SystemExit(2)")],
                                       restartPolicy="Never"))
    p = await wait_pod(pods, "init-fails", lambda p: phase(p) == "Failed")
    assert condition(p, "Initialized") == "False"


async def test_native_sidecar_starts_first_and_counts_for_readiness(api, node1, pods, tmp_path) -> None:
    """KEP-753: an init container with restartPolicy Always runs beside the containers; they start only once
    its startup probe passed, and its readiness is part of the pod's."""
    started, ready = tmp_path / "side-started", tmp_path / "side-ready"
    side = command("side", sys.executable, "-c",
                   f"import time; time.sleep(0.3); open({str(started)!r}, 'w').write('x'); time.sleep(600)",
                   restartPolicy="Always",
                   startupProbe={"exec": {"command": ["test", "-f", str(started)]}, "periodSeconds": 1},
                   readinessProbe={"exec": {"command": ["test", "-f", str(ready)]}, "periodSeconds": 1})
    main = command("main", sys.executable, "-c",
                   f"import os, time; assert os.path.exists({str(started)!r}), 'sidecar not started'; time.sleep(600)")
    await create_bound(api.client, pod("with-sidecar", main, initContainers=[side]))
    p = await wait_pod(pods, "with-sidecar", lambda p: (cstatus(p, "main") or {}).get("state", {}).get("running"))
    assert cstatus(p, "main")["restartCount"] == 0  # it found the sidecar started: no crash
    assert condition(p, "Initialized") == "True"
    assert condition(p, "Ready") == "False"  # the sidecar is not ready yet
    side_status = p["status"]["initContainerStatuses"][0]
    assert side_status["started"] and not side_status["ready"] and "running" in side_status["state"]
    ready.write_text("x")
    p = await wait_pod(pods, "with-sidecar", lambda p: condition(p, "Ready") == "True")
    assert p["status"]["initContainerStatuses"][0]["ready"] is True
    out = (await api.kubectl("get", "pod", "with-sidecar")).stdout
    assert "2/2" in out  # kubectl counts the sidecar with the containers
