"""Tests for kmesh.api.defaults: the values kube-apiserver fills in on decode."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmesh.api import defaults
from kmesh.api.kinds import KINDS, get


def pod(**spec) -> dict:
    base = {"containers": [{"name": "c", "image": "nginx:1.27"}]}
    base.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": base}


def defaulted(kind: str, obj: dict) -> dict:
    defaults.apply_defaults(kind, obj)
    return obj


# ---------------------------------------------------------------- Service


def test_service_defaults() -> None:
    svc = defaulted("Service", {"spec": {"selector": {"app": "x"}, "ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}})
    spec = svc["spec"]
    assert spec["type"] == "ClusterIP"
    assert spec["sessionAffinity"] == "None"
    assert spec["internalTrafficPolicy"] == "Cluster"
    assert "externalTrafficPolicy" not in spec
    assert "allocateLoadBalancerNodePorts" not in spec
    assert spec["ports"][0] == {"port": 80, "protocol": "TCP", "targetPort": 80}
    assert spec["ports"][1] == {"port": 53, "protocol": "UDP", "targetPort": "dns"}


@pytest.mark.parametrize("target", [0, "", None])
def test_service_target_port_defaults_to_port(target) -> None:
    port = {"port": 8080}
    if target is not None:
        port["targetPort"] = target
    svc = defaulted("Service", {"spec": {"ports": [port]}})
    assert svc["spec"]["ports"][0]["targetPort"] == 8080


def test_service_client_ip_affinity_gets_timeout() -> None:
    svc = defaulted("Service", {"spec": {"sessionAffinity": "ClientIP"}})
    assert svc["spec"]["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}
    own = defaulted("Service", {"spec": {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}})
    assert own["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] == 60


def test_service_affinity_none_drops_config() -> None:
    svc = defaulted("Service", {"spec": {"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}})
    assert "sessionAffinityConfig" not in svc["spec"]


@pytest.mark.parametrize("stype", ["NodePort", "LoadBalancer"])
def test_externally_accessible_services_get_external_traffic_policy(stype: str) -> None:
    spec = defaulted("Service", {"spec": {"type": stype}})["spec"]
    assert spec["externalTrafficPolicy"] == "Cluster"
    assert spec["internalTrafficPolicy"] == "Cluster"
    assert ("allocateLoadBalancerNodePorts" in spec) is (stype == "LoadBalancer")


def test_cluster_ip_with_external_ips_is_externally_accessible() -> None:
    spec = defaulted("Service", {"spec": {"externalIPs": ["192.168.56.10"]}})["spec"]
    assert spec["externalTrafficPolicy"] == "Cluster"


def test_external_name_service_defaults() -> None:
    spec = defaulted("Service", {"spec": {"type": "ExternalName", "externalName": "example.com"}})["spec"]
    assert "internalTrafficPolicy" not in spec
    assert "externalTrafficPolicy" not in spec
    assert spec["sessionAffinity"] == "None"


def test_service_status_load_balancer_defaults() -> None:
    svc = defaulted(
        "Service",
        {"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [{"ip": "192.168.56.200"}, {"hostname": "lb.example"}]}}},
    )
    assert svc["status"]["loadBalancer"]["ingress"] == [{"ip": "192.168.56.200", "ipMode": "VIP"}, {"hostname": "lb.example"}]
    plain = defaulted("Service", {"spec": {}, "status": {}})
    assert plain["status"] == {"loadBalancer": {}}


# ---------------------------------------------------------------- Pod


def test_pod_spec_defaults() -> None:
    spec = defaulted("Pod", pod())["spec"]
    assert spec["restartPolicy"] == "Always"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["schedulerName"] == "default-scheduler"
    assert spec["securityContext"] == {}
    assert spec["enableServiceLinks"] is True
    c = spec["containers"][0]
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "File"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["resources"] == {}


def test_pod_spec_keeps_explicit_values() -> None:
    spec = defaulted(
        "Pod",
        pod(restartPolicy="Never", terminationGracePeriodSeconds=0, dnsPolicy="Default", schedulerName="mine",
            securityContext={"runAsUser": 1000}, enableServiceLinks=False),
    )["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["terminationGracePeriodSeconds"] == 0
    assert spec["dnsPolicy"] == "Default"
    assert spec["schedulerName"] == "mine"
    assert spec["securityContext"] == {"runAsUser": 1000}
    assert spec["enableServiceLinks"] is False


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("nginx:1.27", "IfNotPresent"),
        ("docker.io/library/nginx", "Always"),
        ("registry.k8s.io/e2e-test-images/agnhost:2.47", "IfNotPresent"),
        ("localhost:5000/app", "Always"),
        ("localhost:5000/app:v1", "IfNotPresent"),
        ("nginx@sha256:" + "a" * 64, "IfNotPresent"),
        ("nginx:1.27@sha256:" + "b" * 64, "IfNotPresent"),
        ("kmesh/echo", "Always"),
        ("NGINX", "IfNotPresent"),  # does not parse: upstream falls through to IfNotPresent
        ("", "IfNotPresent"),
    ],
)
def test_image_pull_policy(image: str, policy: str) -> None:
    assert defaults.default_pull_policy(image) == policy
    c = defaulted("Pod", pod(containers=[{"name": "c", "image": image}]))["spec"]["containers"][0]
    assert c["imagePullPolicy"] == policy


def test_explicit_pull_policy_is_kept() -> None:
    c = defaulted("Pod", pod(containers=[{"name": "c", "image": "nginx", "imagePullPolicy": "Never"}]))["spec"]["containers"][0]
    assert c["imagePullPolicy"] == "Never"


def test_container_ports_and_probes() -> None:
    container = {
        "name": "c",
        "image": "i",
        "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}],
        "livenessProbe": {"httpGet": {"port": 80}},
        "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 3},
        "startupProbe": {"grpc": {"port": 9000}},
        "lifecycle": {"preStop": {"httpGet": {"port": 80, "path": "/stop"}}},
    }
    c = defaulted("Pod", pod(containers=[container]))["spec"]["containers"][0]
    assert c["ports"] == [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 53, "protocol": "UDP"}]
    assert c["livenessProbe"] == {
        "httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    assert c["readinessProbe"]["periodSeconds"] == 3
    assert c["startupProbe"]["grpc"] == {"port": 9000, "service": ""}
    assert c["lifecycle"]["preStop"]["httpGet"] == {"port": 80, "path": "/stop", "scheme": "HTTP"}


def test_init_containers_are_defaulted_too() -> None:
    spec = defaulted("Pod", pod(initContainers=[{"name": "init", "image": "busybox:1.36"}]))["spec"]
    init = spec["initContainers"][0]
    assert init["imagePullPolicy"] == "IfNotPresent"
    assert init["terminationMessagePolicy"] == "File"


def test_requests_default_to_limits_on_pods() -> None:
    c = {"name": "c", "image": "i", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}}
    res = defaulted("Pod", pod(containers=[c]))["spec"]["containers"][0]["resources"]
    assert res["requests"] == {"cpu": "500m", "memory": "1Gi"}


def test_host_network_pods_get_host_ports() -> None:
    c = {"name": "c", "image": "i", "ports": [{"containerPort": 8080}, {"containerPort": 9090, "hostPort": 9091}]}
    ports = defaulted("Pod", pod(hostNetwork=True, containers=[c]))["spec"]["containers"][0]["ports"]
    assert ports[0]["hostPort"] == 8080
    assert ports[1]["hostPort"] == 9091


def test_volumes_and_downward_api_defaults() -> None:
    spec = defaulted(
        "Pod",
        pod(
            volumes=[
                {"name": "scratch"},
                {"name": "cfg", "configMap": {"name": "cm"}},
                {"name": "sec", "secret": {"secretName": "s", "defaultMode": 256}},
                {"name": "host", "hostPath": {"path": "/tmp"}},
                {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                {"name": "proj", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
            ],
            containers=[{"name": "c", "image": "i", "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]}],
        ),
    )["spec"]
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["scratch"]["emptyDir"] == {}
    assert vols["cfg"]["configMap"]["defaultMode"] == 420
    assert vols["sec"]["secret"]["defaultMode"] == 256
    assert vols["host"]["hostPath"]["type"] == ""
    assert vols["info"]["downwardAPI"]["defaultMode"] == 420
    assert vols["info"]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"] == "v1"
    assert vols["proj"]["projected"]["defaultMode"] == 420
    assert vols["proj"]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"] == 3600
    assert spec["containers"][0]["env"][0]["valueFrom"]["fieldRef"]["apiVersion"] == "v1"


def test_pod_status_ips_kept_in_step() -> None:
    p = defaulted("Pod", {**pod(), "status": {"podIP": "10.244.1.4", "hostIPs": [{"ip": "192.168.56.11"}]}})
    assert p["status"]["podIPs"] == [{"ip": "10.244.1.4"}]
    assert p["status"]["hostIP"] == "192.168.56.11"


# ---------------------------------------------------------------- workloads


def deployment(**spec) -> dict:
    base = {
        "selector": {"matchLabels": {"app": "a"}},
        "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
    }
    base.update(spec)
    return {"metadata": {"name": "d"}, "spec": base}


def test_deployment_defaults() -> None:
    spec = defaulted("Deployment", deployment())["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    template = spec["template"]
    assert template["metadata"]["creationTimestamp"] is None
    tspec = template["spec"]
    assert tspec["restartPolicy"] == "Always"
    assert tspec["terminationGracePeriodSeconds"] == 30
    assert tspec["dnsPolicy"] == "ClusterFirst"
    assert tspec["schedulerName"] == "default-scheduler"
    assert tspec["securityContext"] == {}
    assert tspec["containers"][0]["imagePullPolicy"] == "Always"
    # Pod-only defaults stay out of templates.
    assert "enableServiceLinks" not in tspec


def test_deployment_keeps_explicit_values() -> None:
    spec = defaulted(
        "Deployment",
        deployment(replicas=0, revisionHistoryLimit=0, strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}),
    )["spec"]
    assert spec["replicas"] == 0
    assert spec["revisionHistoryLimit"] == 0
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": "25%"}


def test_recreate_strategy_has_no_rolling_update() -> None:
    spec = defaulted("Deployment", deployment(strategy={"type": "Recreate"}))["spec"]
    assert spec["strategy"] == {"type": "Recreate"}


def test_template_requests_are_not_defaulted_from_limits() -> None:
    d = deployment()
    d["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1"}}
    res = defaulted("Deployment", d)["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res == {"limits": {"cpu": "1"}}


def test_template_host_network_ports_are_not_defaulted() -> None:
    d = deployment()
    d["spec"]["template"]["spec"]["hostNetwork"] = True
    d["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 80}]
    port = defaulted("Deployment", d)["spec"]["template"]["spec"]["containers"][0]["ports"][0]
    assert "hostPort" not in port


def test_replicaset_defaults() -> None:
    rs = defaulted("ReplicaSet", deployment())
    assert rs["spec"]["replicas"] == 1
    assert "strategy" not in rs["spec"]
    assert rs["spec"]["template"]["spec"]["restartPolicy"] == "Always"


# ---------------------------------------------------------------- other kinds


def test_namespace_defaults() -> None:
    ns = defaulted("Namespace", {"metadata": {"name": "lab", "labels": {"kubernetes.io/metadata.name": "wrong"}}, "status": {}})
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "lab"}
    assert ns["status"]["phase"] == "Active"
    nameless = defaulted("Namespace", {"metadata": {"generateName": "lab-"}})
    assert "labels" not in nameless["metadata"]


def test_node_defaults() -> None:
    node = defaulted("Node", {"metadata": {"name": "n"}, "spec": {"podCIDR": "10.244.1.0/24"}, "status": {"capacity": {"cpu": "2", "pods": "110"}}})
    assert node["spec"]["podCIDRs"] == ["10.244.1.0/24"]
    assert node["status"]["allocatable"] == {"cpu": "2", "pods": "110"}
    back = defaulted("Node", {"spec": {"podCIDRs": ["10.244.2.0/24"]}})
    assert back["spec"]["podCIDR"] == "10.244.2.0/24"


def test_endpoints_defaults() -> None:
    ep = defaulted("Endpoints", {"subsets": [{"addresses": [{"ip": "10.244.1.2"}], "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}]})
    assert [p["protocol"] for p in ep["subsets"][0]["ports"]] == ["TCP", "UDP"]


def test_endpointslice_defaults() -> None:
    eps = defaulted("EndpointSlice", {"addressType": "IPv4", "ports": [{"port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]})
    assert eps["ports"] == [{"port": 80, "name": "", "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]


@pytest.mark.parametrize("kind", ["ConfigMap", "Event", "Lease"])
def test_kinds_without_defaults_are_untouched(kind: str) -> None:
    obj = {"metadata": {"name": "x"}, "data": {"a": "b"}, "spec": {}}
    before = copy.deepcopy(obj)
    defaults.apply_defaults(get(kind), obj)
    assert obj == before


# ---------------------------------------------------------------- robustness

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
        ["spec", "ports", "containers", "template", "metadata", "status", "type", "port", "image", "subsets",
         "strategy", "rollingUpdate", "sessionAffinity", "volumes", "livenessProbe", "httpGet", "name", "labels"]
    ), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from([k.kind for k in KINDS]), body=st.dictionaries(st.sampled_from(["metadata", "spec", "status", "subsets", "ports", "endpoints"]), json_values, max_size=4))
def test_defaults_never_crash_and_are_idempotent(kind: str, body: dict) -> None:
    once = copy.deepcopy(body)
    defaults.apply_defaults(kind, once)
    twice = copy.deepcopy(once)
    defaults.apply_defaults(kind, twice)
    assert twice == once


def test_non_dict_object_is_ignored() -> None:
    defaults.apply_defaults("Pod", None)  # type: ignore[arg-type]
    defaults.apply_defaults("Pod", [])  # type: ignore[arg-type]
