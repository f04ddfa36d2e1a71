"""Topology files (`kmesh up --topology`): every bad field named, good files parsed, and one netns lab from a file."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kmesh.cli import main
from kmesh.lab.supervisor import UpOptions
from kmesh.lab.topofile import ZONE_LABEL, LinkEntry, NodeSpec, Topology, TopologyError, lab_nodes, load, parse
from kmesh.lab.topology import LabNames
from kmesh.packet.linkspec import LinkSpec

TWO = [{"name": "node-a"}, {"name": "node-b"}]


def problems(doc: Any, **kw: Any) -> list[tuple[str, str]]:
    with pytest.raises(TopologyError) as exc:
        parse(doc, source="lab.yaml", **kw)
    return exc.value.problems


@pytest.mark.parametrize("doc, field, words", [
    (None, "", "empty"),
    ([], "", "empty"),
    (["node-a"], "", "a list"),
    ({"nodes": TWO, "kind": "Lab"}, "kind", "unknown field"),
    ({"nodes": "node-a"}, "nodes", "must be a list"),
    ({"nodes": []}, "nodes", "at least one node"),
    ({"nodes": [{"name": "n"}] * 65}, "nodes", "at most 64"),
    ({"nodes": ["node-a"]}, "nodes[0]", "must be a map"),
    ({"nodes": [{"zone": "z"}]}, "nodes[0].name", "required"),
    ({"nodes": [{"name": 7}]}, "nodes[0].name", "must be a string"),
    ({"nodes": [{"name": "Node_A"}]}, "nodes[0].name", "RFC 1123 label"),
    ({"nodes": [{"name": "a" * 64}]}, "nodes[0].name", "no more than 63"),
    ({"nodes": [{"name": "cp"}]}, "nodes[0].name", "reserved"),
    ({"nodes": [{"name": "underlay"}]}, "nodes[0].name", "reserved"),
    ({"nodes": [{"name": "node-a"}, {"name": "node-a"}]}, "nodes[1].name", "nodes[0]"),
    ({"nodes": [{"name": "rack-one-node-0001"}, {"name": "rack-one-node-0002"}]}, "nodes[1].name", "15 characters"),
    ({"nodes": [{"name": "node-a", "colour": "red"}]}, "nodes[0].colour", "unknown field"),
    ({"nodes": [{"name": "node-a", "zone": ""}]}, "nodes[0].zone", "empty"),
    ({"nodes": [{"name": "node-a", "zone": "zone a"}]}, "nodes[0].zone", "value 'zone a'"),
    ({"nodes": [{"name": "node-a", "labels": ["rack"]}]}, "nodes[0].labels", "map"),
    ({"nodes": [{"name": "node-a", "labels": {"rack": 1}}]}, "nodes[0].labels.rack", "quote it"),
    ({"nodes": [{"name": "node-a", "labels": {"rack": True}}]}, "nodes[0].labels.rack", "must be a string"),
    ({"nodes": [{"name": "node-a", "labels": {"bad key": "x"}}]}, "nodes[0].labels.bad key", "key 'bad key'"),
    ({"nodes": [{"name": "node-a", "labels": {"node-role.kubernetes.io/worker": ""}}]},
     "nodes[0].labels.node-role.kubernetes.io/worker", "kubectl label node"),
    ({"nodes": [{"name": "node-a", "labels": {"kubernetes.io/hostname": "x"}}]},
     "nodes[0].labels.kubernetes.io/hostname", "node's name"),
    ({"nodes": [{"name": "node-a", "zone": "a", "labels": {ZONE_LABEL: "b"}}]},
     f"nodes[0].labels.{ZONE_LABEL}", "once"),
    ({"links": {"node": "node-1"}}, "links", "must be a list"),
    ({"links": ["node-1"]}, "links[0]", "must be a map"),
    ({"links": [{"delay": "5ms"}]}, "links[0].node", "required"),
    ({"links": [{"node": "node-9", "delay": "5ms"}]}, "links[0].node", "no node 'node-9'"),
    ({"links": [{"node": "node-1", "to": "node-9", "delay": "5ms"}]}, "links[0].to", "no node 'node-9'"),
    ({"links": [{"node": "node-1", "to": None, "delay": "5ms"}]}, "links[0].to", "empty"),
    ({"links": [{"node": "node-1", "to": "node-1", "delay": "5ms"}]}, "links[0].to", "own node"),
    ({"links": [{"node": "node-1", "dealy": "5ms"}]}, "links[0].dealy", "unknown field"),
    ({"links": [{"node": "node-1"}]}, "links[0]", "nothing to set"),
    ({"links": [{"node": "node-1", "delay": "50"}]}, "links[0].delay", "no unit"),
    ({"links": [{"node": "node-1", "delay": 50}]}, "links[0].delay", "no unit"),
    ({"links": [{"node": "node-1", "delay": "-5ms"}]}, "links[0].delay", "negative"),
    ({"links": [{"node": "node-1", "delay": "11s"}]}, "links[0].delay", "more than 10s"),
    ({"links": [{"node": "node-1", "jitter": "2ms"}]}, "links[0].jitter", "give delay too"),
    ({"links": [{"node": "node-1", "loss": "120%"}]}, "links[0].loss", "more than 100%"),
    ({"links": [{"node": "node-1", "loss": True}]}, "links[0].loss", "must be a string"),
    ({"links": [{"node": "node-1", "rate": "100"}]}, "links[0].rate", "no unit"),
    ({"links": [{"node": "node-1", "rate": "fast"}]}, "links[0].rate", "not a rate"),
    ({"links": [{"node": "node-1", "delay": "5ms"}, {"node": "node-1", "loss": "1%"}]}, "links[1]", "links[0]"),
])
def test_a_bad_field_is_named(doc: Any, field: str, words: str) -> None:
    found = problems(doc)
    assert any(f == field and words in m for f, m in found), found


def test_every_problem_is_reported_with_the_file_name() -> None:
    doc = {"nodes": [{"name": "Bad"}, {"name": "node-b", "zone": 3}], "links": [{"node": "node-b", "loss": "x"}]}
    with pytest.raises(TopologyError) as exc:
        parse(doc, source="lab.yaml")
    lines = str(exc.value).splitlines()
    assert [line.split(": ")[1] for line in lines] == ["nodes[0].name", "nodes[1].zone", "links[0].loss"]
    assert all(line.startswith("lab.yaml: ") for line in lines)


def test_nodes_given_with_another_count_are_refused() -> None:
    assert any(f == "nodes" and "--nodes says 3" in m for f, m in problems({"nodes": TWO}, nodes=3, nodes_given=True))
    assert len(parse({"nodes": TWO}, nodes=2, nodes_given=True).nodes) == 2
    assert len(parse({"nodes": TWO}, nodes=1, nodes_given=False).nodes) == 2  # the default --nodes 1 is no choice


def test_a_good_file_is_parsed(tmp_path: Path) -> None:
    f = tmp_path / "lab.yaml"
    f.write_text("""
nodes:
  - name: node-a
    zone: zone-a
    labels: {rack: r1, node.kubernetes.io/instance-type: small, example.com/empty: ""}
  - name: node-b
links:
  - node: node-a
    delay: 20ms
    jitter: 2ms
    loss: 1%
    rate: 100mbit
  - {node: node-a, to: node-b, delay: 50ms}
  - {node: node-b, loss: 0.5}
""")
    topo = load(f)
    assert topo.nodes == [
        NodeSpec("node-a", {ZONE_LABEL: "zone-a", "rack": "r1", "node.kubernetes.io/instance-type": "small",
                            "example.com/empty": ""}),
        NodeSpec("node-b", {}),
    ]
    assert topo.nodes[0].zone == "zone-a" and topo.nodes[1].zone is None
    assert topo.links == [
        LinkEntry("node-a", None, LinkSpec.parse(delay="20ms", jitter="2ms", loss="1%", rate="100mbit")),
        LinkEntry("node-a", "node-b", LinkSpec.parse(delay="50ms")),
        LinkEntry("node-b", None, LinkSpec.parse(loss="0.5")),
    ]


def test_without_a_nodes_list_nodes_are_numbered(tmp_path: Path) -> None:
    topo = parse({"links": [{"node": "node-3", "to": "node-1", "rate": "1gbit"}]}, nodes=3, nodes_given=True)
    assert [n.name for n in topo.nodes] == ["node-1", "node-2", "node-3"]
    assert topo.links == [LinkEntry("node-3", "node-1", LinkSpec(rate_bps=10**9))]


def test_files_that_are_not_topologies(tmp_path: Path) -> None:
    for text, words in [("nodes: [a\n", "not a YAML document"), ("", "empty"), ("- a\n", "a list"),
                        ("nodes: 1\n---\nlinks: 2\n", "not a YAML document")]:
        f = tmp_path / "t.yaml"
        f.write_text(text)
        with pytest.raises(TopologyError) as exc:
            load(f)
        assert str(exc.value).startswith(f"{f}: ") and words in str(exc.value), (text, str(exc.value))
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * 300_000)
    with pytest.raises(TopologyError, match="KiB"):
        load(big)


def test_the_nodes_reach_the_supervisor_through_up_options(tmp_path: Path) -> None:
    topo = Topology([NodeSpec("west", {ZONE_LABEL: "w"}), NodeSpec("east")])
    opts = UpOptions(data_dir=str(tmp_path), nodes=2, node_specs=topo.node_specs())
    opts.save(tmp_path / "up.json")
    loaded = UpOptions.load(tmp_path / "up.json")
    assert lab_nodes(loaded.nodes, loaded.node_specs) == topo.nodes
    assert [n.name for n in lab_nodes(2, [])] == ["node-1", "node-2"]
    from kmesh.cli import agent
    from kmesh.lab.datadir import DataDir
    from kmesh.lab.netnslab import agent_argv

    argv = agent_argv(loaded, DataDir(tmp_path), 0, tmp_path / "k", None)
    params = agent.make_context("agent", argv[argv.index("agent") + 1:]).params
    assert params["node_name"] == "west" and params["node_labels"] == {ZONE_LABEL: "w"}
    assert "--node-labels" not in agent_argv(loaded, DataDir(tmp_path), 1, tmp_path / "k", None)


@pytest.mark.parametrize("value, words", [
    ("rack", "not key=value"), ("bad key=x", "key 'bad key'"), ("node-role.kubernetes.io/x=", "kubectl label"),
])
def test_agent_node_labels_are_checked(value: str, words: str) -> None:
    res = CliRunner().invoke(main, ["agent", "--node", "n", "--node-ip", "127.1.0.1", "--node-labels", value])
    assert res.exit_code == 2 and "--node-labels" in res.output and words in res.output, res.output


def _up(tmp_path: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["up", "--data-dir", str(tmp_path / "d"), "--port", "0", *args])


def test_up_refuses_a_bad_file_before_making_anything(tmp_path: Path) -> None:
    f = tmp_path / "lab.yaml"
    f.write_text("nodes:\n  - name: node-a\n  - {name: node-b, color: red}\nlinks:\n  - {node: node-c, delay: 5ms}\n")
    res = _up(tmp_path, "--runtime", "sim", "--topology", str(f))
    assert res.exit_code == 2, res.output
    assert f"{f}: nodes[1].color: unknown field" in res.output and f"{f}: links[0].node: no node 'node-c'" in res.output
    f.write_text("nodes: [{name: node-a}, {name: node-b}]\n")
    res = _up(tmp_path, "--runtime", "sim", "--nodes", "3", "--topology", str(f))
    assert res.exit_code == 2 and "--nodes says 3" in res.output, res.output
    f.write_text("links: [{node: node-1, delay: 5ms}]\n")
    res = _up(tmp_path, "--runtime", "sim", "--topology", str(f))
    assert res.exit_code == 2 and f"{f}: links: the sim runtime has no links" in res.output, res.output
    res = _up(tmp_path, "--runtime", "sim", "--topology", str(tmp_path / "missing.yaml"))
    assert res.exit_code == 2 and "--topology" in res.output, res.output
    if os.geteuid() == 0:
        res = _up(tmp_path, "--runtime", "host", "--advertise-address", "192.0.2.1", "--topology", str(f))
        assert res.exit_code == 2 and "--topology" in res.output and "host runtime" in res.output, res.output
    assert not (tmp_path / "d").exists()


# ---------------------------------------------------------------------------------------------- a real lab

LAB_FILE = """
nodes:
  - name: west-1
    zone: zone-w
    labels: {rack: r1}
  - name: east-1
    zone: zone-e
links:
  - {node: west-1, rate: 100mbit}
  - {node: west-1, to: east-1, delay: 20ms, jitter: 2ms, loss: 1%}
"""


@pytest.mark.netns
@pytest.mark.slow
def test_a_netns_lab_from_a_topology_file(tmp_path: Path) -> None:
    """One lab: the file's names and zones on the Nodes, its links in `kmesh link show`, gone after reset."""
    from tests.e2e.labdriver import running_lab

    f = tmp_path / "lab.yaml"
    f.write_text(LAB_FILE)
    names = LabNames(f"t{uuid.uuid4().hex[:5]}")
    with running_lab(tmp_path / "d", names, "iptables", nodes=2, flags=("--topology", str(f))) as lab:
        out = lab.kubectl("get", "nodes", "-L", ZONE_LABEL, "--no-headers")  # NAME STATUS ROLES AGE VERSION ZONE
        assert sorted((r[0], r[1], r[-1]) for r in map(str.split, out.splitlines())) == [
            ("east-1", "Ready", "zone-e"), ("west-1", "Ready", "zone-w")], out
        assert lab.kubectl("get", "node", "west-1", "-o", "jsonpath={.metadata.labels.rack}") == "r1"
        assert [n.name for n in lab.dd.read_cluster().nodes] == ["west-1", "east-1"]  # type: ignore[union-attr]
        show = lab.kmesh("link", "show", "--json")
        assert show.returncode == 0, show.stderr
        links = {e["target"]: e for e in json.loads(show.stdout)["links"]}
        assert set(links) == {"west-1", "east-1"} and links["east-1"]["rules"] == []
        rules = {r["peer"]: r for r in links["west-1"]["rules"]}
        assert set(rules) == {"east-1", None}
        for way in ("out", "in"):
            assert rules[None][way]["rate"] == "100mbit"
            d = rules["east-1"][way]
            assert (d["delay"], d["jitter"], d["loss"]) == ("20ms", "2ms", 1.0), d
        reset = lab.kmesh("link", "reset")
        assert reset.returncode == 0, reset.stderr
        after = json.loads(lab.kmesh("link", "show", "--json").stdout)["links"]
        assert all(e["rules"] == [] for e in after)
