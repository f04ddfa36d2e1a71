"""Server-side Table output against rows as kubectl prints them from kube-apiserver 1.32."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from kmesh.api import kinds
from kmesh.api.errors import APIError
from kmesh.api.tables import column_definitions, human_duration, table, table_row

NOW = datetime(2024, 6, 25, 15, 22, 45, tzinfo=timezone.utc)


def ago(**kw: float) -> str:
    return (NOW - timedelta(**kw)).strftime("%Y-%m-%dT%H:%M:%SZ")


def cells(kind: str, obj: dict) -> list:
    return table_row(kinds.get(kind) if kind in {k.kind for k in kinds.KINDS} else kind, obj, now=NOW)["cells"]


def header(kind: str, wide: bool = False) -> list[str]:
    return [c["name"].upper() for c in column_definitions(kind) if wide or c["priority"] == 0]


def shown(kind: str, obj: dict, wide: bool = False) -> list:
    """The cells kubectl shows: priority-1 columns only with -o wide."""
    cols = column_definitions(kind)
    return [c for c, col in zip(cells(kind, obj), cols) if wide or col["priority"] == 0]


# --------------------------------------------------------------------------
# human durations


@pytest.mark.parametrize(
    "seconds, text",
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (-0.5, "0s"),
        (0, "0s"),
        (5, "5s"),
        (119, "119s"),
        (120, "2m"),
        (182, "3m2s"),
        (599, "9m59s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 25 * 60, "3h25m"),
        (8 * 3600, "8h"),
        (47 * 3600 + 59 * 60, "47h"),
        (48 * 3600, "2d"),
        (2 * 86400 + 3 * 3600, "2d3h"),
        (8 * 86400, "8d"),
        (400 * 86400, "400d"),
        (2 * 365 * 86400, "2y"),
        (4 * 365 * 86400, "4y"),
        (4 * 365 * 86400 + 20 * 86400, "4y20d"),
        (9 * 365 * 86400 + 20 * 86400, "9y"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


# --------------------------------------------------------------------------
# pods


def pod(name: str = "web-1", **status: object) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": "u-" + name, "creationTimestamp": ago(minutes=34)},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "nginx"}]},
        "status": status,
    }


def running(**extra: object) -> dict:
    return {"name": "app", "ready": True, "restartCount": 0, "state": {"running": {"startedAt": ago(minutes=30)}}, **extra}


def test_pod_columns() -> None:
    assert header("Pod") == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert header("Pod", wide=True) == [
        "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES",
    ]
    cols = column_definitions("Pod")
    assert cols[0]["format"] == "name" and cols[3]["type"] == "string"


def test_running_pod() -> None:
    p = pod(phase="Running", podIP="10.0.15.103", podIPs=[{"ip": "10.0.15.103"}], containerStatuses=[running()])
    # from a real kube-apiserver's Table for `kubectl get pods -o wide`
    assert cells("Pod", p) == ["web-1", "1/1", "Running", "0", "34m", "10.0.15.103", "node-1", "<none>", "<none>"]


def test_pending_pod_creating_containers() -> None:
    p = pod(phase="Pending", containerStatuses=[{"name": "app", "ready": False, "restartCount": 0,
                                                  "state": {"waiting": {"reason": "ContainerCreating"}}}])
    assert shown("Pod", p) == ["web-1", "0/1", "ContainerCreating", "0", "34m"]
    p = pod(phase="Pending")
    p["spec"].pop("nodeName")
    assert cells("Pod", p) == ["web-1", "0/1", "Pending", "0", "34m", "<none>", "<none>", "<none>", "<none>"]


def test_crash_looping_pod_shows_restarts_with_age() -> None:
    cs = {
        "name": "app",
        "ready": False,
        "restartCount": 5,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2m40s"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(minutes=2, seconds=3)}},
    }
    p = pod(phase="Running", containerStatuses=[cs])
    assert shown("Pod", p) == ["web-1", "0/1", "CrashLoopBackOff", "5 (2m3s ago)", "34m"]


def test_image_pull_backoff_and_error_reasons() -> None:
    cs = {"name": "app", "ready": False, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}}
    assert shown("Pod", pod(phase="Pending", containerStatuses=[cs]))[2] == "ImagePullBackOff"
    cs = {"name": "app", "ready": False, "restartCount": 0, "state": {"terminated": {"exitCode": 137, "signal": 9}}}
    assert shown("Pod", pod(phase="Failed", containerStatuses=[cs]))[2] == "Signal:9"
    cs = {"name": "app", "ready": False, "restartCount": 0, "state": {"terminated": {"exitCode": 3}}}
    assert shown("Pod", pod(phase="Failed", containerStatuses=[cs]))[2] == "ExitCode:3"


def test_completed_pod_and_row_conditions() -> None:
    cs = {"name": "app", "ready": False, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    row = table_row(kinds.get("Pod"), pod(phase="Succeeded", containerStatuses=[cs]), now=NOW)
    assert row["cells"][:5] == ["web-1", "0/1", "Completed", "0", "34m"]
    assert row["conditions"] == [
        {"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}
    ]
    failed = table_row(kinds.get("Pod"), pod(phase="Failed", reason="Evicted"), now=NOW)
    assert failed["cells"][2] == "Evicted" and failed["conditions"][0]["reason"] == "Failed"
    assert "conditions" not in table_row(kinds.get("Pod"), pod(phase="Running"), now=NOW)


def test_completed_container_with_another_still_running() -> None:
    p = pod(
        phase="Running",
        conditions=[{"type": "Ready", "status": "False"}],
        containerStatuses=[
            running(name="a"),
            {"name": "b", "ready": False, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        ],
    )
    p["spec"]["containers"] = [{"name": "a"}, {"name": "b"}]
    assert shown("Pod", p)[:3] == ["web-1", "1/2", "NotReady"]
    p["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    assert shown("Pod", p)[:3] == ["web-1", "1/2", "Running"]


def test_terminating_pod() -> None:
    p = pod(phase="Running", containerStatuses=[running()])
    p["metadata"]["deletionTimestamp"] = ago(seconds=5)
    assert shown("Pod", p) == ["web-1", "1/1", "Terminating", "0", "34m"]
    p["status"]["reason"] = "NodeLost"
    assert shown("Pod", p)[2] == "Unknown"
    done = pod(phase="Succeeded")
    done["metadata"]["deletionTimestamp"] = ago(seconds=5)
    assert shown("Pod", done)[2] == "Succeeded"


def test_init_containers() -> None:
    p = pod(
        phase="Pending",
        initContainerStatuses=[
            {"name": "init-a", "ready": True, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "init-b", "ready": False, "restartCount": 0, "state": {"running": {}}},
        ],
    )
    p["spec"]["initContainers"] = [{"name": "init-a"}, {"name": "init-b"}]
    assert shown("Pod", p)[2] == "Init:1/2"
    p["status"]["initContainerStatuses"][1]["state"] = {"terminated": {"exitCode": 1, "reason": "Error"}}
    p["status"]["initContainerStatuses"][1]["restartCount"] = 2
    assert shown("Pod", p)[2:4] == ["Init:Error", "2"]
    p["status"]["initContainerStatuses"][1]["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
    assert shown("Pod", p)[2] == "Init:CrashLoopBackOff"


def test_sidecar_init_container_counts_as_container() -> None:
    p = pod(
        phase="Running",
        conditions=[{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
        initContainerStatuses=[{"name": "proxy", "ready": True, "started": True, "restartCount": 1, "state": {"running": {}}}],
        containerStatuses=[running()],
    )
    p["spec"]["initContainers"] = [{"name": "proxy", "restartPolicy": "Always"}]
    assert shown("Pod", p) == ["web-1", "2/2", "Running", "1", "34m"]


def test_readiness_gates_and_nominated_node() -> None:
    p = pod(phase="Running", nominatedNodeName="node-2",
            conditions=[{"type": "example.com/lb", "status": "True"}, {"type": "example.com/b", "status": "False"}])
    p["spec"]["readinessGates"] = [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/b"}]
    assert cells("Pod", p)[7:] == ["node-2", "1/2"]


def test_age_unknown_without_creation_timestamp() -> None:
    p = pod(phase="Running")
    del p["metadata"]["creationTimestamp"]
    assert cells("Pod", p)[4] == "<unknown>"


# --------------------------------------------------------------------------
# services, endpoints, endpointslices


def svc(spec: dict, status: dict | None = None) -> dict:
    return {"metadata": {"name": "web", "creationTimestamp": ago(hours=2, minutes=5)}, "spec": spec, "status": status or {}}


def test_service_columns_and_rows() -> None:
    assert header("Service") == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert header("Service", wide=True)[-1] == "SELECTOR"
    k8s = svc({"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
               "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]})
    k8s["metadata"]["name"] = "kubernetes"
    assert cells("Service", k8s) == ["kubernetes", "ClusterIP", "10.96.0.1", "<none>", "443/TCP", "125m", "<none>"]

    dns = svc({"type": "ClusterIP", "clusterIPs": ["10.96.0.10"], "selector": {"k8s-app": "kube-dns"},
               "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}, {"port": 9153, "protocol": "TCP"}]})
    assert cells("Service", dns)[1:] == ["ClusterIP", "10.96.0.10", "<none>", "53/UDP,53/TCP,9153/TCP", "125m", "k8s-app=kube-dns"]


def test_nodeport_loadbalancer_headless_externalname() -> None:
    np = svc({"type": "NodePort", "clusterIPs": ["10.96.12.7"], "selector": {"app": "web", "tier": "fe"},
              "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]})
    assert cells("Service", np)[1:] == ["NodePort", "10.96.12.7", "<none>", "80:30080/TCP", "125m", "app=web,tier=fe"]

    lb = svc({"type": "LoadBalancer", "clusterIPs": ["10.96.3.3"], "ports": [{"port": 80, "nodePort": 31000, "protocol": "TCP"}]})
    assert cells("Service", lb)[3] == "<pending>"
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": "192.168.56.240"}, {"hostname": "lb.example.com"}]}}
    assert cells("Service", lb)[3] == "192.168.56.240,lb.example.com"
    lb["spec"]["externalIPs"] = ["1.2.3.4"]
    assert cells("Service", lb)[3] == "192.168.56.240,lb.example.com,1.2.3.4"

    headless = svc({"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"], "selector": {"app": "db"}})
    assert cells("Service", headless)[1:5] == ["ClusterIP", "None", "<none>", "<none>"]

    ext = svc({"type": "ExternalName", "externalName": "example.com"})
    assert cells("Service", ext)[1:5] == ["ExternalName", "<none>", "example.com", "<none>"]

    cip = svc({"type": "ClusterIP", "clusterIPs": ["10.96.0.5"], "externalIPs": ["192.168.56.50"], "ports": [{"port": 80}]})
    assert cells("Service", cip)[3:5] == ["192.168.56.50", "80/TCP"]


def test_endpoints_rows() -> None:
    assert header("Endpoints") == ["NAME", "ENDPOINTS", "AGE"]
    ep = {
        "metadata": {"name": "web", "creationTimestamp": ago(minutes=3, seconds=2)},
        "subsets": [
            {"addresses": [{"ip": "10.244.1.2"}, {"ip": "10.244.2.3"}], "ports": [{"port": 80, "protocol": "TCP"}]},
        ],
    }
    assert cells("Endpoints", ep) == ["web", "10.244.1.2:80,10.244.2.3:80", "3m2s"]
    ep["subsets"][0]["ports"].append({"name": "metrics", "port": 9090})
    assert cells("Endpoints", ep)[1] == "10.244.1.2:80,10.244.2.3:80,10.244.1.2:9090 + 1 more..."
    ep["subsets"] = [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}, {"ip": "10.0.0.4"}]}]
    assert cells("Endpoints", ep)[1] == "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more..."
    ep["subsets"] = [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 53}]}]
    assert cells("Endpoints", ep)[1] == "[fd00::1]:53"
    assert cells("Endpoints", {"metadata": {"name": "none", "creationTimestamp": ago(seconds=5)}}) == ["none", "<none>", "5s"]


def test_endpointslice_rows() -> None:
    assert header("EndpointSlice") == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    es = {
        "metadata": {"name": "web-abc12", "creationTimestamp": ago(days=2, hours=3)},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.244.1.2"]}, {"addresses": ["10.244.2.3"]}],
    }
    assert cells("EndpointSlice", es) == ["web-abc12", "IPv4", "80", "10.244.1.2,10.244.2.3", "2d3h"]
    es["endpoints"] = [{"addresses": [f"10.0.0.{i}"]} for i in range(1, 6)]
    es["ports"] = [{"port": 1}, {"name": "x"}, {}, {"port": 4}]
    assert cells("EndpointSlice", es)[2:4] == ["1,x,* + 1 more...", "10.0.0.1,10.0.0.2,10.0.0.3 + 2 more..."]
    es["endpoints"], es["ports"] = [], []
    assert cells("EndpointSlice", es)[2:4] == ["<unset>", "<unset>"]


# --------------------------------------------------------------------------
# workloads


def workload(kind: str, replicas: int | None, status: dict, selector: dict | None = None) -> dict:
    spec: dict = {
        "selector": selector if selector is not None else {"matchLabels": {"app": "nginx"}},
        "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}, {"name": "log", "image": "busybox"}]}},
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {"kind": kind, "metadata": {"name": "nginx", "creationTimestamp": ago(seconds=10)}, "spec": spec, "status": status}


def test_deployment_rows() -> None:
    assert header("Deployment") == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert header("Deployment", wide=True)[5:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    d = workload("Deployment", 3, {"replicas": 3, "readyReplicas": 3, "updatedReplicas": 3, "availableReplicas": 3})
    assert cells("Deployment", d) == ["nginx", "3/3", 3, 3, "10s", "nginx,log", "nginx:1.25,busybox", "app=nginx"]
    fresh = workload("Deployment", None, {})
    assert cells("Deployment", fresh)[:4] == ["nginx", "0/1", 0, 0]
    expr = workload("Deployment", 2, {}, {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]})
    assert cells("Deployment", expr)[-1] == "tier in (a,b)"
    assert cells("Deployment", workload("Deployment", 1, {}, {}))[-1] == ""


def test_replicaset_rows() -> None:
    assert header("ReplicaSet") == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
    rs = workload("ReplicaSet", 3, {"replicas": 3, "readyReplicas": 2})
    rs["metadata"]["name"] = "nginx-7c5ddbdf54"
    assert cells("ReplicaSet", rs) == ["nginx-7c5ddbdf54", 3, 3, 2, "10s", "nginx,log", "nginx:1.25,busybox", "app=nginx"]
    assert cells("ReplicaSet", workload("ReplicaSet", 0, {}, {}))[1:4] == [0, 0, 0]
    assert cells("ReplicaSet", workload("ReplicaSet", 0, {}, {}))[-1] == "<none>"


# --------------------------------------------------------------------------
# nodes, namespaces, configmaps, leases, events


def node(**kw: object) -> dict:
    n = {
        "metadata": {"name": "kmesh-control-plane", "creationTimestamp": ago(days=10),
                     "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/hostname": "x"}},
        "spec": {},
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "192.168.56.10"}, {"type": "Hostname", "address": "cp"}],
            "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "kernelVersion": "6.1.0-18-amd64", "containerRuntimeVersion": "kmesh://0.1.0"},
        },
    }
    n.update(kw)
    return n


def test_node_rows() -> None:
    assert header("Node") == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert header("Node", wide=True)[5:] == ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"]
    assert cells("Node", node()) == [
        "kmesh-control-plane", "Ready", "control-plane", "10d", "v1.32.0",
        "192.168.56.10", "<none>", "Debian GNU/Linux 12 (bookworm)", "6.1.0-18-amd64", "kmesh://0.1.0",
    ]
    cordoned = node(spec={"unschedulable": True})
    assert cells("Node", cordoned)[1] == "Ready,SchedulingDisabled"
    sick = node()
    sick["status"]["conditions"][1]["status"] = "Unknown"
    assert cells("Node", sick)[1] == "NotReady"
    bare = {"metadata": {"name": "w1", "labels": {"kubernetes.io/role": "worker"}}, "status": {}}
    assert cells("Node", bare) == ["w1", "Unknown", "worker", "<unknown>", "", "<none>", "<none>", "<unknown>", "<unknown>", "<unknown>"]


def test_namespace_configmap_lease_rows() -> None:
    assert header("Namespace") == ["NAME", "STATUS", "AGE"]
    ns = {"metadata": {"name": "kube-system", "creationTimestamp": ago(hours=5)}, "status": {"phase": "Active"}}
    assert cells("Namespace", ns) == ["kube-system", "Active", "5h"]
    ns["status"]["phase"] = "Terminating"
    assert cells("Namespace", ns)[1] == "Terminating"

    assert header("ConfigMap") == ["NAME", "DATA", "AGE"]
    cm = {"metadata": {"name": "kube-root-ca.crt", "creationTimestamp": ago(days=400)}, "data": {"ca.crt": "x"}, "binaryData": {"b": "eA=="}}
    assert cells("ConfigMap", cm) == ["kube-root-ca.crt", 2, "400d"]
    assert cells("ConfigMap", {"metadata": {"name": "e", "creationTimestamp": ago(seconds=1)}}) == ["e", 0, "1s"]

    assert header("Lease") == ["NAME", "HOLDER", "AGE"]
    lease = {"metadata": {"name": "node-1", "creationTimestamp": ago(minutes=15)}, "spec": {"holderIdentity": "node-1"}}
    assert cells("Lease", lease) == ["node-1", "node-1", "15m"]
    assert cells("Lease", {"metadata": {"name": "x"}, "spec": {}})[1] == ""


def test_event_rows() -> None:
    assert header("Event") == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert header("Event", wide=True) == [
        "LAST SEEN", "TYPE", "REASON", "OBJECT", "SUBOBJECT", "SOURCE", "MESSAGE", "FIRST SEEN", "COUNT", "NAME",
    ]
    ev = {
        "metadata": {"name": "web-1.17c9", "namespace": "default", "creationTimestamp": ago(minutes=5)},
        "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default", "fieldPath": "spec.containers{app}"},
        "reason": "Pulled",
        "message": "Container image \"nginx\" already present on machine\n",
        "type": "Normal",
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": ago(minutes=5),
        "lastTimestamp": ago(minutes=2),
        "count": 3,
    }
    assert cells("Event", ev) == [
        "2m", "Normal", "Pulled", "pod/web-1", "spec.containers{app}", "kubelet, node-1",
        'Container image "nginx" already present on machine', "5m", 3, "web-1.17c9",
    ]
    new_style = {
        "metadata": {"name": "e2"},
        "involvedObject": {"kind": "Node"},
        "eventTime": (NOW - timedelta(seconds=40)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "reportingComponent": "kmesh-controller",
        "type": "Warning",
        "reason": "X",
        "message": "m",
    }
    assert cells("Event", new_style) == ["40s", "Warning", "X", "node", "", "kmesh-controller", "m", "40s", 1, "e2"]
    new_style["series"] = {"count": 7, "lastObservedTime": ago(seconds=3)}
    assert cells("Event", new_style)[0] == "3s" and cells("Event", new_style)[8] == 7


def test_default_table_for_other_kinds() -> None:
    cols = column_definitions("Widget")
    assert [(c["name"], c["type"], c["format"]) for c in cols] == [("Name", "string", "name"), ("Created At", "date", "")]
    obj = {"metadata": {"name": "w", "creationTimestamp": "2024-06-25T14:48:12Z"}}
    assert cells("Widget", obj) == ["w", "2024-06-25T14:48:12Z"]
    assert cells("Widget", {"metadata": {"name": "z"}}) == ["z", "0001-01-01T00:00:00Z"]


# --------------------------------------------------------------------------
# the Table object


def test_table_envelope_and_metadata_rows() -> None:
    pods = [pod("a", phase="Running"), pod("b", phase="Pending")]
    t = table(kinds.get("Pod"), pods, resource_version="279474", now=NOW)
    assert t["kind"] == "Table" and t["apiVersion"] == "meta.k8s.io/v1"
    assert t["metadata"] == {"resourceVersion": "279474"}
    assert [c["name"] for c in t["columnDefinitions"]][:5] == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert all(set(c) == {"name", "type", "format", "description", "priority"} for c in t["columnDefinitions"])
    assert [r["cells"][0] for r in t["rows"]] == ["a", "b"]
    obj = t["rows"][0]["object"]
    assert obj == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": pods[0]["metadata"]}
    assert obj["metadata"] is not pods[0]["metadata"]
    assert all(len(r["cells"]) == len(t["columnDefinitions"]) for r in t["rows"])


def test_table_paging_metadata_and_include_object() -> None:
    t = table("ConfigMap", [], resource_version="5", continue_token="abc", remaining=7)
    assert t["metadata"] == {"resourceVersion": "5", "continue": "abc", "remainingItemCount": 7}
    assert t["rows"] == []
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}}
    assert table("ConfigMap", [cm], include_object="Object", now=NOW)["rows"][0]["object"] == cm
    assert table("ConfigMap", [cm], include_object="None", now=NOW)["rows"][0]["object"] is None
    assert table("ConfigMap", [cm], no_headers=True, now=NOW)["columnDefinitions"] == []
    with pytest.raises(APIError) as err:
        table("ConfigMap", [cm], include_object="Everything")
    assert err.value.code == 400
    assert err.value.message == 'unrecognized includeObject value: "Everything"'


def test_every_served_kind_has_rows_matching_its_columns() -> None:
    for k in kinds.KINDS:
        cols = column_definitions(k)
        row = table_row(k, {"metadata": {"name": "x"}}, "None", now=NOW)
        assert len(row["cells"]) == len(cols), k.kind
