"""kmesh's policy model against upstream's netpol truth tables, every case and step, every cell (no lab).

For each case of ``netpol_cases`` the steps are replayed on a synthetic world
(the 9 model pods with invented addresses, their named container ports, the
namespaces and their labels) and ``PolicyWorld.evaluate`` must agree with the
expected 9×9 matrix for each of 80/81 × TCP/UDP, on every cell: the diagonal
is loopback, which no dataplane polices, and the model says it is allowed.
"""

from __future__ import annotations

import pytest

from kmesh.policy.model import PolicyWorld
from tests.policy import netpol_cases as M

NODES = ("node-1", "node-2")


def pod_ips() -> dict[str, str]:
    """x/a → 10.244.1.10, x/b → 10.244.2.11, ... (alternating nodes, as the lab spreads them)."""
    return {p: f"10.244.{i % 2 + 1}.{10 + i}" for i, p in enumerate(M.PODS)}


IPS = pod_ips()


def node_of(pod: str) -> str:
    """The node a model pod runs on (its /24)."""
    return NODES[M.PODS.index(pod) % 2]


def pod_object(pod: str, labels: dict[str, str]) -> dict:
    """A Running Pod object as the API would hold it."""
    obj = M.pod_manifest(pod, node_of(pod))
    obj["metadata"]["labels"] = dict(labels)
    obj["status"] = {"phase": "Running", "podIP": IPS[pod], "podIPs": [{"ip": IPS[pod]}]}
    return obj


def namespace_object(ns: str, labels: dict[str, str]) -> dict:
    """A Namespace object with the label the API server adds."""
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {**labels, M.NS_NAME_LABEL: ns}}}


def world_of(state: M.State, extra_pods: list[dict] | None = None) -> PolicyWorld:
    """The model world after the actions in ``state``."""
    pods = [pod_object(p, state.pod_labels[p]) for p in M.PODS] + list(extra_pods or [])
    namespaces = [namespace_object(n, state.ns_labels[n]) for n in M.NAMESPACES]
    namespaces.append(namespace_object("kube-system", {}))
    policies = [M.deepcopy_policy(p, IPS) for p in state.policies.values()]
    return PolicyWorld(pods, namespaces, policies)


def model_matrix(world: PolicyWorld, port: int, protocol: str) -> dict[tuple[str, str], bool]:
    """What the model says for every pair, the diagonal (loopback) included."""
    return {(f, t): world.evaluate(IPS[f], IPS[t], port, protocol).allowed for f in M.PODS for t in M.PODS}


def table(matrix: dict[tuple[str, str], bool], marks: str = "X.") -> str:
    """Upstream's truth-table print: rows from, columns to; ``.`` allowed, ``X`` denied."""
    head = "-\t" + "\t".join(M.PODS)
    rows = [f + "\t" + "\t".join(marks[1] if matrix[(f, t)] else marks[0] for t in M.PODS) for f in M.PODS]
    return "\n".join([head, *rows])


def comparison(expected: dict, observed: dict) -> str:
    """Expected, observed and their comparison (``X`` where they differ), as upstream prints them."""
    diff = {k: expected[k] == observed[k] for k in expected}
    return (f"expected:\n{table(expected)}\n\nobserved:\n{table(observed)}\n\n"
            f"comparison (X: differs):\n{table(diff)}")


STEPS = [(c, i) for c in M.CASES for i in range(len(c.steps))]


@pytest.mark.parametrize(("case", "index"), STEPS, ids=[f"{c.name}-{i + 1}" for c, i in STEPS])
def test_model_agrees_with_upstream_truth_table(case: M.Case, index: int) -> None:
    state = M.State()
    for s in case.steps[: index + 1]:
        for action in s.actions:
            state.do(action)
    world = world_of(state)
    step = case.steps[index]
    wrong = []
    for port, proto in M.PROBES:
        expected = step.reachability(port, proto).matrix()
        observed = model_matrix(world, port, proto)
        if expected != observed:
            wrong.append(f"--- {case.name} step {index + 1} ({step.name}): {port}/{proto}\n"
                         + comparison(expected, observed))
    assert not wrong, "\n\n".join(wrong)


def test_every_case_has_an_expectation_for_every_probe() -> None:
    for c in M.CASES:
        for s in c.steps:
            for port, proto in M.PROBES:
                assert len(s.reachability(port, proto).matrix()) == 81


def test_the_issue_s_list_is_covered() -> None:
    names = set(M.CASE_BY_NAME)
    for wanted in ("default-deny-ingress", "default-deny-egress", "allow-all", "namespace-selector",
                   "pod-and-namespace-selector", "pod-or-namespace-selector", "named-port-ingress", "endport",
                   "ipblock-except", "egress-dns-only", "both-ends", "updated-policy", "policy-deleted",
                   "updated-target-pod", "updated-pod"):
        assert wanted in names


def test_reachability_follows_upstream_semantics() -> None:
    r = M.ALL.expect_peer("", "x", False).expect("y/a", "x/b", True)
    m = r.matrix()
    assert m[("y/b", "x/a")] is False and m[("y/a", "x/b")] is True and m[("x/a", "y/a")] is True
    assert m[("x/a", "x/a")] is True  # loopback
    m = M.Reachability(False).expect_all_egress("z/c", True).matrix()
    assert m[("z/c", "x/a")] and not m[("x/a", "z/c")]


def test_resolve_fills_in_pod_addresses() -> None:
    pol = M.CASE_BY_NAME["ipblock-except"].steps[0].actions[0].policy  # type: ignore[union-attr]
    block = M.deepcopy_policy(pol, IPS)["spec"]["egress"][0]["to"][0]["ipBlock"]
    assert block == {"cidr": "0.0.0.0/4", "except": [f"{IPS['x/b']}/32"]}
    assert "<x/b>/4" in str(pol)  # the case data is left alone


def test_dns_stays_reachable_under_the_dns_only_policy() -> None:
    state = M.State()
    for action in M.CASE_BY_NAME["egress-dns-only"].steps[0].actions:
        state.do(action)
    coredns = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "coredns-0", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
               "spec": {"nodeName": "node-1", "containers": [{"name": "coredns", "image": "kmesh/dns"}]},
               "status": {"phase": "Running", "podIP": "10.244.1.2", "podIPs": [{"ip": "10.244.1.2"}]}}
    world = world_of(state, [coredns])
    assert world.evaluate(IPS["x/a"], "10.244.1.2", 53, "UDP").allowed
    assert not world.evaluate(IPS["x/a"], "10.244.1.2", 53, "TCP").allowed
    assert not world.evaluate(IPS["x/a"], IPS["y/a"], 80, "UDP").allowed


def test_a_pod_always_reaches_itself() -> None:
    """A pod's connection to its own address never leaves the pod, so no dataplane polices it (upstream's
    AllowLoopback); the model, which ``explain`` answers from, must say so too, even for an isolated pod."""
    state = M.State()
    state.do(M.Apply(M.deny_all_x))
    world = world_of(state)
    for pod in ("x/a", "y/a"):
        verdict = world.evaluate(IPS[pod], IPS[pod], 80, "TCP")
        assert verdict.allowed
    assert not world.evaluate(IPS["x/a"], IPS["x/b"], 80, "TCP").allowed
