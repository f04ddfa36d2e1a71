"""The cluster's certificate authority, the API server's certificate and its bearer token;
etcd's own CA and certificates.

Everything lives in the data dir and is reused across restarts, so a
kubeconfig written once keeps working.

etcd's PKI follows kubeadm's: a CA of its own (``D/pki/etcd/ca.crt``), so
that no certificate the cluster CA issues (kubectl users' client
certificates) opens etcd; ``server``, ``peer`` and ``healthcheck-client``
pairs beside it; the API server's client pair ``D/pki/apiserver-etcd-client``
and, for flannel-like etcd subnet managers, ``D/pki/flannel-etcd-client``.
Keys and certificates are 0600, in 0700 directories. ``kmesh certs etcd``
(``kmesh.lab.etcdcerts``) makes the same files, from a CA of the user's or
one it makes, for an etcd cluster kmesh does not run.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kmesh.store.etcd_api import EtcdTLS
from kmesh.store.etcd_server import EtcdServerTLS

DEFAULT_SANS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "127.0.0.1",
    "10.96.0.1",
    "127.96.0.1",
)


@dataclass(frozen=True)
class PKI:
    """Paths of the CA, the server key pair and the admin token."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    token_file: Path

    @property
    def token(self) -> str:
        """The bearer token every client presents."""
        return self.token_file.read_text().strip()

    def ca_pem(self) -> bytes:
        """The CA certificate, PEM."""
        return self.ca_cert.read_bytes()


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _san_list(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def _current_sans(cert_path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(ext.get_values_for_type(x509.DNSName))


def ensure_pki(directory: Path, extra_sans: list[str] | None = None) -> PKI:
    """Create (or reuse) the CA, a server certificate covering the SANs, and a token."""
    d = directory / "pki"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki = PKI(d / "ca.crt", d / "ca.key", d / "apiserver.crt", d / "apiserver.key", d / "token")
    now = dt.datetime.now(dt.timezone.utc)
    if not (pki.ca_cert.exists() and pki.ca_key.exists()):
        _new_ca(pki.ca_cert, pki.ca_key, "kmesh-ca")
        for p in (pki.server_cert, pki.server_key):
            p.unlink(missing_ok=True)
    sans = list(dict.fromkeys([*DEFAULT_SANS, *(extra_sans or [])]))
    if not (pki.server_cert.exists() and pki.server_key.exists()) or not set(sans) <= _current_sans(pki.server_cert):
        ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(_san_list(sans)), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        _write_private(pki.server_key, _key_pem(key))
        pki.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if not pki.token_file.exists():
        _write_private(pki.token_file, (secrets.token_hex(24) + "\n").encode())
    return pki


# --- etcd (kubeadm's layout) -------------------------------------------------------------------------

ETCD_SANS = ("localhost", "127.0.0.1", "::1")
# kubeadm's common names of etcd's client pairs (by file name); flannel-etcd-client is kmesh's
ETCD_CLIENT_COMMON_NAMES = {
    "healthcheck-client": "kube-etcd-healthcheck-client",
    "apiserver-etcd-client": "kube-apiserver-etcd-client",
    "flannel-etcd-client": "kmesh-flannel-etcd-client",
}
ETCD_MEMBER_USAGES = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)  # etcd's gateway dials with it
ETCD_CLIENT_USAGES = (ExtendedKeyUsageOID.CLIENT_AUTH,)
_LEAF_DAYS = 3650
_RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class EtcdPKI:
    """Paths of etcd's CA and key pairs under ``root`` (``D/pki``), as kubeadm lays them out."""

    root: Path

    @property
    def dir(self) -> Path:
        """``D/pki/etcd``: etcd's CA and its own key pairs."""
        return self.root / "etcd"

    @property
    def ca_cert(self) -> Path:
        """etcd's CA certificate: what etcd trusts for clients and peers, and what clients verify etcd with."""
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """etcd's CA key."""
        return self.dir / "ca.key"

    def pair(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) of ``name``: server, peer, healthcheck-client (in ``etcd/``),
        apiserver-etcd-client or flannel-etcd-client (in ``pki/``)."""
        d = self.dir if name in ("server", "peer", "healthcheck-client") else self.root
        return d / f"{name}.crt", d / f"{name}.key"

    def client(self, name: str) -> EtcdTLS:
        """A client's TLS settings: etcd's CA and the ``name`` pair."""
        cert, key = self.pair(name)
        return EtcdTLS(str(self.ca_cert), str(cert), str(key))

    def apiserver_client(self) -> EtcdTLS:
        """What the API server presents to etcd (kube-apiserver's --etcd-cafile/--etcd-certfile/--etcd-keyfile)."""
        return self.client("apiserver-etcd-client")

    def flannel_client(self) -> EtcdTLS:
        """What the node agents' etcd subnet managers present (flanneld's --etcd-cafile/-certfile/-keyfile)."""
        return self.client("flannel-etcd-client")

    def server_tls(self) -> EtcdServerTLS:
        """etcd's own flags' files."""
        cert, key = self.pair("server")
        peer_cert, peer_key = self.pair("peer")
        hc_cert, hc_key = self.pair("healthcheck-client")
        return EtcdServerTLS(self.ca_cert, cert, key, peer_cert, peer_key, hc_cert, hc_key)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)
        f.write(data)
    os.replace(tmp, path)


def _new_ca(cert_path: Path, key_path: Path, common_name: str) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_file(key_path, _key_pem(key), 0o600)
    _write_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o600)


def _pair_ok(cert_path: Path, key_path: Path, ca: x509.Certificate, sans: Sequence[str]) -> bool:
    """Whether a key pair exists, matches, was issued by ``ca``, covers ``sans`` and is not about to expire."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        cert.verify_directly_issued_by(ca)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    if cert.public_key() != key.public_key():
        return False
    if cert.not_valid_after_utc - _RENEW_BEFORE < dt.datetime.now(dt.timezone.utc):
        return False
    return not sans or set(sans) <= _current_sans(cert_path)


def _leaf(
    public_key: ec.EllipticCurvePublicKey, subject: x509.Name, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
    sans: Sequence[str], usages: Sequence[x509.ObjectIdentifier], days: int,
) -> x509.Certificate:
    """A leaf certificate for ``public_key`` signed by the CA (not a CA itself; signature and key encipherment)."""
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(_san_list(list(sans))), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _issue(
    cert_path: Path, key_path: Path, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
    common_name: str, sans: Sequence[str], usages: Sequence[x509.ObjectIdentifier],
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _leaf(key.public_key(), x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), ca_cert, ca_key,
                 sans, usages, _LEAF_DAYS)
    _write_file(key_path, _key_pem(key), 0o600)
    _write_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o600)


def load_etcd_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """etcd's CA from its files. OSError when one cannot be read; ValueError when they do not parse, do
    not match, or the key is not an EC key."""
    ca_cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        ca_key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    except TypeError as exc:  # an encrypted key
        raise ValueError(str(exc)) from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key")
    if ca_cert.public_key() != ca_key.public_key():
        raise ValueError("the CA key does not match its certificate")
    return ca_cert, ca_key


def new_etcd_ca(cert_path: Path, key_path: Path) -> None:
    """A new etcd CA (common name etcd-ca, as kubeadm's), both files 0600; the key is written first."""
    _new_ca(cert_path, key_path, "etcd-ca")


def ensure_etcd_pair(
    cert_path: Path, key_path: Path, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
    common_name: str, sans: Sequence[str], usages: Sequence[x509.ObjectIdentifier],
) -> bool:
    """Keep the key pair when it is the CA's, covers ``sans`` and is not about to expire; else issue a new
    one (0600). True when it was (re)issued."""
    if _pair_ok(cert_path, key_path, ca_cert, sans):
        return False
    _issue(cert_path, key_path, ca_cert, ca_key, common_name, sans, usages)
    return True


def write_pki_file(path: Path, data: bytes) -> None:
    """Write ``path`` 0600, atomically (a reader sees the old file or the new one)."""
    _write_file(path, data, 0o600)


def ensure_etcd_pki(directory: Path, hosts: Sequence[str] = (), *, name: str = "kmesh-etcd") -> EtcdPKI:
    """Create (or reuse) etcd's CA and key pairs in ``directory/pki`` (kubeadm's layout).

    ``hosts``: addresses besides localhost/127.0.0.1/::1 that clients reach
    etcd on (a lab's control-plane address); the server and peer
    certificates cover them, and are reissued when they do not. ``name``: the
    server and peer certificates' common name (kubeadm: the node's name).
    """
    root = directory / "pki"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki = EtcdPKI(root)
    pki.dir.mkdir(exist_ok=True, mode=0o700)
    os.chmod(pki.dir, 0o700)
    try:
        ca_cert, ca_key = load_etcd_ca(pki.ca_cert, pki.ca_key)
    except (OSError, ValueError):
        new_etcd_ca(pki.ca_cert, pki.ca_key)
        ca_cert, ca_key = load_etcd_ca(pki.ca_cert, pki.ca_key)
    serving = list(dict.fromkeys([*ETCD_SANS, *hosts]))
    wanted: list[tuple[str, str, list[str], Sequence[x509.ObjectIdentifier]]] = [
        ("server", name, serving, ETCD_MEMBER_USAGES),
        ("peer", name, serving, ETCD_MEMBER_USAGES),
        *((client, common_name, [], ETCD_CLIENT_USAGES) for client, common_name in ETCD_CLIENT_COMMON_NAMES.items()),
    ]
    for pair, common_name, sans, usages in wanted:
        ensure_etcd_pair(*pki.pair(pair), ca_cert, ca_key, common_name, sans, usages)
    return pki


# --- nodes joining (kmesh.client.bootstrap) ----------------------------------------------------------

NODE_CERT_DAYS = 365  # k3s's client certificates last a year


def _token_chars(n: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(n))


@dataclass(frozen=True)
class JoinSecrets:
    """The join secrets of a cluster, in ``D/pki``: the agents' bootstrap token and the servers' secret."""

    join_token: str  # "<id>.<secret>" (kubeadm's bootstrap token form)
    server_token: str  # 32 characters a-z0-9


def ensure_join_secrets(directory: Path) -> JoinSecrets:
    """Create (or reuse) ``D/pki/join.token`` and ``D/pki/server.token`` (0600)."""
    d = directory / "pki"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    join, server = d / "join.token", d / "server.token"
    if not join.exists():
        _write_private(join, f"{_token_chars(6)}.{_token_chars(16)}\n".encode())
    if not server.exists():
        _write_private(server, (_token_chars(32) + "\n").encode())
    return JoinSecrets(join.read_text().strip(), server.read_text().strip())


def install_cluster_secrets(directory: Path, files: dict[str, str]) -> None:
    """Write what another server handed over (``ca.crt``, ``ca.key``, ``token``, ``join.token``,
    ``server.token``) into ``D/pki``; this server's own certificate is then issued from that CA."""
    d = directory / "pki"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in ("ca.crt", "ca.key", "token", "join.token", "server.token"):
        if not files.get(name):
            raise ValueError(f"the server handed over no {name}")
    current = d / "ca.crt"
    if current.exists() and current.read_text() != files["ca.crt"]:
        for p in (d / "apiserver.crt", d / "apiserver.key"):
            p.unlink(missing_ok=True)
    for name in ("ca.crt", "ca.key", "token", "join.token", "server.token"):
        _write_private(d / name, files[name].encode())


def sign_node_csr(pki: PKI, csr_pem: bytes, node_name: str) -> bytes:
    """A client certificate for ``system:node:<node_name>`` in ``system:nodes``, for the CSR's key (PEM).

    The subject is set here, whatever the CSR asked for. Raises ``ValueError`` for a CSR that is not one
    or whose signature does not verify."""
    csr = x509.load_pem_x509_csr(csr_pem)
    if not csr.is_signature_valid:
        raise ValueError("the CSR's signature does not verify")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ValueError("the CSR's key is not an EC key (kmesh nodes use P-256)")
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey), "the cluster CA's key is not an EC key"
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node_name}")])
    cert = _leaf(public_key, subject, ca_cert, ca_key, (), [ExtendedKeyUsageOID.CLIENT_AUTH], NODE_CERT_DAYS)
    return cert.public_bytes(serialization.Encoding.PEM)
