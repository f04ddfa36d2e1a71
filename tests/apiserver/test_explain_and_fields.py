"""Unknown fields and ``kubectl explain`` with the real kubectl: strict by default, warned or dropped on request."""

from __future__ import annotations

import json

from tests.support.cluster import Cluster

TYPO = """\
apiVersion: v1
kind: Pod
metadata:
  name: typo
  namespace: default
spec:
  containers:
  - name: c
    image: registry.k8s.io/e2e-test-images/agnhost:2.39
    imagee: nope
    ports:
    - containerPort: 80
      protocl: TCP
  restartPolicyy: Never
"""


async def test_unknown_fields_refused_by_default_with_their_paths(cluster: Cluster) -> None:
    bad = await cluster.kubectl("apply", "-f", "-", stdin=TYPO, check=False)
    assert bad.returncode != 0
    assert 'Pod in version "v1" cannot be handled as a Pod: strict decoding error:' in bad.stderr
    for path in ("spec.containers[0].imagee", "spec.containers[0].ports[0].protocl", "spec.restartPolicyy"):
        assert f'unknown field "{path}"' in bad.stderr
    gone = await cluster.kubectl("get", "pod", "typo", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


async def test_warn_drops_the_fields_and_says_so_ignore_drops_them_silently(cluster: Cluster) -> None:
    warned = await cluster.kubectl("create", "--validate=warn", "-f", "-", stdin=TYPO)
    assert 'Warning: unknown field "spec.containers[0].imagee"' in warned.stderr
    assert 'Warning: unknown field "spec.restartPolicyy"' in warned.stderr
    pod = json.loads((await cluster.kubectl("get", "pod", "typo", "-o", "json")).stdout)
    c0 = pod["spec"]["containers"][0]
    assert "imagee" not in c0 and "protocl" not in c0["ports"][0] and "restartPolicyy" not in pod["spec"]
    assert c0["ports"][0]["protocol"] == "TCP"  # the real field got its default

    quiet = await cluster.kubectl("create", "--validate=false", "-f", "-", stdin=TYPO.replace("name: typo", "name: typo2"))
    assert "Warning" not in quiet.stderr
    pod = json.loads((await cluster.kubectl("get", "pod", "typo2", "-o", "json")).stdout)
    assert "imagee" not in pod["spec"]["containers"][0]

    # A patch is checked too; kubectl patch sends no fieldValidation, so the server's default (Warn) applies.
    patched = await cluster.kubectl("patch", "pod", "typo", "-p", '{"spec":{"activeDeadlineSecondz":5}}')
    assert 'Warning: unknown field "spec.activeDeadlineSecondz"' in patched.stderr
    pod = json.loads((await cluster.kubectl("get", "pod", "typo", "-o", "json")).stdout)
    assert "activeDeadlineSecondz" not in pod["spec"]


async def test_explain_walks_the_fields(cluster: Cluster) -> None:
    out = (await cluster.kubectl("explain", "pod.spec.containers.ports")).stdout
    assert "KIND:       Pod" in out and "VERSION:    v1" in out
    assert "containerPort\t<integer> -required-" in out and "protocol\t<string>" in out
    out = (await cluster.kubectl("explain", "deployment.spec.strategy.rollingUpdate")).stdout
    assert "GROUP:      apps" in out and "maxSurge\t<IntOrString>" in out
    out = (await cluster.kubectl("explain", "service.spec", "--recursive")).stdout
    for field in ("trafficDistribution\t<string>", "sessionAffinityConfig\t<SessionAffinityConfig>",
                  "timeoutSeconds\t<integer>"):
        assert field in out
    out = (await cluster.kubectl("explain", "pod.spec.containers.resources")).stdout
    assert "limits\t<map[string]Quantity>" in out
    out = (await cluster.kubectl("explain", "pod.metadata")).stdout
    assert "creationTimestamp\t<string>" in out and "labels\t<map[string]string>" in out
    out = (await cluster.kubectl("explain", "endpointslices.endpoints.hints")).stdout
    assert "forZones\t<[]ForZone>" in out
    out = (await cluster.kubectl("explain", "httproute.spec.rules.retry")).stdout
    assert "GROUP:      gateway.networking.k8s.io" in out
    for field in ("attempts\t<integer>", "backoff\t<string>", "codes\t<[]integer>"):
        assert field in out, out
    bad = await cluster.kubectl("explain", "pod.spec.nope", check=False)
    assert bad.returncode != 0 and "nope" in bad.stderr
