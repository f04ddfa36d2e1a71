"""certificates.k8s.io/v1: CertificateSigningRequests, with kube-apiserver 1.32's rules and messages.

A request holds one PEM "CERTIFICATE REQUEST" block that parses as a PKCS#10
request with a valid self-signature, names a signer as ``domain/path``, lists
known key usages (at least one, none twice) and asks for at least 600 s. Its
status holds Approved, Denied and Failed conditions (Approved and Denied never
together, none removed once set) and the issued certificate.

Three writers, three rule sets: the main resource never changes the spec
(kmesh answers 422 where upstream silently keeps the stored spec) nor the
status; ``/approval`` adds or changes only Approved/Denied conditions;
``/status`` may add Failed and set the certificate, which needs an Approved
condition first.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography import x509

from kmesh.api.certificates import APPROVED, DENIED, FAILED, csr_condition
from kmesh.api.errors import Cause
from kmesh.api.formats import is_dns1123_label, is_dns1123_subdomain
from kmesh.api.obj import Obj
from kmesh.api.validation.common import (
    GoRaw,
    Opts,
    _d,
    _l,
    _s,
    duplicate,
    forbidden,
    invalid,
    not_supported,
    required,
    too_long,
)
from kmesh.api.validation.meta import name_is_dns_subdomain, validate_object_meta, validate_object_meta_update

KEY_USAGES = (
    "any", "cert sign", "client auth", "code signing", "content commitment", "crl sign", "data encipherment",
    "decipher only", "digital signature", "email protection", "encipher only", "ipsec end system", "ipsec tunnel",
    "ipsec user", "key agreement", "key encipherment", "microsoft sgc", "netscape sgc", "ocsp signing", "s/mime",
    "server auth", "signing", "timestamping",
)
LEGACY_SIGNER = "kubernetes.io/legacy-unknown"
MIN_EXPIRATION_SECONDS = 600
CONDITION_STATUSES = ("False", "True", "Unknown")
SIGNER_FORMAT = "must be a fully qualified domain and path of the form 'example.com/signer-name'"


def _pem_blocks(text: bytes, label: str) -> list[bytes]:
    """The PEM blocks of type ``label`` in ``text`` (each as its own PEM text)."""
    begin, end = f"-----BEGIN {label}-----".encode(), f"-----END {label}-----".encode()
    out, pos = [], 0
    while (start := text.find(begin, pos)) >= 0:
        stop = text.find(end, start)
        if stop < 0:
            break
        pos = stop + len(end)
        out.append(text[start:pos] + b"\n")
    return out


def _decoded(value: Any) -> bytes:
    """A ``[]byte`` field's bytes (base64 on the wire; the decoder refused anything else already)."""
    try:
        return base64.b64decode(_s(value), validate=True)
    except (ValueError, binascii.Error):
        return b""


def request_problem(value: Any) -> str | None:
    """Why ``spec.request`` is no usable PKCS#10 request, or None."""
    data = _decoded(value)
    blocks = _pem_blocks(data, "CERTIFICATE REQUEST")
    if not blocks or data.find(b"-----BEGIN") != data.find(b"-----BEGIN CERTIFICATE REQUEST-----"):
        return "PEM block type must be CERTIFICATE REQUEST"
    try:
        csr = x509.load_pem_x509_csr(blocks[0])
    except ValueError as exc:
        return f"x509: malformed certificate request: {exc}"
    if not csr.is_signature_valid:
        return "x509: the certificate request's signature does not verify"
    return None


def _certificate_problem(value: Any) -> str | None:
    """Why ``status.certificate`` is no list of PEM certificates, or None (empty is fine)."""
    data = _decoded(value)
    if not data:
        return None
    blocks = _pem_blocks(data, "CERTIFICATE")
    if not blocks:
        return "must contain at least one CERTIFICATE PEM block"
    for i, block in enumerate(blocks):
        try:
            x509.load_pem_x509_certificate(block)
        except ValueError as exc:
            return f"failed to parse certificate in block {i}: {exc}"
    return None


def _signer_name(path: str, name: str) -> list[Cause]:
    """``ValidateSignerName``: ``domain/path``, the domain of at least two DNS labels, the path DNS subdomains."""
    if not name:
        return [required(path)]
    parts = name.split("/")
    if len(parts) != 2:
        return [invalid(path, name, SIGNER_FORMAT)]
    domain, rest = parts
    errs: list[Cause] = []
    if len(domain) > 253:
        errs.append(too_long(path, 253))
    labels = domain.split(".")
    for label in labels:
        problems = is_dns1123_label(label)
        if problems:
            errs += [invalid(path, domain, f'validating label "{label}": {m}') for m in problems]
            break
    if len(labels) < 2:
        errs.append(invalid(path, domain, "should be a domain with at least two segments separated by dots"))
    for component in rest.split("."):
        problems = is_dns1123_subdomain(component)
        if problems:
            errs += [invalid(path, rest, f'validating component "{component}": {m}') for m in problems]
            break
    if len(rest) > 253 - len(domain) - 1:
        errs.append(too_long(path, max(253 - len(domain) - 1, 0)))
    return errs


def _spec(spec: Obj) -> list[Cause]:
    errs: list[Cause] = []
    if not spec.get("request"):
        errs.append(required("spec.request"))
    else:
        problem = request_problem(spec["request"])
        if problem:
            errs.append(invalid("spec.request", GoRaw("<request data>"), problem))
    usages = _l(spec.get("usages"))
    if not usages:
        errs.append(required("spec.usages", "usages must be provided"))
    seen: set[str] = set()
    for i, usage in enumerate(usages):
        u = _s(usage)
        if u not in KEY_USAGES:
            errs.append(not_supported(f"spec.usages[{i}]", u, KEY_USAGES))
        elif u in seen:
            errs.append(duplicate(f"spec.usages[{i}]", u))
        seen.add(u)
    signer = _s(spec.get("signerName"))
    errs += _signer_name("spec.signerName", signer)
    expiration = spec.get("expirationSeconds")
    if isinstance(expiration, int) and not isinstance(expiration, bool) and expiration < MIN_EXPIRATION_SECONDS:
        errs.append(invalid("spec.expirationSeconds", expiration,
                            "may not specify a duration less than 600 seconds (10 minutes)"))
    return errs


def _conditions(conditions: list[Any]) -> list[Cause]:
    errs: list[Cause] = []
    seen: set[str] = set()
    for i, c in enumerate(conditions):
        c, path = _d(c), f"status.conditions[{i}]"
        ctype, status = _s(c.get("type")), _s(c.get("status"))
        if not ctype:
            errs.append(required(path + ".type"))
        if status not in CONDITION_STATUSES:
            errs.append(not_supported(path + ".status", status, CONDITION_STATUSES))
        if ctype in (APPROVED, DENIED) and status != "True":
            errs.append(not_supported(path + ".status", status, ("True",)))
        if ctype in seen:
            errs.append(duplicate(path + ".type", ctype))
        seen.add(ctype)
    if APPROVED in seen and DENIED in seen:
        errs.append(invalid("status.conditions", GoRaw("[]certificates.CertificateSigningRequestCondition{...}"),
                            "Approved and Denied conditions are mutually exclusive"))
    return errs


def validate_csr(obj: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a new CertificateSigningRequest from being created."""
    if _s(_d(obj.get("spec")).get("signerName")) == LEGACY_SIGNER:
        return [invalid("spec.signerName", LEGACY_SIGNER, "the legacy signerName is not allowed via this API version")]
    errs = validate_object_meta(obj.get("metadata"), False, name_is_dns_subdomain)
    errs += _spec(_d(obj.get("spec")))
    status = _d(obj.get("status"))
    errs += _conditions(_l(status.get("conditions")))
    problem = _certificate_problem(status.get("certificate"))
    if problem:
        errs.append(invalid("status.certificate", GoRaw("<certificate data>"), problem))
    return errs


def _by_type(obj: Obj, ctype: str) -> list[Any]:
    return [c for c in _l(_d(obj.get("status")).get("conditions")) if _d(c).get("type") == ctype]


def _update(new: Obj, old: Obj, *, approval: bool, certificate: bool) -> list[Cause]:
    """Checks shared by the three writers: the object itself, the unchanged spec, no condition removed,
    approval conditions and the certificate changed only by the writer allowed to."""
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    if _d(new.get("spec")) != _d(old.get("spec")):
        errs.append(forbidden("spec", "the spec of a CertificateSigningRequest cannot be changed after creation"))
    errs += _spec(_d(new.get("spec")))
    status = _d(new.get("status"))
    errs += _conditions(_l(status.get("conditions")))
    for ctype in (APPROVED, DENIED, FAILED):
        if len(_by_type(new, ctype)) < len(_by_type(old, ctype)):
            errs.append(forbidden("status.conditions", f'updates may not remove a condition of type "{ctype}"'))
    for ctype in () if approval else (APPROVED, DENIED):
        before, after = _by_type(old, ctype), _by_type(new, ctype)
        if len(after) > len(before):
            errs.append(forbidden("status.conditions", f'updates may not add a condition of type "{ctype}"'))
        elif len(after) == len(before) and after != before:
            errs.append(forbidden("status.conditions", f'updates may not modify a condition of type "{ctype}"'))
    cert, old_cert = _s(status.get("certificate")), _s(_d(old.get("status")).get("certificate"))
    if cert != old_cert:
        if not certificate:
            errs.append(forbidden("status.certificate", "updates may not set certificate content"))
        elif old_cert:
            errs.append(forbidden("status.certificate", "updates may not modify existing certificate content"))
        elif csr_condition(new, APPROVED) is None:
            errs.append(forbidden("status.certificate",
                                  "a certificate may only be set on a request with an Approved condition"))
        else:
            problem = _certificate_problem(cert)
            if problem:
                errs.append(invalid("status.certificate", GoRaw("<certificate data>"), problem))
    return errs


def validate_csr_update(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop an update of a CSR's main resource (its spec and status never change)."""
    return _update(new, old, approval=False, certificate=False)


def validate_csr_status_update(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a write to ``/status``: it may add Failed and issue the certificate once approved."""
    return _update(new, old, approval=False, certificate=True)


def validate_csr_approval_update(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a write to ``/approval``: it may add Approved or Denied, never both."""
    return _update(new, old, approval=True, certificate=False)
