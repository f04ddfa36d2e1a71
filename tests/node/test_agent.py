"""The agent as a whole: Node registration, Lease, Ready re-asserted, cancellation, API outages, IPAM across restarts."""

from __future__ import annotations

import re
import sys

import trio

from kmesh.apiserver.server import ServerConfig
from kmesh.client.api import Client
from kmesh.client.informer import Informer
from kmesh.client.kubeconfig import Credentials
from tests.node.conftest import (
    agent_config,
    agnhost,
    command,
    create_bound,
    pod,
    running_ready,
    set_pod_cidr,
    start_agent,
    wait_pod,
)
from tests.node.netutil import http_get, pid_alive, tcp_read_all, wait_file
from tests.support.cluster import serve_stoppable

MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


async def test_node_registration_and_lease_renewal(api, nursery, tmp_path) -> None:
    cfg = agent_config(tmp_path, "worker-a", "127.0.0.1", labels={"lab": "yes"}, role="worker", heartbeat=0.2)
    ra = await start_agent(nursery, api.client, cfg)
    try:
        node = await api.client.get("Node", "worker-a")
        labels = node["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == "worker-a" and labels["kubernetes.io/os"] == "linux"
        assert labels["node-role.kubernetes.io/worker"] == "" and labels["lab"] == "yes"
        st = node["status"]
        assert {"type": "InternalIP", "address": "127.0.0.1"} in st["addresses"]
        assert {"type": "Hostname", "address": "worker-a"} in st["addresses"]
        assert st["capacity"]["pods"] == "110" and st["allocatable"]["cpu"] and st["capacity"]["memory"].endswith("Ki")
        info = st["nodeInfo"]
        assert info["kubeletVersion"] == "v1.32.0-kmesh" and info["containerRuntimeVersion"].startswith("kmesh://")
        assert info["operatingSystem"] == "linux" and info["architecture"] and info["kernelVersion"] and info["osImage"]
        conds = {c["type"]: c for c in st["conditions"]}
        assert conds["Ready"]["status"] == "True" and conds["Ready"]["reason"] == "KubeletReady"
        assert conds["Ready"]["message"] == "kubelet is posting ready status"
        for t in ("MemoryPressure", "DiskPressure", "PIDPressure"):
            assert conds[t]["status"] == "False"

        leases = Informer(api.client, "Lease", namespace="kube-node-lease")
        await nursery.start(leases.run)
        with trio.fail_after(5):
            await leases.wait_for(lambda i: i.get("worker-a", "kube-node-lease") is not None)
        first = leases.get("worker-a", "kube-node-lease")
        assert first["spec"]["holderIdentity"] == "worker-a" and first["spec"]["leaseDurationSeconds"] == 40
        assert MICROTIME.match(first["spec"]["renewTime"])
        assert first["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"]
        with trio.fail_after(5):
            await leases.wait_for(
                lambda i: i.get("worker-a", "kube-node-lease")["spec"]["renewTime"] != first["spec"]["renewTime"])
        out = (await api.kubectl("get", "nodes")).stdout
        assert re.search(r"worker-a\s+Ready\s+worker", out)
    finally:
        await ra.stop()


async def test_agent_reasserts_ready_and_removes_unreachable_taints(api, node1) -> None:
    c = api.client
    node = await c.get("Node", "node-1")
    for cond in node["status"]["conditions"]:
        if cond["type"] == "Ready":
            cond.update(status="Unknown", reason="NodeStatusUnknown", message="Kubelet stopped posting node status.")
    await c.update_status(node)
    await c.patch("Node", "node-1", {"spec": {"taints": [
        {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
        {"key": "example.com/keep", "effect": "NoSchedule"},
    ]}})
    nodes = node1.agent.nodes

    def healed(i: Informer) -> bool:
        n = i.get("node-1")
        ready = next(x for x in n["status"]["conditions"] if x["type"] == "Ready")
        keys = [t["key"] for t in n["spec"].get("taints") or []]
        return ready["status"] == "True" and keys == ["example.com/keep"]

    with trio.fail_after(10):
        await nodes.wait_for(healed)


async def test_cancelling_the_agent_stops_every_pod_task_and_process(api, nursery, tmp_path, pods) -> None:
    ra = await start_agent(nursery, api.client, agent_config(tmp_path, "node-c"))
    await set_pod_cidr(api.client, "node-c", "127.244.203.0/24")
    pidfile = tmp_path / "pid"
    script = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    await create_bound(api.client, pod("proc", command("c", sys.executable, "-c", script)), node="node-c")
    await create_bound(api.client, pod("app", agnhost("a", "serve-hostname")), node="node-c")
    await wait_pod(pods, "proc", running_ready)
    p = await wait_pod(pods, "app", running_ready)
    pid = int(await wait_file(pidfile))
    ip = p["status"]["podIP"]
    assert await tcp_read_all(ip, 9376, b"GET / HTTP/1.0\r\n\r\n")

    with trio.fail_after(10):
        await ra.stop()
    assert not pid_alive(pid)
    with trio.fail_after(5):
        try:
            await tcp_read_all(ip, 9376)
            raise AssertionError("the app still answers")
        except OSError:
            pass
    # The pods stay in the API (the node agent is just gone), with their IPs.
    assert (await api.client.get("Pod", "app", "default"))["status"]["podIP"] == ip


async def test_ip_reuse_after_deletion_and_none_across_agent_restart(api, nursery, tmp_path, pods) -> None:
    # A /29 has 6 hosts; .1 is the gateway: 5 pod addresses (.2-.6).
    cfg = agent_config(tmp_path, "node-s")
    ra = await start_agent(nursery, api.client, cfg)
    await set_pod_cidr(api.client, "node-s", "127.244.205.0/29")
    for n in "abcd":
        await create_bound(api.client, pod(f"p-{n}", agnhost("c", "pause")), node="node-s")
    ips = {}
    for n in "abcd":
        ips[n] = (await wait_pod(pods, f"p-{n}", running_ready))["status"]["podIP"]
    assert sorted(ips.values()) == [f"127.244.205.{i}" for i in range(2, 6)]

    await ra.stop()
    ra = await start_agent(nursery, api.client, agent_config(tmp_path, "node-s"))
    try:
        # The restarted agent restarts the containers (the sim runtime's die with it) on the same IPs.
        for n in "abcd":
            p = await wait_pod(pods, f"p-{n}", lambda p: running_ready(p) and p["status"]["containerStatuses"][0]["restartCount"] == 1)
            assert p["status"]["podIP"] == ips[n]
        await create_bound(api.client, pod("p-e", agnhost("c", "pause")), node="node-s")
        assert (await wait_pod(pods, "p-e", running_ready))["status"]["podIP"] == "127.244.205.6"
        # Full: the next pod waits for an address...
        await create_bound(api.client, pod("p-f", agnhost("c", "pause")), node="node-s")
        with trio.move_on_after(0.5):
            await pods.wait_for(lambda i: bool(i.get("p-f", "default")["status"].get("podIP")))
        assert not pods.get("p-f", "default")["status"].get("podIP")
        # ...and gets the one a deleted pod gave back.
        await api.client.delete("Pod", "p-b", "default", grace_period=1)
        p = await wait_pod(pods, "p-f", running_ready)
        assert p["status"]["podIP"] == ips["b"]
    finally:
        await ra.stop()


async def test_agent_survives_an_api_server_restart(nursery, tmp_path) -> None:
    db = f"sqlite://{tmp_path / 'store.db'}"
    srv, server = await nursery.start(serve_stoppable, ServerConfig(data_dir=tmp_path / "api", store_url=db, port=0, loopback_ok=True))
    port = int(srv.url.rsplit(":", 1)[1])
    client = Client(Credentials(srv.url, srv.pki.ca_pem(), srv.pki.token))
    ra = await start_agent(nursery, client, agent_config(tmp_path, "node-r", retry_max=0.3))
    try:
        await set_pod_cidr(client, "node-r", "127.244.207.0/24")
        await create_bound(client, pod("keeper", agnhost("c", "netexec")), node="node-r")
        with trio.fail_after(15):
            await ra.agent.pods.wait_for(lambda i: running_ready(i.get("keeper", "default")))
        ip = ra.agent.pods.get("keeper", "default")["status"]["podIP"]
        renewals = ra.agent.lease_renewals

        await server.stop()
        with trio.fail_after(10):
            await ra.agent.pods.wait_for(lambda i: not i.connected)
        # The pod keeps serving while the API is away.
        assert (await http_get(f"http://{ip}:8080/hostname")).text == "keeper"

        _, server = await nursery.start(serve_stoppable, ServerConfig(data_dir=tmp_path / "api", store_url=db, port=port, loopback_ok=True))
        with trio.fail_after(15):
            await ra.agent.pods.wait_for(lambda i: i.connected)
            await ra.agent.wait_lease_renewals(renewals + 2)
        # Still the same running pod; and the agent acts on new work after the outage.
        p = await client.get("Pod", "keeper", "default")
        assert p["status"]["containerStatuses"][0]["restartCount"] == 0
        assert (await http_get(f"http://{ip}:8080/hostname")).text == "keeper"
        await create_bound(client, pod("after", agnhost("c", "pause")), node="node-r")
        with trio.fail_after(15):
            await ra.agent.pods.wait_for(lambda i: running_ready(i.get("after", "default")))
    finally:
        await ra.stop()
        await client.aclose()
        await server.stop()


async def test_two_nodes_pods_reach_each_other_across_nodes(api, nursery, tmp_path, pods) -> None:
    agents = []
    for i in (1, 2):
        ra = await start_agent(nursery, api.client, agent_config(tmp_path, f"n{i}", f"127.1.0.{i}"))
        agents.append(ra)
        await set_pod_cidr(api.client, f"n{i}", f"127.244.{210 + i}.0/24")
    try:
        await create_bound(api.client, pod("a", agnhost("c", "netexec")), node="n1")
        await create_bound(api.client, pod("b", agnhost("c", "netexec")), node="n2")
        a = await wait_pod(pods, "a", running_ready)
        b = await wait_pod(pods, "b", running_ready)
        assert a["status"]["podIP"].startswith("127.244.211.") and a["status"]["hostIP"] == "127.1.0.1"
        assert b["status"]["podIP"].startswith("127.244.212.") and b["status"]["hostIP"] == "127.1.0.2"
        a_ip, b_ip = a["status"]["podIP"], b["status"]["podIP"]
        resp = await http_get(f"http://{a_ip}:8080/dial?request=clientip&host={b_ip}&port=8080&protocol=http")
        assert resp.json()["responses"][0].startswith(a_ip + ":")  # b saw a's pod IP as the client
    finally:
        for ra in agents:
            await ra.stop()


async def test_metrics_endpoint(api, nursery, tmp_path, pods) -> None:
    ra = await start_agent(nursery, api.client, agent_config(tmp_path, "node-m", "127.1.0.209", metrics_port=0))
    try:
        await set_pod_cidr(api.client, "node-m", "127.244.220.0/24")
        await create_bound(api.client, pod("m", agnhost("c", "pause")), node="node-m")
        await wait_pod(pods, "m", running_ready)
        text = (await http_get(f"http://127.1.0.209:{ra.agent.metrics_port}/metrics")).text
        assert "kubelet_running_pods 1.0" in text
        assert 'kubelet_running_containers{container_state="running"} 1.0' in text
        assert 'kubelet_started_containers_total{container_type="container"} 1.0' in text
        assert 'kubelet_node_name{node="node-m"} 1.0' in text
    finally:
        await ra.stop()
