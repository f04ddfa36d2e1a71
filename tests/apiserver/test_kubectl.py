"""The real kubectl against kmesh's API server: the acceptance walk of the core issue."""

from __future__ import annotations

import functools
import json
import os
import subprocess

import trio
import yaml

from tests.support.cluster import Cluster
from tests.conftest import require_binary

MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
  labels: {app: web}
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.k8s.io/e2e-test-images/agnhost:2.39
        args: ["serve-hostname"]
        ports:
        - containerPort: 9376
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
spec:
  selector: {app: web}
  ports:
  - name: http
    port: 80
    targetPort: 9376
"""

INVALID = """\
apiVersion: v1
kind: Service
metadata:
  name: broken
  namespace: demo
spec:
  selector: {app: web}
  ports:
  - port: 70000
"""


async def test_apply_get_scale_patch_label_delete(cluster: Cluster) -> None:
    out = await cluster.kubectl("apply", "-f", "-", stdin=MANIFEST)
    assert "namespace/demo created" in out.stdout
    assert "deployment.apps/web created" in out.stdout
    assert "service/web created" in out.stdout

    again = await cluster.kubectl("apply", "-f", "-", stdin=MANIFEST)
    assert "deployment.apps/web unchanged" in again.stdout

    table = await cluster.kubectl("get", "deployments,services", "-n", "demo")
    lines = table.stdout.splitlines()
    assert lines[0].split()[:5] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert any(line.startswith("deployment.apps/web") for line in lines)
    assert any(line.startswith("service/web") and "ClusterIP" in line and "80/TCP" in line for line in lines)

    doc = json.loads((await cluster.kubectl("get", "deployment", "web", "-n", "demo", "-o", "json")).stdout)
    assert doc["spec"]["replicas"] == 3
    assert doc["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": "25%"}
    assert doc["metadata"]["generation"] == 1
    svc = yaml.safe_load((await cluster.kubectl("get", "svc", "web", "-n", "demo", "-o", "yaml")).stdout)
    assert svc["spec"]["ports"][0]["protocol"] == "TCP"
    assert svc["spec"]["sessionAffinity"] == "None"
    assert svc["spec"]["type"] == "ClusterIP"

    out = await cluster.kubectl("scale", "deployment", "web", "-n", "demo", "--replicas=5")
    assert "scaled" in out.stdout
    rep = await cluster.kubectl("get", "deploy", "web", "-n", "demo", "-o", "jsonpath={.spec.replicas}")
    assert rep.stdout == "5"

    # A changed manifest applied again is a strategic merge patch from kubectl.
    changed = MANIFEST.replace("args: [\"serve-hostname\"]", "args: [\"netexec\"]")
    out = await cluster.kubectl("apply", "-f", "-", stdin=changed)
    assert "deployment.apps/web configured" in out.stdout
    doc = json.loads((await cluster.kubectl("get", "deploy", "web", "-n", "demo", "-o", "json")).stdout)
    assert doc["spec"]["template"]["spec"]["containers"][0]["args"] == ["netexec"]
    assert doc["metadata"]["generation"] == 3

    await cluster.kubectl(
        "patch", "deploy", "web", "-n", "demo", "-p",
        '{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"A","value":"1"}]}]}}}}',
    )
    await cluster.kubectl("patch", "svc", "web", "-n", "demo", "--type=merge", "-p", '{"metadata":{"annotations":{"x":"y"}}}')
    await cluster.kubectl(
        "patch", "svc", "web", "-n", "demo", "--type=json",
        "-p", '[{"op":"replace","path":"/spec/ports/0/port","value":8080}]',
    )
    doc = json.loads((await cluster.kubectl("get", "deploy", "web", "-n", "demo", "-o", "json")).stdout)
    c0 = doc["spec"]["template"]["spec"]["containers"][0]
    assert c0["env"] == [{"name": "A", "value": "1"}] and c0["image"].endswith("agnhost:2.39")
    svc = json.loads((await cluster.kubectl("get", "svc", "web", "-n", "demo", "-o", "json")).stdout)
    assert svc["metadata"]["annotations"]["x"] == "y"
    assert svc["spec"]["ports"][0]["port"] == 8080

    await cluster.kubectl("label", "svc", "web", "-n", "demo", "tier=front")
    sel = await cluster.kubectl("get", "svc", "-n", "demo", "-l", "tier=front", "-o", "name")
    assert sel.stdout.split() == ["service/web"]
    none = await cluster.kubectl("get", "svc", "-n", "demo", "-l", "tier=back", "-o", "name")
    assert none.stdout.strip() == ""

    out = await cluster.kubectl("delete", "svc", "web", "-n", "demo")
    assert 'service "web" deleted' in out.stdout
    gone = await cluster.kubectl("get", "svc", "web", "-n", "demo", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


async def test_invalid_manifest_names_field_and_stores_nothing(cluster: Cluster) -> None:
    await cluster.kubectl("create", "namespace", "demo")
    bad = await cluster.kubectl("apply", "-f", "-", stdin=INVALID, check=False)
    assert bad.returncode != 0
    assert "spec.ports[0].port" in bad.stderr
    listed = await cluster.kubectl("get", "svc", "-n", "demo", "-o", "name")
    assert listed.stdout.strip() == ""


async def test_get_watch_shows_later_changes(cluster: Cluster) -> None:
    kubectl = require_binary("kubectl")
    await cluster.kubectl("create", "namespace", "demo")
    await cluster.kubectl("create", "configmap", "one", "-n", "demo", "--from-literal=a=1")
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig), HOME=str(cluster.data_dir))
    send, recv = trio.open_memory_channel[str](100)

    async with trio.open_nursery() as nursery:
        proc = await nursery.start(
            functools.partial(
                trio.run_process,
                [kubectl, "get", "configmaps", "-n", "demo", "-w", "--output-watch-events"],
                stdout=subprocess.PIPE, env=env, check=False,
            )
        )

        async def pump() -> None:
            buf = b""
            async for chunk in proc.stdout:
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    await send.send(line.decode())

        nursery.start_soon(pump)

        async def expect(word: str) -> str:
            with trio.fail_after(20):
                while True:
                    line = await recv.receive()
                    if word in line:
                        return line

        assert "one" in await expect("one")
        await cluster.kubectl("create", "configmap", "two", "-n", "demo", "--from-literal=b=2")
        line = await expect("two")
        assert line.split()[0] == "ADDED"
        await cluster.kubectl("delete", "configmap", "one", "-n", "demo")
        line = await expect("DELETED")
        assert "one" in line
        proc.terminate()


async def test_namespace_delete_removes_contents(cluster: Cluster) -> None:
    await cluster.kubectl("apply", "-f", "-", stdin=MANIFEST)
    out = await cluster.kubectl("delete", "namespace", "demo", "--timeout=30s")
    assert 'namespace "demo" deleted' in out.stdout
    left = await cluster.kubectl("get", "deploy,svc", "-n", "demo", "-o", "name")
    assert left.stdout.strip() == ""
    nss = await cluster.kubectl("get", "ns", "-o", "name")
    assert "namespace/demo" not in nss.stdout.split()
    assert {"namespace/default", "namespace/kube-system"} <= set(nss.stdout.split())


async def test_no_token_is_unauthorized(cluster: Cluster) -> None:
    import httpx
    import ssl

    ctx = ssl.create_default_context(cadata=cluster.server.pki.ca_pem().decode())
    async with httpx.AsyncClient(verify=ctx) as http:
        r = await http.get(cluster.server.url + "/api/v1/namespaces")
        assert r.status_code == 401
        assert r.json()["reason"] == "Unauthorized"
        r = await http.get(cluster.server.url + "/api/v1/namespaces", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        ok = await http.get(cluster.server.url + "/healthz")
        assert ok.text == "ok"


async def test_api_resources_and_version(cluster: Cluster) -> None:
    out = await cluster.kubectl("api-resources", "-o", "name")
    names = set(out.stdout.split())
    for want in (
        "pods", "services", "endpoints", "namespaces", "nodes", "configmaps", "events",
        "deployments.apps", "replicasets.apps", "endpointslices.discovery.k8s.io", "leases.coordination.k8s.io",
    ):
        assert want in names
    ver = json.loads((await cluster.kubectl("version", "-o", "json")).stdout)
    assert ver["serverVersion"]["major"] == "1"


async def test_binding_assigns_a_pod_once(cluster: Cluster) -> None:
    from kmesh.api.errors import APIError

    c = cluster.client
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "kmesh/echo"}]}}
    created = await c.create(pod)
    await c.bind("default", "p", "node-1", uid=created["metadata"]["uid"])
    got = await c.get("Pod", "p", "default")
    assert got["spec"]["nodeName"] == "node-1"
    assert any(cd["type"] == "PodScheduled" and cd["status"] == "True" for cd in got["status"]["conditions"])
    try:
        await c.bind("default", "p", "node-2")
    except APIError as exc:
        assert exc.code == 409 and "already assigned" in exc.message
    else:
        raise AssertionError("second binding accepted")
