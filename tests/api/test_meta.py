"""Tests for kmesh.api.meta: system fields and the create/update strategies."""

from __future__ import annotations

import copy
import datetime as dt
import re
import uuid
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kmesh.api import defaults, meta
from kmesh.api.errors import APIError
from kmesh.api.kinds import get


def deployment(name: str = "web", labels: dict[str, str] | None = None) -> dict:
    labels = labels or {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]},
            },
        },
    }


def created(kind: str, obj: dict, namespace: str | None = "default") -> dict:
    defaults.apply_defaults(kind, obj)
    return meta.prepare_create(kind, obj, namespace)


# ---------------------------------------------------------------- basics


def test_now_is_rfc3339_seconds_utc() -> None:
    value = meta.now()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", value)
    parsed = dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    assert abs((dt.datetime.now(dt.timezone.utc) - parsed).total_seconds()) < 5


def test_new_uid_is_a_fresh_uuid() -> None:
    a, b = meta.new_uid(), meta.new_uid()
    assert a != b
    assert str(uuid.UUID(a)) == a


def test_accessors() -> None:
    obj = {"metadata": {"name": "n", "namespace": "ns", "labels": {"a": "b"}, "annotations": {"x": "y"}}}
    assert meta.name(obj) == "n"
    assert meta.namespace(obj) == "ns"
    assert meta.labels(obj) == {"a": "b"}
    assert meta.annotations(obj) == {"x": "y"}
    assert meta.name({}) == "" and meta.namespace({}) == "" and meta.labels({}) == {}
    assert meta.labels({"metadata": {"labels": None}}) == {}
    assert meta.name({"metadata": "junk"}) == ""


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=100))
def test_generate_name_appends_five_allowed_chars(base: str) -> None:
    out = meta.generate_name(base)
    kept = base[:58]
    assert out.startswith(kept)
    suffix = out[len(kept):]
    assert len(suffix) == 5
    assert set(suffix) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert len(out) <= 63


def test_strip_managed_fields() -> None:
    obj = {"metadata": {"name": "a", "managedFields": [{"manager": "kubectl"}]}}
    meta.strip_managed_fields(obj)
    assert obj == {"metadata": {"name": "a"}}


# ---------------------------------------------------------------- prepare_create


def test_prepare_create_sets_system_fields_and_drops_client_ones() -> None:
    obj = {
        "kind": "ConfigMap",
        "metadata": {
            "name": "cm",
            "resourceVersion": "42",
            "uid": "client-chosen",
            "creationTimestamp": "2000-01-01T00:00:00Z",
            "deletionTimestamp": "2000-01-01T00:00:00Z",
            "deletionGracePeriodSeconds": 3,
            "generation": 7,
            "selfLink": "/x",
            "managedFields": [{}],
        },
    }
    meta.prepare_create("ConfigMap", obj, "default")
    md = obj["metadata"]
    assert md["namespace"] == "default"
    assert md["uid"] != "client-chosen" and uuid.UUID(md["uid"])
    assert md["creationTimestamp"] != "2000-01-01T00:00:00Z"
    for gone in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "selfLink", "managedFields"):
        assert gone not in md


@pytest.mark.parametrize(
    ("kind", "has_generation"),
    [
        ("Deployment", True),
        ("ReplicaSet", True),
        ("EndpointSlice", True),
        ("Pod", False),
        ("Service", False),
        ("ConfigMap", False),
        ("Namespace", False),
        ("Node", False),
        ("Endpoints", False),
        ("Lease", False),
        ("Event", False),
    ],
)
def test_generation_only_for_kinds_whose_strategy_sets_it(kind: str, has_generation: bool) -> None:
    k = get(kind)
    obj = {"metadata": {"name": "x"}, "spec": {}}
    meta.prepare_create(k, obj, "default" if k.namespaced else None)
    assert (obj["metadata"].get("generation") == 1) is has_generation


def test_prepare_create_accepts_kind_objects_and_names() -> None:
    a = meta.prepare_create(get("ConfigMap"), {"metadata": {"name": "a"}}, "ns")
    b = meta.prepare_create("ConfigMap", {"metadata": {"name": "b"}}, "ns")
    assert a["metadata"]["namespace"] == b["metadata"]["namespace"] == "ns"


def test_prepare_create_keeps_matching_namespace_and_rejects_other() -> None:
    obj = {"metadata": {"name": "a", "namespace": "ns"}}
    meta.prepare_create("ConfigMap", obj, "ns")
    assert obj["metadata"]["namespace"] == "ns"
    with pytest.raises(APIError) as info:
        meta.prepare_create("ConfigMap", {"metadata": {"name": "a", "namespace": "other"}}, "ns")
    assert info.value.code == 400
    assert info.value.reason == "BadRequest"
    assert "does not match the namespace sent on the request" in info.value.message


def test_prepare_create_without_request_namespace_keeps_object_namespace() -> None:
    obj = {"metadata": {"name": "a", "namespace": "mine"}}
    meta.prepare_create("ConfigMap", obj, None)
    assert obj["metadata"]["namespace"] == "mine"


def test_prepare_create_clears_namespace_of_cluster_scoped_kinds() -> None:
    obj = {"metadata": {"name": "n1", "namespace": "default"}}
    meta.prepare_create("Node", obj, "default")
    assert "namespace" not in obj["metadata"]


def test_generate_name_fills_name_only_when_empty() -> None:
    obj = {"metadata": {"generateName": "web-"}}
    meta.prepare_create("ConfigMap", obj, "default")
    assert re.fullmatch(r"web-[bcdfghjklmnpqrstvwxz2456789]{5}", obj["metadata"]["name"])
    assert obj["metadata"]["generateName"] == "web-"
    named = {"metadata": {"generateName": "web-", "name": "fixed"}}
    meta.prepare_create("ConfigMap", named, "default")
    assert named["metadata"]["name"] == "fixed"


def test_namespace_create_strategy() -> None:
    ns = created("Namespace", {"metadata": {"generateName": "lab-"}, "status": {"phase": "Terminating"}}, None)
    assert ns["status"] == {"phase": "Active"}
    assert ns["spec"]["finalizers"] == ["kubernetes"]
    assert ns["metadata"]["labels"]["kubernetes.io/metadata.name"] == ns["metadata"]["name"]
    other = created("Namespace", {"metadata": {"name": "a"}, "spec": {"finalizers": ["example.com/x"]}}, None)
    assert other["spec"]["finalizers"] == ["example.com/x", "kubernetes"]
    again = created("Namespace", {"metadata": {"name": "b"}, "spec": {"finalizers": ["kubernetes"]}}, None)
    assert again["spec"]["finalizers"] == ["kubernetes"]


def test_pod_create_strategy_status_and_admission() -> None:
    pod = created(
        "Pod",
        {
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1"},
        },
    )
    assert pod["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
    spec = pod["spec"]
    assert spec["priority"] == 0
    assert spec["preemptionPolicy"] == "PreemptLowerPriority"
    assert spec["tolerations"] == [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    ]


def test_pod_admission_keeps_existing_tolerations() -> None:
    own = {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}
    pod = created("Pod", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}], "tolerations": [own]}})
    keys = [t["key"] for t in pod["spec"]["tolerations"]]
    assert keys == ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"]
    assert pod["spec"]["tolerations"][0]["tolerationSeconds"] == 5
    wildcard = created(
        "Pod",
        {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}], "tolerations": [{"operator": "Exists"}]}},
    )
    assert wildcard["spec"]["tolerations"] == [{"operator": "Exists"}]


def test_pod_priority_class_name_leaves_priority_to_admission() -> None:
    pod = created("Pod", {"metadata": {"name": "p"}, "spec": {"priorityClassName": "high", "containers": [{"name": "c", "image": "i"}]}})
    assert "priority" not in pod["spec"]


def test_service_create_strategy() -> None:
    svc = created("Service", {"metadata": {"name": "s"}, "spec": {"clusterIP": "10.96.0.5", "ports": [{"port": 80}]}, "status": {"x": 1}})
    assert svc["status"] == {"loadBalancer": {}}
    assert svc["spec"]["clusterIPs"] == ["10.96.0.5"]
    headless = created("Service", {"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}})
    assert headless["spec"]["clusterIPs"] == ["None"]
    plain = created("Service", {"metadata": {"name": "p"}, "spec": {"ports": [{"port": 80}]}})
    assert "clusterIPs" not in plain["spec"]


def test_workload_create_clears_status() -> None:
    d = deployment()
    d["status"] = {"replicas": 3}
    created("Deployment", d)
    assert d["status"] == {}
    assert d["metadata"]["generation"] == 1


def test_node_create_keeps_status() -> None:
    node = created("Node", {"metadata": {"name": "n1"}, "status": {"capacity": {"cpu": "2"}}}, None)
    assert node["status"]["capacity"] == {"cpu": "2"}
    assert node["status"]["allocatable"] == {"cpu": "2"}


# ---------------------------------------------------------------- prepare_update


def stored(kind: str, obj: dict) -> dict:
    out = created(kind, obj)
    out["metadata"]["resourceVersion"] = "10"
    return out


def test_update_restores_identity_fields_and_keeps_old_untouched() -> None:
    old = stored("ConfigMap", {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    snapshot = copy.deepcopy(old)
    new = {"metadata": {"name": "cm", "namespace": "default", "creationTimestamp": "1999-01-01T00:00:00Z", "managedFields": [{}]}, "data": {"a": "2"}}
    meta.prepare_update("ConfigMap", new, old)
    assert old == snapshot
    assert new["metadata"]["uid"] == old["metadata"]["uid"]
    assert new["metadata"]["creationTimestamp"] == old["metadata"]["creationTimestamp"]
    assert "generation" not in new["metadata"]
    assert "managedFields" not in new["metadata"]


def test_update_keeps_a_different_uid_for_validation_to_reject() -> None:
    old = stored("ConfigMap", {"metadata": {"name": "cm"}})
    new = {"metadata": {"name": "cm", "namespace": "default", "uid": "other"}}
    meta.prepare_update("ConfigMap", new, old)
    assert new["metadata"]["uid"] == "other"


def test_update_keeps_deletion_fields() -> None:
    old = stored("ConfigMap", {"metadata": {"name": "cm"}})
    old["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    old["metadata"]["deletionGracePeriodSeconds"] = 0
    new = {"metadata": {"name": "cm", "namespace": "default"}}
    meta.prepare_update("ConfigMap", new, old)
    assert new["metadata"]["deletionTimestamp"] == "2026-01-01T00:00:00Z"
    assert new["metadata"]["deletionGracePeriodSeconds"] == 0


def updated(kind: str, old: dict, change) -> dict:
    new = copy.deepcopy(old)
    change(new)
    defaults.apply_defaults(kind, new)
    return meta.prepare_update(kind, new, old)


def test_deployment_generation_bumps_on_spec_and_annotation_changes() -> None:
    old = stored("Deployment", deployment())
    same = updated("Deployment", old, lambda o: o["metadata"].setdefault("labels", {}).update(x="y"))
    assert same["metadata"]["generation"] == 1
    scaled = updated("Deployment", old, lambda o: o["spec"].update(replicas=3))
    assert scaled["metadata"]["generation"] == 2
    annotated = updated("Deployment", old, lambda o: o["metadata"].update(annotations={"a": "b"}))
    assert annotated["metadata"]["generation"] == 2


def test_client_cannot_set_generation() -> None:
    old = stored("Deployment", deployment())
    new = updated("Deployment", old, lambda o: o["metadata"].update(generation=99))
    assert new["metadata"]["generation"] == 1


def test_replicaset_generation_ignores_annotations() -> None:
    rs = deployment()
    rs["kind"] = "ReplicaSet"
    old = stored("ReplicaSet", rs)
    annotated = updated("ReplicaSet", old, lambda o: o["metadata"].update(annotations={"a": "b"}))
    assert annotated["metadata"]["generation"] == 1
    scaled = updated("ReplicaSet", old, lambda o: o["spec"].update(replicas=0))
    assert scaled["metadata"]["generation"] == 2


def test_endpointslice_generation_bumps_on_body_and_label_changes() -> None:
    old = stored("EndpointSlice", {"metadata": {"name": "s"}, "addressType": "IPv4", "endpoints": [], "ports": []})
    annotated = updated("EndpointSlice", old, lambda o: o["metadata"].update(annotations={"a": "b"}))
    assert annotated["metadata"]["generation"] == 1
    labelled = updated("EndpointSlice", old, lambda o: o["metadata"].update(labels={"a": "b"}))
    assert labelled["metadata"]["generation"] == 2
    grown = updated("EndpointSlice", old, lambda o: o["endpoints"].append({"addresses": ["10.0.0.1"]}))
    assert grown["metadata"]["generation"] == 2


def test_main_resource_update_keeps_stored_status() -> None:
    old = stored("Deployment", deployment())
    old["status"] = {"replicas": 1}
    new = updated("Deployment", old, lambda o: o.update(status={"replicas": 5}))
    assert new["status"] == {"replicas": 1}
    missing = updated("Deployment", old, lambda o: o.pop("status"))
    assert missing["status"] == {"replicas": 1}


def test_main_update_of_kind_without_status_leaves_body() -> None:
    old = stored("ConfigMap", {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    new = updated("ConfigMap", old, lambda o: o["data"].update(a="2"))
    assert new["data"] == {"a": "2"}


def test_status_update_changes_only_status() -> None:
    old = stored("Deployment", deployment())
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 9
    new["metadata"]["labels"] = {"changed": "yes"}
    new["status"] = {"replicas": 1, "observedGeneration": 1}
    meta.prepare_update("Deployment", new, old, subresource="status")
    assert new["spec"] == old["spec"]
    assert "labels" not in new["metadata"]
    assert new["status"] == {"replicas": 1, "observedGeneration": 1}
    assert new["metadata"]["generation"] == 1


def test_pod_status_update_keeps_owner_references() -> None:
    old = stored("Pod", {"metadata": {"name": "p", "ownerReferences": [{"kind": "ReplicaSet", "name": "r", "uid": "1", "apiVersion": "apps/v1"}]},
                         "spec": {"containers": [{"name": "c", "image": "i"}]}})
    new = copy.deepcopy(old)
    new["metadata"]["ownerReferences"] = []
    new["spec"]["nodeName"] = "sneaky"
    new["status"] = {"phase": "Running", "podIP": "10.244.1.5"}
    meta.prepare_update("Pod", new, old, subresource="status")
    assert new["metadata"]["ownerReferences"] == old["metadata"]["ownerReferences"]
    assert "nodeName" not in new["spec"]
    assert new["status"]["phase"] == "Running"


def test_namespace_update_keeps_finalizers_and_status() -> None:
    old = created("Namespace", {"metadata": {"name": "a"}}, None)
    new = copy.deepcopy(old)
    new["spec"]["finalizers"] = []
    new["status"] = {"phase": "Terminating"}
    meta.prepare_update("Namespace", new, old)
    assert new["spec"]["finalizers"] == ["kubernetes"]
    assert new["status"] == {"phase": "Active"}


def service(spec: dict) -> dict:
    return {"metadata": {"name": "s"}, "spec": spec}


def test_service_update_keeps_allocated_values_a_client_left_out() -> None:
    old = stored("Service", service({"type": "NodePort", "clusterIP": "10.96.0.9", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}))
    new = service({"type": "NodePort", "ports": [{"name": "http", "port": 80}]})
    new["metadata"]["namespace"] = "default"
    defaults.apply_defaults("Service", new)
    meta.prepare_update("Service", new, old)
    assert new["spec"]["clusterIP"] == "10.96.0.9"
    assert new["spec"]["clusterIPs"] == ["10.96.0.9"]
    assert new["spec"]["ports"][0]["nodePort"] == 30080
    assert new["status"] == {"loadBalancer": {}}


def test_service_update_does_not_reuse_a_node_port_taken_by_another_port() -> None:
    old = stored("Service", service({"type": "NodePort", "ports": [{"name": "a", "port": 80, "nodePort": 30080}]}))
    new = service({"type": "NodePort", "ports": [{"name": "b", "port": 81, "nodePort": 30080}, {"name": "a", "port": 80}]})
    defaults.apply_defaults("Service", new)
    meta.prepare_update("Service", new, old)
    assert "nodePort" not in new["spec"]["ports"][1]


def test_service_update_changed_cluster_ip_updates_cluster_ips() -> None:
    old = stored("Service", service({"clusterIP": "10.96.0.9", "ports": [{"port": 80}]}))
    new = copy.deepcopy(old)
    new["spec"]["clusterIP"] = "10.96.0.10"
    meta.prepare_update("Service", new, old)
    assert new["spec"]["clusterIPs"] == ["10.96.0.10"]


def test_service_type_change_drops_fields_that_no_longer_apply() -> None:
    old = stored(
        "Service",
        service({"type": "LoadBalancer", "clusterIP": "10.96.0.9", "externalTrafficPolicy": "Local", "healthCheckNodePort": 31000,
                 "ports": [{"port": 80, "nodePort": 30080}]}),
    )
    old["status"] = {"loadBalancer": {"ingress": [{"ip": "192.168.56.200", "ipMode": "VIP"}]}}
    new = copy.deepcopy(old)
    new["spec"]["type"] = "ClusterIP"
    meta.prepare_update("Service", new, old)
    spec = new["spec"]
    assert "nodePort" not in spec["ports"][0]
    assert "healthCheckNodePort" not in spec
    assert "allocateLoadBalancerNodePorts" not in spec
    assert "externalTrafficPolicy" not in spec
    assert spec["clusterIP"] == "10.96.0.9"
    assert new["status"] == {"loadBalancer": {}}


def test_service_to_external_name_drops_cluster_ips() -> None:
    old = stored("Service", service({"clusterIP": "10.96.0.9", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "ports": [{"port": 80}]}))
    new = copy.deepcopy(old)
    new["spec"]["type"] = "ExternalName"
    new["spec"]["externalName"] = "example.com"
    meta.prepare_update("Service", new, old)
    for gone in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
        assert gone not in new["spec"]


# ---------------------------------------------------------------- quantities and QoS


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", Decimal(1)),
        ("500m", Decimal("0.5")),
        ("1Gi", Decimal(2**30)),
        ("1G", Decimal(10**9)),
        ("1.5", Decimal("1.5")),
        ("2e3", Decimal(2000)),
        ("-1", Decimal(-1)),
        (3, Decimal(3)),
        ("100Mi", Decimal(100 * 2**20)),
    ],
)
def test_parse_quantity(text, value) -> None:
    assert meta.parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1x", "1..2", "Gi", None, True, "1e", "."])
def test_parse_quantity_rejects(text) -> None:
    assert meta.parse_quantity(text) is None


def _pod_spec(*resources: dict) -> dict:
    return {"containers": [{"name": f"c{i}", "image": "i", "resources": r} for i, r in enumerate(resources)]}


@pytest.mark.parametrize(
    ("spec", "qos"),
    [
        (_pod_spec({}), "BestEffort"),
        (_pod_spec({"requests": {"cpu": "100m"}}), "Burstable"),
        (_pod_spec({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}), "Guaranteed"),
        (_pod_spec({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1000m", "memory": "1024Mi"}}), "Guaranteed"),
        (_pod_spec({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m", "memory": "1Gi"}}), "Burstable"),
        (_pod_spec({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}, {}), "Burstable"),
        (_pod_spec({"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}), "Burstable"),
        (_pod_spec({"requests": {"example.com/gpu": "1"}}), "BestEffort"),
    ],
)
def test_pod_qos_class(spec: dict, qos: str) -> None:
    assert meta.pod_qos_class(spec) == qos
