"""The API server's /metrics: apiserver_request_total with kube-apiserver's labels, after what kubectl does."""

from __future__ import annotations

import trio
from prometheus_client.parser import text_string_to_metric_families

from kmesh.apiserver.metrics import request_info
from tests.support.cluster import Cluster

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(cluster: Cluster) -> Samples:
    """The API server's /metrics, read the way a user would: ``kubectl get --raw /metrics``."""
    text = (await cluster.kubectl("get", "--raw", "/metrics")).stdout
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def requests(samples: Samples, **want: str) -> float:
    """The sum of apiserver_request_total over the series carrying every label in ``want``."""
    return sum(v for (name, labels), v in samples.items()
               if name == "apiserver_request_total" and want.items() <= dict(labels).items())


def labels(verb: str, resource: str, scope: str, code: str, group: str = "", version: str = "v1",
           subresource: str = "") -> dict[str, str]:
    return {"verb": verb, "group": group, "version": version, "resource": resource, "subresource": subresource,
            "scope": scope, "component": "apiserver", "code": code, "dry_run": ""}


async def test_requests_are_counted_with_upstream_labels(cluster: Cluster) -> None:
    await cluster.kubectl("create", "configmap", "counted", "--from-literal=a=b")
    await cluster.kubectl("get", "configmap", "counted")
    await cluster.kubectl("get", "configmaps")
    await cluster.kubectl("get", "nodes")
    await cluster.kubectl("get", "deployments.apps", "-A")
    await cluster.kubectl("create", "configmap", "counted", "--from-literal=a=b", check=False)  # 409
    await cluster.kubectl("create", "configmap", "dry", "--from-literal=a=b", "--dry-run=server")
    # a watch that the server ends after a second, as kubectl's --raw streams it
    await cluster.kubectl("get", "--raw", "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1")
    await cluster.kubectl("delete", "configmap", "counted")
    s = await scrape(cluster)
    assert requests(s, **labels("POST", "configmaps", "resource", "201")) >= 1
    assert requests(s, **labels("POST", "configmaps", "resource", "409")) >= 1
    assert requests(s, **{**labels("POST", "configmaps", "resource", "201"), "dry_run": "All"}) >= 1
    assert requests(s, **labels("GET", "configmaps", "resource", "200")) >= 1
    assert requests(s, **labels("LIST", "configmaps", "namespace", "200")) >= 1
    assert requests(s, **labels("LIST", "nodes", "cluster", "200")) >= 1
    assert requests(s, **labels("LIST", "deployments", "cluster", "200", group="apps")) >= 1
    assert requests(s, **labels("WATCH", "configmaps", "namespace", "200")) >= 1
    assert requests(s, **labels("DELETE", "configmaps", "resource", "200")) >= 1
    assert requests(s, verb="GET", resource="", scope="", code="200") >= 1  # discovery and /metrics itself
    timed = {k: v for k, v in labels("LIST", "nodes", "cluster", "200").items() if k != "code"}
    assert ("apiserver_request_duration_seconds_count", tuple(sorted(timed.items()))) in s


async def test_a_running_watch_is_a_long_running_request(cluster: Cluster) -> None:
    want = {"verb": "WATCH", "group": "", "version": "v1", "resource": "configmaps", "subresource": "",
            "scope": "namespace", "component": "apiserver"}
    key = ("apiserver_longrunning_requests", tuple(sorted(want.items())))
    async with cluster.client.watch("ConfigMap", "default", timeout_seconds=60) as events:
        await cluster.client.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w"}}, "default")
        with trio.fail_after(30):
            async for kind, obj in events:
                if obj["metadata"]["name"] == "w":
                    break
        assert (await scrape(cluster)).get(key, 0) >= 1
    with trio.fail_after(30):
        while (await scrape(cluster)).get(key, 0) != 0:  # the server notices the client left
            await trio.sleep(0.05)
    assert requests(await scrape(cluster), verb="WATCH", resource="configmaps", code="200") >= 1


def test_request_info_reads_paths_as_kube_apiserver_does() -> None:
    ri = request_info
    assert ri("GET", "/api/v1/namespaces/default/pods/web-1/log", {}).verb == "CONNECT"
    assert ri("GET", "/api/v1/namespaces/default/pods/web-1/log", {}).subresource == "log"
    assert ri("PATCH", "/apis/apps/v1/namespaces/d/deployments/w", {}, "application/apply-patch+yaml").verb == "APPLY"
    assert ri("PATCH", "/apis/apps/v1/namespaces/d/deployments/w", {}, "application/merge-patch+json").verb == "PATCH"
    assert ri("PUT", "/apis/apps/v1/namespaces/d/deployments/w/scale", {}).subresource == "scale"
    assert ri("DELETE", "/api/v1/namespaces/d/pods", {}).verb == "DELETECOLLECTION"
    ns = ri("GET", "/api/v1/namespaces/default", {})
    assert (ns.verb, ns.resource, ns.scope) == ("GET", "namespaces", "resource")
    status = ri("PUT", "/api/v1/namespaces/default/status", {})
    assert (status.resource, status.subresource, status.scope) == ("namespaces", "status", "resource")
    assert ri("GET", "/api/v1/watch/namespaces/d/pods", {}).verb == "WATCH"
    assert ri("GET", "/api/v1/pods", {"watch": "false"}).verb == "LIST"
    assert ri("GET", "/apis/apps/v1", {}) == ri("GET", "/version", {})  # non-resource: the method, no labels
