"""Mesh sidecar injection on pod create, driven with the real kubectl against a real API server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from kmesh.api import errors as E
from kmesh.apiserver import meshinject as M
from kmesh.controllers.manager import ControllerConfig, run_controllers
from tests.support.cluster import Cluster, start_cluster

FIELD_IN = "metadata.annotations[kmesh.io/exclude-inbound-ports]"
FIELD_OUT = "metadata.annotations[kmesh.io/exclude-outbound-ports]"
PROXY_PORTS = "15001,15006,15020,15021"


def pod_yaml(name: str, namespace: str = "default", *, annotations: dict[str, str] | None = None,
             labels: dict[str, str] | None = None, host_network: bool = False,
             init: list[dict[str, Any]] | None = None) -> str:
    """A pod manifest (JSON is YAML) with one app container."""
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "nginx:1.27",
                                            "ports": [{"containerPort": 80}]}]}
    if host_network:
        spec["hostNetwork"] = True
    if init is not None:
        spec["initContainers"] = init
    md: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        md["annotations"] = annotations
    if labels:
        md["labels"] = labels
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec})


async def get_pod(cluster: Cluster, name: str, namespace: str = "default") -> Any:
    return json.loads((await cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json")).stdout)


def init_names(pod: Any) -> list[str]:
    return [c["name"] for c in pod["spec"].get("initContainers", [])]


async def meshed_namespace(cluster: Cluster, name: str, how: str = "annotate") -> None:
    await cluster.kubectl("create", "namespace", name)
    await cluster.kubectl(how, "namespace", name, f"{M.INJECT_KEY}=enabled")


def assert_injected(pod: Any) -> None:
    """Both sidecars, first, defaulted as user containers are, with the annotation and the label."""
    init, proxy = pod["spec"]["initContainers"][:2]
    assert init["name"] == "kmesh-init" and init["image"] == "kmesh/proxy-init"
    assert init["args"][:3] == ["--inbound-port=15006", "--outbound-port=15001", "--mark=0x539"]
    assert init["securityContext"] == {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
                                       "runAsUser": 0, "runAsNonRoot": False}
    assert "restartPolicy" not in init
    assert proxy["name"] == "kmesh-proxy" and proxy["image"] == "kmesh/proxy"
    assert proxy["restartPolicy"] == "Always"
    assert proxy["args"] == ["--inbound-port=15006", "--outbound-port=15001", "--admin-port=15020",
                             "--health-port=15021", "--mark=0x539"]
    assert proxy["ports"] == [{"name": "kmesh-metrics", "containerPort": 15020, "protocol": "TCP"}]
    assert proxy["env"] == [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}},
        {"name": "SERVICE_ACCOUNT",
         "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.serviceAccountName"}}},
    ]
    assert proxy["startupProbe"] == {"httpGet": {"path": "/healthz/ready", "port": 15021, "scheme": "HTTP"},
                                     "periodSeconds": 1, "failureThreshold": 600, "timeoutSeconds": 1,
                                     "successThreshold": 1}
    assert proxy["readinessProbe"] == {"httpGet": {"path": "/healthz/ready", "port": 15021, "scheme": "HTTP"},
                                       "periodSeconds": 5, "failureThreshold": 3, "timeoutSeconds": 1,
                                       "successThreshold": 1}
    for c in (init, proxy):  # the pod defaults, as the app container got them
        assert c["imagePullPolicy"] == "Always"  # untagged image: :latest
        assert c["terminationMessagePath"] == "/dev/termination-log"
        assert c["terminationMessagePolicy"] == "File"
        assert c["resources"] == {}
    assert pod["metadata"]["annotations"][M.INJECTED_ANNOTATION] == "kmesh-init,kmesh-proxy"
    assert pod["metadata"]["labels"][M.TLS_MODE_LABEL] == "kmesh"


async def test_namespace_annotation_injects_a_pod(cluster: Cluster) -> None:
    await meshed_namespace(cluster, "mesh")
    await cluster.kubectl("apply", "-f", "-", stdin=pod_yaml("web", "mesh"))
    pod = await get_pod(cluster, "web", "mesh")
    assert init_names(pod) == ["kmesh-init", "kmesh-proxy"]
    assert_injected(pod)
    assert pod["spec"]["initContainers"][0]["args"][3] == f"--exclude-inbound-ports={PROXY_PORTS}"
    assert len(pod["spec"]["initContainers"][0]["args"]) == 4  # no outbound exclusions asked for
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app"]
    assert pod["status"]["qosClass"] == "BestEffort"
    # An update does not inject again nor undo it
    await cluster.kubectl("label", "pod", "web", "-n", "mesh", "tier=front")
    again = await get_pod(cluster, "web", "mesh")
    assert init_names(again) == ["kmesh-init", "kmesh-proxy"]


async def test_namespace_label_injects_deployment_pods_before_their_init_containers(
    nursery: trio.Nursery, cluster: Cluster,
) -> None:
    await meshed_namespace(cluster, "meshed", how="label")
    workloads = ControllerConfig(controllers=("replicaset", "deployment"))
    mgr = await nursery.start(run_controllers, cluster.client, workloads)
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "meshed"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"initContainers": [{"name": "setup", "image": "busybox:1.36", "command": ["true"]}],
                     "containers": [{"name": "app", "image": "nginx:1.27"}]}}},
    }
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(deployment))
    pods = mgr.factory.informer("Pod")
    with trio.fail_after(30):
        await pods.wait_for(lambda i: len(i.list("meshed")) == 2)
    listed = json.loads((await cluster.kubectl("get", "pods", "-n", "meshed", "-l", "app=web", "-o", "json")).stdout)
    assert len(listed["items"]) == 2
    for pod in listed["items"]:
        assert init_names(pod) == ["kmesh-init", "kmesh-proxy", "setup"]
        assert_injected(pod)
    # The template is not touched: injection is a pod admission step
    stored = json.loads((await cluster.kubectl("get", "deployment", "web", "-n", "meshed", "-o", "json")).stdout)
    assert [c["name"] for c in stored["spec"]["template"]["spec"]["initContainers"]] == ["setup"]


async def test_pod_opt_out_wins_over_namespace(cluster: Cluster) -> None:
    await meshed_namespace(cluster, "mesh")
    await cluster.kubectl("apply", "-f", "-", stdin=pod_yaml("plain", "mesh", annotations={M.INJECT_KEY: "disabled"}))
    await cluster.kubectl("apply", "-f", "-", stdin=pod_yaml("plain2", "mesh", labels={M.INJECT_KEY: "disabled"}))
    for name in ("plain", "plain2"):
        pod = await get_pod(cluster, name, "mesh")
        assert "initContainers" not in pod["spec"]
        assert M.TLS_MODE_LABEL not in pod["metadata"].get("labels", {})
        assert M.INJECTED_ANNOTATION not in pod["metadata"].get("annotations", {})


async def test_pod_enables_itself_in_a_plain_namespace(cluster: Cluster) -> None:
    await cluster.kubectl("apply", "-f", "-", stdin=pod_yaml("by-label", labels={M.INJECT_KEY: "enabled"}))
    await cluster.kubectl("apply", "-f", "-", stdin=pod_yaml("by-annotation", annotations={M.INJECT_KEY: "enabled"}))
    await cluster.kubectl("apply", "-f", "-", stdin=pod_yaml("not-asked"))
    for name in ("by-label", "by-annotation"):
        assert_injected(await get_pod(cluster, name))
    assert "initContainers" not in (await get_pod(cluster, "not-asked"))["spec"]


async def test_host_network_pods_are_skipped(cluster: Cluster) -> None:
    await meshed_namespace(cluster, "mesh")
    await cluster.kubectl("apply", "-f", "-", stdin=pod_yaml("host", "mesh", host_network=True))
    pod = await get_pod(cluster, "host", "mesh")
    assert "initContainers" not in pod["spec"]
    assert M.TLS_MODE_LABEL not in pod["metadata"].get("labels", {})


async def test_an_injected_pod_is_not_injected_twice(cluster: Cluster) -> None:
    await meshed_namespace(cluster, "mesh")
    await cluster.kubectl("apply", "-f", "-", stdin=pod_yaml("first", "mesh"))
    first = await get_pod(cluster, "first", "mesh")
    # The same pod created again (e.g. `kubectl get -o json | kubectl create` elsewhere): nothing added
    again = {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": "copy", "namespace": "mesh", "annotations": first["metadata"]["annotations"],
                          "labels": first["metadata"]["labels"]},
             "spec": first["spec"]}
    await cluster.kubectl("create", "-f", "-", stdin=json.dumps(again))
    copy = await get_pod(cluster, "copy", "mesh")
    assert init_names(copy) == ["kmesh-init", "kmesh-proxy"]
    assert copy["spec"]["initContainers"] == first["spec"]["initContainers"]
    # A user's own kmesh-proxy (a plain container) also stops injection
    mine = json.loads(pod_yaml("mine", "mesh"))
    mine["spec"]["containers"].append({"name": "kmesh-proxy", "image": "my/proxy"})
    await cluster.kubectl("create", "-f", "-", stdin=json.dumps(mine))
    assert "initContainers" not in (await get_pod(cluster, "mine", "mesh"))["spec"]


async def test_exclusion_annotations_reach_the_init_args(cluster: Cluster) -> None:
    await meshed_namespace(cluster, "mesh")
    annotations = {"kmesh.io/exclude-inbound-ports": "8080 , 9090,15006",
                   "kmesh.io/exclude-outbound-ports": "5432,6379"}
    await cluster.kubectl("apply", "-f", "-", stdin=pod_yaml("db-client", "mesh", annotations=annotations))
    init = (await get_pod(cluster, "db-client", "mesh"))["spec"]["initContainers"][0]
    assert init["args"] == ["--inbound-port=15006", "--outbound-port=15001", "--mark=0x539",
                            f"--exclude-inbound-ports={PROXY_PORTS},8080,9090",
                            "--exclude-outbound-ports=5432,6379"]


@pytest.mark.parametrize(("annotation", "value", "field"), [
    ("kmesh.io/exclude-inbound-ports", "8080,http", FIELD_IN),
    ("kmesh.io/exclude-inbound-ports", "0", FIELD_IN),
    ("kmesh.io/exclude-inbound-ports", "8080,", FIELD_IN),
    ("kmesh.io/exclude-outbound-ports", "65536", FIELD_OUT),
    ("kmesh.io/exclude-outbound-ports", "-1", FIELD_OUT),
])
async def test_a_bad_exclusion_list_is_refused_and_nothing_stored(
    cluster: Cluster, annotation: str, value: str, field: str,
) -> None:
    await meshed_namespace(cluster, "mesh")
    manifest = pod_yaml("bad", "mesh", annotations={annotation: value})
    res = await cluster.kubectl("create", "-f", "-", stdin=manifest, check=False)
    assert res.returncode != 0
    assert "is invalid" in res.stderr and field in res.stderr, res.stderr
    with pytest.raises(E.APIError) as info:
        await cluster.client.create(json.loads(manifest))
    assert info.value.code == 422 and info.value.reason == "Invalid"
    assert [c["field"] for c in info.value.causes] == [field]
    missing = await cluster.kubectl("get", "pod", "bad", "-n", "mesh", check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr
    # Where no injection is asked for, the annotations are not looked at
    await cluster.kubectl("create", "-f", "-", stdin=pod_yaml("fine", annotations={annotation: value}))


async def test_injection_off_in_the_server_config(nursery: trio.Nursery, tmp_path: Path) -> None:
    d = tmp_path / "off"
    d.mkdir()
    cluster = await start_cluster(nursery, d, mesh_injection=False)
    try:
        await meshed_namespace(cluster, "mesh")
        await cluster.kubectl("apply", "-f", "-", stdin=pod_yaml("web", "mesh", labels={M.INJECT_KEY: "enabled"}))
        pod = await get_pod(cluster, "web", "mesh")
        assert "initContainers" not in pod["spec"]
        assert M.TLS_MODE_LABEL not in pod["metadata"].get("labels", {})
    finally:
        await cluster.client.aclose()


def test_module_constants() -> None:
    assert (M.INBOUND_PORT, M.OUTBOUND_PORT, M.ADMIN_PORT, M.HEALTH_PORT, M.MARK) == (15006, 15001, 15020, 15021, 1337)
    assert M.INJECT_KEY == "kmesh.io/inject" and M.TLS_MODE_LABEL == "security.kmesh.io/tlsMode"


async def test_injected_containers_go_through_pod_validation(cluster: Cluster) -> None:
    # A user init container already named kmesh-init collides with the injected one: 422, as a user's own
    # duplicate would be, and nothing stored.
    await meshed_namespace(cluster, "mesh")
    manifest = pod_yaml("clash", "mesh", init=[{"name": "kmesh-init", "image": "busybox:1.36"}])
    with pytest.raises(E.APIError) as info:
        await cluster.client.create(json.loads(manifest))
    assert info.value.code == 422
    assert [(c["field"], c["reason"]) for c in info.value.causes] == [("spec.initContainers[2].name",
                                                                       "FieldValueDuplicate")]
    assert (await cluster.kubectl("get", "pod", "clash", "-n", "mesh", check=False)).returncode != 0
