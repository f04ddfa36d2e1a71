"""The cluster's certificate authority, the API server's certificate and its bearer token.

Everything lives in the data dir and is reused across restarts, so a
kubeconfig written once keeps working.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kmesh-ca")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(key, hashes.SHA256())
        )
        _write_private(pki.ca_key, _key_pem(key))
        pki.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
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
