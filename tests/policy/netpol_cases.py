"""Upstream's NetworkPolicy e2e model (test/e2e/network/netpol) as data: the 3×3 pods, the cases, the truth tables.

The model (upstream's ``model.go``): namespaces ``x``, ``y``, ``z`` labelled
``ns=<name>`` (the API server adds ``kubernetes.io/metadata.name``); in each,
pods ``a``, ``b``, ``c`` labelled ``pod=<name>``, each with one container per
(port, protocol) of 80/81 × TCP/UDP named ``cont-80-tcp``…, running agnhost
``serve-hostname --tcp|--udp --http=false --port N`` and declaring the
container port ``serve-80-tcp``… (the names the named-port cases use).

A case is a list of steps; a step does some actions (apply or delete a
policy, relabel a pod or a namespace; the actions of earlier steps stay in
force) and then expects a reachability per (port, protocol). Expectations are
written as upstream writes them (``reachability.go``): a default, then
``expect``/``expect_peer``/``expect_all_ingress``/``expect_all_egress``
overrides in order; :meth:`Reachability.matrix` expands them into the 9×9
table, with a pod always reaching itself (upstream's ``AllowLoopback``; it
ignores the diagonal because CNIs differ, kmesh's dataplane never polices a
pod's own loopback). Upstream probes one (port, protocol) per case; here each
step says what every one of the four probes expects (keys ``"80/TCP"``,
``"*/UDP"``, ``"81/*"``, ``"*"``; the most specific key wins).

Upstream builds ipBlock CIDRs from real pod addresses; the manifests here
carry ``<x/b>/32``-style placeholders that :func:`resolve` turns into the
network of that pod's address with that prefix (``<x/b>/4`` is upstream's
``makeLargeCIDRForIP``).
"""

from __future__ import annotations

import copy
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

Obj = dict[str, Any]

NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c")
PODS = tuple(f"{ns}/{p}" for ns in NAMESPACES for p in POD_NAMES)
PORTS = (80, 81)
PROTOCOLS = ("TCP", "UDP")
PROBES = tuple((port, proto) for port in PORTS for proto in PROTOCOLS)
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"
NS_NAME_LABEL = "kubernetes.io/metadata.name"


# --- the model -----------------------------------------------------------------------------------------


def container_name(port: int, protocol: str) -> str:
    """Upstream's ``Container.Name``: ``cont-80-tcp``."""
    return f"cont-{port}-{protocol.lower()}"


def port_name(port: int, protocol: str) -> str:
    """Upstream's ``Container.PortName``: ``serve-80-tcp``."""
    return f"serve-{port}-{protocol.lower()}"


def pod_labels(pod: str) -> dict[str, str]:
    """A model pod's labels (``pod=a``)."""
    return {"pod": pod.split("/")[1]}


def namespace_labels(ns: str) -> dict[str, str]:
    """A model namespace's labels (``ns=x``; the API server adds ``kubernetes.io/metadata.name``)."""
    return {"ns": ns}


def containers() -> list[Obj]:
    """The four serve-hostname containers of every model pod."""
    out = []
    for port, proto in PROBES:
        flag = "--tcp" if proto == "TCP" else "--udp"
        out.append({"name": container_name(port, proto), "image": AGNHOST, "imagePullPolicy": "IfNotPresent",
                    "command": ["/agnhost", "serve-hostname", flag, "--http=false", "--port", str(port)],
                    "ports": [{"containerPort": port, "name": port_name(port, proto), "protocol": proto}]})
    return out


def namespace_manifest(ns: str) -> Obj:
    """A model Namespace."""
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": namespace_labels(ns)}}


def pod_manifest(pod: str, node: str | None = None) -> Obj:
    """A model Pod (``node``: pinned there)."""
    ns, name = pod.split("/")
    spec: Obj = {"terminationGracePeriodSeconds": 0, "containers": containers()}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns,
                                                            "labels": pod_labels(pod)}, "spec": spec}


# --- reachability (upstream's reachability.go) ---------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """Matches pods by namespace and/or name; an empty field matches all (upstream's ``Peer``)."""

    namespace: str = ""
    pod: str = ""

    def matches(self, pod: str) -> bool:
        """Whether ``ns/name`` is matched."""
        ns, name = pod.split("/")
        return (not self.namespace or self.namespace == ns) and (not self.pod or self.pod == name)


def P(spec: str = "") -> Peer:
    """A Peer from ``""`` (anyone), ``"x"`` (namespace x) or ``"x/a"`` (one pod)."""
    if "/" in spec:
        ns, pod = spec.split("/")
        return Peer(ns, pod)
    return Peer(spec)


@dataclass(frozen=True)
class Reachability:
    """A default expectation plus overrides applied in order; immutable (each method returns a new one)."""

    default: bool = True
    ops: tuple[tuple[Peer, Peer, bool], ...] = ()

    def expect_peer(self, frm: Peer | str, to: Peer | str, ok: bool) -> Reachability:
        """Every pod matching ``frm`` to every pod matching ``to``."""
        frm = P(frm) if isinstance(frm, str) else frm
        to = P(to) if isinstance(to, str) else to
        return Reachability(self.default, self.ops + ((frm, to, ok),))

    def expect(self, frm: str, to: str, ok: bool) -> Reachability:
        """One pod to one pod (``"x/a"``)."""
        return self.expect_peer(P(frm), P(to), ok)

    def expect_all_ingress(self, pod: str, ok: bool) -> Reachability:
        """Everyone to ``pod``."""
        return self.expect_peer(Peer(), P(pod), ok)

    def expect_all_egress(self, pod: str, ok: bool) -> Reachability:
        """``pod`` to everyone."""
        return self.expect_peer(P(pod), Peer(), ok)

    def matrix(self, pods: tuple[str, ...] = PODS) -> dict[tuple[str, str], bool]:
        """(from, to) → allowed, for every pair; a pod always reaches itself."""
        out = {(f, t): self.default for f in pods for t in pods}
        for frm, to, ok in self.ops:
            for f in pods:
                if frm.matches(f):
                    for t in pods:
                        if to.matches(t):
                            out[(f, t)] = ok
        for p in pods:
            out[(p, p)] = True
        return out


ALL = Reachability(True)


# --- actions and steps ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Apply:
    """Create, or replace, a NetworkPolicy (``kubectl apply``)."""

    policy: Obj


@dataclass(frozen=True)
class Delete:
    """Delete NetworkPolicy ``namespace/name``; ``name`` "": every policy of the model's namespaces."""

    namespace: str = ""
    name: str = ""


@dataclass(frozen=True)
class LabelPod:
    """Set (value) or remove (None) labels of a model pod ``x/a``."""

    pod: str
    labels: Mapping[str, str | None]


@dataclass(frozen=True)
class LabelNamespace:
    """Set (value) or remove (None) labels of a model namespace."""

    namespace: str
    labels: Mapping[str, str | None]


Action = Union[Apply, Delete, LabelPod, LabelNamespace]


@dataclass(frozen=True)
class Step:
    """Actions, then what every probe expects."""

    name: str
    actions: tuple[Action, ...]
    expect: Mapping[str, Reachability]

    def reachability(self, port: int, protocol: str) -> Reachability:
        """The expectation for one probe: the most specific key among ``80/TCP``, ``*/TCP``, ``80/*``, ``*``."""
        for key in (f"{port}/{protocol}", f"*/{protocol}", f"{port}/*", "*"):
            if key in self.expect:
                return self.expect[key]
        raise KeyError(f"step {self.name!r} says nothing about {port}/{protocol}")


@dataclass(frozen=True)
class Case:
    """One upstream test (``title`` is its ``It`` text, or says it is kmesh's own), as steps."""

    name: str
    title: str
    steps: tuple[Step, ...]
    tags: frozenset[str] = field(default_factory=frozenset)


# --- state: what the actions add up to -----------------------------------------------------------------


@dataclass
class State:
    """The model's labels and policies after some actions (both tests replay steps through this)."""

    pod_labels: dict[str, dict[str, str]] = field(default_factory=lambda: {p: pod_labels(p) for p in PODS})
    ns_labels: dict[str, dict[str, str]] = field(default_factory=lambda: {n: namespace_labels(n) for n in NAMESPACES})
    policies: dict[tuple[str, str], Obj] = field(default_factory=dict)

    def do(self, action: Action) -> None:
        """Apply one action."""
        if isinstance(action, Apply):
            md = action.policy["metadata"]
            self.policies[(md["namespace"], md["name"])] = action.policy
        elif isinstance(action, Delete):
            for key in list(self.policies):
                if not action.namespace or (key[0] == action.namespace and (not action.name or key[1] == action.name)):
                    del self.policies[key]
        elif isinstance(action, LabelPod):
            _relabel(self.pod_labels[action.pod], action.labels)
        elif isinstance(action, LabelNamespace):
            _relabel(self.ns_labels[action.namespace], action.labels)
        else:  # pragma: no cover
            raise TypeError(action)


def _relabel(labels: dict[str, str], change: Mapping[str, str | None]) -> None:
    for k, v in change.items():
        if v is None:
            labels.pop(k, None)
        else:
            labels[k] = v


_PLACEHOLDER = re.compile(r"^<([xyz]/[abc])>/(\d+)$")


def resolve(obj: Any, ips: Mapping[str, str]) -> Any:
    """``obj`` with every ``<x/b>/N`` string replaced by the /N network of pod x/b's address."""
    if isinstance(obj, dict):
        return {k: resolve(v, ips) for k, v in obj.items()}
    if isinstance(obj, list):
        return [resolve(v, ips) for v in obj]
    if isinstance(obj, str):
        m = _PLACEHOLDER.match(obj)
        if m:
            return str(ipaddress.ip_network(f"{ips[m.group(1)]}/{m.group(2)}", strict=False))
    return obj


# --- policy builders (upstream's GenNetworkPolicy + SetSpec*Rules) --------------------------------------


def netpol(name: str, ns: str, selector: Obj | None = None, *, ingress: list[Obj] | None = None,
           egress: list[Obj] | None = None, types: list[str] | None = None) -> Obj:
    """A NetworkPolicy; ``policyTypes`` lists Ingress when ``ingress`` is given and Egress when ``egress`` is
    (upstream's SetSpecIngressRules/SetSpecEgressRules), unless ``types`` says otherwise."""
    spec: Obj = {"podSelector": selector if selector is not None else {}}
    if types is None:
        types = ([] if ingress is None else ["Ingress"]) + ([] if egress is None else ["Egress"])
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    spec["policyTypes"] = types
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def labels(**kv: str) -> Obj:
    """A selector with matchLabels."""
    return {"matchLabels": dict(kv)}


def pod_is(*names: str) -> Obj:
    """``pod=<name>`` (or ``pod in (...)`` for several)."""
    if len(names) == 1:
        return {"matchLabels": {"pod": names[0]}}
    return {"matchExpressions": [{"key": "pod", "operator": "In", "values": list(names)}]}


def ns_label(ns: str) -> Obj:
    """``ns=<name>``: the model's own namespace label."""
    return {"matchLabels": {"ns": ns}}


def ns_name(ns: str) -> Obj:
    """``kubernetes.io/metadata.name=<name>``: the label the API server sets."""
    return {"matchLabels": {NS_NAME_LABEL: ns}}


def expr(key: str, op: str, *values: str) -> Obj:
    """A selector with one matchExpression."""
    req: Obj = {"key": key, "operator": op}
    if values:
        req["values"] = list(values)
    return {"matchExpressions": [req]}


def port(p: int | str | None = None, protocol: str | None = None, end: int | None = None) -> Obj:
    """A NetworkPolicyPort."""
    out: Obj = {}
    if protocol:
        out["protocol"] = protocol
    if p is not None:
        out["port"] = p
    if end is not None:
        out["endPort"] = end
    return out


def step(name: str, *actions: Action, **expect: Reachability) -> Step:
    """A step; expectation keys are written ``_80_TCP`` / ``TCP`` / ``_81`` / ``all`` as keyword arguments."""
    keys: dict[str, Reachability] = {}
    for k, v in expect.items():
        if k == "all":
            keys["*"] = v
        elif k in PROTOCOLS:
            keys[f"*/{k}"] = v
        elif re.fullmatch(r"_\d+", k):
            keys[f"{k[1:]}/*"] = v
        else:
            m = re.fullmatch(r"_(\d+)_(TCP|UDP)", k)
            assert m, k
            keys[f"{m.group(1)}/{m.group(2)}"] = v
    return Step(name, tuple(actions), keys)


def case(name: str, title: str, *steps: Step, tags: tuple[str, ...] = ()) -> Case:
    """A case."""
    return Case(name, title, tuple(steps), frozenset(tags))


# --- the cases -------------------------------------------------------------------------------------------

DENY_X_INGRESS = ALL.expect_peer("", "x", False)
DENY_X_EGRESS = ALL.expect_peer("x", "", False)
ONLY_Y_TO_XA = ALL.expect_peer("x", "x/a", False).expect_peer("z", "x/a", False)
NONE_TO_XA = ALL.expect_all_ingress("x/a", False)

deny_ingress_x = netpol("deny-ingress", "x", {}, ingress=[])
deny_egress_x = netpol("deny-egress-ns-x", "x", {}, egress=[])
deny_all_x = netpol("deny-all", "x", {}, ingress=[], egress=[])

CASES: tuple[Case, ...] = (
    case("default-deny-ingress", "should support a 'default-deny-ingress' policy",
         step("deny ingress in x", Apply(deny_ingress_x), all=DENY_X_INGRESS), tags=("smoke",)),
    case("default-deny-egress", "should deny egress from all pods in a namespace",
         step("deny egress in x", Apply(deny_egress_x), all=DENY_X_EGRESS), tags=("smoke",)),
    case("default-deny-all", "should support a 'default-deny-all' policy",
         step("deny all in x", Apply(deny_all_x), all=DENY_X_INGRESS.expect_peer("x", "", False))),
    case("deny-egress-pod-a", "should deny egress from pods based on PodSelector",
         step("deny egress of x/a", Apply(netpol("deny-egress-pod-a", "x", pod_is("a"), egress=[])),
              all=ALL.expect_all_egress("x/a", False))),
    case("allow-all", "should support allow-all policy",
         step("allow all ingress in x", Apply(netpol("allow-all", "x", {}, ingress=[{}])), all=ALL)),
    case("pod-selector", "should enforce policy to allow traffic from pods within server namespace based on "
         "PodSelector",
         step("x/a allows x/b", Apply(netpol("x-a-allows-x-b", "x", pod_is("a"),
                                             ingress=[{"from": [{"podSelector": pod_is("b")}]}])),
              all=NONE_TO_XA.expect("x/b", "x/a", True))),
    case("ingress-for-target", "should enforce policy to allow ingress traffic for a target",
         step("deny all ingress in x, allow all to x/a",
              Apply(netpol("deny-all", "x", {}, ingress=[])),
              Apply(netpol("allow-all-to-a", "x", pod_is("a"),
                           ingress=[{"from": [{"podSelector": {}, "namespaceSelector": {}}]}])),
              all=ALL.expect_all_ingress("x/a", True).expect_all_ingress("x/b", False)
              .expect_all_ingress("x/c", False))),
    case("from-all-namespaces", "should enforce policy to allow ingress traffic from pods in all namespaces",
         step("x/a allows every namespace", Apply(netpol("allow-from-another-ns", "x", pod_is("a"),
                                                         ingress=[{"from": [{"namespaceSelector": {}}]}])),
              all=ALL)),
    case("namespace-selector", "should enforce policy to allow traffic only from a different namespace, based on "
         "NamespaceSelector",
         step("x/a allows namespace y", Apply(netpol("allow-client-a-via-ns-selector", "x", pod_is("a"),
                                                     ingress=[{"from": [{"namespaceSelector": ns_label("y")}]}])),
              all=ONLY_Y_TO_XA), tags=("smoke",)),
    case("namespace-selector-default-label", "should enforce policy to allow traffic based on NamespaceSelector "
         "with MatchLabels using default ns label",
         step("x/a allows kubernetes.io/metadata.name=y",
              Apply(netpol("allow-client-a-via-ns-selector-for-immutable-ns-label", "x", pod_is("a"),
                           ingress=[{"from": [{"namespaceSelector": ns_name("y")}]}])),
              all=ONLY_Y_TO_XA)),
    case("pod-selector-match-expressions", "should enforce policy based on PodSelector with MatchExpressions",
         step("x/a allows pod in (b)", Apply(netpol("x-a-allows-x-b", "x", pod_is("a"),
                                                    ingress=[{"from": [{"podSelector": expr("pod", "In", "b")}]}])),
              all=NONE_TO_XA.expect("x/b", "x/a", True))),
    case("namespace-selector-match-expressions", "should enforce policy based on NamespaceSelector with "
         "MatchExpressions",
         step("x/a allows ns in (y)", Apply(netpol("allow-ns-y-match-selector", "x", pod_is("a"), ingress=[
             {"from": [{"namespaceSelector": expr(NS_NAME_LABEL, "In", "y")}]}])),
              all=ONLY_Y_TO_XA)),
    case("pod-or-namespace-selector", "should enforce policy based on PodSelector or NamespaceSelector",
         step("x/a allows ns notin (x) OR pod=b: two peers",
              Apply(netpol("allow-ns-y-match-selector", "x", pod_is("a"), ingress=[{"from": [
                  {"namespaceSelector": expr(NS_NAME_LABEL, "NotIn", "x")}, {"podSelector": pod_is("b")}]}])),
              all=ALL.expect("x/a", "x/a", False).expect("x/c", "x/a", False)), tags=("smoke",)),
    case("pod-and-namespace-selector", "should enforce policy based on PodSelector and NamespaceSelector",
         step("x/a allows pod=b in ns notin (x): one peer",
              Apply(netpol("allow-ns-y-podselector-and-nsselector", "x", pod_is("a"), ingress=[{"from": [
                  {"namespaceSelector": expr(NS_NAME_LABEL, "NotIn", "x"), "podSelector": pod_is("b")}]}])),
              all=NONE_TO_XA.expect("y/b", "x/a", True).expect("z/b", "x/a", True)), tags=("smoke",)),
    case("multiple-pod-and-namespace-selectors", "should enforce policy based on Multiple PodSelectors and "
         "NamespaceSelectors",
         step("x/a allows pod in (b, c) in ns notin (x)",
              Apply(netpol("allow-ns-y-z-pod-b-c", "x", pod_is("a"), ingress=[{"from": [
                  {"namespaceSelector": expr(NS_NAME_LABEL, "NotIn", "x"), "podSelector": pod_is("b", "c")}]}])),
              all=ALL.expect_peer("x", "x/a", False).expect("y/a", "x/a", False).expect("z/a", "x/a", False))),
    case("any-pod-selectors", "should enforce policy based on any PodSelectors",
         step("x/a allows pod=b, pod=c", Apply(netpol("allow-ns-x-pod-b-c", "x", pod_is("a"), ingress=[
             {"from": [{"podSelector": pod_is("b")}, {"podSelector": pod_is("c")}]}])),
              all=NONE_TO_XA.expect("x/b", "x/a", True).expect("x/c", "x/a", True))),
    case("pod-in-other-namespace", "should enforce policy to allow traffic only from a pod in a different "
         "namespace based on PodSelector and NamespaceSelector",
         step("x/a allows y/a", Apply(netpol("allow-ns-y-pod-a-via-namespace-pod-selector", "x", pod_is("a"), ingress=[
             {"from": [{"namespaceSelector": ns_name("y"), "podSelector": pod_is("a")}]}])),
              all=NONE_TO_XA.expect("y/a", "x/a", True))),
    case("ports", "should enforce policy based on Ports",
         step("x/a allows namespace y on TCP 81", Apply(netpol("allow-client-a-via-ns-selector", "x", pod_is("a"),
              ingress=[{"from": [{"namespaceSelector": ns_name("y")}], "ports": [port(81, "TCP")]}])),
              _81_TCP=ONLY_Y_TO_XA, all=NONE_TO_XA), tags=("smoke",)),
    case("stacked-policies", "should enforce multiple, stacked policies with overlapping podSelectors",
         step("x/a allows namespace y on TCP 81", Apply(netpol("allow-client-a-via-ns-selector", "x", pod_is("a"),
              ingress=[{"from": [{"namespaceSelector": ns_name("y")}], "ports": [port(81, "TCP")]}])),
              _81_TCP=ONLY_Y_TO_XA, all=NONE_TO_XA),
         step("and on TCP 80 (a second policy)", Apply(netpol("allow-client-a-via-ns-selector-80", "x", pod_is("a"),
              ingress=[{"from": [{"namespaceSelector": ns_name("y")}], "ports": [port(80, "TCP")]}])),
              TCP=ONLY_Y_TO_XA, UDP=NONE_TO_XA)),
    case("named-port-ingress", "should allow ingress access on one named port",
         step("x allows serve-81-tcp", Apply(netpol("allow-all", "x", {}, ingress=[{"ports": [port("serve-81-tcp")]}])),
              _81_TCP=ALL, all=DENY_X_INGRESS), tags=("smoke",)),
    case("named-port-from-namespace", "should allow ingress access from namespace on one named port",
         step("x/a allows namespace y on serve-80-tcp",
              Apply(netpol("allow-client-a-via-ns-selector-80", "x", pod_is("a"), ingress=[
                  {"from": [{"namespaceSelector": ns_name("y")}], "ports": [port("serve-80-tcp", "TCP")]}])),
              _80_TCP=ONLY_Y_TO_XA, all=NONE_TO_XA)),
    case("named-port-egress", "should allow egress access on one named port",
         step("x egresses only to serve-80-tcp", Apply(netpol("allow-egress", "x", {},
                                                              egress=[{"ports": [port("serve-80-tcp")]}])),
              _80_TCP=ALL, all=DENY_X_EGRESS), tags=("smoke",)),
    case("updated-policy", "should enforce updated policy",
         step("allow all ingress in x", Apply(netpol("allow-all-mutate-to-deny-all", "x", {}, ingress=[{}])), all=ALL),
         step("update it to deny all", Apply(netpol("allow-all-mutate-to-deny-all", "x", {}, ingress=[])),
              all=DENY_X_INGRESS), tags=("smoke",)),
    case("updated-namespace", "should allow ingress access from updated namespace",
         step("x/a allows ns2=updated", Apply(netpol("allow-client-a-via-ns-selector", "x", pod_is("a"), ingress=[
             {"from": [{"namespaceSelector": labels(ns2="updated")}]}])), all=NONE_TO_XA),
         step("label y ns2=updated", LabelNamespace("y", {"ns2": "updated"}),
              all=NONE_TO_XA.expect_peer("y", "", True)),
         step("remove the label again (kmesh)", LabelNamespace("y", {"ns2": None}), all=NONE_TO_XA)),
    case("updated-pod", "should allow ingress access from updated pod",
         step("x/a allows pod=b,pod2=updated", Apply(netpol("allow-client-a-via-pod-selector", "x", pod_is("a"),
              ingress=[{"from": [{"podSelector": labels(pod="b", pod2="updated")}]}])), all=NONE_TO_XA),
         step("label x/b pod2=updated (into the peer selector)", LabelPod("x/b", {"pod2": "updated"}),
              all=NONE_TO_XA.expect("x/b", "x/a", True)),
         step("remove the label (out of it; kmesh)", LabelPod("x/b", {"pod2": None}), all=NONE_TO_XA),
         tags=("smoke",)),
    case("deny-other-namespaces", "should deny ingress from pods on other namespaces",
         step("x allows podSelector {}", Apply(netpol("deny-empty-policy", "x", {},
                                                      ingress=[{"from": [{"podSelector": {}}]}])),
              all=ALL.expect_peer("y", "x", False).expect_peer("z", "x", False))),
    case("updated-target-pod", "should deny ingress access to updated pod",
         step("deny ingress to target=isolated", Apply(netpol("deny-ingress-via-label-selector", "x",
                                                              labels(target="isolated"), ingress=[])), all=ALL),
         step("label x/a target=isolated (into the policy's selector)", LabelPod("x/a", {"target": "isolated"}),
              all=NONE_TO_XA),
         step("remove the label (out of it; kmesh)", LabelPod("x/a", {"target": None}), all=ALL), tags=("smoke",)),
    case("ingress-and-egress", "should work with Ingress, Egress specified together",
         step("x/a: ingress from pod=b, egress to port 80",
              Apply(netpol("allow-client-a-via-pod-selector", "x", pod_is("a"),
                           ingress=[{"from": [{"podSelector": pod_is("b")}]}], egress=[{"ports": [port(80)]}],
                           types=["Egress", "Ingress"])),
              _80_TCP=NONE_TO_XA.expect("x/b", "x/a", True),
              all=NONE_TO_XA.expect_all_egress("x/a", False).expect("x/b", "x/a", True))),
    case("both-ends", "should support denying of egress traffic on the client side (even if the server explicitly "
         "allows this traffic)",
         step("x/a egresses only to y/a; y/a and y/b allow only x/a",
              Apply(netpol("allow-to-ns-y-pod-a", "x", pod_is("a"), egress=[
                  {"to": [{"namespaceSelector": ns_name("y"), "podSelector": pod_is("a")}]}])),
              Apply(netpol("allow-from-xa-on-ya-match-selector", "y", pod_is("a"), ingress=[
                  {"from": [{"namespaceSelector": ns_name("x"), "podSelector": pod_is("a")}]}])),
              Apply(netpol("allow-from-xa-on-yb-match-selector", "y", pod_is("b"), ingress=[
                  {"from": [{"namespaceSelector": ns_name("x"), "podSelector": pod_is("a")}]}])),
              all=ALL.expect_peer("x/a", "", False).expect_peer("", "y/a", False).expect_peer("x/a", "y/a", True)
              .expect_peer("", "y/b", False)), tags=("smoke",)),
    case("egress-pod-and-namespace", "should enforce egress policy allowing traffic to a server in a different "
         "namespace based on PodSelector and NamespaceSelector",
         step("x/a egresses only to y/a", Apply(netpol("allow-to-ns-y-pod-a", "x", pod_is("a"), egress=[
             {"to": [{"namespaceSelector": ns_name("y"), "podSelector": pod_is("a")}]}])),
              all=ALL.expect_all_egress("x/a", False).expect("x/a", "y/a", True))),
    case("protocol-only", "should enforce ingress policy allowing any port traffic to a server on a specific "
         "protocol",
         step("x/a allows TCP", Apply(netpol("allow-ingress-by-proto", "x", pod_is("a"),
                                             ingress=[{"ports": [port(protocol="TCP")]}])),
              TCP=ALL, UDP=NONE_TO_XA), tags=("smoke",)),
    case("ingress-allow-all-precedence", "should enforce multiple ingress policies with ingress allow-all policy "
         "taking precedence",
         step("x allows port 80", Apply(netpol("allow-ingress-port-80", "x", {}, ingress=[{"ports": [port(80)]}])),
              _80_TCP=ALL, all=DENY_X_INGRESS),
         step("and everything", Apply(netpol("allow-ingress", "x", {}, ingress=[{}])), all=ALL)),
    case("egress-allow-all-precedence", "should enforce multiple egress policies with egress allow-all policy "
         "taking precedence",
         step("x egresses to port 80", Apply(netpol("allow-egress-port-80", "x", {}, egress=[{"ports": [port(80)]}])),
              _80_TCP=ALL, all=DENY_X_EGRESS),
         step("and everywhere", Apply(netpol("allow-egress", "x", {}, egress=[{}])), all=ALL)),
    case("policy-deleted", "should stop enforcing policies after they are deleted",
         step("deny all in x", Apply(deny_all_x), all=DENY_X_INGRESS.expect_peer("x", "", False)),
         step("delete every policy", Delete(), all=ALL), tags=("smoke",)),
    case("ipblock", "should allow egress access to server in CIDR block",
         step("x/a egresses only to y/b's /32", Apply(netpol("allow-client-a-via-cidr-egress-rule", "x", pod_is("a"),
              egress=[{"to": [{"ipBlock": {"cidr": "<y/b>/32"}}]}])),
              all=ALL.expect_all_egress("x/a", False).expect("x/a", "y/b", True))),
    case("ipblock-except", "should enforce except clause while egress access to server in CIDR block",
         step("x/a egresses to a large CIDR except x/b", Apply(netpol(
             "allow-client-a-via-cidr-egress-rule", "x", pod_is("a"),
             egress=[{"to": [{"ipBlock": {"cidr": "<x/b>/4", "except": ["<x/b>/32"]}}]}])),
              all=ALL.expect("x/a", "x/b", False)), tags=("smoke",)),
    case("ipblock-overlap", "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
         step("x/a egresses to a large CIDR except x/b", Apply(netpol(
             "allow-client-a-via-cidr-egress-rule", "x", pod_is("a"),
             egress=[{"to": [{"ipBlock": {"cidr": "<x/b>/4", "except": ["<x/b>/32"]}}]}])),
              all=ALL.expect("x/a", "x/b", False)),
         step("the same policy updated to x/b's /32 only", Apply(netpol(
             "allow-client-a-via-cidr-egress-rule", "x", pod_is("a"),
             egress=[{"to": [{"ipBlock": {"cidr": "<x/b>/32"}}]}])),
              all=ALL.expect_all_egress("x/a", False).expect("x/a", "x/b", True)),
         step("plus a second policy with the CIDR and except (union; kmesh)", Apply(netpol(
             "allow-client-a-via-cidr-except", "x", pod_is("a"),
             egress=[{"to": [{"ipBlock": {"cidr": "<x/b>/4", "except": ["<x/b>/32"]}}]}])),
              all=ALL)),
    case("ipblock-ingress-except", "kmesh: ingress from an ipBlock (the cluster CIDR) except one pod's /32",
         step("x/a allows 10.244.0.0/16 except y/b", Apply(netpol(
             "allow-cluster-but-y-b", "x", pod_is("a"),
             ingress=[{"from": [{"ipBlock": {"cidr": "<y/b>/16", "except": ["<y/b>/32"]}}]}])),
              all=ALL.expect("y/b", "x/a", False))),
    case("independent-directions", "should enforce policies to check ingress and egress policies can be controlled "
         "independently based on PodSelector",
         step("x/a: allow all egress", Apply(netpol("allow-egress-for-target", "x", pod_is("a"), egress=[{}])),
              all=ALL),
         step("x/a: deny all ingress", Apply(netpol("deny-ingress-via-label-selector", "x", pod_is("a"),
                                                    ingress=[])), all=NONE_TO_XA)),
    case("sctp-not-tcp", "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin "
         "doesn't support SCTP",
         step("deny ingress in x; x/a allows SCTP 81", Apply(deny_ingress_x),
              Apply(netpol("allow-only-sctp-ingress-on-port-81", "x", pod_is("a"),
                           ingress=[{"ports": [port(81, "SCTP")]}])),
              all=DENY_X_INGRESS)),
    case("sctp-isolates", "should properly isolate pods that are selected by a policy allowing SCTP, even if the "
         "plugin doesn't support SCTP",
         step("x/a allows SCTP 80 only", Apply(netpol("allow-only-sctp-ingress-on-port-80", "x", pod_is("a"),
                                                      ingress=[{"ports": [port(80, "SCTP")]}])),
              all=NONE_TO_XA)),
    case("udp-only", "should not allow access by TCP when a policy specifies only UDP",
         step("x/a allows UDP 81 only", Apply(netpol("allow-only-udp-ingress-on-port-81", "x", pod_is("a"),
                                                     ingress=[{"ports": [port(81, "UDP")]}])),
              _81_UDP=ALL, all=NONE_TO_XA), tags=("smoke",)),
    case("egress-namespace-not-in", "should enforce policy based on NamespaceSelector with MatchExpressions using "
         "default ns label",
         step("x/a egresses to ns notin (y)", Apply(netpol(
             "allow-ns-y-match-selector-for-immutable-ns-label", "x", pod_is("a"),
             egress=[{"to": [{"namespaceSelector": expr(NS_NAME_LABEL, "NotIn", "y")}]}])),
              all=ALL.expect_peer("x/a", "y", False))),
    case("endport", "kmesh (upstream's KEP-2079 semantics): endPort ranges",
         step("x allows TCP 81-90", Apply(netpol("allow-range", "x", {}, ingress=[{"ports": [port(81, "TCP", 90)]}])),
              _81_TCP=ALL, all=DENY_X_INGRESS),
         step("updated to TCP 79-80", Apply(netpol("allow-range", "x", {}, ingress=[{"ports": [port(79, "TCP", 80)]}])),
              _80_TCP=ALL, all=DENY_X_INGRESS),
         step("updated to namespace y on 80-81, both protocols", Apply(netpol(
             "allow-range", "x", {}, ingress=[{"from": [{"namespaceSelector": ns_label("y")}],
                                               "ports": [port(80, "TCP", 81), port(80, "UDP", 81)]}])),
              all=ALL.expect_peer("x", "x", False).expect_peer("z", "x", False)), tags=("smoke",)),
    case("endport-egress", "kmesh (upstream's KEP-2079 semantics): an egress endPort range",
         step("x/a egresses to UDP 53-80 only", Apply(netpol("allow-udp-range", "x", pod_is("a"),
                                                             egress=[{"ports": [port(53, "UDP", 80)]}])),
              _80_UDP=ALL, all=ALL.expect_all_egress("x/a", False))),
    case("egress-dns-only", "deny all but egress to DNS (upstream's GetDenyAllWithEgressDNS)",
         step("x: deny all ingress, egress only UDP 53", Apply(netpol(
             "deny-all-tcp-allow-dns", "x", {}, ingress=[], egress=[{"ports": [port(53, "UDP")]}],
             types=["Egress", "Ingress"])),
              all=DENY_X_INGRESS.expect_peer("x", "", False)), tags=("smoke", "dns")),
)

CASE_BY_NAME = {c.name: c for c in CASES}
assert len(CASE_BY_NAME) == len(CASES)


def deepcopy_policy(policy: Obj, ips: Mapping[str, str]) -> Obj:
    """A policy ready to send: placeholders resolved, nothing shared with the case data."""
    return resolve(copy.deepcopy(policy), ips)
