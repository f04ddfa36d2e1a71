"""echo-basic's TLS: the server context (ALPN, SNI recorded per connection) and the ``tls`` details it reports."""

from __future__ import annotations

import contextvars
import ssl

import trio

# Set by each TLS connection's task before its handshake; the SNI callback (run inside that handshake, in
# that task's context) records the server name in it.
SNI: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("echo_basic_sni")

# OpenSSL's names of TLS 1.2 suites → the IANA names Go's tls.CipherSuiteName gives (TLS 1.3 names agree).
GO_CIPHER_NAMES = {
    "ECDHE-RSA-AES128-GCM-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "ECDHE-RSA-AES128-SHA": "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "ECDHE-RSA-AES256-SHA": "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "ECDHE-ECDSA-AES128-SHA": "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "ECDHE-ECDSA-AES256-SHA": "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "AES128-GCM-SHA256": "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "AES256-GCM-SHA384": "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "AES128-SHA": "TLS_RSA_WITH_AES_128_CBC_SHA",
    "AES256-SHA": "TLS_RSA_WITH_AES_256_CBC_SHA",
}


def server_tls_context(cert: str, key: str, client_ca: str | None = None, *, alpn: bool = True) -> ssl.SSLContext:
    """echo-basic's TLS settings: TLS ≥ 1.2, SNI recorded, optional client certificates, and ALPN h2/http1.1
    (``alpn=False``: none, as the TCP echo's TLS port)."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.minimum_version = ssl.TLSVersion.TLSv1_2
    sctx.load_cert_chain(cert, key)
    if alpn:
        sctx.set_alpn_protocols(["h2", "http/1.1"])
    if client_ca:
        sctx.load_verify_locations(client_ca)
        sctx.verify_mode = ssl.CERT_OPTIONAL  # Go's VerifyClientCertIfGiven

    def remember_sni(_obj: object, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        holder = SNI.get(None)
        if holder is not None and server_name:
            holder["name"] = server_name

    sctx.sni_callback = remember_sni  # type: ignore[assignment]
    return sctx


def tls_assertions(stream: trio.SSLStream[trio.abc.Stream], server_name: str) -> dict[str, object]:
    """Upstream's TLSAssertions of a finished handshake."""
    cipher = stream.cipher()
    name = cipher[0] if cipher else ""
    doc: dict[str, object] = {"version": stream.version() or ""}
    peer = stream.getpeercert(binary_form=True)
    if peer:
        doc["peerCertificates"] = [ssl.DER_cert_to_PEM_cert(peer)]
    doc["serverName"] = server_name
    alpn = stream.selected_alpn_protocol()
    if alpn:
        doc["negotiatedProtocol"] = alpn
    doc["cipherSuite"] = GO_CIPHER_NAMES.get(name, name)
    return doc


async def accept_tls(stream: trio.abc.Stream, sctx: ssl.SSLContext) -> tuple[trio.SSLStream[trio.abc.Stream], str]:
    """The server side of a TLS handshake on ``stream``: the TLS stream and the SNI name the client sent ("" for
    none). Raises ``trio.BrokenResourceError`` or ``OSError`` (the stream closed) when the handshake fails."""
    holder: dict[str, str] = {}
    SNI.set(holder)
    tls = trio.SSLStream(stream, sctx, server_side=True)
    try:
        await tls.do_handshake()
    except (trio.BrokenResourceError, OSError):
        await trio.aclose_forcefully(tls)
        raise
    return tls, holder.get("name", "")
