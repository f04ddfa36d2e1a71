"""Readiness, liveness and startup probes against real apps and processes."""

from __future__ import annotations

import trio

from tests.node.conftest import (
    agnhost,
    condition,
    create_bound,
    cstatus,
    pod,
    running_ready,
    wait_pod,
)


def exec_probe(*argv: str, **kw: int) -> dict:
    return {"exec": {"command": list(argv)}, "periodSeconds": 1, "failureThreshold": 1, **kw}


async def test_readiness_probe_failing_makes_pod_not_ready_and_recovers(api, node1, pods, tmp_path) -> None:
    flag = tmp_path / "ready"
    flag.write_text("yes")
    c = agnhost("app", "netexec", readinessProbe=exec_probe("cat", str(flag)))
    await create_bound(api.client, pod("flaky", c))
    p = await wait_pod(pods, "flaky", running_ready)
    assert cstatus(p, "app")["ready"] is True

    flag.unlink()
    p = await wait_pod(pods, "flaky", lambda p: condition(p, "Ready") == "False")
    assert p["status"]["phase"] == "Running" and cstatus(p, "app")["ready"] is False
    assert condition(p, "ContainersReady") == "False"
    ready_cond = next(c for c in p["status"]["conditions"] if c["type"] == "Ready")
    assert ready_cond["reason"] == "ContainersNotReady" and "app" in ready_cond["message"]
    assert cstatus(p, "app")["restartCount"] == 0  # readiness never restarts

    flag.write_text("yes")
    await wait_pod(pods, "flaky", running_ready)


async def test_http_and_tcp_readiness_with_named_ports(api, node1, pods) -> None:
    ports = [{"name": "http", "containerPort": 8080}]
    good = agnhost("app", "netexec", ports=ports,
                   readinessProbe={"httpGet": {"path": "/healthz", "port": "http",
                                               "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, "periodSeconds": 1})
    await create_bound(api.client, pod("http-ready", good))
    await wait_pod(pods, "http-ready", running_ready)

    bad = agnhost("app", "netexec", readinessProbe={"tcpSocket": {"port": 9999}, "periodSeconds": 1})
    tcp_ok = agnhost("side", "serve-hostname", "--tcp", "--http=false", "--port=7777",
                     readinessProbe={"tcpSocket": {"port": 7777}, "periodSeconds": 1})
    await create_bound(api.client, pod("tcp-unready", bad, tcp_ok))
    p = await wait_pod(pods, "tcp-unready", lambda p: cstatus(p, "side").get("ready") is True)
    with trio.move_on_after(1.5):
        await pods.wait_for(lambda i: cstatus(i.get("tcp-unready", "default"), "app").get("ready") is True)
    p = pods.get("tcp-unready", "default")
    assert cstatus(p, "app")["ready"] is False and condition(p, "Ready") == "False"


async def test_liveness_failure_restarts_the_container(api, node1, pods) -> None:
    c = agnhost("app", "netexec", livenessProbe={
        "httpGet": {"path": "/echo?msg=sick&code=500", "port": 8080}, "periodSeconds": 1, "failureThreshold": 2,
        "initialDelaySeconds": 0})
    await create_bound(api.client, pod("sick", c))
    p = await wait_pod(pods, "sick", lambda p: cstatus(p, "app").get("restartCount", 0) >= 1)
    cs = cstatus(p, "app")
    assert cs["lastState"]["terminated"]["finishedAt"]
    # netexec exits 0 on SIGTERM; the restart comes from the probe, not from the exit code.
    assert cs["lastState"]["terminated"]["exitCode"] == 0


async def test_liveness_failure_with_restart_policy_never_ends_the_pod(api, node1, pods) -> None:
    c = agnhost("app", "netexec", livenessProbe=exec_probe("false"))
    await create_bound(api.client, pod("never-live", c, restartPolicy="Never"))
    p = await wait_pod(pods, "never-live", lambda p: (p or {}).get("status", {}).get("phase") in ("Succeeded", "Failed"))
    assert cstatus(p, "app")["restartCount"] == 0


async def test_startup_probe_gates_started_and_ready(api, node1, pods, tmp_path) -> None:
    flag = tmp_path / "started"
    c = agnhost("app", "netexec", startupProbe=exec_probe("cat", str(flag), failureThreshold=60),
                livenessProbe=exec_probe("true"))
    await create_bound(api.client, pod("slow-start", c))
    p = await wait_pod(pods, "slow-start", lambda p: "running" in cstatus(p, "app").get("state", {}))
    with trio.move_on_after(1.5):
        await pods.wait_for(lambda i: cstatus(i.get("slow-start", "default"), "app").get("started") is True)
    p = pods.get("slow-start", "default")
    assert cstatus(p, "app")["started"] is False and cstatus(p, "app")["ready"] is False
    flag.write_text("ok")
    p = await wait_pod(pods, "slow-start", running_ready)
    assert cstatus(p, "app")["started"] is True and cstatus(p, "app")["restartCount"] == 0


async def test_exec_probe_runs_with_the_pod_env_and_times_out(api, node1, pods) -> None:
    env = [{"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    probe = exec_probe("sh", "-c", 'test "$MY_POD" = envpod')
    await create_bound(api.client, pod("envpod", agnhost("app", "pause", env=env, readinessProbe=probe)))
    await wait_pod(pods, "envpod", running_ready)
    slow = exec_probe("sleep", "5", timeoutSeconds=1)
    await create_bound(api.client, pod("slowprobe", agnhost("app", "pause", readinessProbe=slow)))
    with trio.move_on_after(2.5):
        await pods.wait_for(lambda i: condition(i.get("slowprobe", "default"), "Ready") == "True")
    assert condition(pods.get("slowprobe", "default"), "Ready") == "False"


async def test_steady_pod_causes_no_status_writes(api, node1, pods) -> None:
    c = agnhost("app", "netexec", readinessProbe={"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
                livenessProbe={"tcpSocket": {"port": 8080}, "periodSeconds": 1})
    await create_bound(api.client, pod("steady", c))
    p = await wait_pod(pods, "steady", running_ready)
    rv = p["metadata"]["resourceVersion"]
    writes = node1.agent.kubelet.statuses.writes
    # Probes keep succeeding for a few periods: nothing changes, nothing is written.
    with trio.move_on_after(2.5):
        await pods.wait_for(lambda i: i.get("steady", "default")["metadata"]["resourceVersion"] != rv)
    assert pods.get("steady", "default")["metadata"]["resourceVersion"] == rv
    assert node1.agent.kubelet.statuses.writes == writes


async def test_readiness_is_probed_while_the_pod_terminates(api, node1, pods) -> None:
    """As upstream's kubelet: a deleted pod stays Ready through its preStop ``sleep`` (its endpoint keeps
    serving); once netexec gets SIGTERM its /readyz fails, the probe turns the pod not ready, and it goes."""
    ready = {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 1, "failureThreshold": 1}
    c = agnhost("app", "netexec", "--delay-shutdown=3", readinessProbe=ready,
                lifecycle={"preStop": {"sleep": {"seconds": 2}}})
    await create_bound(api.client, pod("draining", c, terminationGracePeriodSeconds=20))
    await wait_pod(pods, "draining", running_ready)
    await api.client.delete("Pod", "draining", "default")
    p = await wait_pod(pods, "draining", lambda p: p is not None and bool(p["metadata"].get("deletionTimestamp")))
    assert condition(p, "Ready") == "True"
    with trio.move_on_after(1.0):  # well inside the 2 s preStop sleep: nothing makes it unready
        await pods.wait_for(lambda i: condition(i.get("draining", "default"), "Ready") != "True")
    p = pods.get("draining", "default")
    assert p is not None and condition(p, "Ready") == "True" and cstatus(p, "app")["ready"] is True
    # after the sleep: SIGTERM, /readyz answers 503, not ready while netexec waits out its --delay-shutdown
    p = await wait_pod(pods, "draining", lambda p: p is None or condition(p, "Ready") == "False")
    if p is not None:
        assert cstatus(p, "app")["ready"] is False
    await wait_pod(pods, "draining", lambda p: p is None, timeout=25)
