"""Reading certificates in tests: the certificate, its SANs, extended key usages and common name."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID


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
