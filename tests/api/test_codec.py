"""Body decoding with upstream's bounds (kmesh.api.codec) and Go's type errors (fieldschema.decode_error)."""

from __future__ import annotations

import pytest

from kmesh.api import codec, fieldschema, patch, selectors
from kmesh.api.errors import APIError


def laughs(levels: int, fanout: int = 10) -> str:
    """A YAML document of ``levels`` lists, each holding ``fanout`` aliases of the one before."""
    lines = ["l0: &l0 [" + ",".join(["x"] * fanout) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * fanout) + "]")
    return "\n".join(lines) + "\n"


def test_json_nesting_is_bounded_without_recursion() -> None:
    depth = codec.MAX_DEPTH
    assert codec.loads_json("[" * depth + "]" * depth) is not None
    for text in ("[" * (depth + 1) + "]" * (depth + 1), "[" * 1_000_000, '{"a":' * 20_000):
        with pytest.raises(codec.DecodeError, match="exceeded max depth"):
            codec.loads_json(text)
    # brackets inside strings (with escaped quotes) do not count
    deep_string = '"\\"' + "[" * 500 + '"'
    assert codec.loads_json('{"a": ' + deep_string + "}") == {"a": '"' + "[" * 500}


def test_surrogates_and_invalid_utf8_become_the_replacement_character() -> None:
    got = codec.loads_json('{"a":"\\ud800","b":"\\\\ud800","c":"\\ud83d\\ude00","d":"\\udc00x"}')
    assert got == {"a": "\ufffd", "b": "\\ud800", "c": "\U0001f600", "d": "\ufffdx"}
    assert codec.loads_json(b'["\xed\xa0\x80", "\xff"]') == ["\ufffd\ufffd\ufffd", "\ufffd"]


@pytest.mark.parametrize("text, says", [
    ("[NaN]", "invalid character 'N'"),
    ("[-Infinity]", "invalid character 'I'"),
    ("[1e400]", "cannot unmarshal number 1e400"),
    ("[" + "1" * 5000 + "]", "4300"),
])
def test_numbers_json_does_not_have_are_refused(text: str, says: str) -> None:
    with pytest.raises(codec.DecodeError, match=says):
        codec.loads_json(text)


def test_big_integers_are_kept_for_the_type_check() -> None:
    assert codec.loads_json("[10000000000000000000000000000000000000000, 1e30]") == [10**40, 1e30]


def test_yaml_aliases_expand_as_far_as_go_yaml_lets_them() -> None:
    ok = codec.loads_yaml(laughs(3))
    assert len(ok["l2"]) == 10 and ok["l2"][0] is not ok["l2"][1]  # expanded, not shared
    with pytest.raises(codec.DecodeError, match="yaml: document contains excessive aliasing"):
        codec.loads_yaml(laughs(4))
    with pytest.raises(codec.DecodeError, match="yaml: document contains excessive aliasing"):
        codec.loads_yaml(laughs(9, 9))
    with pytest.raises(codec.DecodeError, match="contains itself"):
        codec.loads_yaml("a: &x {b: *x}\n")


def test_yaml_depth_and_values_json_has_not() -> None:
    with pytest.raises(codec.DecodeError, match="exceeded max depth of 100"):
        codec.loads_yaml("".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "x: 1\n")
    with pytest.raises(codec.DecodeError):
        codec.loads_yaml("a: " + "[" * 10_000 + "]" * 10_000)
    assert codec.loads_yaml("a: 2001-12-14\nb: !!set {x}\nc: !!binary aGk=\n") == {
        "a": "2001-12-14", "b": {"x": None}, "c": "hi"}
    with pytest.raises(codec.DecodeError, match="unsupported value"):
        codec.loads_yaml("a: .inf\n")


def test_decode_errors_name_the_go_field_and_type() -> None:
    def err(kind: str, obj: object, group: str = "") -> str | None:
        return fieldschema.decode_error(group, "v1", kind, obj)

    assert err("ConfigMap", {"data": {"a": {"b": 1}}}) == (
        "json: cannot unmarshal object into Go struct field ConfigMap.data of type string")
    assert err("Deployment", {"spec": {"replicas": 2**31}}, "apps") == (
        "json: cannot unmarshal number 2147483648 into Go struct field DeploymentSpec.spec.replicas of type int32")
    assert err("Deployment", {"spec": {"replicas": 2**31 - 1}}, "apps") is None
    assert err("Pod", {"spec": {"containers": [{"name": "c", "ports": [{"containerPort": "80"}]}]}}) == (
        "json: cannot unmarshal string into Go struct field ContainerPort.spec.containers.ports.containerPort of type "
        "int32")
    assert err("Pod", {"spec": {"activeDeadlineSeconds": 2**63}}) == (
        f"json: cannot unmarshal number {2**63} into Go struct field PodSpec.spec.activeDeadlineSeconds of type int64")
    assert err("Pod", {"metadata": {"labels": {"a": True}}}) == (
        "json: cannot unmarshal bool into Go struct field ObjectMeta.metadata.labels of type string")
    assert err("Pod", []) == "json: cannot unmarshal array into Go value of type v1.Pod"
    assert err("Service", {"spec": {"ports": [{"port": 80, "targetPort": 2**40}]}}) == (
        f"json: cannot unmarshal number {2**40} into Go value of type int32")
    assert err("Pod", {"spec": {"containers": [{"resources": {"limits": {"cpu": []}}}]}}).startswith(
        "quantities must match")
    assert err("Pod", {"metadata": {"name": "p", "labels": None}, "spec": {"nodeName": None, "junk": {"x": []}}}) is None


def test_label_selector_bang_after_a_key_is_no_operator() -> None:
    with pytest.raises(APIError) as e:
        selectors.parse_label_selector("a!")
    assert e.value.code == 400 and "found '!', expected: in, notin, =, ==, !=, gt, lt" in e.value.message
    assert str(selectors.parse_label_selector("!a")) == "!a"
    assert selectors.parse_label_selector("a in ()").matches({"a": ""})  # upstream: "()" is the empty value


def test_json_patch_copies_are_bounded() -> None:
    doc = {"a": "x" * 1000}
    ops = [{"op": "copy", "from": "/a", "path": f"/c{i}"} for i in range(5)]
    assert len(patch.json_patch(doc, ops, max_copy_bytes=10_000)) == 6
    with pytest.raises(APIError) as e:
        patch.json_patch(doc, ops, max_copy_bytes=4000)
    assert e.value.code == 422
    # each copy adds 1002 bytes (the string and its quotes): the fourth goes past 4000
    assert "the accumulated size increase of copy is 4008, exceeding the limit 4000" in str(e.value.causes)


def test_strategic_merge_of_large_lists_keeps_its_semantics() -> None:
    obj = {"metadata": {"name": "x", "finalizers": ["b", "a"]},
           "spec": {"containers": [{"name": "c", "env": [{"name": "K", "value": "1"}, {"name": "D", "value": "2"}]}]}}
    many = [f"f{i}" for i in range(50_000)]
    got = patch.strategic_merge_patch(obj, {"metadata": {"finalizers": ["a", *many, "a"]}}, "Pod")
    assert got["metadata"]["finalizers"][:3] == ["b", "a", "f0"] and len(got["metadata"]["finalizers"]) == 50_002
    env = [{"name": f"e{i}", "value": "v"} for i in range(20_000)] + [{"name": "D", "$patch": "delete"},
                                                                        {"name": "K", "value": "3"}]
    got = patch.strategic_merge_patch(obj, {"spec": {"containers": [{"name": "c", "env": env}]}}, "Pod")
    merged = got["spec"]["containers"][0]["env"]
    assert merged[-1] == {"name": "K", "value": "3"} and len(merged) == 20_001  # in the patch's order
    assert not any(e["name"] == "D" for e in merged)
