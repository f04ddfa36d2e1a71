"""Who is asking: the API server's authenticators (client certificates and the bearer token).

As kube-apiserver's x509 authenticator: a client certificate signed by the
cluster CA names the user in its CN and the groups in its O entries. TLS asks
for a certificate but does not require one, so token clients keep working.

Python's ssl cannot hand an unverified certificate to the application (it has
no verify callback), so a certificate from another CA ends the TLS handshake
with an "unknown ca" alert where kube-apiserver would answer 401;
docs/differences.md says so.

The peer certificate reaches the ASGI app through a context variable: the
connection's task completes the handshake (our ``SSLObject`` subclass records
the certificate there) and the tasks that run the app for that connection's
requests are spawned from it, so they inherit the value. Hypercorn's ASGI
scope has no TLS extension to carry it.
"""

from __future__ import annotations

import datetime as dt
import hmac
import ssl
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

AUTHENTICATED = "system:authenticated"
MASTERS = "system:masters"
TOKEN_USER = "kmesh-admin"

_peer_cert: ContextVar[bytes | None] = ContextVar("kmesh_peer_cert", default=None)


class PeerCertSSLObject(ssl.SSLObject):
    """An ``SSLObject`` that records the verified client certificate once its handshake completes.

    A certificate the cluster CA did not issue for clients fails the handshake
    inside OpenSSL, which queues an alert ("unknown ca") for the client. trio
    sends queued bytes only when a call returns, so the refusal is held back
    until the first read or write: the client then reads why (kubectl: "remote
    error: tls: unknown certificate authority") rather than a bare EOF it would
    retry for half a minute."""

    _refused: ssl.SSLError | None = None

    def do_handshake(self) -> None:
        """Complete the handshake, then publish the peer's certificate (DER) to the connection's task."""
        try:
            super().do_handshake()
        except ssl.SSLCertVerificationError as exc:
            self._refused = exc
            _peer_cert.set(None)
            return
        _peer_cert.set(self.getpeercert(binary_form=True))

    def version(self) -> str | None:
        """The TLS version; None once refused (so trio sends the alert at once, not with the first write)."""
        return None if self._refused else super().version()

    def selected_alpn_protocol(self) -> str | None:
        """The ALPN protocol; None once refused."""
        return None if self._refused else super().selected_alpn_protocol()

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        """Read decrypted data; a refused connection fails here."""
        if self._refused:
            raise self._refused
        return super().read(len, buffer)

    def write(self, data: Any) -> int:
        """Write data; a refused connection fails here."""
        if self._refused:
            raise self._refused
        return super().write(data)


def peer_certificate() -> bytes | None:
    """The client certificate (DER) of the connection serving the current request, if it sent one."""
    return _peer_cert.get()


def server_tls_context(
    certfile: Path, keyfile: Path, client_ca: Path, *, alpn: list[str], ciphers: str
) -> ssl.SSLContext:
    """The API server's TLS context: its key pair; asks for (not requires) a client cert from ``client_ca`` only.

    Built by hand rather than with ``create_default_context(CLIENT_AUTH)``,
    which would also trust every CA of the system's store for client certs."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.set_ciphers(ciphers)
    ctx.set_alpn_protocols(alpn)
    ctx.load_cert_chain(certfile=str(certfile), keyfile=str(keyfile))
    ctx.load_verify_locations(cafile=str(client_ca))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.sslobject_class = PeerCertSSLObject
    return ctx


@dataclass(frozen=True)
class UserInfo:
    """An authenticated user: name and groups (always including system:authenticated)."""

    name: str
    groups: tuple[str, ...]


class Authenticator:
    """The union of kmesh's authenticators: the first that accepts a request names its user."""

    def __init__(self, token: str, client_ca_pem: bytes | None = None) -> None:
        self._token = token.encode()
        self._ca = x509.load_pem_x509_certificate(client_ca_pem) if client_ca_pem else None

    def authenticate(self, headers: dict[str, str], peer_cert: bytes | None) -> UserInfo | None:
        """The user of a request (its client certificate, else its bearer token), or None: 401."""
        if peer_cert is not None:
            user = self.user_from_certificate(peer_cert)
            if user is not None:
                return user
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and hmac.compare_digest(auth[7:].strip().encode(), self._token):
            return UserInfo(TOKEN_USER, (MASTERS, AUTHENTICATED))
        return None

    def user_from_certificate(self, der: bytes) -> UserInfo | None:
        """CN → user, O → groups, for a client certificate the cluster CA signed; None for any other."""
        if self._ca is None:
            return None
        try:
            cert = x509.load_der_x509_certificate(der)
            # TLS verified the chain already; checking again keeps the rule in one visible place.
            cert.verify_directly_issued_by(self._ca)
        except (ValueError, TypeError, InvalidSignature):
            return None
        now = dt.datetime.now(dt.timezone.utc)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return None
        try:
            usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usages = None
        if usages is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
            return None
        names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if not names or not names[0]:
            return None
        groups = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        return UserInfo(str(names[0]), tuple(dict.fromkeys([*groups, AUTHENTICATED])))
