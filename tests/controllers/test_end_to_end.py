"""The whole controller set on the SQLite store, driven by the real kubectl."""

from __future__ import annotations

import json

import trio

from kmesh.client.informer import Informer
from kmesh.controllers import podutil
from tests.controllers.conftest import StartEnv
from tests.controllers.kubelet import add_node
from tests.controllers.test_endpoints import by_pod
from tests.controllers.test_workloads import live

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: registry.k8s.io/e2e-test-images/agnhost:2.39
        args: [serve-hostname]
        ports: [{name: http, containerPort: 9376}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"""


async def wait(inf: Informer, pred: object, timeout: float = 30) -> None:
    with trio.fail_after(timeout):
        await inf.wait_for(pred)  # type: ignore[arg-type]


def ready_on(slices: Informer) -> dict[str, str]:
    return {name: e.get("nodeName", "") for name, e in by_pod(slices, "web").items() if e["conditions"]["ready"]}


async def test_deployment_service_and_slices_on_sqlite(start_env: StartEnv, tmp_path: object) -> None:
    env = await start_env(store_url=f"sqlite://{tmp_path}/e2e.db")
    c = env.client
    for i in range(3):
        await add_node(c, f"node-{i}")
    await env.cluster.kubectl("apply", "-f", "-", stdin=MANIFEST)
    slices, pods = env.informer("EndpointSlice"), env.informer("Pod")
    await wait(slices, lambda i: len(ready_on(i)) == 3)
    assert sorted(ready_on(slices).values()) == ["node-0", "node-1", "node-2"]
    out = await env.cluster.kubectl("get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "json")
    items = json.loads(out.stdout)["items"]
    assert sum(len(s["endpoints"]) for s in items) == 3
    assert all(p["port"] == 9376 for s in items for p in s["ports"])
    svc = json.loads((await env.cluster.kubectl("get", "svc", "web", "-o", "json")).stdout)
    assert svc["spec"]["clusterIP"].startswith("10.")

    await env.cluster.kubectl("scale", "deployment/web", "--replicas=6")
    await wait(slices, lambda i: len(ready_on(i)) == 6)
    await env.cluster.kubectl("scale", "deployment/web", "--replicas=1")
    await wait(slices, lambda i: len(by_pod(i, "web")) == 1 and len(ready_on(i)) == 1)

    victim = live(pods, "web")[0]["metadata"]["name"]
    await env.cluster.kubectl("delete", "pod", victim)
    await wait(slices, lambda i: len(ready_on(i)) == 1 and victim not in ready_on(i))

    await env.cluster.kubectl("set", "env", "deployment/web", "MODE=2")
    out = await env.cluster.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    assert "successfully rolled out" in out.stdout
    await wait(slices, lambda i: len(ready_on(i)) == 1 and all(
        any(e.get("name") == "MODE" for e in (pods.get(n, "default") or {"spec": {"containers": [{}]}})["spec"]
            ["containers"][0].get("env") or []) for n in ready_on(i)))

    await env.cluster.kubectl("delete", "deployment", "web")
    await wait(pods, lambda i: not [p for p in i.list("default") if podutil.labels(p).get("app") == "web"])
    await wait(slices, lambda i: not by_pod(i, "web"))
