"""JSON merge patch, JSON patch and strategic merge patch on wire objects.

The strategic merge patches below are the ones ``kubectl apply`` computes
(``CreateThreeWayMergePatch``: changed items with their merge key,
``$setElementOrder/<list>`` listing every item of the new list,
``{"$patch": "delete", <key>: v}`` for removed items, ``$retainKeys`` plus
nulls for union fields) and the ones users hand to ``kubectl patch``
(examples from the Kubernetes "update API objects in place" task).
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kmesh.api import kinds
from kmesh.api.errors import APIError
from kmesh.api.patch import ATOMIC, ListSpec, json_patch, lookup, merge_patch, strategic_merge_patch

POD = kinds.get("Pod")
DEPLOY = kinds.get("Deployment")
RS = kinds.get("ReplicaSet")
SVC = kinds.get("Service")
NODE = kinds.get("Node")

# --------------------------------------------------------------------------
# RFC 7386


def test_merge_patch_rfc7386_examples() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}}
    assert merge_patch(target, {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}
    # the RFC's appendix
    cases = [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ]
    for doc, patch, want in cases:
        assert merge_patch(doc, patch) == want


def test_merge_patch_does_not_modify_inputs() -> None:
    target = {"metadata": {"labels": {"a": "1"}}}
    patch = {"metadata": {"labels": {"b": "2"}}}
    before = copy.deepcopy((target, patch))
    out = merge_patch(target, patch)
    assert (target, patch) == before
    assert out == {"metadata": {"labels": {"a": "1", "b": "2"}}}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3),
    max_leaves=8,
)


@given(json_values, st.dictionaries(st.text(max_size=2), json_values, max_size=4))
def test_merge_patch_is_idempotent(target: object, patch: dict) -> None:
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once


# --------------------------------------------------------------------------
# RFC 6902

DOC = {"metadata": {"name": "web", "labels": {"a/b": "1"}}, "spec": {"replicas": 2, "args": ["x", "y"]}}


def test_json_patch_operations() -> None:
    out = json_patch(
        DOC,
        [
            {"op": "test", "path": "/spec/replicas", "value": 2},
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/spec/args/-", "value": "z"},
            {"op": "add", "path": "/spec/args/0", "value": "w"},
            {"op": "remove", "path": "/metadata/labels/a~1b"},
            {"op": "add", "path": "/metadata/labels/t~0x", "value": "2"},
            {"op": "copy", "from": "/metadata/name", "path": "/metadata/labels/name"},
            {"op": "move", "from": "/spec/args/1", "path": "/spec/first"},
        ],
    )
    assert out == {
        "metadata": {"name": "web", "labels": {"t~x": "2", "name": "web"}},
        "spec": {"replicas": 3, "args": ["w", "y", "z"], "first": "x"},
    }
    assert DOC["spec"]["args"] == ["x", "y"]  # input untouched


def test_json_patch_add_annotation_to_object_without_annotations() -> None:
    with pytest.raises(APIError) as err:
        json_patch(DOC, [{"op": "add", "path": "/metadata/annotations/x", "value": "1"}])
    assert err.value.code == 422
    out = json_patch(DOC, [{"op": "add", "path": "/metadata/annotations", "value": {"x": "1"}}])
    assert out["metadata"]["annotations"] == {"x": "1"}


def test_json_patch_failed_test_is_422_like_kube_apiserver() -> None:
    with pytest.raises(APIError) as err:
        json_patch(DOC, [{"op": "test", "path": "/spec/replicas", "value": 5}])
    e = err.value
    assert (e.code, e.reason) == (422, "Invalid")
    assert e.message == "the server rejected our request due to an error in our request"
    assert e.causes == [{"reason": "UnexpectedServerResponse", "message": "testing value /spec/replicas failed: test failed"}]
    assert e.status()["details"]["causes"][0]["message"].startswith("testing value")


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "remove", "path": "/metadata/missing"}],
        [{"op": "replace", "path": "/spec/missing", "value": 1}],
        [{"op": "add", "path": "/spec/args/5", "value": 1}],
        [{"op": "remove", "path": "/spec/args/01"}],
        [{"op": "move", "from": "/nope", "path": "/x"}],
        [{"op": "copy", "from": "/nope", "path": "/x"}],
        [{"op": "frobnicate", "path": "/x"}],
        [{"op": "test", "path": "/spec/replicas", "value": True}],  # true is not 1
        [{"op": "test", "path": "/spec/missing", "value": 1}],
        [{"op": "move", "from": "/spec", "path": "/spec/inner"}],
    ],
)
def test_json_patch_ops_that_do_not_apply(ops: list) -> None:
    with pytest.raises(APIError) as err:
        json_patch(DOC, ops)
    assert err.value.code == 422


def test_json_patch_malformed_is_400() -> None:
    for bad in ({"op": "add"}, "x", [1]):
        with pytest.raises(APIError) as err:
            json_patch(DOC, bad)
        assert err.value.code == 400


def test_json_patch_negative_index_and_root() -> None:
    assert json_patch({"a": [1, 2, 3]}, [{"op": "remove", "path": "/a/-1"}]) == {"a": [1, 2]}
    assert json_patch({"a": 1}, [{"op": "replace", "path": "", "value": {"b": 2}}]) == {"b": 2}
    assert json_patch({"a": None}, [{"op": "test", "path": "/a", "value": None}]) == {"a": None}


# --------------------------------------------------------------------------
# strategic merge patch


def deployment() -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "team": "a"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "nginx:1.25",
                            "args": ["--a", "--b"],
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        },
                        {"name": "sidecar", "image": "busybox", "command": ["sleep", "1d"]},
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "tolerations": [{"key": "a", "operator": "Exists"}],
                },
            },
        },
    }


def containers(obj: dict) -> list[dict]:
    return obj["spec"]["template"]["spec"]["containers"]


def test_apply_changes_an_env_value() -> None:
    # kubectl apply after editing B=2 -> B=3 in the manifest
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                    "containers": [
                        {
                            "$setElementOrder/env": [{"name": "A"}, {"name": "B"}],
                            "env": [{"name": "B", "value": "3"}],
                            "name": "app",
                        }
                    ],
                }
            }
        }
    }
    live = deployment()
    out = strategic_merge_patch(live, patch, DEPLOY)
    assert containers(out)[0]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}]
    assert containers(out)[0]["image"] == "nginx:1.25"
    assert [c["name"] for c in containers(out)] == ["app", "sidecar"]
    assert live == deployment()  # input untouched
    assert not any(k.startswith("$") for k in containers(out)[0])


def test_apply_deletes_a_container() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "app"}],
                    "containers": [{"$patch": "delete", "name": "sidecar"}],
                }
            }
        }
    }
    out = strategic_merge_patch(deployment(), patch, DEPLOY)
    assert [c["name"] for c in containers(out)] == ["app"]


def test_apply_adds_a_port() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                    "containers": [
                        {
                            "$setElementOrder/ports": [{"containerPort": 80}, {"containerPort": 443}],
                            "name": "app",
                            "ports": [{"containerPort": 443, "protocol": "TCP"}],
                        }
                    ],
                }
            }
        }
    }
    out = strategic_merge_patch(deployment(), patch, DEPLOY)
    assert containers(out)[0]["ports"] == [
        {"containerPort": 80, "protocol": "TCP"},
        {"containerPort": 443, "protocol": "TCP"},
    ]


def test_apply_reorders_with_set_element_order_only() -> None:
    # The manifest swapped the two containers and nothing else changed.
    patch = {"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]}}}}
    out = strategic_merge_patch(deployment(), patch, DEPLOY)
    assert [c["name"] for c in containers(out)] == ["sidecar", "app"]
    assert containers(out)[1]["env"][1] == {"name": "B", "value": "2"}


def test_set_element_order_keeps_server_only_items_in_place() -> None:
    # A container injected by someone else ("istio") is not in the manifest.
    live = deployment()
    containers(live).insert(1, {"name": "istio", "image": "proxy"})
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}, {"name": "new"}],
                    "containers": [{"name": "new", "image": "redis"}],
                }
            }
        }
    }
    out = strategic_merge_patch(live, patch, DEPLOY)
    names = [c["name"] for c in containers(out)]
    assert set(names) == {"sidecar", "app", "new", "istio"}
    order = [n for n in names if n != "istio"]
    assert order == ["sidecar", "app", "new"]


def test_set_element_order_must_agree_with_the_patch_list() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "app"}],
                    "containers": [{"name": "other", "image": "x"}],
                }
            }
        }
    }
    with pytest.raises(APIError) as err:
        strategic_merge_patch(deployment(), patch, DEPLOY)
    assert err.value.code == 422
    with pytest.raises(APIError) as err:
        strategic_merge_patch(deployment(), {"spec": {"$setElementOrder/x": "nope"}}, DEPLOY)
    assert err.value.code == 400


def test_kubectl_patch_adds_a_container_first() -> None:
    # The "kubectl patch" task: the new container is listed before the old one.
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "patch-demo-ctr-2", "image": "redis"}]}}}}
    out = strategic_merge_patch(deployment(), patch, DEPLOY)
    assert [c["name"] for c in containers(out)] == ["patch-demo-ctr-2", "app", "sidecar"]


def test_merging_into_an_existing_item_keeps_its_place() -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "busybox:2"}]}}}}
    out = strategic_merge_patch(deployment(), patch, DEPLOY)
    assert [c["name"] for c in containers(out)] == ["app", "sidecar"]
    assert containers(out)[1] == {"name": "sidecar", "image": "busybox:2", "command": ["sleep", "1d"]}


def test_atomic_lists_are_replaced() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "app", "args": ["--c"]}, {"name": "sidecar", "command": ["true"]}],
                    "tolerations": [{"effect": "NoSchedule", "key": "disktype", "value": "ssd"}],
                }
            }
        }
    }
    out = strategic_merge_patch(deployment(), patch, DEPLOY)
    assert containers(out)[0]["args"] == ["--c"]
    assert containers(out)[1]["command"] == ["true"]
    assert out["spec"]["template"]["spec"]["tolerations"] == [{"effect": "NoSchedule", "key": "disktype", "value": "ssd"}]


def test_retain_keys_on_deployment_strategy() -> None:
    # kubectl apply after switching to strategy: {type: Recreate}
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": None, "type": "Recreate"}}}
    out = strategic_merge_patch(deployment(), patch, DEPLOY)
    assert out["spec"]["strategy"] == {"type": "Recreate"}
    with pytest.raises(APIError) as err:
        strategic_merge_patch(deployment(), {"spec": {"strategy": {"$retainKeys": ["type"], "other": 1}}}, DEPLOY)
    assert err.value.code == 422


def test_retain_keys_on_pod_volumes() -> None:
    # emptyDir -> configMap for volume "data"
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/volumes": [{"name": "data"}],
                    "volumes": [
                        {"$retainKeys": ["configMap", "name"], "configMap": {"name": "cfg"}, "emptyDir": None, "name": "data"}
                    ],
                }
            }
        }
    }
    out = strategic_merge_patch(deployment(), patch, DEPLOY)
    assert out["spec"]["template"]["spec"]["volumes"] == [{"name": "data", "configMap": {"name": "cfg"}}]


def test_retain_keys_drops_keys_without_an_explicit_null() -> None:
    pod = {"spec": {"volumes": [{"name": "v", "emptyDir": {}, "hostPath": {"path": "/x"}}]}}
    patch = {"spec": {"volumes": [{"$retainKeys": ["name", "secret"], "name": "v", "secret": {"secretName": "s"}}]}}
    out = strategic_merge_patch(pod, patch, POD)
    assert out["spec"]["volumes"] == [{"name": "v", "secret": {"secretName": "s"}}]


def test_finalizers_are_a_merged_primitive_list() -> None:
    obj = {"metadata": {"name": "x", "finalizers": ["a", "b"]}}
    out = strategic_merge_patch(obj, {"metadata": {"finalizers": ["c", "a"]}}, POD)
    assert sorted(out["metadata"]["finalizers"]) == ["a", "b", "c"]
    assert out["metadata"]["finalizers"].count("a") == 1
    # kubectl apply removing "a" and adding "c"
    patch = {
        "metadata": {
            "$deleteFromPrimitiveList/finalizers": ["a"],
            "$setElementOrder/finalizers": ["b", "c"],
            "finalizers": ["c"],
        }
    }
    assert strategic_merge_patch(obj, patch, POD)["metadata"]["finalizers"] == ["b", "c"]
    with pytest.raises(APIError) as err:
        strategic_merge_patch(obj, {"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}, POD)
    assert err.value.code == 400


def test_patch_replace_directive_on_list_and_map() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}],
                    "nodeSelector": {"$patch": "replace", "disk": "ssd"},
                }
            }
        }
    }
    live = deployment()
    live["spec"]["template"]["spec"]["nodeSelector"] = {"zone": "a", "disk": "hdd"}
    out = strategic_merge_patch(live, patch, DEPLOY)
    assert containers(out) == [{"name": "only", "image": "x"}]
    assert out["spec"]["template"]["spec"]["nodeSelector"] == {"disk": "ssd"}


def test_patch_delete_directive_on_map_and_merge_is_default() -> None:
    live = deployment()
    live["spec"]["template"]["spec"]["nodeSelector"] = {"zone": "a"}
    out = strategic_merge_patch(live, {"spec": {"template": {"spec": {"nodeSelector": {"$patch": "delete"}}}}}, DEPLOY)
    assert out["spec"]["template"]["spec"]["nodeSelector"] == {}
    out = strategic_merge_patch(live, {"metadata": {"labels": {"$patch": "merge", "b": "2"}}}, DEPLOY)
    assert out["metadata"]["labels"] == {"app": "web", "team": "a", "b": "2"}
    with pytest.raises(APIError) as err:
        strategic_merge_patch(live, {"metadata": {"labels": {"$patch": "explode"}}}, DEPLOY)
    assert err.value.code == 422


def test_null_deletes_a_key() -> None:
    out = strategic_merge_patch(deployment(), {"metadata": {"labels": {"team": None, "missing": None}}}, DEPLOY)
    assert out["metadata"]["labels"] == {"app": "web"}
    out = strategic_merge_patch(deployment(), {"spec": {"template": {"spec": {"tolerations": None}}}}, DEPLOY)
    assert "tolerations" not in out["spec"]["template"]["spec"]


def test_new_subtrees_drop_their_nulls_and_directives() -> None:
    out = strategic_merge_patch({"metadata": {"name": "p"}}, {"spec": {"a": None, "nodeSelector": {"x": "1", "y": None}}}, POD)
    assert out["spec"] == {"nodeSelector": {"x": "1"}}


def test_pod_spec_paths_work_at_top_level_and_in_replicaset_templates() -> None:
    pod = {"spec": {"containers": [{"name": "c", "env": [{"name": "X", "value": "1"}]}]}}
    out = strategic_merge_patch(pod, {"spec": {"containers": [{"name": "c", "env": [{"name": "Y", "value": "2"}]}]}}, POD)
    assert {e["name"] for e in out["spec"]["containers"][0]["env"]} == {"X", "Y"}
    rs = {"spec": {"template": {"spec": copy.deepcopy(pod["spec"])}}}
    out = strategic_merge_patch(rs, {"spec": {"template": {"spec": {"containers": [{"name": "c", "env": [{"name": "Y"}]}]}}}}, RS)
    assert {e["name"] for e in out["spec"]["template"]["spec"]["containers"][0]["env"]} == {"X", "Y"}


def test_init_and_ephemeral_containers_merge_by_name() -> None:
    pod = {"spec": {"initContainers": [{"name": "init", "image": "a"}], "ephemeralContainers": [{"name": "dbg", "image": "b"}]}}
    patch = {"spec": {"initContainers": [{"name": "init", "image": "a2"}], "ephemeralContainers": [{"name": "dbg2", "image": "c"}]}}
    out = strategic_merge_patch(pod, patch, POD)
    assert out["spec"]["initContainers"] == [{"name": "init", "image": "a2"}]
    assert {c["name"] for c in out["spec"]["ephemeralContainers"]} == {"dbg", "dbg2"}


def test_service_ports_merge_by_port() -> None:
    svc = {"spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}
    out = strategic_merge_patch(svc, {"spec": {"ports": [{"port": 80, "nodePort": 30080}]}}, SVC)
    assert out["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30080}]
    patch = {
        "spec": {
            "$setElementOrder/ports": [{"port": 80}, {"port": 443}],
            "ports": [{"name": "https", "port": 443, "targetPort": 8443}],
            "type": "NodePort",
        }
    }
    out = strategic_merge_patch(svc, patch, SVC)
    assert [p["port"] for p in out["spec"]["ports"]] == [80, 443]
    assert out["spec"]["type"] == "NodePort"


def test_status_lists_merge_by_type() -> None:
    pod = {
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "c", "ready": False}],
        }
    }
    patch = {
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "c", "ready": True, "restartCount": 0}],
            "podIPs": [{"ip": "10.244.0.5"}],
        }
    }
    out = strategic_merge_patch(pod, patch, POD)
    assert out["status"]["conditions"] == [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]
    assert out["status"]["containerStatuses"] == [{"name": "c", "ready": True, "restartCount": 0}]

    node = {"status": {"addresses": [{"type": "InternalIP", "address": "192.168.56.11"}, {"type": "Hostname", "address": "n1"}]}}
    out = strategic_merge_patch(node, {"status": {"addresses": [{"type": "InternalIP", "address": "192.168.56.12"}]}}, NODE)
    assert out["status"]["addresses"] == [
        {"type": "InternalIP", "address": "192.168.56.12"},
        {"type": "Hostname", "address": "n1"},
    ]
    out = strategic_merge_patch({"spec": {"podCIDRs": ["10.244.1.0/24"]}}, {"spec": {"podCIDRs": ["10.244.1.0/24"]}}, NODE)
    assert out["spec"]["podCIDRs"] == ["10.244.1.0/24"]

    dep = {"status": {"conditions": [{"type": "Available", "status": "False"}, {"type": "Progressing", "status": "True"}]}}
    out = strategic_merge_patch(dep, {"status": {"conditions": [{"type": "Available", "status": "True"}]}}, DEPLOY)
    assert out["status"]["conditions"][0] == {"type": "Available", "status": "True"}


def test_owner_references_host_aliases_pull_secrets_merge_by_key() -> None:
    pod = {
        "metadata": {"ownerReferences": [{"uid": "u1", "kind": "ReplicaSet", "name": "rs1"}]},
        "spec": {"hostAliases": [{"ip": "10.0.0.1", "hostnames": ["a"]}], "imagePullSecrets": [{"name": "s1"}]},
    }
    patch = {
        "metadata": {"ownerReferences": [{"uid": "u1", "controller": True}, {"uid": "u2", "kind": "X", "name": "x"}]},
        "spec": {"hostAliases": [{"ip": "10.0.0.1", "hostnames": ["b"]}], "imagePullSecrets": [{"name": "s2"}]},
    }
    out = strategic_merge_patch(pod, patch, POD)
    assert {o["uid"] for o in out["metadata"]["ownerReferences"]} == {"u1", "u2"}
    assert next(o for o in out["metadata"]["ownerReferences"] if o["uid"] == "u1")["controller"] is True
    assert out["spec"]["hostAliases"] == [{"ip": "10.0.0.1", "hostnames": ["b"]}]  # hostnames is atomic
    assert {s["name"] for s in out["spec"]["imagePullSecrets"]} == {"s1", "s2"}


def test_topology_spread_constraints_merge_by_key_and_when_unsatisfiable() -> None:
    pod = {
        "spec": {
            "topologySpreadConstraints": [
                {"topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "maxSkew": 1},
                {"topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway", "maxSkew": 1},
            ]
        }
    }
    patch = {"spec": {"topologySpreadConstraints": [{"topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway", "maxSkew": 3}]}}
    out = strategic_merge_patch(pod, patch, POD)
    assert [c["maxSkew"] for c in out["spec"]["topologySpreadConstraints"]] == [1, 3]
    patch = {"spec": {"topologySpreadConstraints": [{"$patch": "delete", "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]}}
    out = strategic_merge_patch(pod, patch, POD)
    assert out["spec"]["topologySpreadConstraints"] == [{"topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway", "maxSkew": 1}]


def test_endpoints_and_slices_are_atomic() -> None:
    ep = {"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}
    out = strategic_merge_patch(ep, {"subsets": [{"addresses": [{"ip": "10.0.0.2"}]}]}, kinds.get("Endpoints"))
    assert out["subsets"] == [{"addresses": [{"ip": "10.0.0.2"}]}]
    es = {"addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"port": 80}]}
    out = strategic_merge_patch(es, {"endpoints": [{"addresses": ["10.0.0.9"]}]}, kinds.get("EndpointSlice"))
    assert out["endpoints"] == [{"addresses": ["10.0.0.9"]}] and out["ports"] == [{"port": 80}]


def test_missing_merge_key_is_an_error() -> None:
    with pytest.raises(APIError) as err:
        strategic_merge_patch(deployment(), {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}, DEPLOY)
    assert err.value.code == 422
    assert "does not contain declared merge key: name" in err.value.message
    with pytest.raises(APIError) as err:
        strategic_merge_patch(deployment(), ["not", "a", "map"], DEPLOY)
    assert err.value.code == 400


def test_unknown_fields_merge_like_plain_json() -> None:
    obj = {"data": {"a": "1"}, "extra": [1, 2]}
    out = strategic_merge_patch(obj, {"data": {"b": "2"}, "extra": [3]}, kinds.get("ConfigMap"))
    assert out == {"data": {"a": "1", "b": "2"}, "extra": [3]}


def test_schema_is_data() -> None:
    assert lookup(DEPLOY, "spec.template.spec.containers") == ListSpec("merge", ("name",), "Container")
    assert lookup(POD, "spec.containers.env") == ListSpec("merge", ("name",))
    assert lookup(POD, "spec.containers.ports").key == ("containerPort",)
    assert lookup(POD, "spec.containers.volumeMounts").key == ("mountPath",)
    assert lookup(POD, "spec.volumes").retain_keys
    assert lookup(POD, "spec.containers.args") == ATOMIC
    assert lookup(SVC, "spec.ports").key == ("port",)
    assert lookup(NODE, "status.addresses").key == ("type",)
    assert lookup(POD, "metadata.finalizers") == ListSpec("merge", ())
    assert lookup(POD, "spec.nothing") is None
