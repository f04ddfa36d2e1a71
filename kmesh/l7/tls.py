"""Server TLS for HTTPS listeners (stdlib ssl): TLS 1.2+, the certificate chosen by SNI.

Each certificate gets its own SSLContext; the listener's context picks one in
its ``sni_callback`` by the model's host rules (first match in order), falling
back to the first ``any`` certificate, else the first one.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Sequence

from kmesh.l7.model import Certificate
from kmesh.l7.table import host_matches, normalize_host


def load_pem_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """Load a certificate chain and its key from memory (``load_cert_chain`` reads files only: the PEMs go
    to a private temporary directory for the call)."""
    with tempfile.TemporaryDirectory(prefix="kmesh-tls-") as d:
        path = os.path.join(d, "chain.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(cert_pem.rstrip(b"\n") + b"\n" + key_pem)
        ctx.load_cert_chain(path)


def _context(cert: Certificate) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    load_pem_chain(ctx, cert.cert_pem, cert.key_pem)
    return ctx


def server_context(certificates: Sequence[Certificate]) -> ssl.SSLContext:
    """The context an HTTPS listener wraps connections with; raises ssl.SSLError on a bad certificate or key."""
    if not certificates:
        raise ValueError("a TLS listener needs at least one certificate")
    contexts = [(c.host, _context(c)) for c in certificates]
    default = next((ctx for host, ctx in contexts if host.kind == "any"), contexts[0][1])
    cache: dict[str, ssl.SSLContext] = {}

    def pick(sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext) -> None:
        if not server_name:
            return None
        name = normalize_host(server_name)
        ctx = cache.get(name)
        if ctx is None:
            ctx = next((c for host, c in contexts if host.kind != "any" and host_matches(host, name)), default)
            if len(cache) < 4096:
                cache[name] = ctx
        if ctx is not default:
            sslobj.context = ctx
        return None

    default.sni_callback = pick
    return default


def peer_uri(der: bytes | None) -> str:
    """The first URI SAN of a peer's DER certificate (a SPIFFE ID in the mesh); "" when there is none."""
    if not der:
        return ""
    from cryptography import x509

    try:
        san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound):
        return ""
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else ""
