"""NetworkPolicies (networking.k8s.io/v1) with a real API server and the real kubectl.

The manifests are the recipes of the Kubernetes documentation's "Network Policies" page, unchanged.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from kmesh.api import errors as E
from tests.support.cluster import Cluster

TEST_NETWORK_POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: test-network-policy
  namespace: default
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
  - Ingress
  - Egress
  ingress:
  - from:
    - ipBlock:
        cidr: 172.17.0.0/16
        except:
        - 172.17.1.0/24
    - namespaceSelector:
        matchLabels:
          project: myproject
    - podSelector:
        matchLabels:
          role: frontend
    ports:
    - protocol: TCP
      port: 6379
  egress:
  - to:
    - ipBlock:
        cidr: 10.0.0.0/24
    ports:
    - protocol: TCP
      port: 5978
"""

RECIPES = """\
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-ingress
spec:
  podSelector: {}
  policyTypes:
  - Ingress
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-all-ingress
spec:
  podSelector: {}
  ingress:
  - {}
  policyTypes:
  - Ingress
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-egress
spec:
  podSelector: {}
  policyTypes:
  - Egress
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-all-egress
spec:
  podSelector: {}
  egress:
  - {}
  policyTypes:
  - Egress
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-all
spec:
  podSelector: {}
  policyTypes:
  - Ingress
  - Egress
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: multi-port-egress
  namespace: default
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
    - Egress
  egress:
    - to:
        - ipBlock:
            cidr: 10.0.0.0/24
      ports:
        - protocol: TCP
          port: 32000
          endPort: 32768
"""

# The page's snippets of peers, made whole: a namespace and pod selector in one peer (pods of those
# namespaces), and a namespace targeted by name; neither says policyTypes, one has no protocol.
PEERS = """\
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: alice-clients
spec:
  podSelector:
    matchLabels:
      role: db
  ingress:
  - from:
    - namespaceSelector:
        matchLabels:
          user: alice
      podSelector:
        matchLabels:
          role: client
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: to-kube-system
spec:
  podSelector:
    matchExpressions:
    - {key: app, operator: In, values: [web, api]}
  egress:
  - to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: kube-system
    ports:
    - port: 53
      protocol: UDP
    - port: dns-tcp
"""


async def get_np(cluster: Cluster, name: str) -> dict[str, Any]:
    return json.loads((await cluster.kubectl("get", "netpol", name, "-o", "json")).stdout)


async def test_documented_recipes_apply_and_read_back_with_upstreams_defaults(cluster: Cluster) -> None:
    out = await cluster.kubectl("apply", "-f", "-", stdin=TEST_NETWORK_POLICY + RECIPES + PEERS)
    names = ["test-network-policy", "default-deny-ingress", "allow-all-ingress", "default-deny-egress",
             "allow-all-egress", "default-deny-all", "multi-port-egress", "alice-clients", "to-kube-system"]
    assert out.stdout.splitlines() == [f"networkpolicy.networking.k8s.io/{n} created" for n in names]

    # What was sent comes back, with generation 1 and nothing else added where the manifest was complete.
    for doc in yaml.safe_load_all(TEST_NETWORK_POLICY + RECIPES):
        if not doc:
            continue
        np = await get_np(cluster, doc["metadata"]["name"])
        assert np["spec"] == doc["spec"], np
        assert np["metadata"]["generation"] == 1 and np["metadata"]["namespace"] == "default"
        assert "status" not in np

    # Defaults: policyTypes from the rules (Ingress always, Egress with egress rules), protocol TCP.
    alice = (await get_np(cluster, "alice-clients"))["spec"]
    assert alice["policyTypes"] == ["Ingress"]
    assert alice["ingress"] == [{"from": [{"namespaceSelector": {"matchLabels": {"user": "alice"}},
                                           "podSelector": {"matchLabels": {"role": "client"}}}]}]
    dns = (await get_np(cluster, "to-kube-system"))["spec"]
    assert dns["policyTypes"] == ["Ingress", "Egress"]
    assert dns["egress"][0]["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": "dns-tcp", "protocol": "TCP"}]
    shown = yaml.safe_load((await cluster.kubectl("get", "netpol", "to-kube-system", "-o", "yaml")).stdout)
    assert shown["spec"]["policyTypes"] == ["Ingress", "Egress"] and shown["kind"] == "NetworkPolicy"

    # The table: upstream's printer columns, the selector as a string.
    lines = (await cluster.kubectl("get", "netpol")).stdout.splitlines()
    assert lines[0].split() == ["NAME", "POD-SELECTOR", "AGE"]
    rows = {line.split()[0]: " ".join(line.split()[1:-1]) for line in lines[1:]}
    assert rows == {"allow-all-egress": "<none>", "allow-all-ingress": "<none>", "alice-clients": "role=db",
                    "default-deny-all": "<none>", "default-deny-egress": "<none>", "default-deny-ingress": "<none>",
                    "multi-port-egress": "role=db", "test-network-policy": "role=db",
                    "to-kube-system": "app in (api,web)"}
    listed = (await cluster.kubectl("get", "networkpolicies.networking.k8s.io", "-o", "name")).stdout.split()
    assert listed == [f"networkpolicy.networking.k8s.io/{n}" for n in sorted(names)]

    # kubectl's describer reads the whole spec.
    described = (await cluster.kubectl("describe", "netpol", "test-network-policy")).stdout
    for line in ("PodSelector:     role=db", "To Port: 6379/TCP", "CIDR: 172.17.0.0/16", "Except: 172.17.1.0/24",
                 "NamespaceSelector: project=myproject", "PodSelector: role=frontend", "To Port: 5978/TCP",
                 "Policy Types: Ingress, Egress"):
        assert line in described, (line, described)
    ranged = (await cluster.kubectl("describe", "netpol", "multi-port-egress")).stdout
    assert "To Port Range: 32000-32768/TCP" in ranged and "Not affecting ingress traffic" in ranged, ranged

    # Applying the same again changes nothing; a spec change is a new generation, a label is not.
    again = await cluster.kubectl("apply", "-f", "-", stdin=TEST_NETWORK_POLICY)
    assert again.stdout.strip() == "networkpolicy.networking.k8s.io/test-network-policy unchanged"
    await cluster.kubectl("label", "netpol", "test-network-policy", "tier=data")
    assert (await get_np(cluster, "test-network-policy"))["metadata"]["generation"] == 1
    changed = TEST_NETWORK_POLICY.replace("port: 6379", "port: 6380")
    out = await cluster.kubectl("apply", "-f", "-", stdin=changed)
    assert out.stdout.strip() == "networkpolicy.networking.k8s.io/test-network-policy configured"
    np = await get_np(cluster, "test-network-policy")
    assert np["metadata"]["generation"] == 2 and np["spec"]["ingress"][0]["ports"] == [{"port": 6380, "protocol": "TCP"}]
    await cluster.kubectl("delete", "netpol", "test-network-policy")
    assert "test-network-policy" not in (await cluster.kubectl("get", "netpol", "-o", "name")).stdout


BAD = [
    # (what changes in test-network-policy, field, message)
    ("172.17.1.0/24", "172.18.1.0/24", "spec.ingress[0].from[0].ipBlock.except[0]",
     'Invalid value: "172.18.1.0/24": must be a strict subset of `cidr`'),
    ("cidr: 172.17.0.0/16", "cidr: 172.17.0.0", "spec.ingress[0].from[0].ipBlock.cidr",
     'Invalid value: "172.17.0.0": not a valid CIDR'),
    ("    - namespaceSelector:", "      namespaceSelector:", "spec.ingress[0].from[0]",
     "Forbidden: may not specify both ipBlock and another peer"),
    ("port: 5978", "port: 5978\n      endPort: 5000", "spec.egress[0].ports[0].endPort",
     "Invalid value: 5000: must be greater than or equal to `port`"),
    ("port: 5978", "port: db\n      endPort: 6000", "spec.egress[0].ports[0].endPort",
     "Invalid value: 6000: may not be specified when `port` is non-numeric"),
    ("protocol: TCP\n      port: 5978", "protocol: ICMP\n      port: 5978", "spec.egress[0].ports[0].protocol",
     'Unsupported value: "ICMP": supported values: "TCP", "UDP", "SCTP"'),
    ("port: 6379", "port: 70000", "spec.ingress[0].ports[0].port",
     "Invalid value: 70000: must be between 1 and 65535, inclusive"),
    ("  - Egress\n", "  - Egress\n  - Both\n", "spec.policyTypes",
     'Invalid value: []networking.PolicyType{"Ingress", "Egress", "Both"}: may not specify more than two policyTypes'),
    ("  - Egress\n", "  - egress\n", "spec.policyTypes[1]",
     'Unsupported value: "egress": supported values: "Ingress", "Egress"'),
    ("role: frontend", "role: front end", "spec.ingress[0].from[2].podSelector.matchLabels",
     'Invalid value: "front end": a valid label must be an empty string'),
]


async def test_invalid_policies_are_422_naming_the_field_and_nothing_is_stored(cluster: Cluster) -> None:
    for old, new, field, message in BAD:
        assert old in TEST_NETWORK_POLICY, old
        doc = TEST_NETWORK_POLICY.replace(old, new)
        out = await cluster.kubectl("apply", "-f", "-", stdin=doc, check=False)
        assert out.returncode == 1, out
        assert 'The NetworkPolicy "test-network-policy" is invalid' in out.stderr, out.stderr
        assert f"{field}: {message}" in out.stderr, (field, out.stderr)
    # Several problems are listed together.
    both = TEST_NETWORK_POLICY.replace("172.17.1.0/24", "10.0.0.0/8").replace("port: 5978", "port: 5978\n      endPort: 1")
    out = await cluster.kubectl("create", "-f", "-", stdin=both, check=False)
    assert "* spec.ingress[0].from[0].ipBlock.except[0]: " in out.stderr
    assert "* spec.egress[0].ports[0].endPort: Invalid value: 1: must be greater than or equal to `port`" in out.stderr
    # Straight to the API: a 422 Status with the causes, in the kind's group.
    doc = yaml.safe_load(TEST_NETWORK_POLICY)
    doc["spec"]["ingress"][0]["from"].append({})
    with pytest.raises(E.APIError) as exc:
        await cluster.client.create(doc)
    assert exc.value.code == 422 and exc.value.group == "networking.k8s.io" and exc.value.kind == "NetworkPolicy"
    assert [(c["field"], c["reason"], c["message"]) for c in exc.value.causes] == [
        ("spec.ingress[0].from[3]", "FieldValueRequired", "Required value: must specify a peer")]
    assert (await cluster.kubectl("get", "netpol", "-A", "-o", "name")).stdout == ""

    # An update that breaks a stored policy is refused, and the stored one stays as it was.
    await cluster.kubectl("apply", "-f", "-", stdin=TEST_NETWORK_POLICY)
    patch = json.dumps({"spec": {"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.0/16"]}}]}]}})
    out = await cluster.kubectl("patch", "netpol", "test-network-policy", "--type=merge", "-p", patch, check=False)
    assert out.returncode == 1
    assert ('spec.egress[0].to[0].ipBlock.except[0]: Invalid value: "10.0.0.0/16": must be a strict subset of '
            "`cidr`") in out.stderr
    np = await get_np(cluster, "test-network-policy")
    assert np["metadata"]["generation"] == 1 and np["spec"]["egress"][0]["to"] == [{"ipBlock": {"cidr": "10.0.0.0/24"}}]


async def test_unknown_fields_are_refused_as_upstream(cluster: Cluster) -> None:
    typo = TEST_NETWORK_POLICY.replace("    - ipBlock:", "    - ipblock:")
    out = await cluster.kubectl("create", "-f", "-", stdin=typo, check=False)
    assert out.returncode == 1
    assert ('NetworkPolicy in version "v1" cannot be handled as a NetworkPolicy: strict decoding error: '
            'unknown field "spec.egress[0].to[0].ipblock", unknown field "spec.ingress[0].from[0].ipblock"'
            ) in out.stderr, out.stderr
    # v1.32's NetworkPolicy has no status: it is an unknown field too (dropped with a warning unless strict).
    with_status = TEST_NETWORK_POLICY + "status:\n  conditions: []\n"
    out = await cluster.kubectl("create", "--validate=warn", "-f", "-", stdin=with_status)
    assert 'unknown field "status"' in out.stderr
    assert "status" not in await get_np(cluster, "test-network-policy")


async def test_explain_and_discovery(cluster: Cluster) -> None:
    out = (await cluster.kubectl("explain", "networkpolicy.spec.ingress.from.ipBlock")).stdout
    assert "GROUP:      networking.k8s.io" in out and "KIND:       NetworkPolicy" in out
    assert "FIELD: ipBlock <IPBlock>" in out
    assert "cidr\t<string> -required-" in out and "except\t<[]string>" in out
    out = (await cluster.kubectl("explain", "netpol.spec")).stdout
    for field in ("podSelector\t<LabelSelector> -required-", "ingress\t<[]NetworkPolicyIngressRule>",
                  "egress\t<[]NetworkPolicyEgressRule>", "policyTypes\t<[]string>"):
        assert field in out, (field, out)
    out = (await cluster.kubectl("explain", "networkpolicies.spec.egress.ports")).stdout
    for field in ("endPort\t<integer>", "port\t<IntOrString>", "protocol\t<string>"):
        assert field in out, (field, out)
    out = (await cluster.kubectl("explain", "netpol.spec.egress.to")).stdout
    for field in ("ipBlock\t<IPBlock>", "namespaceSelector\t<LabelSelector>", "podSelector\t<LabelSelector>"):
        assert field in out, (field, out)
    res = (await cluster.kubectl("api-resources", "--api-group=networking.k8s.io")).stdout
    assert any(row.split() == ["networkpolicies", "netpol", "networking.k8s.io/v1", "true", "NetworkPolicy"]
               for row in res.splitlines()), res
    raw = json.loads((await cluster.kubectl("get", "--raw", "/apis/networking.k8s.io/v1")).stdout)
    entry = next(r for r in raw["resources"] if r["name"] == "networkpolicies")
    assert entry["shortNames"] == ["netpol"] and entry["namespaced"] and entry["kind"] == "NetworkPolicy"
    assert not [r for r in raw["resources"] if r["name"].startswith("networkpolicies/")]  # no status in 1.32


async def test_policies_live_in_their_namespace_and_go_with_it(cluster: Cluster) -> None:
    await cluster.kubectl("create", "namespace", "team-a")
    await cluster.kubectl("apply", "-n", "team-a", "-f", "-", stdin=RECIPES.split("---\n")[1])
    await cluster.kubectl("apply", "-f", "-", stdin=RECIPES.split("---\n")[1])
    everywhere = (await cluster.kubectl("get", "netpol", "-A")).stdout.splitlines()
    assert everywhere[0].split() == ["NAMESPACE", "NAME", "POD-SELECTOR", "AGE"]
    assert sorted(line.split()[:3] for line in everywhere[1:]) == [
        ["default", "default-deny-ingress", "<none>"], ["team-a", "default-deny-ingress", "<none>"]]
    await cluster.kubectl("delete", "namespace", "team-a", "--timeout=30s")
    left = (await cluster.kubectl("get", "netpol", "-A", "-o", "name")).stdout.split()
    assert left == ["networkpolicy.networking.k8s.io/default-deny-ingress"]
    assert (await cluster.kubectl("get", "netpol", "-n", "team-a", "-o", "name")).stdout == ""
