"""Certificates for tests: a CA of one's own, client certificates signed by any CA, and reading a
certificate's SANs, usages and common name (cryptography)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CA:
    """A certificate authority: its certificate and key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> "CA":
        """A CA from PEM files (e.g. the lab's pki/ca.crt and pki/ca.key)."""
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey))
        return cls(x509.load_pem_x509_certificate(cert_path.read_bytes()), key)

    @classmethod
    def new(cls, name: str = "some-other-ca") -> "CA":
        """A fresh self-signed CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    def pem(self) -> bytes:
        """The CA certificate, PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, cn: str, groups: tuple[str, ...] = (), *, usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.CLIENT_AUTH,
              rsa_key: bool = False) -> tuple[bytes, bytes]:
        """A client certificate (CN = user, one O per group) and its key, both PEM.

        ``rsa_key``: an RSA key in PKCS#1 form, as kind writes them (else EC in SEC1 form, as k3s)."""
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
        if rsa_key:
            key = rsa.generate_private_key(65537, 2048)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        names = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
        if cn:  # "" leaves the CN out
            names.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        now = dt.datetime.now(dt.timezone.utc)
        cert = (
            x509.CertificateBuilder().subject_name(x509.Name(names)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())  # type: ignore[arg-type]
        )
        fmt = serialization.PrivateFormat.TraditionalOpenSSL
        return (cert.public_bytes(serialization.Encoding.PEM),
                key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))


def cert(path: Path) -> x509.Certificate:
    """The PEM certificate at ``path``."""
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(path: Path) -> set[str]:
    """Its subjectAltNames: IP addresses and DNS names, as strings."""
    ext = cert(path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(ext.get_values_for_type(x509.DNSName))


def usages(path: Path) -> set[x509.ObjectIdentifier]:
    """Its extended key usages."""
    return set(cert(path).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def common_name(path: Path) -> str:
    """Its subject's CN."""
    return str(cert(path).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def server_pair(ca: CA, *hosts: str) -> tuple[bytes, bytes]:
    """A server certificate for ``hosts`` (DNS SANs, the first also the CN) signed by ``ca``, and its key, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
