"""Field tables of certificates.k8s.io/v1 CertificateSigningRequest, as of Kubernetes v1.32."""

from __future__ import annotations

from kmesh.api.fieldschema import BYTES, INT32, STRING, TIME, ListOf, MapOf, kind, refs, struct, top_level

N = "io.k8s.api.certificates.v1."
n = refs(N)

struct(N + "CertificateSigningRequestSpec", {
    "request": BYTES,
    "signerName": STRING,
    "expirationSeconds": INT32,
    "usages": ListOf(STRING),
    "username": STRING,
    "uid": STRING,
    "groups": ListOf(STRING),
    "extra": MapOf(ListOf(STRING)),
}, required=("request", "signerName"), description=(
    "CertificateSigningRequestSpec contains the certificate request: a PEM-encoded PKCS#10 request, the signer "
    "asked to sign it, the key usages and duration asked for, and the requester (set by the API server)."))

struct(N + "CertificateSigningRequestCondition", {
    "type": STRING,
    "status": STRING,
    "reason": STRING,
    "message": STRING,
    "lastUpdateTime": TIME,
    "lastTransitionTime": TIME,
}, required=("type", "status"))

struct(N + "CertificateSigningRequestStatus", {
    "conditions": ListOf(n("CertificateSigningRequestCondition")),
    "certificate": BYTES,
}, description=("CertificateSigningRequestStatus contains conditions used to indicate approved/denied/failed "
                "status of the request, and the issued certificate."))

struct(N + "CertificateSigningRequest", top_level({
    "spec": n("CertificateSigningRequestSpec"),
    "status": n("CertificateSigningRequestStatus"),
}), required=("spec",), description=(
    "CertificateSigningRequest objects provide a mechanism to obtain x509 certificates by submitting a certificate "
    "signing request, and having it asynchronously approved and issued."))
kind("certificates.k8s.io", "v1", "CertificateSigningRequest", N + "CertificateSigningRequest")
