"""The netns runtime against real namespaces and the reference CNI plugins (bridge, host-local, portmap).

Every test builds its own node namespace ``kmr-<tag>-node`` and a cluster name
``kmr-<tag>``, so pod namespaces are ``kmesh-kmr-<tag>-node-1-...``; the
fixture removes all of them (and the node namespace) even when a test fails.
The plugins run inside the node namespace: ``cni0`` never appears in ours.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from kmesh.cni.caller import CNIChain
from kmesh.net import netns
from kmesh.net.netns_check import netns_usable
from kmesh.node.agent import AgentConfig
from kmesh.node.netns_runtime import (
    NetnsRuntime,
    NetnsSandbox,
    SandboxError,
    port_mappings,
    sandbox_id,
)
from kmesh.node.runtime import Sandbox
from tests.conftest import require
from tests.node.conftest import (
    agnhost,
    command,
    create_bound,
    pod,
    running_ready,
    start_agent,
    wait_pod,
)
from tests.node.netutil import pid_alive

pytestmark = pytest.mark.netns

Obj = dict[str, Any]
SUBNET = "10.250.1.0/24"
GATEWAY = "10.250.1.1"
CNI_PATH = ["/usr/lib/cni"]


@dataclass
class Lab:
    """A node namespace with a CNI chain and a runtime for node ``node-1`` of cluster ``kmr-<tag>``."""

    tag: str
    node_ns: str
    tmp: Path
    chain: CNIChain
    rt: NetnsRuntime

    def runtime(self, **kw: Any) -> NetnsRuntime:
        """Another runtime on the same data dir (an agent that restarted)."""
        kw.setdefault("resolv_conf", self.tmp / "node-resolv.conf")
        node = kw.pop("node", "node-1")
        return NetnsRuntime(
            self.tmp / "node", netns_prefix=f"kmesh-{self.tag}-{node}-", node=node, cni=self.chain,
            node_netns=self.node_ns, node_ip="192.168.56.11", **kw,
        )

    def ipam_ips(self) -> list[str]:
        """The addresses host-local has handed out and not released."""
        d = self.tmp / "ipam" / self.tag
        return sorted(p.name for p in d.iterdir() if p.name[0].isdigit()) if d.exists() else []


def conflist(tag: str, ipam_dir: Path) -> Obj:
    """The reference plugins: bridge cni0 (gateway) with host-local IPAM in a tmp dir, then portmap."""
    return {
        "cniVersion": "1.0.0", "name": tag,
        "plugins": [
            {
                "type": "bridge", "bridge": "cni0", "isGateway": True, "isDefaultGateway": True,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET, "gateway": GATEWAY}]], "dataDir": str(ipam_dir)},
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    """A test node namespace, its CNI chain and a NetnsRuntime; every namespace made is removed afterwards."""
    require(netns_usable(), "root and network namespaces")
    for tool in ("unshare", "sh", "hostname"):
        require(shutil.which(tool) is not None, f"program {tool!r}")
    require(os.path.exists("/usr/lib/cni/bridge"), "CNI reference plugins in /usr/lib/cni")
    tag = f"kmr-{secrets.token_hex(3)}"
    node_ns = f"{tag}-node"
    try:
        netns.add(node_ns)
        chain = CNIChain(conflist(tag, tmp_path / "ipam"), cni_path=CNI_PATH, cache_dir=tmp_path / "cni-cache", netns_for_plugins=node_ns)
        # The node's resolver has no search line, whatever this machine's /etc/resolv.conf says.
        (tmp_path / "node-resolv.conf").write_text("nameserver 192.168.56.1\n")
        rt = NetnsRuntime(
            tmp_path / "node", netns_prefix=f"kmesh-{tag}-node-1-", node="node-1", cni=chain, node_netns=node_ns, node_ip="192.168.56.11",
            resolv_conf=tmp_path / "node-resolv.conf",
        )
        yield Lab(tag, node_ns, tmp_path, chain, rt)
    finally:
        for name in netns.names(f"kmesh-{tag}-"):
            netns.delete(name)
        netns.delete(node_ns)


def mkpod(name: str, *containers: Obj, **spec: Any) -> Obj:
    """A pod manifest as the kubelet hands it over (with a UID and hostIP)."""
    p = pod(name, *containers, **spec)
    p["metadata"]["uid"] = str(uuid.uuid4())
    p["status"] = {"hostIP": "192.168.56.11"}
    return p


async def read_all(ns: str | None, ip: str, port: int, *, wait: bool = True) -> bytes:
    """Connect from namespace ``ns`` and read until the server closes.

    With ``wait``, a refused connection is retried for a while: an app task has
    started when ``start_container`` returns, but nothing tells when it listens
    (the kubelet learns it from a readiness probe, which polls too)."""
    with trio.fail_after(5):
        while True:
            sock = await netns.open_socket(ns)
            with sock:
                try:
                    await sock.connect((ip, port))
                except ConnectionRefusedError:
                    if not wait:
                        raise
                    await trio.sleep(0.02)
                    continue
                out = b""
                while chunk := await sock.recv(4096):
                    out += chunk
                return out


async def wait_log(path: Path, text: str) -> None:
    """Wait until a container's log shows ``text`` (a process tells nothing else when it is ready)."""
    with trio.fail_after(10):
        while text not in (path.read_text() if path.exists() else ""):
            await trio.sleep(0.02)


def ns_inode(path: str) -> int:
    """The inode of a network namespace file (same inode: same namespace)."""
    return os.stat(path).st_ino


async def test_two_pods_get_distinct_ips_and_reach_each_other(lab: Lab, nursery: trio.Nursery) -> None:
    a_pod = mkpod("web-a", agnhost("app", "serve-hostname", "--tcp", "--http=false"))
    b_pod = mkpod("web-b", agnhost("app", "serve-hostname", "--tcp", "--http=false"))
    a = await lab.rt.create_sandbox(a_pod, "")
    b = await lab.rt.create_sandbox(b_pod, "")
    assert isinstance(a, NetnsSandbox) and isinstance(b, NetnsSandbox)
    net = ipaddress.ip_network(SUBNET)
    assert a.ip != b.ip and ipaddress.ip_address(a.ip) in net and ipaddress.ip_address(b.ip) in net
    assert a.netns == f"kmesh-{lab.tag}-node-1-web-a-{a.pod_uid[:8]}" and a.bind_host == "0.0.0.0"
    assert lab.ipam_ips() == sorted([a.ip, b.ip])
    assert f"inet {a.ip}/24" in netns.ip(a.netns, "-o", "addr", "show", "dev", "eth0")
    assert "cni0" in netns.ip(lab.node_ns, "-o", "link") and "cni0:" not in netns.ip(None, "-o", "link")
    assert set(lab.rt.recorded()) == {a.netns, b.netns}

    await lab.rt.start_container(nursery, a, a_pod, a_pod["spec"]["containers"][0])
    await lab.rt.start_container(nursery, b, b_pod, b_pod["spec"]["containers"][0])
    # serve-hostname answers its pod name on :9376, from the node and from the other pod.
    assert await read_all(lab.node_ns, a.ip, 9376) == b"web-a"
    assert await read_all(b.netns, a.ip, 9376) == b"web-a"
    assert await read_all(a.netns, b.ip, 9376) == b"web-b"
    # The app listens inside the pod namespace, not in ours.
    with pytest.raises(OSError):
        await read_all(None, "127.0.0.1", 9376, wait=False)


async def test_command_container_sees_hostname_resolv_conf_and_hosts(lab: Lab, nursery: trio.Nursery) -> None:
    script = 'hostname; cat /etc/resolv.conf; cat /etc/hosts; echo "env=$HOSTNAME $MY_IP"; ip -o -4 addr show dev eth0; pwd'
    p = mkpod("shell", command("sh", "sh", "-c", script, workingDir="/tmp",
                              env=[{"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]),
              ns="team-a", subdomain="web", restartPolicy="Never")
    sb = await lab.rt.create_sandbox(p, "")
    p["status"]["podIP"] = sb.ip
    handle = await lab.rt.start_container(nursery, sb, p, p["spec"]["containers"][0])
    with trio.fail_after(10):
        assert await handle.wait() == 0
    out = (sb.log_dir / "sh" / "0.log").read_text()
    lines = out.splitlines()
    assert lines[0] == "shell"
    assert "search team-a.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n" in out
    assert f"{sb.ip}\tshell.web.team-a.svc.cluster.local\tshell" in out
    assert f"env=shell {sb.ip}" in out
    assert f"inet {sb.ip}/24" in out
    assert lines[-1] == "/tmp"
    assert os.uname().nodename != "shell"  # our own hostname is untouched


async def test_dns_policy_default_and_dns_config(lab: Lab, nursery: trio.Nursery) -> None:
    resolv = lab.tmp / "node-resolv.conf"
    resolv.write_text("nameserver 192.168.56.1\nsearch lab.example\noptions timeout:1\n")
    rt = lab.runtime(resolv_conf=resolv)
    p = mkpod("dflt", command("c", "sleep", "1"), dnsPolicy="Default",
              dnsConfig={"searches": ["extra.example"], "options": [{"name": "ndots", "value": "2"}]})
    sb = await rt.create_sandbox(p, "")
    res = await rt.exec(sb, p, p["spec"]["containers"][0], ["cat", "/etc/resolv.conf"], 5)
    assert res.exit_code == 0
    assert res.output.decode() == "search lab.example extra.example\nnameserver 192.168.56.1\noptions timeout:1 ndots:2\n"
    await rt.remove_sandbox(sb)


async def test_containers_of_a_pod_share_localhost_and_exec(lab: Lab, nursery: trio.Nursery) -> None:
    client = "import socket; s = socket.create_connection(('127.0.0.1', 9376)); print(s.recv(100).decode())"
    p = mkpod("duo", agnhost("server", "serve-hostname", "--tcp", "--http=false"),
              command("client", "sh", "-c", "echo up; exec sleep 60"))
    sb = await lab.rt.create_sandbox(p, "")
    server, sidecar = p["spec"]["containers"]
    await lab.rt.start_container(nursery, sb, p, server)
    h = await lab.rt.start_container(nursery, sb, p, sidecar)
    await wait_log(sb.log_dir / "client" / "0.log", "up")
    assert h.pid is not None and ns_inode(f"/proc/{h.pid}/ns/net") == ns_inode(str(netns.path(sb.netns)))
    res = await lab.rt.exec(sb, p, sidecar, [sys.executable, "-c", client], 10)
    assert (res.exit_code, res.output.strip()) == (0, b"duo")
    assert (await lab.rt.exec(sb, p, sidecar, ["sh", "-c", "exit 3"], 5)).exit_code == 3
    res = await lab.rt.exec(sb, p, sidecar, ["no-such-binary-kmr"], 5)
    assert res.exit_code == 126 and b"executable file not found" in res.output
    res = await lab.rt.exec(sb, p, sidecar, ["sleep", "10"], 0.3)
    assert res.timed_out and res.exit_code == 137
    res = await lab.rt.exec(sb, p, sidecar, ["hostname"], 5)
    assert res.output.strip() == b"duo"
    with trio.fail_after(10):
        assert await h.stop(5) == 143  # SIGTERM reached sleep itself (no wrapper left in between)


async def test_stop_with_grace_kills_a_command_ignoring_sigterm(lab: Lab, nursery: trio.Nursery) -> None:
    p = mkpod("stubborn", command("c", "sh", "-c", 'trap "" TERM; echo ready; while :; do sleep 0.05; done'))
    sb = await lab.rt.create_sandbox(p, "")
    h = await lab.rt.start_container(nursery, sb, p, p["spec"]["containers"][0])
    assert h.pid is not None
    await wait_log(sb.log_dir / "c" / "0.log", "ready")
    with trio.fail_after(10):
        assert await h.stop(0.5) == 137
    assert not pid_alive(h.pid)
    await lab.rt.remove_sandbox(sb)


async def test_remove_twice_frees_the_ip_and_leaves_no_namespace(lab: Lab) -> None:
    p = mkpod("gone", agnhost("app", "serve-hostname", "--tcp", "--http=false"))
    sb = await lab.rt.create_sandbox(p, "")
    assert isinstance(sb, NetnsSandbox) and netns.exists(sb.netns or "")
    await lab.rt.remove_sandbox(sb)
    await lab.rt.remove_sandbox(sb)
    assert not netns.exists(sb.netns or "") and not (netns.ETC_NETNS / (sb.netns or "")).exists()
    assert lab.ipam_ips() == [] and lab.rt.recorded() == {}
    assert netns.names(f"kmesh-{lab.tag}-") == []
    assert lab.chain.cached_result(sandbox_id(sb.pod_uid)) is None


async def test_host_ports_become_portmap_rules(lab: Lab) -> None:
    ports = [{"containerPort": 9376, "hostPort": 18376}, {"containerPort": 53, "hostPort": 1053, "protocol": "UDP"}]
    p = mkpod("hp", agnhost("app", "serve-hostname", "--tcp", "--http=false", ports=ports))
    assert port_mappings(p) == [
        {"hostPort": 18376, "containerPort": 9376, "protocol": "tcp"},
        {"hostPort": 1053, "containerPort": 53, "protocol": "udp"},
    ]
    sb = await lab.rt.create_sandbox(p, "")
    nat = (await netns.run(lab.node_ns, ["iptables-save", "-t", "nat"])).stdout.decode()
    assert f"--to-destination {sb.ip}:9376" in nat
    await lab.rt.remove_sandbox(sb)
    nat = (await netns.run(lab.node_ns, ["iptables-save", "-t", "nat"])).stdout.decode()
    assert f"{sb.ip}:9376" not in nat


async def test_cni_failure_is_a_sandbox_error_and_undone(lab: Lab, tmp_path: Path) -> None:
    conf = conflist(lab.tag, tmp_path / "ipam")
    conf["plugins"][0]["ipam"]["ranges"] = [[{"subnet": SUBNET, "rangeStart": "10.250.1.10", "rangeEnd": "10.250.1.10"}]]
    chain = CNIChain(conf, cni_path=CNI_PATH, cache_dir=tmp_path / "cni-cache", netns_for_plugins=lab.node_ns)
    rt = NetnsRuntime(tmp_path / "node", netns_prefix=f"kmesh-{lab.tag}-node-1-", node="node-1", cni=chain, node_netns=lab.node_ns)
    first = await rt.create_sandbox(mkpod("first", agnhost("app", "serve-hostname")), "")
    assert first.ip == "10.250.1.10"
    with pytest.raises(SandboxError) as e:  # the one address is taken
        await rt.create_sandbox(mkpod("second", agnhost("app", "serve-hostname")), "")
    assert "no IP addresses available" in e.value.message and e.value.reason == "CreatePodSandboxError"
    assert netns.names(f"kmesh-{lab.tag}-") == [first.netns] and list(rt.recorded()) == [first.netns]
    await rt.remove_sandbox(first)
    assert lab.ipam_ips() == []


async def test_missing_plugin_fails_the_sandbox_and_stays_recorded_for_reaping(lab: Lab, tmp_path: Path) -> None:
    conf = conflist(lab.tag, tmp_path / "ipam")
    conf["plugins"].append({"type": "kmr-no-such-plugin"})
    chain = CNIChain(conf, cni_path=CNI_PATH, cache_dir=tmp_path / "cni-cache", netns_for_plugins=lab.node_ns)
    rt = NetnsRuntime(tmp_path / "node", netns_prefix=f"kmesh-{lab.tag}-node-1-", node="node-1", cni=chain, node_netns=lab.node_ns)
    with pytest.raises(SandboxError) as e:
        await rt.create_sandbox(mkpod("broken", agnhost("app", "serve-hostname")), "")
    assert "kmr-no-such-plugin" in e.value.message
    # The namespace is gone and bridge's address released (the chain rolled back its ADD),
    # but DEL cannot run the missing plugin: the record stays so reap_orphans tries again later.
    assert netns.names(f"kmesh-{lab.tag}-") == [] and lab.ipam_ips() == []
    assert len(rt.recorded()) == 1
    assert await rt.reap_orphans([]) == [] and len(rt.recorded()) == 1


async def test_reap_orphans_after_a_restart_spares_live_pods_and_other_nodes(lab: Lab) -> None:
    live = mkpod("live", agnhost("app", "serve-hostname", "--tcp", "--http=false"))
    dead = mkpod("dead", agnhost("app", "serve-hostname", "--tcp", "--http=false"))
    s_live = await lab.rt.create_sandbox(live, "")
    s_dead = await lab.rt.create_sandbox(dead, "")
    # node-1-a's pod shares our prefix "kmesh-<tag>-node-1-" but is not ours.
    other = lab.runtime(node="node-1-a")
    assert other.netns_prefix.startswith(lab.rt.netns_prefix)
    netns.add(other.netns_name(mkpod("x")))
    restarted = lab.runtime()
    assert set(restarted.recorded()) == {s_live.netns, s_dead.netns}
    reaped = await restarted.reap_orphans({live["metadata"]["uid"]})
    assert reaped == [s_dead.netns]
    assert not netns.exists(s_dead.netns or "") and netns.exists(s_live.netns or "")
    assert lab.ipam_ips() == [s_live.ip]
    assert len(netns.names(other.netns_prefix)) == 1
    # The live pod's sandbox is made again from scratch (the old one is torn down first).
    again = await restarted.create_sandbox(live, "")
    assert again.netns == s_live.netns and netns.exists(again.netns or "")
    assert lab.ipam_ips() == [again.ip]
    assert await restarted.reap_orphans([]) == [again.netns]
    assert lab.ipam_ips() == [] and restarted.recorded() == {}
    assert json.loads((lab.tmp / "node" / "netns-sandboxes.json").read_text()) == {}


async def test_host_network_pod_runs_in_the_node_namespace(lab: Lab, nursery: trio.Nursery) -> None:
    client = mkpod("client", agnhost("app", "serve-hostname", "--tcp", "--http=false"))
    c = await lab.rt.create_sandbox(client, "")
    p = mkpod("hostnet", agnhost("app", "serve-hostname", "--tcp", "--http=false"), command("sh", "sleep", "60"),
              hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")
    sb = await lab.rt.create_sandbox(p, "192.168.56.11")
    assert isinstance(sb, NetnsSandbox) and sb.host_network and sb.netns == lab.node_ns
    assert sb.ip == "192.168.56.11" and sb.hostname == "node-1"
    await lab.rt.start_container(nursery, sb, p, p["spec"]["containers"][0])
    # The node's own address on cni0; like upstream, a host-network pod has the node's hostname.
    assert await read_all(c.netns, GATEWAY, 9376) == b"node-1"
    res = await lab.rt.exec(sb, p, p["spec"]["containers"][1], ["sh", "-c", "hostname; cat /etc/resolv.conf; ip -o link"], 5)
    out = res.output.decode()
    assert res.exit_code == 0 and out.startswith("node-1\n") and "nameserver 10.96.0.10" in out and "cni0" in out
    await lab.rt.remove_sandbox(sb)  # nothing to undo
    assert netns.exists(lab.node_ns)
    assert isinstance(sb, Sandbox)


async def test_agent_runs_pods_with_cni_ips_and_cleans_up(lab: Lab, api: Any, pods: Any, nursery: trio.Nursery) -> None:
    """The kubelet with this runtime: the IP comes from CNI, deletion removes the namespace and frees the IP."""
    cfg = AgentConfig(
        node_name="node-1", node_ip="192.168.56.11", runtime=lab.rt, data_dir=lab.tmp / "node",
        heartbeat=0.5, backoff_initial=1.0, backoff_max=4.0,
    )
    agent = await start_agent(nursery, api.client, cfg)
    script = "hostname; cat /etc/resolv.conf; exec sleep 60"
    await create_bound(api.client, pod(
        "web", agnhost("app", "serve-hostname", "--tcp", "--http=false"), command("sh", "sh", "-c", script),
        terminationGracePeriodSeconds=5,
    ))
    p = await wait_pod(pods, "web", running_ready)
    ip = p["status"]["podIP"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(SUBNET) and p["status"]["podIPs"] == [{"ip": ip}]
    assert await read_all(lab.node_ns, ip, 9376) == b"web"
    ns_name = lab.rt.netns_name(p)
    assert netns.exists(ns_name) and lab.ipam_ips() == [ip]
    await wait_log(lab.rt.data_dir / "pods" / f"default_web_{p['metadata']['uid']}" / "sh" / "0.log", "ndots:5")

    await api.client.delete("Pod", "web", "default")
    await wait_pod(pods, "web", lambda p: p is None)
    assert not netns.exists(ns_name) and lab.ipam_ips() == [] and lab.rt.recorded() == {}

    # An agent that stops leaves its pods' namespaces; the next one reaps those of pods that are gone.
    await create_bound(api.client, pod("left", agnhost("app", "serve-hostname")))
    p = await wait_pod(pods, "left", running_ready)
    await agent.stop()
    assert netns.exists(lab.rt.netns_name(p))
    await api.client.delete("Pod", "left", "default", grace_period=0)
    assert await lab.runtime().reap_orphans([]) == [lab.rt.netns_name(p)]
    assert lab.ipam_ips() == [] and netns.names(f"kmesh-{lab.tag}-") == []
