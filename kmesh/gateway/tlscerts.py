"""Whether a Secret can serve as a listener's certificate (type, keys, PEM that parses)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key


def certificate_problem(secret: dict[str, Any]) -> str | None:
    """Why ``secret`` cannot be used for TLS, or None if it can (a ``kubernetes.io/tls`` Secret whose
    ``tls.crt`` and ``tls.key`` are a PEM certificate and private key)."""
    if secret.get("type") != "kubernetes.io/tls":
        return f"Secret type is {secret.get('type') or 'Opaque'}, not kubernetes.io/tls"
    data = secret.get("data") or {}
    try:
        crt = base64.b64decode(data.get("tls.crt") or "", validate=True)
        key = base64.b64decode(data.get("tls.key") or "", validate=True)
    except (binascii.Error, ValueError):
        return "tls.crt or tls.key is not base64"
    try:
        x509.load_pem_x509_certificates(crt)
    except ValueError:
        return "tls.crt is not a PEM certificate"
    try:
        load_pem_private_key(key, None)
    except (ValueError, TypeError):
        return "tls.key is not a PEM private key without a password"
    return None


def tls_pair(secret: dict[str, Any] | None, namespace: str, name: str) -> tuple[bytes, bytes] | str:
    """The PEM certificate chain and key of Secret ``namespace/name`` (None: it does not exist), or why it cannot
    serve TLS."""
    if secret is None:
        return f"Secret {namespace}/{name} not found"
    problem = certificate_problem(secret)
    if problem:
        return problem
    data = secret.get("data") or {}
    return base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"])
