"""Joining a cluster: the join token's format and the client side of the bootstrap exchange.

The token pins the server's CA, as k3s's ``K10<hash>::`` tokens and kubeadm's
``--discovery-token-ca-cert-hash sha256:<hash>`` do:

- an agent token is ``K10<sha256 of the CA PEM>::<id>.<secret>`` (the part
  after ``::`` is a kubeadm bootstrap token, ``[a-z0-9]{6}.[a-z0-9]{16}``);
- a server token is ``K10<sha256 of the CA PEM>::server:<secret>``; it lets
  another control-plane server fetch the cluster's CA and admin token.

The exchange (k3s's, with kmesh's paths): ``GET /cacerts`` without trusting
anything yet; the CA's hash must equal the token's, else the join stops. Then,
trusting that CA, ``POST /v1-kmesh/node-credentials`` with the token's secret
and a CSR: the server signs a client certificate ``CN=system:node:<name>,
O=system:nodes``, the node's own identity from then on. The token alone
never becomes a user of the API.
"""

from __future__ import annotations

import hashlib
import json
import re
import ssl
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PREFIX = "K10"
NODE_CREDENTIALS_PATH = "/v1-kmesh/node-credentials"
SERVER_BOOTSTRAP_PATH = "/v1-kmesh/server-bootstrap"
CACERTS_PATH = "/cacerts"
NODES_GROUP = "system:nodes"
BOOTSTRAP_TOKEN = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")
SERVER_SECRET = re.compile(r"^[a-z0-9]{32}$")


class JoinError(RuntimeError):
    """Joining cannot go on; the message says why and which flag or server is at fault."""


class ServerUnreachable(JoinError):
    """The server did not answer (yet): a join may try again, as kubeadm's discovery and k3s's agent do."""


def ca_hash(ca_pem: bytes) -> str:
    """The CA's fingerprint as a token carries it: sha256 of the PEM bytes ``/cacerts`` serves, hex."""
    return hashlib.sha256(ca_pem).hexdigest()


@dataclass(frozen=True)
class JoinToken:
    """A parsed join token: the CA hash it pins and the secret part (agent or server)."""

    ca_hash: str
    secret: str  # "<id>.<secret>" for an agent token, the server secret for a server token
    server: bool = False

    def format(self) -> str:
        """The token as users pass it to ``kmesh join --token``."""
        return f"{PREFIX}{self.ca_hash}::{'server:' if self.server else ''}{self.secret}"

    @classmethod
    def parse(cls, text: str) -> JoinToken:
        """Read a token; ``JoinError`` naming ``--token`` when it is not one."""
        text = text.strip()
        m = re.fullmatch(r"K10([0-9a-f]{64})::(server:)?(.+)", text)
        if m is None:
            raise JoinError("--token: not a kmesh join token (K10<sha256 of the CA>::<id>.<secret>, as "
                            "`kmesh up --runtime host` prints and writes to D/join-token)")
        server = m.group(2) is not None
        secret = m.group(3)
        if not (SERVER_SECRET if server else BOOTSTRAP_TOKEN).match(secret):
            raise JoinError("--token: the part after '::' is not a " +
                            ("server secret (32 characters a-z0-9)" if server else "bootstrap token (<6 a-z0-9>.<16 a-z0-9>)"))
        return cls(m.group(1), secret, server)


def _insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _trusting(ca_pem: bytes) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca_pem.decode())


def _unreachable(server: str, exc: Exception) -> JoinError:
    return ServerUnreachable(f"cannot reach the server {server}: {exc}")


def fetch_ca(server: str, token: JoinToken, *, timeout: float = 10.0) -> bytes:
    """The server's CA (``GET /cacerts``, trusting nothing yet), checked against the token's hash."""
    try:
        with httpx.Client(verify=_insecure(), timeout=timeout, trust_env=False) as http:
            r = http.get(server.rstrip("/") + CACERTS_PATH)
    except httpx.HTTPError as exc:
        raise _unreachable(server, exc) from None
    if r.status_code != 200 or b"BEGIN CERTIFICATE" not in r.content:
        raise JoinError(f"{server} is not a kmesh server: GET {CACERTS_PATH} answered {r.status_code}")
    got = ca_hash(r.content)
    if got != token.ca_hash:
        raise JoinError(f"the CA of {server} does not match the token: its hash is {got}, the token pins "
                        f"{token.ca_hash}; refusing to join (wrong server, or someone in between)")
    return r.content


def _post(server: str, ca_pem: bytes, path: str, secret: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    try:
        with httpx.Client(verify=_trusting(ca_pem), timeout=timeout, trust_env=False) as http:
            r = http.post(server.rstrip("/") + path, content=json.dumps(body).encode(),
                          headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"})
    except httpx.HTTPError as exc:
        raise _unreachable(server, exc) from None
    if r.status_code == 401:
        raise JoinError(f"--token: {server} refused the token (401 Unauthorized): it is not this cluster's "
                        "join token (see D/join-token on the first server)")
    try:
        doc = r.json()
    except ValueError:
        doc = {}
    if r.status_code != 200:
        raise JoinError(f"{server} refused: {doc.get('message') or r.text.strip() or r.status_code}")
    return dict(doc)


@dataclass(frozen=True)
class NodeCredentials:
    """What a node authenticates with: the cluster CA, its client certificate and key (PEM)."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def node_csr(node_name: str) -> tuple[bytes, bytes]:
    """A new key and a CSR for ``system:node:<node_name>`` in ``system:nodes`` (PEM key, PEM CSR)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODES_GROUP),
                                    x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node_name}")]))
           .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def request_node_credentials(server: str, token: JoinToken, node_name: str, *, timeout: float = 20.0) -> NodeCredentials:
    """Run the whole exchange for ``node_name``: CA check, then a certificate signed for this node."""
    ca_pem = fetch_ca(server, token, timeout=timeout)
    key_pem, csr_pem = node_csr(node_name)
    doc = _post(server, ca_pem, NODE_CREDENTIALS_PATH, token.secret, {"nodeName": node_name, "csr": csr_pem.decode()},
                timeout)
    return NodeCredentials(ca_pem, str(doc.get("certificate", "")).encode(), key_pem)


def request_server_bootstrap(server: str, token: JoinToken, *, timeout: float = 20.0) -> dict[str, str]:
    """For another control-plane server: the cluster CA (and key), the admin token and the join tokens."""
    if not token.server:
        raise JoinError("--token: a server joins with the server token (K10...::server:..., D/server-token on the "
                        "first server), not the agents' join token")
    ca_pem = fetch_ca(server, token, timeout=timeout)
    doc = _post(server, ca_pem, SERVER_BOOTSTRAP_PATH, token.secret, {}, timeout)
    return {k: str(v) for k, v in doc.items()}
