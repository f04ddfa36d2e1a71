"""CertificateSigningRequests (certificates.k8s.io/v1) with a real API server and the real kubectl."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kmesh.api import errors as E
from kmesh.api.certificates import csr_condition
from kmesh.client.api import Client
from kmesh.client.kubeconfig import Credentials
from tests.support.certs import CA
from tests.support.cluster import Cluster


def csr_pem(cn: str = "alice", org: str = "devs") -> bytes:
    """A real PKCS#10 request (EC P-256), PEM-encoded."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])
    req = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return req.public_bytes(serialization.Encoding.PEM)


def manifest(name: str, request: bytes | None = None, **spec: Any) -> dict[str, Any]:
    body = {"request": base64.b64encode(request or csr_pem()).decode(), "signerName": "kmesh.io/mesh",
            "usages": ["digital signature", "key encipherment", "client auth"], **spec}
    return {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"name": name},
            "spec": body}


async def get_csr(cluster: Cluster, name: str) -> dict[str, Any]:
    return json.loads((await cluster.kubectl("get", "csr", name, "-o", "json")).stdout)


async def rows(cluster: Cluster) -> dict[str, list[str]]:
    """``kubectl get csr``'s rows by name (the header under "")."""
    lines = (await cluster.kubectl("get", "csr")).stdout.splitlines()
    out = {"": lines[0].split()}
    out.update({line.split()[0]: line.split() for line in lines[1:]})
    return out


async def test_create_from_yaml_sets_the_requester_and_shows_in_get_and_describe(cluster: Cluster) -> None:
    doc = manifest("alice", expirationSeconds=600, username="mallory", groups=["system:masters", "evil"],
                   uid="forged", extra={"scopes": ["all"]})
    out = await cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    assert out.stdout.strip() == "certificatesigningrequest.certificates.k8s.io/alice created"
    csr = await get_csr(cluster, "alice")
    spec = csr["spec"]
    assert spec["username"] == "kmesh-admin" and spec["groups"] == ["system:masters", "system:authenticated"]
    assert "uid" not in spec and "extra" not in spec and "status" not in csr
    assert spec["request"] == doc["spec"]["request"] and spec["expirationSeconds"] == 600
    assert csr_condition(csr, "Approved") is None

    # A user of a client certificate is named by it, whatever the body says.
    pki = cluster.server.pki
    cert, key = CA.load(pki.ca_cert, pki.ca_key).issue("bob", ("system:masters", "team-b"))
    async with Client(Credentials(cluster.server.url, pki.ca_pem(), client_cert_pem=cert,
                                  client_key_pem=key)) as bob:
        made = await bob.create(manifest("bob", username="alice"))
    assert made["spec"]["username"] == "bob"
    assert made["spec"]["groups"] == ["system:masters", "team-b", "system:authenticated"]

    table = await rows(cluster)
    assert table[""] == ["NAME", "AGE", "SIGNERNAME", "REQUESTOR", "REQUESTEDDURATION", "CONDITION"]
    assert table["alice"][2:] == ["kmesh.io/mesh", "kmesh-admin", "10m", "Pending"]
    assert table["bob"][2:] == ["kmesh.io/mesh", "bob", "<none>", "Pending"]
    # The short name, and applying the same manifest again (its forged requester changes nothing).
    assert (await cluster.kubectl("get", "csr", "-o", "name")).stdout.split() == [
        "certificatesigningrequest.certificates.k8s.io/alice", "certificatesigningrequest.certificates.k8s.io/bob"]
    again = await cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    assert again.stdout.strip() == "certificatesigningrequest.certificates.k8s.io/alice configured"
    assert (await get_csr(cluster, "alice"))["spec"] == spec
    described = (await cluster.kubectl("describe", "csr", "alice")).stdout
    assert "Requesting User:     kmesh-admin" in described and "Signer:              kmesh.io/mesh" in described
    assert "Status:              Pending" in described and "Common Name:    alice" in described


async def test_invalid_requests_are_422_naming_the_field_and_nothing_is_stored(cluster: Cluster) -> None:
    not_a_csr = manifest("x", request=b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    garbled = manifest("x", request=b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
    cases = [
        (not_a_csr, "spec.request", "PEM block type must be CERTIFICATE REQUEST"),
        (garbled, "spec.request", "x509: malformed certificate request"),
        (manifest("x", usages=["client auth", "world domination"]), "spec.usages[1]",
         'Unsupported value: "world domination"'),
        (manifest("x", usages=[]), "spec.usages", "usages must be provided"),
        (manifest("x", expirationSeconds=599), "spec.expirationSeconds",
         "may not specify a duration less than 600 seconds (10 minutes)"),
        (manifest("x", signerName="mesh"), "spec.signerName", "must be a fully qualified domain and path"),
    ]
    for doc, field, message in cases:
        out = await cluster.kubectl("create", "-f", "-", stdin=yaml.safe_dump(doc), check=False)
        assert out.returncode == 1, out
        assert f"{field}: " in out.stderr and message in out.stderr, out.stderr
        assert 'The CertificateSigningRequest "x" is invalid' in out.stderr
    with pytest.raises(E.APIError) as exc:
        await cluster.client.create(manifest("x", expirationSeconds=10))
    assert exc.value.code == 422 and exc.value.group == "certificates.k8s.io"
    assert [(c["field"], c["reason"]) for c in exc.value.causes] == [("spec.expirationSeconds", "FieldValueInvalid")]
    assert (await cluster.kubectl("get", "csr", "-o", "name")).stdout == ""


async def test_approve_issue_deny_and_immutable_spec(cluster: Cluster) -> None:
    await cluster.kubectl("create", "-f", "-", stdin=yaml.safe_dump(manifest("web")))
    await cluster.kubectl("create", "-f", "-", stdin=yaml.safe_dump(manifest("rogue")))
    cert, _ = CA.new("kmesh-mesh-ca").issue("alice")
    issue = json.dumps({"status": {"certificate": base64.b64encode(cert).decode()}})

    # No certificate before approval, and the main resource cannot write status.
    early = await cluster.kubectl("patch", "csr", "web", "--subresource=status", "--type=merge", "-p", issue,
                                  check=False)
    assert early.returncode == 1 and "status.certificate: Forbidden" in early.stderr, early.stderr
    sneaky = await cluster.kubectl("patch", "csr", "web", "--type=merge", "-p", issue)
    assert "no change" in sneaky.stdout or "patched" in sneaky.stdout
    assert "status" not in await get_csr(cluster, "web")

    out = await cluster.kubectl("certificate", "approve", "web")
    assert out.stdout.strip() == "certificatesigningrequest.certificates.k8s.io/web approved"
    approved = csr_condition(await get_csr(cluster, "web"), "Approved")
    assert approved is not None and approved["status"] == "True" and approved["reason"] == "KubectlApprove"
    assert approved["lastUpdateTime"] and approved["lastTransitionTime"]
    assert (await rows(cluster))["web"][-1] == "Approved"

    await cluster.kubectl("patch", "csr", "web", "--subresource=status", "--type=merge", "-p", issue)
    csr = await get_csr(cluster, "web")
    assert base64.b64decode(csr["status"]["certificate"]) == cert
    assert csr_condition(csr, "Approved") == approved  # the status writer keeps the approval
    assert (await rows(cluster))["web"][-1] == "Approved,Issued"
    again = await cluster.kubectl("patch", "csr", "web", "--subresource=status", "--type=merge", "-p",
                                  json.dumps({"status": {"certificate": base64.b64encode(cert + cert).decode()}}),
                                  check=False)
    assert "updates may not modify existing certificate content" in again.stderr

    # Approved and Denied exclude each other; /status cannot approve.
    deny = await cluster.kubectl("certificate", "deny", "web", check=False)
    assert deny.returncode == 1 and 'certificate signing request "web" is already Approved' in deny.stderr
    csr["status"]["conditions"].append({"type": "Denied", "status": "True", "reason": "Changed my mind"})
    with pytest.raises(E.APIError) as exc:  # what kubectl would send, had it not checked first
        await cluster.client.update(csr, subresource="approval")
    assert exc.value.code == 422 and [c["field"] for c in exc.value.causes] == ["status.conditions"]
    assert "Approved and Denied conditions are mutually exclusive" in exc.value.causes[0]["message"]
    out = await cluster.kubectl("certificate", "deny", "rogue")
    assert out.stdout.strip() == "certificatesigningrequest.certificates.k8s.io/rogue denied"
    assert (await rows(cluster))["rogue"][-1] == "Denied"
    self_approve = json.dumps({"status": {"conditions": [
        {"type": "Denied", "status": "True", "reason": "KubectlDeny"},
        {"type": "Approved", "status": "True", "reason": "Mine"}]}})
    bad = await cluster.kubectl("patch", "csr", "rogue", "--subresource=status", "--type=merge", "-p",
                                self_approve, check=False)
    assert 'updates may not add a condition of type "Approved"' in bad.stderr
    failed = json.dumps({"status": {"conditions": [
        *(await get_csr(cluster, "rogue"))["status"]["conditions"],
        {"type": "Failed", "status": "True", "reason": "SignerRefused", "message": "denied requests are not signed"}]}})
    await cluster.kubectl("patch", "csr", "rogue", "--subresource=status", "--type=merge", "-p", failed)
    assert (await rows(cluster))["rogue"][-1] == "Denied,Failed"

    # The spec never changes once created.
    changed = await cluster.kubectl("patch", "csr", "web", "--type=merge", "-p",
                                    '{"spec":{"signerName":"kmesh.io/other"}}', check=False)
    assert changed.returncode == 1 and "spec: Forbidden" in changed.stderr, changed.stderr
    assert (await get_csr(cluster, "web"))["spec"]["signerName"] == "kmesh.io/mesh"


async def test_explain_and_discovery(cluster: Cluster) -> None:
    out = (await cluster.kubectl("explain", "csr.spec.signerName")).stdout
    assert "GROUP:      certificates.k8s.io" in out and "KIND:       CertificateSigningRequest" in out
    assert "signerName <string>" in out
    spec = (await cluster.kubectl("explain", "csr.spec")).stdout
    assert "request\t<string> -required-" in spec and "usages\t<[]string>" in spec
    resources = (await cluster.kubectl("api-resources", "--api-group=certificates.k8s.io")).stdout.splitlines()
    assert resources[1].split() == ["certificatesigningrequests", "csr", "certificates.k8s.io/v1", "false",
                                    "CertificateSigningRequest"]
    doc = json.loads((await cluster.kubectl("get", "--raw", "/apis/certificates.k8s.io/v1")).stdout)
    subs = {r["name"]: r["verbs"] for r in doc["resources"]}
    assert subs["certificatesigningrequests/approval"] == ["get", "patch", "update"]
    assert subs["certificatesigningrequests/status"] == ["get", "patch", "update"]
