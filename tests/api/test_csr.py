"""CertificateSigningRequests without a server: validation by writer, the strategy steps, table rows, helpers."""

from __future__ import annotations

import base64
import copy
from datetime import datetime, timezone
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kmesh.api import meta, tables, validation
from kmesh.api.certificates import csr_condition, csr_state, set_requester
from tests.support.certs import CA

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
KIND = "CertificateSigningRequest"


def request_b64() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    req = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc")])).sign(key, hashes.SHA256())
    return base64.b64encode(req.public_bytes(serialization.Encoding.PEM)).decode()


REQUEST = request_b64()


def stored(**spec: Any) -> dict[str, Any]:
    """A CSR as the API server stores it on create (strategy, then the token user as requester)."""
    obj = {"apiVersion": "certificates.k8s.io/v1", "kind": KIND, "metadata": {"name": "c"},
           "spec": {"request": REQUEST, "signerName": "kmesh.io/mesh", "usages": ["client auth"], **spec},
           "status": {"conditions": [{"type": "Approved", "status": "True"}]}}
    meta.prepare_create(KIND, obj)
    set_requester(obj, "kmesh-admin", ["system:authenticated"])
    return obj


def fields(obj: dict[str, Any]) -> list[str]:
    return [c["field"] for c in validation.validate(KIND, obj)]


def update(old: dict[str, Any], new: dict[str, Any], sub: str | None = None) -> list[tuple[str, str]]:
    new = meta.prepare_update(KIND, copy.deepcopy(new), old, sub)
    return [(c["field"], c["message"]) for c in validation.validate_update(KIND, new, old, subresource=sub)]


def test_create_is_pending_and_valid() -> None:
    obj = stored()
    assert "status" not in obj and obj["spec"]["username"] == "kmesh-admin"
    assert validation.validate(KIND, obj) == []
    assert csr_state(obj) == "Pending" and csr_condition(obj, "Approved") is None


def test_create_checks_each_spec_field() -> None:
    assert fields(stored(request=base64.b64encode(b"hello").decode())) == ["spec.request"]
    assert fields(stored(request="")) == ["spec.request"]
    assert fields(stored(usages=["client auth", "client auth", "flying"])) == ["spec.usages[1]", "spec.usages[2]"]
    assert fields(stored(usages=None)) == ["spec.usages"]
    assert fields(stored(expirationSeconds=599)) == ["spec.expirationSeconds"]
    assert fields(stored(expirationSeconds=600)) == []
    for bad in ("", "mesh", "kmesh/mesh", "a.b/c/d", "Kmesh.io/mesh", "kmesh.io/-x"):
        assert fields(stored(signerName=bad)) and set(fields(stored(signerName=bad))) == {"spec.signerName"}, bad
    for good in ("kubernetes.io/kube-apiserver-client", "kubernetes.io/kubelet-serving", "example.com/a.b"):
        assert fields(stored(signerName=good)) == [], good
    legacy = validation.validate(KIND, stored(signerName="kubernetes.io/legacy-unknown"))
    assert [c["message"] for c in legacy] == [
        'Invalid value: "kubernetes.io/legacy-unknown": the legacy signerName is not allowed via this API version']


def test_each_writer_changes_only_its_part() -> None:
    old = stored()
    approved = copy.deepcopy(old)
    approved["status"] = {"conditions": [{"type": "Approved", "status": "True", "reason": "OK"}]}
    # The main resource keeps the stored status and refuses a changed spec, but not a forged requester.
    assert update(old, approved) == []
    assert "status" not in meta.prepare_update(KIND, copy.deepcopy(approved), old)
    forged = copy.deepcopy(old)
    forged["spec"].update(username="mallory", groups=["system:masters"])
    assert update(old, forged) == []
    changed = copy.deepcopy(old)
    changed["spec"]["usages"] = ["server auth"]
    assert [f for f, _ in update(old, changed)] == ["spec"]
    # /status cannot approve; /approval can, and stamps the times.
    assert update(old, approved, "status") == [
        ("status.conditions", 'Forbidden: updates may not add a condition of type "Approved"')]
    assert update(old, approved, "approval") == []
    after = meta.prepare_update(KIND, copy.deepcopy(approved), old, "approval")
    cond = csr_condition(after, "Approved")
    assert cond is not None and cond["lastUpdateTime"] and cond["lastTransitionTime"]
    assert csr_state(after) == "Approved"
    # A certificate only by /status, only once approved, and never replaced.
    cert, _ = CA.new().issue("svc")
    issued = copy.deepcopy(after)
    issued["status"]["certificate"] = base64.b64encode(cert).decode()
    assert "certificate" not in meta.prepare_update(KIND, copy.deepcopy(issued), after, "approval")["status"]
    assert update(after, issued, "status") == []
    assert csr_state(issued) == "Approved,Issued"
    early = copy.deepcopy(old)
    early["status"] = {"certificate": issued["status"]["certificate"]}
    assert [f for f, _ in update(old, early, "status")] == ["status.certificate"]
    junk = copy.deepcopy(after)
    junk["status"]["certificate"] = base64.b64encode(b"not a certificate").decode()
    assert [f for f, _ in update(after, junk, "status")] == ["status.certificate"]
    # Conditions are never removed; Approved and Denied never together.
    assert [f for f, _ in update(after, old, "approval")] == ["status.conditions"]
    both = copy.deepcopy(after)
    both["status"]["conditions"].append({"type": "Denied", "status": "True"})
    assert [m for _, m in update(after, both, "approval")] == [
        "Invalid value: []certificates.CertificateSigningRequestCondition{...}: "
        "Approved and Denied conditions are mutually exclusive"]


def test_table_row() -> None:
    obj = stored(expirationSeconds=3600)
    obj["metadata"]["creationTimestamp"] = "2025-12-31T23:00:00Z"
    assert tables.table_row(KIND, obj, now=NOW)["cells"] == [
        "c", "60m", "kmesh.io/mesh", "kmesh-admin", "60m", "Pending"]
    obj["status"] = {"conditions": [{"type": "Denied", "status": "True"}, {"type": "Failed", "status": "True"}]}
    assert tables.table_row(KIND, obj, now=NOW)["cells"][-1] == "Denied,Failed"
    assert [c["name"] for c in tables.column_definitions(KIND)] == [
        "Name", "Age", "SignerName", "Requestor", "RequestedDuration", "Condition"]
