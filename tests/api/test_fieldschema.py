"""The field tables: complete references, every served kind covered, kmesh's own manifests clean."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from kmesh.api import fieldschema as F
from kmesh.api.kinds import KINDS

ROOT = Path(__file__).resolve().parents[2]


def _refs(spec: F.Spec) -> list[str]:
    if isinstance(spec, F.ListOf):
        return _refs(spec.item)
    if isinstance(spec, F.MapOf):
        return _refs(spec.value)
    if isinstance(spec, F.Ref):
        return [spec.name]
    assert spec in F.SCALARS, spec
    return []


def test_every_reference_resolves_and_every_kind_has_a_struct() -> None:
    F.load()
    missing = {(name, r) for name, st in F.STRUCTS.items() for t in st.fields.values() for r in _refs(t)
               if r not in F.STRUCTS}
    assert not missing
    for k in KINDS:
        name = F.KIND_STRUCTS.get((k.group, k.version, k.kind))
        assert name, k.kind
        assert {"apiVersion", "kind", "metadata"} <= set(F.STRUCTS[name].fields), k.kind


def test_unknown_fields_are_found_and_pruned_with_their_paths() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"any": "thing"}, "nam": "x"},
           "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostport": 1}],
                                    "resources": {"limits": {"cpu": "1"}}}],
                    "nodeSelektor": {"a": "b"}}}
    assert F.unknown_fields("", "v1", "Pod", pod, prune=True) == [
        "metadata.nam", "spec.containers[0].ports[0].hostport", "spec.nodeSelektor"]
    assert F.unknown_fields("", "v1", "Pod", pod) == []
    assert pod["metadata"]["labels"] == {"any": "thing"} and pod["spec"]["containers"][0]["ports"] == [{"containerPort": 80}]


def _manifests() -> list[dict]:
    """Kubernetes objects written in kmesh's YAML: tests, docs and README."""
    docs: list[dict] = []
    files = [*ROOT.glob("tests/**/*.py"), *ROOT.glob("docs/*.md"), ROOT / "README.md", *ROOT.glob("kmesh/**/*.py")]
    for f in files:
        if f.name == "test_explain_and_fields.py":
            continue  # misspelt on purpose
        text = f.read_text()
        for block in re.findall(r'(?s)(apiVersion: [^\n]+\nkind: .*?)(?:"""|```|\Z)', text):
            try:
                for d in yaml.safe_load_all(block.replace("%(img)s", "img")):
                    if isinstance(d, dict) and "kind" in d and "apiVersion" in d:
                        docs.append(d)
            except yaml.YAMLError:
                continue
    return docs


def test_kmesh_manifests_have_no_unknown_fields() -> None:
    docs = _manifests()
    assert len(docs) > 10
    found = {}
    for d in docs:
        group, _, version = d["apiVersion"].rpartition("/")
        bad = F.unknown_fields(group, version, d["kind"], d)
        if bad:
            found[f'{d["kind"]}/{(d.get("metadata") or {}).get("name")}'] = bad
    assert not found
