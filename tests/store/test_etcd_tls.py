"""etcd over TLS as kubeadm runs it: its own CA and certificates, and who gets in.

The session's ``etcd_server`` runs with ``--client-cert-auth`` on certificates
from ``ensure_etcd_pki``; only a client presenting one of its CA's
certificates reads or writes.
"""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import httpx
import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from kmesh.apiserver.pki import ensure_etcd_pki, ensure_pki
from kmesh.store import StoreError, Unavailable, open_store
from kmesh.store.etcd_api import EtcdClient, EtcdTLS, b64, split_endpoints
from kmesh.store.etcd_server import EtcdServer
from tests.store.helpers import cm, key
from tests.support.certs import cert, sans, usages

PAIRS = ("server", "peer", "healthcheck-client", "apiserver-etcd-client", "flannel-etcd-client")


def test_pki_is_kubeadms_layout_private_and_reused(tmp_path: Path) -> None:
    pki = ensure_etcd_pki(tmp_path, ["192.168.56.10"])
    root = tmp_path / "pki"
    assert pki.ca_cert == root / "etcd" / "ca.crt"
    assert pki.pair("server") == (root / "etcd" / "server.crt", root / "etcd" / "server.key")
    assert pki.pair("apiserver-etcd-client") == (root / "apiserver-etcd-client.crt", root / "apiserver-etcd-client.key")
    for d in (root, root / "etcd"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    files = [pki.ca_cert, pki.ca_key, *(p for name in PAIRS for p in pki.pair(name))]
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    ca = cert(pki.ca_cert)
    for name in PAIRS:
        cert(pki.pair(name)[0]).verify_directly_issued_by(ca)
    assert sans(pki.pair("server")[0]) == sans(pki.pair("peer")[0]) == {"localhost", "127.0.0.1", "::1", "192.168.56.10"}
    both = {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert usages(pki.pair("server")[0]) == usages(pki.pair("peer")[0]) == both
    for name in ("healthcheck-client", "apiserver-etcd-client", "flannel-etcd-client"):
        assert usages(pki.pair(name)[0]) == {ExtendedKeyUsageOID.CLIENT_AUTH}

    before = {f: f.read_bytes() for f in files}
    ensure_etcd_pki(tmp_path, ["192.168.56.10"])
    assert {f: f.read_bytes() for f in files} == before  # a restart reuses everything

    ensure_etcd_pki(tmp_path, ["192.168.56.99"])  # a new address: new serving certificates, same CA
    assert "192.168.56.99" in sans(pki.pair("server")[0])
    assert pki.ca_cert.read_bytes() == before[pki.ca_cert]
    assert pki.pair("apiserver-etcd-client")[0].read_bytes() == before[pki.pair("apiserver-etcd-client")[0]]


def test_etcd_ca_is_not_the_cluster_ca(tmp_path: Path) -> None:
    """kubectl users' certificates come from the cluster CA: they must not open etcd."""
    cluster = ensure_pki(tmp_path)
    etcd = ensure_etcd_pki(tmp_path)
    assert cluster.ca_cert.read_bytes() != etcd.ca_cert.read_bytes()
    assert cert(cluster.ca_cert).subject != cert(etcd.ca_cert).subject
    assert cluster.server_cert.exists() and cluster.token_file.exists()  # the API server's own PKI is untouched


def test_endpoints_and_tls_settings() -> None:
    assert split_endpoints("etcd://a:2379,b:2379") == ["http://a:2379", "http://b:2379"]
    assert split_endpoints("etcd://a:2379,b:2379", secure=True) == ["https://a:2379", "https://b:2379"]
    assert split_endpoints("http://a:1,https://b:2", secure=True) == ["http://a:1", "https://b:2"]
    with pytest.raises(ValueError, match="plain http"):
        EtcdClient("http://127.0.0.1:2379", EtcdTLS())
    with pytest.raises(ValueError, match="scheme"):
        split_endpoints("ftp://a:1")
    with pytest.raises(ValueError, match="both"):
        EtcdTLS(certfile="/x.crt")
    with pytest.raises(ValueError, match="cannot load"):
        EtcdTLS(cafile="/nonexistent/ca.crt").ssl_context()


async def refused(url: str, tls: EtcdTLS | None) -> str:
    """The error a client with ``tls`` gets from etcd at ``url`` (the test fails if it gets in)."""
    with pytest.raises((Unavailable, StoreError)) as info:
        async with open_store(url, prefix=f"/kmesh-test-{uuid.uuid4().hex[:8]}", etcd_tls=tls) as store:
            await store.list("/")
    return str(info.value)


async def test_only_its_own_certificates_open_etcd(etcd_server: EtcdServer, tmp_path: Path) -> None:
    tls = etcd_server.client_tls
    assert tls is not None and etcd_server.url.startswith("https://127.0.0.1:")
    async with open_store(etcd_server.url, prefix=f"/kmesh-test-{uuid.uuid4().hex[:8]}", etcd_tls=tls) as store:
        a = await store.create(key("a"), cm("a"))
        assert (await store.get(key("a"))) == a

    # No client certificate: etcd ends the handshake.
    assert "TLS" in await refused(etcd_server.url, EtcdTLS(tls.cafile))
    # A client certificate of another CA (the cluster CA's kubectl users, another lab's etcd CA).
    other = ensure_etcd_pki(tmp_path / "other")
    assert "TLS" in await refused(etcd_server.url, EtcdTLS(tls.cafile, *map(str, other.pair("apiserver-etcd-client"))))
    # Not trusting etcd's CA (the system's CAs do not know it): we end the handshake.
    assert "CERTIFICATE_VERIFY_FAILED" in await refused(etcd_server.url, None)
    # Plain http to the TLS port gets no data (etcd resets the connection).
    async with httpx.AsyncClient() as http:
        plain = etcd_server.url.replace("https://", "http://")
        try:
            answer = (await http.post(plain + "/v3/kv/range", json={"key": b64(b"\0"), "range_end": b64(b"\0")})).text
        except httpx.TransportError as exc:
            answer = repr(exc)
    assert "header" not in answer and "kvs" not in answer, answer
