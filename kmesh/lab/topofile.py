"""Topology files for ``kmesh up --topology FILE``: the lab's nodes (names, zones, labels) and link settings.

```yaml
nodes:                    # optional; without it, --nodes N gives node-1..node-N
  - name: node-a
    zone: zone-a          # the label topology.kubernetes.io/zone
    labels: {rack: r1}    # any other labels a node may set on itself (the kubelet's --node-labels)
links:                    # optional: `kmesh link set NODE [--to PEER] ...`, applied once the lab is up
  - {node: node-a, delay: 20ms, jitter: 2ms, loss: 1%, rate: 100mbit}
  - {node: node-a, to: node-b, delay: 50ms}
```

The whole file is checked before anything is made, and every problem is
reported with the path of its field (``lab.yaml: nodes[1].name: ...``).
Values mean what ``kmesh link set``'s options mean (``kmesh.packet.linkspec``
parses both); labels are checked as the node agent's ``--node-labels``.

The supervisor learns the nodes through ``UpOptions.node_specs``
(``Topology.node_specs``, read back by ``lab_nodes``); the links are applied
by ``kmesh up`` itself once the lab answers, through ``kmesh.lab.links``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmesh.api.codec import DecodeError, loads_yaml
from kmesh.api.formats import is_dns1123_label
from kmesh.node.nodeinfo import node_label_problems
from kmesh.packet.linkspec import LinkSpec, LinkSpecError

MAX_FILE_BYTES = 256 * 1024
MAX_NODES = 64  # as `kmesh up --nodes`
PORT_NAME_CHARS = 15  # a node's port on the underlay bridge is named after it, and an interface name has 15 at most
ZONE_LABEL = "topology.kubernetes.io/zone"
HOSTNAME_LABEL = "kubernetes.io/hostname"
# Names a node may not have: its namespace kmesh-<lab>-<name> or its port on the underlay bridge would be another's.
RESERVED_NAMES = {
    "cp": "the control plane's namespace and underlay port",
    "underlay": "the underlay's namespace",
    "br0": "the underlay bridge",
    "lo": "the underlay namespace's loopback",
}
_TOP_FIELDS = ("nodes", "links")
_NODE_FIELDS = ("name", "zone", "labels")
_LINK_VALUES = ("delay", "jitter", "loss", "rate")
_LINK_FIELDS = ("node", "to", *_LINK_VALUES)


class TopologyError(ValueError):
    """A bad topology file: every problem as (field path, message); ``str`` gives one line each,
    ``<file>: <field>: <message>``."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {f}: {m}" if f else f"{source}: {m}" for f, m in problems))


@dataclass
class NodeSpec:
    """One node of the lab: its name and the labels its agent registers it with."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def zone(self) -> str | None:
        """Its ``topology.kubernetes.io/zone``, if it has one."""
        return self.labels.get(ZONE_LABEL)


@dataclass(frozen=True)
class LinkEntry:
    """One ``links`` entry: what ``kmesh link set NODE [--to TO]`` would be given."""

    node: str
    to: str | None
    spec: LinkSpec


@dataclass
class Topology:
    """A checked topology file."""

    nodes: list[NodeSpec]
    links: list[LinkEntry] = field(default_factory=list)

    def node_specs(self) -> list[dict[str, Any]]:
        """The nodes for ``UpOptions.node_specs`` (``lab_nodes`` reads them back)."""
        return [{"name": n.name, "labels": dict(n.labels)} for n in self.nodes]


def default_node_name(i: int) -> str:
    """The i-th node's name (0-based) when nothing names it: node-1, node-2, ..."""
    return f"node-{i + 1}"


def lab_nodes(count: int, specs: list[dict[str, Any]]) -> list[NodeSpec]:
    """The nodes a lab starts with: those of its topology file (``specs``, as ``Topology.node_specs`` made
    them), else ``count`` nodes named node-1..node-N without labels of their own."""
    if not specs:
        return [NodeSpec(default_node_name(i)) for i in range(count)]
    return [NodeSpec(str(n["name"]), {str(k): str(v) for k, v in (n.get("labels") or {}).items()}) for n in specs]


def load(path: Path, *, nodes: int = 1, nodes_given: bool = False) -> Topology:
    """Read and check the topology file ``path``; ``TopologyError`` names every bad field.

    ``nodes``: ``--nodes`` (the count when the file has no ``nodes`` list); ``nodes_given``: whether the
    user gave it, so that a ``nodes`` list of another length is refused."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise TopologyError(source, [("", exc.strerror or str(exc))]) from None
    if len(data) > MAX_FILE_BYTES:
        raise TopologyError(source, [("", f"more than {MAX_FILE_BYTES // 1024} KiB; a topology file is small")])
    try:
        doc = loads_yaml(data)
    except DecodeError as exc:
        raise TopologyError(source, [("", f"not a YAML document: {exc}")]) from None
    return parse(doc, source=source, nodes=nodes, nodes_given=nodes_given)


def parse(doc: Any, *, source: str = "topology", nodes: int = 1, nodes_given: bool = False) -> Topology:
    """Check a decoded topology document (see ``load``)."""
    c = _Checker()
    if not isinstance(doc, dict) or not doc:
        raise TopologyError(source, [("", "a topology file is a map with nodes: and/or links: (it is "
                                          f"{'empty' if not doc else 'a ' + _kind(doc)})")])
    c.unknown(doc, "", _TOP_FIELDS)
    specs = c.nodes(doc.get("nodes"), nodes, nodes_given)
    links = c.links(doc.get("links"), [n.name for n in specs])
    if c.problems:
        raise TopologyError(source, c.problems)
    return Topology(specs, links)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return {dict: "map", list: "list", str: "string", int: "number", float: "number"}.get(type(value), "null")


def _path(base: str, key: str) -> str:
    return f"{base}.{key}" if base else key


class _Checker:
    """Collects (field, message) problems while it walks the document."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def bad(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def unknown(self, doc: dict[Any, Any], base: str, known: tuple[str, ...]) -> None:
        for key in doc:
            if key not in known:
                self.bad(_path(base, str(key)), f"unknown field (fields: {', '.join(known)})")

    def string(self, value: Any, path: str) -> str | None:
        """``value`` when it is a non-empty string; None (and a problem) otherwise."""
        if isinstance(value, str) and value:
            return value
        if value is None or value == "":
            self.bad(path, "must not be empty")
        else:
            self.bad(path, f"must be a string, not a {_kind(value)}"
                     + (f" (quote it: \"{value}\")" if isinstance(value, (int, float, bool)) else ""))
        return None

    def seq(self, value: Any, path: str, limit: int) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.bad(path, f"must be a list, not a {_kind(value)}")
            return []
        if len(value) > limit:
            self.bad(path, f"{len(value)} entries; at most {limit}")
            return []
        return value

    def entry(self, value: Any, path: str, known: tuple[str, ...]) -> dict[Any, Any] | None:
        if not isinstance(value, dict):
            self.bad(path, f"must be a map ({', '.join(known)}), not a {_kind(value)}")
            return None
        self.unknown(value, path, known)
        return value

    # ------------------------------------------------------------------------------------------ nodes

    def nodes(self, value: Any, count: int, count_given: bool) -> list[NodeSpec]:
        if value is None:
            return [NodeSpec(default_node_name(i)) for i in range(count)]
        items = self.seq(value, "nodes", MAX_NODES)
        if isinstance(value, list) and not value:
            self.bad("nodes", "an empty list; name at least one node, or leave nodes out (--nodes N)")
        if count_given and items and len(items) != count:
            self.bad("nodes", f"lists {len(items)} node(s) but --nodes says {count}; leave --nodes out")
        specs: list[NodeSpec] = []
        by_name: dict[str, str] = {}
        by_port: dict[str, tuple[str, str]] = {}
        for i, item in enumerate(items):
            path = f"nodes[{i}]"
            node = self.entry(item, path, _NODE_FIELDS)
            if node is None:
                continue
            name = self.node_name(node.get("name"), f"{path}.name")
            labels = self.labels(node, path)
            if name is None:
                continue
            if name in by_name:
                self.bad(f"{path}.name", f"{name!r} is the name of {by_name[name]} too")
                continue
            port = name[:PORT_NAME_CHARS]
            if port in by_port:
                other, other_name = by_port[port]
                self.bad(f"{path}.name", f"{name!r} begins with the same {PORT_NAME_CHARS} characters as "
                                         f"{other_name!r} ({other}): the lab names each node's port on the underlay "
                                         f"bridge after the first {PORT_NAME_CHARS} (an interface name's limit)")
                continue
            by_name[name] = path
            by_port[port] = (path, name)
            specs.append(NodeSpec(name, labels))
        return specs

    def node_name(self, value: Any, path: str) -> str | None:
        if value is None:
            self.bad(path, "required")
            return None
        name = self.string(value, path)
        if name is None:
            return None
        problems = is_dns1123_label(name)
        for m in problems:
            self.bad(path, f"{name!r}: {m}")
        if not problems and name in RESERVED_NAMES:
            self.bad(path, f"{name!r} is reserved: it is {RESERVED_NAMES[name]}")
            return None
        return None if problems else name

    def labels(self, node: dict[Any, Any], path: str) -> dict[str, str]:
        out: dict[str, str] = {}
        zone = node.get("zone")
        if "zone" in node:
            z = self.string(zone, f"{path}.zone")
            if z is not None:
                self.label(ZONE_LABEL, z, f"{path}.zone", out)
        raw = node.get("labels")
        if raw is None:
            return out
        if not isinstance(raw, dict):
            self.bad(f"{path}.labels", f"must be a map of key: value, not a {_kind(raw)}")
            return out
        for key, value in raw.items():
            where = f"{path}.labels.{key}"
            if not isinstance(key, str):
                self.bad(f"{path}.labels", f"key {key!r} must be a string")
                continue
            if key == HOSTNAME_LABEL:
                self.bad(where, "is set from the node's name")
                continue
            if key == ZONE_LABEL and "zone" in node:
                self.bad(where, f"the zone is given by {path}.zone already; give it once")
                continue
            if value == "":  # a label value may be empty (node-role.kubernetes.io/worker: "")
                self.label(key, "", where, out)
                continue
            v = self.string(value, where)
            if v is not None:
                self.label(key, v, where, out)
        return out

    def label(self, key: str, value: str, path: str, out: dict[str, str]) -> None:
        problems = node_label_problems(key, value)
        for m in problems:
            self.bad(path, m)
        if not problems:
            out[key] = value

    # ------------------------------------------------------------------------------------------ links

    def links(self, value: Any, names: list[str]) -> list[LinkEntry]:
        out: list[LinkEntry] = []
        seen: dict[tuple[str, str | None], str] = {}
        for i, item in enumerate(self.seq(value, "links", MAX_NODES * MAX_NODES)):
            path = f"links[{i}]"
            link = self.entry(item, path, _LINK_FIELDS)
            if link is None:
                continue
            node = self.link_node(link.get("node"), f"{path}.node", names, required=True)
            to = self.link_node(link.get("to"), f"{path}.to", names, required=False) if "to" in link else None
            if node is not None and to is not None and node == to:
                self.bad(f"{path}.to", f"{to!r} is the link's own node; to names the other end")
                continue
            spec = self.spec(link, path)
            if node is None or spec is None or ("to" in link and to is None):
                continue
            key = (node, to)
            if key in seen:
                self.bad(path, f"{node}{' to ' + to if to else ''} is set by {seen[key]} too; give each node "
                               "(or node pair) once")
                continue
            seen[key] = path
            out.append(LinkEntry(node, to, spec))
        return out

    def link_node(self, value: Any, path: str, names: list[str], *, required: bool) -> str | None:
        if value is None and required:
            self.bad(path, "required: the node whose underlay link this is")
            return None
        name = self.string(value, path)
        if name is None:
            return None
        if name not in names:
            self.bad(path, f"no node {name!r} in the lab (nodes: {', '.join(names) or 'none'})")
            return None
        return name

    def spec(self, link: dict[Any, Any], path: str) -> LinkSpec | None:
        values: dict[str, str | None] = {}
        ok = True
        for key in _LINK_VALUES:
            if key not in link:
                values[key] = None
                continue
            raw = link[key]
            if isinstance(raw, (int, float)) and not isinstance(raw, bool):
                raw = str(raw)  # loss: 1 is 1 %; a bare duration or rate is refused by its parser, with a hint
            v = self.string(raw, f"{path}.{key}")
            ok = ok and v is not None
            values[key] = v
        if not ok:
            return None
        if all(v is None for v in values.values()):
            self.bad(path, "nothing to set: give at least one of delay, loss, rate")
            return None
        try:
            return LinkSpec.parse(**values)
        except LinkSpecError as exc:
            key = exc.param.removeprefix("--")
            self.bad(f"{path}.{key}" if key in _LINK_VALUES else path,
                     re.sub(r"--(delay|jitter|loss|rate)\b", r"\1", exc.message))
            return None
