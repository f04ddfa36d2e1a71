"""Label and field selectors: syntax, matching, errors, and the two kinds of empty."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kmesh.api import kinds
from kmesh.api.errors import APIError
from kmesh.api.selectors import (
    everything,
    field_labels,
    format_label_selector,
    format_labels,
    from_selector_object,
    nothing,
    parse_field_selector,
    parse_label_selector,
    selectable_fields,
    selector_from_map,
)

WEB = {"app": "web", "tier": "frontend", "env": "prod"}


@pytest.mark.parametrize(
    "text, labels, expected",
    [
        ("app=web", WEB, True),
        ("app==web", WEB, True),
        ("app=db", WEB, False),
        ("app!=db", WEB, True),
        ("app!=web", WEB, False),
        ("missing!=x", WEB, True),  # != also selects objects without the key
        ("app in (web,db)", WEB, True),
        ("app in (db)", WEB, False),
        ("app notin (db,cache)", WEB, True),
        ("app notin (web)", WEB, False),
        ("missing notin (x)", WEB, True),
        ("tier", WEB, True),
        ("missing", WEB, False),
        ("!missing", WEB, True),
        ("!tier", WEB, False),
        ("app=web,tier=frontend", WEB, True),
        ("app=web,tier=backend", WEB, False),
        ("  app = web ,  tier in ( frontend , backend )  ", WEB, True),
        ("app in (web),!canary,env", WEB, True),
        ("", WEB, True),
        ("", None, True),
        ("app=web", None, False),
        ("!app", None, True),
        ("empty=", {"empty": ""}, True),
        ("empty=", {}, False),
        ("k8s.io/name=web", {"k8s.io/name": "web"}, True),
        ("gen>2", {"gen": "3"}, True),
        ("gen>2", {"gen": "2"}, False),
        ("gen<2", {"gen": "1"}, True),
        ("gen>2", {"gen": "x"}, False),
        ("in=1", {"in": "1"}, True),  # keywords are plain identifiers in key position
    ],
)
def test_label_selector_matches(text: str, labels: dict | None, expected: bool) -> None:
    assert parse_label_selector(text).matches(labels) is expected


def test_string_form_is_sorted_like_upstream() -> None:
    sel = parse_label_selector("tier in (b,a), app=web, !canary")
    assert str(sel) == "app=web,!canary,tier in (a,b)"
    assert [r.key for r in sel.requirements] == ["app", "canary", "tier"]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("app in web", "found 'web' expected: '('"),
        ("app=web db", "found 'db', expected: ',' or 'end of string'"),
        ("app in (web", "found '', expected: ',' or ')'"),
        ("app=web,", "found '', expected: identifier after ','"),
        ("=web", "found '=', expected: !, identifier, or 'end of string'"),
        ("-bad=1", 'invalid label key "-bad"'),
        ("app=we b+", "found 'b+', expected: ',' or 'end of string'"),
        ("app=web+1", 'invalid label value: "web+1": at key: "app"'),
        ("a/b/c=1", 'invalid label key "a/b/c"'),
        ("gen>x", "for 'Gt', 'Lt' operators, the value must be an integer"),
        ("x" * 64 + "=1", "name part must be no more than 63 characters"),
    ],
)
def test_label_selector_errors_are_400_naming_the_selector(text: str, fragment: str) -> None:
    with pytest.raises(APIError) as err:
        parse_label_selector(text)
    assert err.value.code == 400
    assert err.value.reason == "BadRequest"
    assert f'"{text}"' in err.value.message
    assert fragment in err.value.message


def test_key_error_text_is_upstreams() -> None:
    with pytest.raises(APIError) as err:
        parse_label_selector("component+kube-apiserver")
    assert err.value.message.endswith(
        'unable to parse requirement: invalid label key "component+kube-apiserver": name part must consist of '
        "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character "
        "(e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
        "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
    )


def test_empty_and_nothing() -> None:
    assert parse_label_selector("").empty
    assert everything().empty and everything().matches({"a": "b"})
    assert not nothing().empty and not nothing().matches({}) and not nothing().matches(None)
    assert not parse_label_selector("a").empty


def test_deployment_selector_object() -> None:
    sel = from_selector_object(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["frontend", "edge"]},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "release", "operator": "Exists"},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        }
    )
    assert sel.matches({"app": "web", "tier": "edge", "release": "1"})
    assert not sel.matches({"app": "web", "tier": "edge", "release": "1", "canary": "y"})
    assert not sel.matches({"app": "web", "tier": "edge", "env": "dev", "release": "1"})
    assert not sel.matches({"app": "web", "tier": "backend", "release": "1"})
    assert str(sel) == "app=web,!canary,env notin (dev),release,tier in (edge,frontend)"


def test_empty_selector_object_selects_everything_but_nil_selects_nothing() -> None:
    # metav1.LabelSelectorAsSelector: {} is Everything, nil is Nothing.
    assert from_selector_object({}).matches({"any": "thing"})
    assert from_selector_object({"matchLabels": {}, "matchExpressions": []}).empty
    assert not from_selector_object(None).matches({"any": "thing"})
    assert not from_selector_object(None).matches({})


def test_service_selector_map_empty_selects_nothing() -> None:
    assert not selector_from_map(None).matches({"app": "web"})
    assert not selector_from_map({}).matches({"app": "web"})
    assert not selector_from_map({}).empty
    assert selector_from_map({"app": "web"}).matches(WEB)
    assert not selector_from_map({"app": "web", "tier": "backend"}).matches(WEB)


def test_bad_selector_objects() -> None:
    with pytest.raises(APIError) as err:
        from_selector_object({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]})
    assert err.value.code == 400 and '"Gt" is not a valid label selector operator' in err.value.message
    with pytest.raises(APIError):
        from_selector_object({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]})
    with pytest.raises(APIError):
        selector_from_map({"bad key": "x"})


def test_formatting_helpers() -> None:
    assert format_labels({"b": "2", "a": "1"}) == "a=1,b=2"
    assert format_labels({}) == "<none>"
    assert format_labels(None) == "<none>"
    assert format_label_selector({"matchLabels": {"app": "web"}}) == "app=web"
    assert format_label_selector({}) == "<none>"
    assert format_label_selector(None) == "<none>"
    assert format_label_selector({"matchExpressions": [{"key": "a", "operator": "Bogus"}]}) == "<error>"


label_values = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,10}[a-z0-9])?", fullmatch=True)


@given(st.dictionaries(st.sampled_from(["app", "tier", "env", "k8s.io/x"]), label_values, max_size=4))
def test_selector_from_its_own_labels_always_matches(labels: dict[str, str]) -> None:
    text = ",".join(f"{k}={v}" for k, v in labels.items())
    assert parse_label_selector(text).matches(labels)
    assert parse_label_selector(str(parse_label_selector(text))) == parse_label_selector(text)


# --------------------------------------------------------------------------
# field selectors

POD = {
    "kind": "Pod",
    "metadata": {"name": "web-1", "namespace": "default"},
    "spec": {
        "nodeName": "node-a",
        "restartPolicy": "Always",
        "schedulerName": "default-scheduler",
        "serviceAccountName": "default",
    },
    "status": {"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]},
}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("metadata.name=web-1", True),
        ("metadata.name==web-1", True),
        ("metadata.name!=web-1", False),
        ("metadata.namespace=default", True),
        ("spec.nodeName=node-a", True),
        ("spec.nodeName=", False),
        ("spec.nodeName!=node-b,status.phase=Running", True),
        ("status.phase!=Running", False),
        ("status.podIP=10.244.1.5", True),
        ("spec.schedulerName=default-scheduler", True),
        ("spec.restartPolicy=Always", True),
        ("spec.serviceAccountName=default", True),
        ("spec.host=node-a", True),  # old clients' alias for spec.nodeName
        ("", True),
    ],
)
def test_pod_field_selectors(text: str, expected: bool) -> None:
    assert parse_field_selector(text, kinds.get("Pod")).matches(POD) is expected


def test_unscheduled_pods_match_empty_node_name() -> None:
    pending = {"metadata": {"name": "p"}, "spec": {}, "status": {"phase": "Pending"}}
    assert parse_field_selector("spec.nodeName=", "Pod").matches(pending)
    assert not parse_field_selector("spec.nodeName!=", "Pod").matches(pending)


def test_unknown_field_is_400_with_upstream_message() -> None:
    with pytest.raises(APIError) as err:
        parse_field_selector("spec.bogus=1", kinds.get("Pod"))
    assert err.value.code == 400
    assert err.value.message == "field label not supported: spec.bogus"
    with pytest.raises(APIError) as err:
        parse_field_selector("spec.nodeName=a", kinds.get("Service"))
    assert err.value.message == "field label not supported: spec.nodeName"


def test_bad_field_selector_syntax() -> None:
    with pytest.raises(APIError) as err:
        parse_field_selector("metadata.name", "Pod")
    assert err.value.message == "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
    with pytest.raises(APIError) as err:
        parse_field_selector(r"metadata.name=a\x", "Pod")
    assert "invalid escape sequence" in err.value.message


def test_escaped_values() -> None:
    obj = {"metadata": {"name": "a,b=c"}}
    assert parse_field_selector(r"metadata.name=a\,b\=c", "ConfigMap").matches(obj)


def test_event_node_and_namespace_fields() -> None:
    event = {
        "metadata": {"name": "web-1.17", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default", "uid": "u1"},
        "reason": "Scheduled",
        "type": "Normal",
        "source": {"component": "default-scheduler"},
    }
    sel = parse_field_selector("involvedObject.kind=Pod,involvedObject.name=web-1,type=Normal", kinds.get("Event"))
    assert sel.matches(event)
    assert parse_field_selector("source=default-scheduler,reason=Scheduled", "Event").matches(event)
    assert not parse_field_selector("type=Warning", "Event").matches(event)

    node = {"metadata": {"name": "n1"}, "spec": {"unschedulable": True}}
    assert parse_field_selector("spec.unschedulable=true", "Node").matches(node)
    assert parse_field_selector("spec.unschedulable=false", "Node").matches({"metadata": {"name": "n2"}, "spec": {}})
    # cluster-scoped objects have an empty namespace
    assert parse_field_selector("metadata.namespace=", "Node").matches(node)

    ns = {"metadata": {"name": "kube-system"}, "status": {"phase": "Active"}}
    assert parse_field_selector("status.phase=Active", kinds.get("Namespace")).matches(ns)
    with pytest.raises(APIError):
        parse_field_selector("spec.unschedulable=true", "Namespace")


def test_every_kind_selects_on_metadata() -> None:
    for k in kinds.KINDS:
        assert {"metadata.name", "metadata.namespace"} <= set(field_labels(k))
        sel = parse_field_selector("metadata.name=x", k)
        assert sel.matches({"metadata": {"name": "x"}})
        assert not sel.matches({"metadata": {"name": "y"}})


def test_selectable_fields_of_a_pod() -> None:
    fields = selectable_fields("Pod", POD)
    assert fields["spec.nodeName"] == "node-a"
    assert fields["status.phase"] == "Running"
    assert fields["spec.hostNetwork"] == "false"
