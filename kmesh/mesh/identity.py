"""A meshed pod's identity: its key, its certificate from the mesh CA, the mesh root, and TLS contexts.

The identity is the pod's ServiceAccount in SPIFFE form
(``spiffe://cluster.local/ns/NS/sa/SA``), as Istio's and Linkerd's. The
sidecar makes an EC P-256 key that never leaves its memory and asks the mesh
CA (the ``mesh-ca`` controller, signer ``kmesh.io/mesh``) for a certificate
through the Kubernetes CSR API: it creates a CertificateSigningRequest
annotated with its pod, waits for the certificate, then deletes the request.
The root comes from ConfigMap ``kmesh-root-ca.crt`` (key ``root-cert.pem``)
in the pod's namespace. ``IdentityKeeper`` renews the certificate when half
of its remaining lifetime has passed (Istio's default grace ratio), so a certificate
never expires under a running sidecar; connections made before a renewal
keep the certificate they started with.

Mesh TLS is TLS 1.3 only, both sides present and verify certificates chained
to the mesh root, and the client offers ALPN ``kmesh-http`` or ``kmesh-tcp``
so the other sidecar can tell mesh traffic from an app's own TLS, and HTTP
(served by its L7 engine) from other TCP (relayed).
"""

from __future__ import annotations

import base64
import logging
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kmesh.api import errors as E
from kmesh.client.api import Client
from kmesh.client.informer import Informer
from kmesh.controllers.meshca import DEFAULT_TRUST_DOMAIN, POD_ANNOTATION, ROOT_CONFIGMAP, ROOT_KEY, spiffe_id
from kmesh.controllers.meshca import SIGNER_NAME as SIGNER
from kmesh.l7.tls import load_pem_chain

log = logging.getLogger("kmesh.mesh.identity")

ALPN_HTTP = "kmesh-http"
"""The ALPN a sidecar offers for mesh TLS carrying HTTP/1.1 (the receiving sidecar serves it with its L7 engine)."""
ALPN_TCP = "kmesh-tcp"
"""The ALPN for mesh TLS carrying any other TCP (relayed as bytes)."""
USAGES = ["digital signature", "key encipherment", "client auth", "server auth"]
RENEW_RATIO = 0.5
RETRY = 2.0  # seconds between attempts while the CA or the root is not there yet


@dataclass(frozen=True)
class Identity:
    """One issued certificate's identity and lifetime, and the TLS contexts made from it, its key and the root."""

    spiffe: str
    not_after: float  # seconds since the epoch
    server: ssl.SSLContext
    client_http: ssl.SSLContext
    client_tcp: ssl.SSLContext

    @classmethod
    def of(cls, spiffe: str, cert_pem: bytes, key_pem: bytes, root_pem: bytes) -> Identity:
        """The identity of an issued certificate (raises ValueError/ssl.SSLError when they do not fit)."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        server = _context(ssl.PROTOCOL_TLS_SERVER, cert_pem, key_pem, root_pem, [ALPN_HTTP, ALPN_TCP])
        client_http = _context(ssl.PROTOCOL_TLS_CLIENT, cert_pem, key_pem, root_pem, [ALPN_HTTP])
        client_tcp = _context(ssl.PROTOCOL_TLS_CLIENT, cert_pem, key_pem, root_pem, [ALPN_TCP])
        return cls(spiffe, cert.not_valid_after_utc.timestamp(), server, client_http, client_tcp)

    def renew_in(self, now: float) -> float:
        """Seconds from ``now`` (since the epoch) until the next certificate should be asked for: half of
        the time left (from when it arrived: CAs backdate notBefore for clock skew, which is not life)."""
        return max((self.not_after - now) * RENEW_RATIO, 1.0)


def _context(protocol: int, cert_pem: bytes, key_pem: bytes, root_pem: bytes, alpn: list[str]) -> ssl.SSLContext:
    """A mesh TLS context: TLS 1.3, this identity's certificate, peers verified against the mesh root."""
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    load_pem_chain(ctx, cert_pem, key_pem)
    ctx.load_verify_locations(cadata=root_pem.decode())
    if protocol == ssl.PROTOCOL_TLS_CLIENT:
        ctx.check_hostname = False  # identities are SPIFFE URIs, not host names: the chain is what counts
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(alpn)
    return ctx


def new_key_and_request(spiffe: str) -> tuple[bytes, bytes]:
    """A fresh private key (PEM) and a PKCS#10 request (PEM) for ``spiffe`` as its only SAN."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kmesh")]))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe)]), critical=True)
           .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


class IdentityError(Exception):
    """The mesh CA denied the request, or its answer cannot be used: the message says why."""


async def request_certificate(client: Client, namespace: str, pod: str, spiffe: str,
                              expiration_seconds: int = 86400) -> tuple[bytes, bytes]:
    """Ask the mesh CA for a certificate; (certificate PEM, key PEM) once issued. Raises IdentityError when
    denied, E.APIError/APIUnavailable when the API cannot be reached (the caller retries)."""
    key_pem, req_pem = new_key_and_request(spiffe)
    name = f"kmesh-{pod}-{secrets.token_hex(4)}"[:253]
    csr = {
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": name, "annotations": {POD_ANNOTATION: f"{namespace}/{pod}"},
                     "labels": {"app.kubernetes.io/managed-by": "kmesh-proxy"}},
        "spec": {"request": base64.b64encode(req_pem).decode(), "signerName": SIGNER,
                 "expirationSeconds": max(600, expiration_seconds), "usages": USAGES},
    }
    await client.create(csr)
    try:
        issued = trio.Event()
        result: dict[str, object] = {}

        async def seen(change: object) -> None:
            obj = getattr(change, "new", None) or {}
            status = obj.get("status") or {}
            denied = next((c for c in status.get("conditions") or [] if c.get("type") in ("Denied", "Failed")),
                          None)
            if denied is not None:
                result["error"] = f"{denied.get('type')}: {denied.get('reason')}: {denied.get('message')}"
                issued.set()
            elif status.get("certificate"):
                result["certificate"] = base64.b64decode(status["certificate"])
                issued.set()

        inf = Informer(client, "CertificateSigningRequest", field_selector=f"metadata.name={name}")
        inf.add_handler(seen)
        async with trio.open_nursery() as n:
            await n.start(inf.run)
            await issued.wait()
            n.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            try:
                await client.delete("CertificateSigningRequest", name)
            except E.APIError:
                pass
            except Exception:  # noqa: BLE001 - the request is cleaned up by the CA after an hour anyway
                log.debug("mesh identity: could not delete CSR %s", name, exc_info=True)
    if "error" in result:
        raise IdentityError(f"the mesh CA refused {spiffe}: {result['error']}")
    return result["certificate"], key_pem  # type: ignore[return-value]


async def read_root(client: Client, namespace: str) -> bytes:
    """The mesh root (PEM) from ConfigMap kmesh-root-ca.crt in ``namespace``; IdentityError when missing."""
    try:
        cm = await client.get("ConfigMap", ROOT_CONFIGMAP, namespace)
    except E.APIError as exc:
        if exc.code == 404:
            raise IdentityError(f"no ConfigMap {namespace}/{ROOT_CONFIGMAP} yet (is the mesh-ca controller "
                                "running?)") from None
        raise
    root = (cm.get("data") or {}).get(ROOT_KEY, "")
    if not root:
        raise IdentityError(f"ConfigMap {namespace}/{ROOT_CONFIGMAP} has no {ROOT_KEY}")
    return root.encode()


class IdentityKeeper:
    """Holds the pod's current Identity and renews it before it expires (see the module docstring)."""

    def __init__(self, client: Client, namespace: str, pod: str, service_account: str, *,
                 trust_domain: str = DEFAULT_TRUST_DOMAIN, expiration_seconds: int = 86400,
                 on_renew: Callable[[], object] | None = None) -> None:
        self.client = client
        self.namespace = namespace
        self.pod = pod
        self.spiffe = spiffe_id(trust_domain, namespace, service_account)
        self.expiration_seconds = expiration_seconds
        self.current: Identity | None = None
        self.on_renew = on_renew

    async def _fetch(self) -> Identity:
        root = await read_root(self.client, self.namespace)
        cert, key = await request_certificate(self.client, self.namespace, self.pod, self.spiffe,
                                              self.expiration_seconds)
        try:
            return Identity.of(self.spiffe, cert, key, root)
        except (ValueError, ssl.SSLError) as exc:
            raise IdentityError(f"the certificate issued for {self.spiffe} cannot be used: {exc}") from None

    async def run(self, *, task_status: trio.TaskStatus[IdentityKeeper] = trio.TASK_STATUS_IGNORED) -> None:
        """Get the first certificate (retrying until the CA answers), report started, then keep renewing."""
        started = False
        while True:
            try:
                ident = await self._fetch()
            except Exception as exc:  # noqa: BLE001 - the CA or the API away: keep the old one, try again
                log.warning("mesh identity: %s", exc)
                await trio.sleep(RETRY)
                continue
            if self.current is not None and self.on_renew is not None:
                self.on_renew()
            self.current = ident
            if not started:
                started = True
                task_status.started(self)
            await trio.sleep(ident.renew_in(time.time()))
