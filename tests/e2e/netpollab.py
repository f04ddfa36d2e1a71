"""Upstream's NetworkPolicy e2e in a netns lab: the 9×9 truth tables probed from inside the pods.

The tests of ``test_netpol_lab_iptables_vxlan.py`` and
``test_netpol_lab_nftables_hostgw.py``: one lab each (a file of its own, so
``make test`` runs the two labs side by side), two nodes, no ingress/gateway
add-ons. Namespaces x, y, z (labelled ns=<name>) hold pods a, b, c (pod=<name>)
spread over the nodes, each with agnhost ``serve-hostname`` on TCP and UDP 80
and 81 in four containers with named ports, as upstream's model has them
(``tests/policy/netpol_cases.py``). For every case the policies are applied
with kubectl, pods and namespaces relabelled, policies updated and deleted,
step by step; after each step all 324 probes (9×9 × 80/81 × TCP/UDP) run
concurrently from the pods' network namespaces, and are repeated until they
match the expected truth table or about 12 seconds pass (the agents need a
moment; nothing sleeps a fixed time; a step that expects what the last one
saw first waits, up to 5 s, for the nodes' policy tables to change, since the
probes cannot tell it from the last). A mismatch prints upstream's
expected/observed/comparison tables.

Then the policy model that ``kmesh policy explain`` answers from must agree
with the probed matrix on every cell (the diagonal too: loopback, which no
dataplane polices and the model allows); ``explain`` itself (model only) is
asked about a sample of cells of each case's last step (in the first lab), and the CLI, with its kernel
probe, about one denied and one allowed cell of the smoke cases (in both).

Both variants (iptables + vxlan, nftables + host-gw) probe the cases in PROBED
(the issue's list and a few more: 26 of the 46; every case is checked against
the policy model in tests/policy/test_truth_tables.py).

Between cases the policies and labels a case added are removed, and the next
case starts once every node's policy table holds no pod chain (read with
``nft``), so its "before" round of probes sees no drop.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import dnslib
import pytest
import trio

from kmesh.lab.policycmd import explain
from kmesh.lab.podns import pod_netns
from kmesh.lab.topology import LabNames
from kmesh.net import netns
from kmesh.policy.model import PolicyWorld
from kmesh.policy.probe import reaches
from tests.e2e.labdriver import KMESH, Lab, running_lab
from tests.e2e.netpolprobe import Matrix, Target, probe_until
from tests.policy import netpol_cases as M

VARIANTS = (("iptables", "vxlan"), ("nftables", "host-gw"))
NODES = ("node-1", "node-2")
EXPLAIN_SAMPLE = 12  # cells per step that `explain` (model only) is asked about in-process
PROBE_TIMEOUT = 0.3  # s: a probe inside the lab is answered in well under a millisecond, or dropped
PROBED = (  # the list, and a few more; every case of netpol_cases runs against the model
    "default-deny-ingress", "default-deny-egress", "default-deny-all", "allow-all", "namespace-selector",
    "pod-and-namespace-selector", "pod-or-namespace-selector", "deny-other-namespaces", "ports", "named-port-ingress",
    "named-port-egress", "endport", "endport-egress", "ipblock", "ipblock-except", "egress-dns-only", "both-ends",
    "ingress-and-egress", "stacked-policies", "updated-policy", "policy-deleted", "updated-pod", "updated-target-pod",
    "updated-namespace", "udp-only", "protocol-only")
DNS_IP = "10.96.0.10"


def node_of(pod: str) -> str:
    """Spread the model pods over the two nodes (x/a node-1, x/b node-2, ...)."""
    return NODES[M.PODS.index(pod) % 2]


class NetpolLab:
    """The lab with the model's pods, and the actions of the cases done with kubectl."""

    def __init__(self, lab: Lab, variant: tuple[str, str]) -> None:
        self.lab = lab
        self.variant = variant
        self.info = lab.dd.read_cluster()
        self.targets: dict[str, Target] = {}
        self.ips: dict[str, str] = {}
        self.added: set[tuple[str, str, str]] = set()  # ("pod"|"namespace", object, label key) set by a case

    def setup(self) -> None:
        items = [M.namespace_manifest(ns) for ns in M.NAMESPACES]
        items += [M.pod_manifest(p, node_of(p)) for p in M.PODS]
        self.lab.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
        for ns in M.NAMESPACES:
            self.lab.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod", "--all", "--timeout=180s")
        for ns in M.NAMESPACES:
            for obj in json.loads(self.lab.kubectl("-n", ns, "get", "pods", "-o", "json"))["items"]:
                pod = f"{ns}/{obj['metadata']['name']}"
                ip = obj["status"]["podIP"]
                self.ips[pod] = ip
                where = pod_netns(self.info, obj).netns
                assert where, pod
                self.targets[pod] = Target(obj["metadata"]["name"], ip, where)
        assert sorted(self.targets) == sorted(M.PODS)

    # --- actions ---------------------------------------------------------------------------------------

    def do(self, action: M.Action) -> None:
        if isinstance(action, M.Apply):
            self.lab.kubectl("apply", "-f", "-", stdin=json.dumps(M.deepcopy_policy(action.policy, self.ips)))
        elif isinstance(action, M.Delete):
            spaces = [action.namespace] if action.namespace else list(M.NAMESPACES)
            for ns in spaces:
                what = [action.name] if action.name else ["--all"]
                self.lab.kubectl("-n", ns, "delete", "networkpolicy", *what)
        elif isinstance(action, M.LabelPod):
            ns, name = action.pod.split("/")
            self._label(["-n", ns, "pod", name], "pod", action.pod, action.labels)
        elif isinstance(action, M.LabelNamespace):
            self._label(["namespace", action.namespace], "namespace", action.namespace, action.labels)
        else:  # pragma: no cover
            raise TypeError(action)

    def _label(self, target: list[str], kind: str, obj: str, labels: Any) -> None:
        args = []
        for k, v in labels.items():
            args.append(f"{k}-" if v is None else f"{k}={v}")
            (self.added.discard if v is None else self.added.add)((kind, obj, k))
        self.lab.kubectl("label", "--overwrite", *target, *args)

    def reset(self) -> None:
        """No policies, and the model's labels only."""
        self.lab.kubectl("delete", "networkpolicy", "--all", "--all-namespaces")
        for kind, obj, key in sorted(self.added):
            if kind == "pod":
                ns, name = obj.split("/")
                self.lab.kubectl("label", "-n", ns, "pod", name, f"{key}-")
            else:
                self.lab.kubectl("label", "namespace", obj, f"{key}-")
        self.added.clear()

    # --- the nodes' policy rules ----------------------------------------------------------------------

    def rules(self) -> dict[str, str]:
        """Each node's policy table without counters (``nft -s``), "" where there is none."""
        out = {}
        for node in self.info.nodes:
            proc = subprocess.run(netns.nsenter_argv(node.netns, ["nft", "-s", "list", "table", "inet",
                                                                  "kmesh-netpol"]),
                                  capture_output=True, text=True, timeout=30)
            out[node.name] = proc.stdout if proc.returncode == 0 else ""
        return out

    def wait_no_pod_chains(self, within: float = 10.0) -> None:
        """Poll until no node's policy table has a pod chain (nothing is isolated any more)."""
        end = time.monotonic() + within
        while any("chain ing-" in t or "chain egr-" in t for t in self.rules().values()):
            assert time.monotonic() < end, "the policy agents still isolate pods after every policy was deleted"
            time.sleep(0.05)

    def wait_rules_change(self, before: dict[str, str], within: float = 5.0) -> bool:
        """Poll until some node's rules differ from ``before`` (False if they do not within ``within`` s)."""
        end = time.monotonic() + within
        while time.monotonic() < end:
            if self.rules() != before:
                return True
            time.sleep(0.1)
        return False

    # --- what the model (explain's) says ---------------------------------------------------------------

    def world(self) -> PolicyWorld:
        """The policy model of the lab's objects now, as ``explain`` builds it."""
        items = json.loads(self.lab.kubectl("get", "pods,namespaces,networkpolicies", "-A", "-o", "json"))["items"]

        def of(kind: str) -> list[dict[str, Any]]:
            return [o for o in items if o.get("kind") == kind]
        return PolicyWorld(of("Pod"), of("Namespace"), of("NetworkPolicy"))


def lab_fixture(variant: tuple[str, str]) -> Any:
    """The module-scoped ``nlab`` fixture of one test file: the lab of ``variant`` (proxy mode, backend)."""

    @pytest.fixture(scope="module")
    def nlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetpolLab]:
        mode, backend = variant
        root = tmp_path_factory.mktemp(f"netpol-{mode}-{backend}")
        names = LabNames(f"km{uuid.uuid4().hex[:4]}")
        with running_lab(Path(root), names, mode, nodes=2,
                         flags=["--disable", "ingress,gateway", "--backend", backend]) as lab:
            nl = NetpolLab(lab, variant)
            nl.setup()
            yield nl

    return nlab


# --- printing (upstream's truth tables) -----------------------------------------------------------------


def table(matrix: Matrix) -> str:
    head = "-\t" + "\t".join(M.PODS)
    rows = [f + "\t" + "\t".join("." if matrix.get((f, t)) else "X" for t in M.PODS) for f in M.PODS]
    return "\n".join([head, *rows])


def mismatch_report(title: str, expected: dict[tuple[int, str], Matrix], got: dict[tuple[int, str], Matrix]) -> str:
    out = []
    for key in expected:
        if expected[key] != got.get(key):
            diff = {c: expected[key][c] == got[key].get(c) for c in expected[key]}
            wrong = sum(1 for ok in diff.values() if not ok)
            out.append(f"--- {title}: {key[0]}/{key[1]}: {wrong} of 81 cells wrong\n"
                       f"expected:\n{table(expected[key])}\n\nobserved:\n{table(got[key])}\n\n"
                       f"comparison (X: differs):\n{table(diff)}")
    return "\n\n".join(out)


# --- the checks -----------------------------------------------------------------------------------------


def probe(nl: NetpolLab, expected: dict[tuple[int, str], Matrix], title: str) -> dict[tuple[int, str], Matrix]:
    got, rounds = probe_until(nl.targets, expected, timeout=PROBE_TIMEOUT)
    assert got == expected, f"after {rounds} probe rounds\n" + mismatch_report(title, expected, got)
    return got


def check_explain(nl: NetpolLab, got: dict[tuple[int, str], Matrix], title: str, *, sample: bool,
                  cli: bool) -> None:
    """The model (every cell), ``explain`` in-process (a sample, with a loopback cell, when ``sample``) and the
    CLI (two cells, when ``cli``) agree with what the probes saw."""
    world = nl.world()
    wrong = []
    for (port, proto), matrix in got.items():
        for (f, t), seen in matrix.items():
            said = world.evaluate(nl.ips[f], nl.ips[t], port, proto).allowed
            if said != seen:
                wrong.append(f"{f} → {t} {port}/{proto}: model {'allows' if said else 'denies'}, probe "
                             f"{'reached' if seen else 'did not'}")
    assert not wrong, f"{title}: the policy model disagrees with the probes:\n" + "\n".join(wrong)
    cells = [(f, t, port, proto, seen) for (port, proto), m in got.items() for (f, t), seen in m.items() if f != t]
    denied = [c for c in cells if not c[4]]
    allowed = [c for c in cells if c[4]]
    if sample:
        explain_sample(nl, got, title, denied, allowed)
    if cli:
        explain_cli(nl, title, denied, allowed)


def explain_sample(nl: NetpolLab, got: dict[tuple[int, str], Matrix], title: str, denied: list[Any],
                   allowed: list[Any]) -> None:
    """``explain`` in-process (model only) on a sample of cells and one loopback cell."""
    sample = denied[: EXPLAIN_SAMPLE // 2] + allowed[: EXPLAIN_SAMPLE - min(len(denied), EXPLAIN_SAMPLE // 2)]
    sample.append(("x/a", "x/a", 80, "TCP", got[(80, "TCP")][("x/a", "x/a")]))
    answers: dict[tuple[str, str, int, str], bool] = {}

    async def ask(f: str, t: str, port: int, proto: str) -> None:
        r = await explain(nl.info, f, t, port, proto, probe=False)
        answers[(f, t, port, proto)] = r["allowed"]

    async def all_of_them() -> None:
        async with trio.open_nursery() as n:
            for f, t, port, proto, _ in sample:
                n.start_soon(ask, f, t, port, proto)

    trio.run(all_of_them)
    bad = [f"{f} → {t} {port}/{proto}: explain says {answers[(f, t, port, proto)]}, probe {seen}"
           for f, t, port, proto, seen in sample if answers[(f, t, port, proto)] != seen]
    assert not bad, f"{title}: explain disagrees with the probes:\n" + "\n".join(bad)


def explain_cli(nl: NetpolLab, title: str, denied: list[Any], allowed: list[Any]) -> None:
    """``kmesh policy explain`` with its kernel probe on one denied and one allowed cell."""
    for f, t, port, proto, seen in (denied[:1] + allowed[:1]):
        out = subprocess.run([*KMESH, "policy", "explain", "--data-dir", str(nl.lab.dd.root), f, t, "--port",
                              str(port), *(["--udp"] if proto == "UDP" else []), "--json"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == (0 if seen else 1), f"{title}: " + out.stdout + out.stderr
        r = json.loads(out.stdout)
        assert r["allowed"] is seen and r.get("agree") is True, f"{title}: " + out.stdout


def dns_answers(where: str) -> bool:
    """Whether the cluster DNS answers a UDP query for kubernetes.default from namespace ``where``."""
    query = dnslib.DNSRecord.question("kubernetes.default.svc.cluster.local").pack()

    async def ask() -> bool:
        sock = await netns.open_socket(where, socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            await sock.connect((DNS_IP, 53))
            for _ in range(3):
                await sock.send(query)
                with trio.move_on_after(1):
                    return dnslib.DNSRecord.parse(await sock.recv(4096)).header.rcode == 0
        return False

    return trio.run(ask)


ALLOWED = {key: M.ALL.matrix() for key in M.PROBES}


@pytest.mark.parametrize("case", M.CASES, ids=[c.name for c in M.CASES])
def test_truth_table(nlab: NetpolLab, case: M.Case) -> None:
    if case.name not in PROBED:
        pytest.skip("checked against the policy model only (tests/policy/test_truth_tables.py)")
    nlab.wait_no_pod_chains()
    try:
        got = probe(nlab, ALLOWED, f"{case.name}: before (no policies)")
        for i, step in enumerate(case.steps):
            expected = {(port, proto): step.reachability(port, proto).matrix() for port, proto in M.PROBES}
            before = nlab.rules() if expected == got else None
            for action in step.actions:
                nlab.do(action)
            if before is not None:
                # The probes cannot tell this step from the last one: give the agents the moment they need to
                # install its rules first (some steps, such as a policy selecting no pod yet, change none).
                nlab.wait_rules_change(before)
            title = f"{case.name} step {i + 1} ({step.name})"
            got = probe(nlab, expected, title)
            last = i == len(case.steps) - 1
            # explain answers from the model, whatever the dataplane: its sample is asked in the first lab only
            check_explain(nlab, got, title, sample=last and nlab.variant == VARIANTS[0],
                          cli="smoke" in case.tags and last)
        if "dns" in case.tags:
            assert dns_answers(nlab.targets["x/a"].netns), "x/a's DNS queries should pass the egress-to-DNS rule"
    finally:
        nlab.reset()


AFTER_DNAT_POLICY = {
    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
    "metadata": {"name": "a-from-y", "namespace": "x"},
    "spec": {"podSelector": {"matchLabels": {"pod": "a"}},
             "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}], "ports": [{"port": 80}]}]},
}


def test_policies_apply_after_dnat_and_trace_names_the_drop(nlab: NetpolLab) -> None:
    """Through a ClusterIP (kube-proxy's DNAT to x/a, across nodes or not): y's pods get in, the others do
    not; ``kmesh trace`` shows the drop on its hop as the policy's."""
    nlab.wait_no_pod_chains()
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc-a", "namespace": "x"},
           "spec": {"selector": {"pod": "a"}, "ports": [{"name": "tcp", "port": 8080, "targetPort": 80}]}}
    nlab.lab.kubectl("apply", "-f", "-", stdin=json.dumps(svc))
    try:
        vip = nlab.lab.kubectl("-n", "x", "get", "service", "svc-a", "-o", "jsonpath={.spec.clusterIP}").strip()
        nlab.lab.kubectl("apply", "-f", "-", stdin=json.dumps(AFTER_DNAT_POLICY))
        want = {"y/b": True, "y/c": True, "z/b": False, "x/b": False}

        async def reached() -> dict[str, bool]:
            out: dict[str, bool] = {}

            async def one(pod: str) -> None:
                out[pod] = await reaches(nlab.targets[pod].netns, vip, 8080, "TCP", PROBE_TIMEOUT)

            async with trio.open_nursery() as n:
                for pod in want:
                    n.start_soon(one, pod)
            return out

        deadline = time.monotonic() + 12
        while (got := trio.run(reached)) != want:  # the agents apply the policy after their informers see it
            assert time.monotonic() < deadline, f"through the ClusterIP: {got}, expected {want}"
        out = subprocess.run([*KMESH, "trace", "--data-dir", str(nlab.lab.dd.root), "--timeout", "1", "z/b",
                              "svc/x/svc-a"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 1, out.stdout + out.stderr
        assert "dropped by NetworkPolicy: x/a ingress: no policy allows it" in " ".join(out.stdout.split()), out.stdout
    finally:
        nlab.lab.kubectl("delete", "service", "-n", "x", "svc-a")
        nlab.reset()


OUTSIDE_IP = "192.168.56.1"  # the underlay's "host": a client outside the cluster
NODEPORT = 30480


def _nodeport_policy(name: str, peer: dict[str, Any] | None) -> dict[str, Any]:
    """x/a's ingress: from ``peer`` only on port 80 (None: from anyone)."""
    rule: dict[str, Any] = {"ports": [{"port": 80}]}
    if peer is not None:
        rule["from"] = [peer]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": "x"},
            "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [rule]}}


def test_policies_apply_to_nodeports_from_outside(nlab: NetpolLab) -> None:
    """A NodePort reached from outside the cluster (the underlay's host): with ``externalTrafficPolicy: Local``
    the client's address reaches the pod and an ipBlock decides, as on a real cluster; with ``Cluster`` through
    the other node the source is that node's after SNAT, so only a rule allowing it (here: anyone) lets it in."""
    nlab.wait_no_pod_chains()
    home = next(n for n in nlab.info.nodes if n.name == node_of("x/a"))
    other = next(n for n in nlab.info.nodes if n.name != home.name)
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "np-a", "namespace": "x"},
           "spec": {"type": "NodePort", "externalTrafficPolicy": "Local", "selector": {"pod": "a"},
                    "ports": [{"name": "tcp", "port": 80, "targetPort": 80, "nodePort": NODEPORT}]}}
    outside = nlab.lab.names.underlay

    def until(node_ip: str, want: bool, what: str) -> None:
        deadline = time.monotonic() + 12
        while trio.run(reaches, outside, node_ip, NODEPORT, "TCP", PROBE_TIMEOUT) != want:
            assert time.monotonic() < deadline, f"NodePort {node_ip}:{NODEPORT} from outside: {what}"

    nlab.lab.kubectl("apply", "-f", "-", stdin=json.dumps(svc))
    try:
        until(home.ip, True, "should answer with no policy")
        nlab.lab.kubectl("apply", "-f", "-", stdin=json.dumps(
            _nodeport_policy("from-elsewhere", {"ipBlock": {"cidr": "10.99.0.0/16"}})))
        until(home.ip, False, "x/a admits only 10.99.0.0/16: the outside client is dropped")
        nlab.lab.kubectl("apply", "-f", "-", stdin=json.dumps(
            _nodeport_policy("from-outside", {"ipBlock": {"cidr": f"{OUTSIDE_IP}/32"}})))
        until(home.ip, True, "an ipBlock of the outside client's own address lets it in (Local keeps the source)")

        svc["spec"]["externalTrafficPolicy"] = "Cluster"
        nlab.lab.kubectl("apply", "-f", "-", stdin=json.dumps(svc))
        until(other.ip, False, "through the other node the source is that node's (SNAT): the ipBlock does not match")
        nlab.lab.kubectl("apply", "-f", "-", stdin=json.dumps(_nodeport_policy("from-anyone", None)))
        until(other.ip, True, "a rule allowing anyone lets the SNATed connection in")
    finally:
        nlab.lab.kubectl("delete", "service", "-n", "x", "np-a")
        nlab.reset()
