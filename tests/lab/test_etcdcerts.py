"""``kmesh certs etcd``: an external etcd cluster's CA and pairs, in kubeadm's layout, checked with real TLS."""

from __future__ import annotations

import json
import os
import ssl
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from kmesh.lab.etcdcerts import CertsError, make_etcd_certs
from kmesh.store import StoreError, Unavailable, open_store
from kmesh.store.etcd_api import EtcdTLS
from kmesh.store.etcd_server import EtcdServer, EtcdServerTLS
from tests.conftest import require_binary
from tests.support.certs import cert, common_name, sans, usages

IP = "192.168.56.10"
CLIENTS = ("apiserver-etcd-client", "healthcheck-client")


def server_context(cert_path: Path, key_path: Path, ca: Path) -> ssl.SSLContext:
    """What etcd does on its client and peer ports: its pair, and a client certificate of ``ca`` required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    ctx.load_verify_locations(ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(ca: Path, pair: tuple[Path, Path] | None) -> ssl.SSLContext:
    """A client that verifies the server against ``ca`` (host name included) and presents ``pair``."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if pair is not None:
        ctx.load_cert_chain(*pair)
    return ctx


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str) -> None:
    """A full TLS handshake between the two contexts in memory; ssl.SSLError from the side that refuses."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    c_done = s_done = False
    for _ in range(10):
        if not c_done:
            try:
                c.do_handshake()
                c_done = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        if not s_done:
            try:
                s.do_handshake()
                s_done = True
            except ssl.SSLWantReadError:
                pass
        c_in.write(s_out.read())
        if c_done and s_done:
            return
    raise AssertionError("the handshake did not finish")


def test_kubeadms_layout_chain_sans_and_modes(tmp_path: Path) -> None:
    out, ca_dir = tmp_path / "m1", tmp_path / "shared" / "etcd-ca"
    r = make_etcd_certs(out, ca_dir=ca_dir, member="m1", ips=[IP], clients=CLIENTS)
    assert r.ca_created and (r.ca_cert, r.ca_key) == (ca_dir / "ca.crt", ca_dir / "ca.key")
    etcd = out / "etcd"
    assert r.cafile == etcd / "ca.crt" and r.cafile.read_bytes() == r.ca_cert.read_bytes()
    assert r.pair("server") == (etcd / "server.crt", etcd / "server.key")
    assert r.pair("peer") == (etcd / "peer.crt", etcd / "peer.key")
    assert r.clients == {"apiserver-etcd-client": (out / "apiserver-etcd-client.crt",
                                                   out / "apiserver-etcd-client.key"),
                         "healthcheck-client": (etcd / "healthcheck-client.crt", etcd / "healthcheck-client.key")}
    files = sorted(p for p in [*out.rglob("*"), *ca_dir.iterdir()] if p.is_file())
    assert sorted(r.written) == files and r.kept == []
    assert not [p for p in files if p.suffix == ".tmp"]
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    for d in (out, etcd, ca_dir):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d

    ca = cert(r.ca_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert common_name(r.ca_cert) == "etcd-ca"
    for name in ("server", "peer", *CLIENTS):
        leaf = cert(r.pair(name)[0])
        leaf.verify_directly_issued_by(ca)  # raises unless the CA signed it
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        key = serialization.load_pem_private_key(r.pair(name)[1].read_bytes(), None)
        assert leaf.public_key() == key.public_key()
    member = {IP, "127.0.0.1", "::1", "localhost", "m1"}
    assert sans(r.pair("server")[0]) == sans(r.pair("peer")[0]) == member
    both = {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert usages(r.pair("server")[0]) == usages(r.pair("peer")[0]) == both
    assert common_name(r.pair("server")[0]) == common_name(r.pair("peer")[0]) == "m1"
    for name in CLIENTS:
        assert usages(r.pair(name)[0]) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert common_name(r.pair("apiserver-etcd-client")[0]) == "kube-apiserver-etcd-client"
    assert common_name(r.pair("healthcheck-client")[0]) == "kube-etcd-healthcheck-client"


def test_the_pairs_do_tls_as_etcd_and_its_clients_need(tmp_path: Path) -> None:
    r = make_etcd_certs(tmp_path / "m1", member="m1", ips=[IP], clients=CLIENTS)
    apiserver = r.clients["apiserver-etcd-client"]
    serving = server_context(*r.pair("server"), r.cafile)
    for host in (IP, "127.0.0.1", "localhost", "m1"):  # what clients dial: each SAN verifies
        handshake(serving, client_context(r.cafile, apiserver), host)
    # a member dials a peer with its peer pair, and the peer serves with its own
    other = make_etcd_certs(tmp_path / "m2", ca_dir=r.ca_cert.parent, existing_ca=True, member="m2",
                            ips=["192.168.56.11"])
    handshake(server_context(*other.pair("peer"), other.cafile), client_context(r.cafile, r.pair("peer")),
              "192.168.56.11")

    with pytest.raises(ssl.SSLCertVerificationError, match="match|mismatch"):  # an address not in the SANs
        handshake(serving, client_context(r.cafile, apiserver), "192.168.56.99")
    with pytest.raises(ssl.SSLError):  # no client certificate: refused
        handshake(serving, client_context(r.cafile, None), IP)
    foreign = make_etcd_certs(tmp_path / "foreign", clients=["apiserver-etcd-client"])
    assert foreign.ca_cert.read_bytes() != r.ca_cert.read_bytes()
    with pytest.raises(ssl.SSLError):  # a client certificate of another CA: refused
        handshake(serving, client_context(r.cafile, foreign.clients["apiserver-etcd-client"]), IP)
    with pytest.raises(ssl.SSLCertVerificationError):  # a client pair cannot serve (clientAuth only)
        handshake(server_context(*apiserver, r.cafile), client_context(r.cafile, r.pair("peer")), "localhost")


def test_a_ca_is_made_once_and_shared(tmp_path: Path) -> None:
    ca_dir = tmp_path / "shared"
    first = make_etcd_certs(tmp_path / "m1", ca_dir=ca_dir, member="m1", ips=[IP], clients=CLIENTS)
    before = {p: p.read_bytes() for p in first.written}
    again = make_etcd_certs(tmp_path / "m1", ca_dir=ca_dir, member="m1", ips=[IP], clients=CLIENTS)
    assert not again.ca_created and again.written == [] and sorted(again.kept) == sorted(before)
    assert {p: p.read_bytes() for p in before} == before

    second = make_etcd_certs(tmp_path / "m2", ca_dir=ca_dir, existing_ca=True, member="m2", ips=["192.168.56.11"],
                             clients=["apiserver-etcd-client"])
    assert not second.ca_created and second.ca_cert.read_bytes() == before[first.ca_cert]
    cert(second.pair("server")[0]).verify_directly_issued_by(cert(first.ca_cert))
    assert sans(second.pair("server")[0]) == {"192.168.56.11", "127.0.0.1", "::1", "localhost", "m2"}

    # a new address: new member pairs, the same CA and client pairs
    moved = make_etcd_certs(tmp_path / "m1", ca_dir=ca_dir, member="m1", ips=[IP, "10.0.0.5"], clients=CLIENTS)
    assert sorted(moved.written) == sorted([*first.pair("server"), *first.pair("peer")])
    assert "10.0.0.5" in sans(first.pair("server")[0])
    # a new CA in --ca-dir: every pair made from the old one is reissued, the CA copy replaced
    for f in (ca_dir / "ca.crt", ca_dir / "ca.key"):
        f.unlink()
    renewed = make_etcd_certs(tmp_path / "m1", ca_dir=ca_dir, member="m1", ips=[IP], clients=CLIENTS)
    assert renewed.ca_created and first.cafile in renewed.written and len(renewed.written) == 2 + 1 + 8
    cert(first.pair("peer")[0]).verify_directly_issued_by(cert(ca_dir / "ca.crt"))


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


@pytest.mark.parametrize("kwargs, flag, words", [
    ({"member": "m1"}, "--member", "needs --ip"),
    ({"member": "bad name", "ips": [IP]}, "--member", "host name"),
    ({"member": "m1", "ips": ["192.168.56"]}, "--ip", "not an IP"),
    ({"ips": [IP]}, "--ip", "goes with --member"),
    ({"clients": ["server"]}, "--client", "member's pair"),
    ({"clients": ["ca"]}, "--client", "CA"),
    ({"clients": ["../x"]}, "--client", "file name"),
    ({"existing_ca": True}, "--ca-dir", "no etcd CA"),
])
def test_bad_input_names_its_flag_and_writes_nothing(tmp_path: Path, kwargs: dict, flag: str, words: str) -> None:
    with pytest.raises(CertsError, match=words) as info:
        make_etcd_certs(tmp_path / "out", **kwargs)
    assert info.value.flag == flag
    assert not (tmp_path / "out").exists()


def test_a_ca_that_is_half_there_or_not_one_is_refused(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    make_etcd_certs(tmp_path / "first", ca_dir=ca_dir)
    (ca_dir / "ca.key").rename(tmp_path / "ca.key.saved")
    with pytest.raises(CertsError, match="not ca.key") as info:  # a half-copied CA is never replaced
        make_etcd_certs(tmp_path / "out", ca_dir=ca_dir)
    assert info.value.flag == "--ca-dir" and not (ca_dir / "ca.key").exists()
    _write_key(ca_dir / "ca.key", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(CertsError, match="does not match"):
        make_etcd_certs(tmp_path / "out", ca_dir=ca_dir)
    _write_key(ca_dir / "ca.key", rsa.generate_private_key(65537, 2048))
    with pytest.raises(CertsError, match="not an EC key"):
        make_etcd_certs(tmp_path / "out", ca_dir=ca_dir)
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(CertsError, match="not a directory") as info:
        make_etcd_certs(tmp_path / "file")
    assert info.value.flag == "--out"


def kmesh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kmesh.cli", "certs", "etcd", *argv], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, COLUMNS="200"))


def test_the_command(tmp_path: Path) -> None:
    out, ca_dir = tmp_path / "pki", tmp_path / "shared" / "etcd-ca"
    r = kmesh("--out", str(out), "--ca-dir", str(ca_dir), "--member", "m1", "--ip", IP,
              "--client", "apiserver-etcd-client", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ca"] == {"cert": str(ca_dir / "ca.crt"), "key": str(ca_dir / "ca.key"), "created": True}
    assert doc["cafile"] == str(out / "etcd" / "ca.crt") and doc["kept"] == []
    assert doc["member"]["name"] == "m1" and set(doc["member"]["sans"]) == {IP, "127.0.0.1", "::1", "localhost", "m1"}
    assert doc["clients"] == {"apiserver-etcd-client": {"cert": str(out / "apiserver-etcd-client.crt"),
                                                        "key": str(out / "apiserver-etcd-client.key")}}
    assert sorted(doc["written"]) == sorted(str(p) for p in [*out.rglob("*.crt"), *out.rglob("*.key"),
                                                             *ca_dir.iterdir()])
    cert(Path(doc["member"]["cert"])).verify_directly_issued_by(cert(ca_dir / "ca.crt"))

    again = kmesh("--out", str(out), "--ca-dir", str(ca_dir), "--existing-ca", "--client", "apiserver-etcd-client")
    assert again.returncode == 0, again.stderr
    assert "reused" in again.stdout and "wrote" not in again.stdout
    flags = f"--etcd-cafile {out / 'etcd' / 'ca.crt'} --etcd-certfile {out / 'apiserver-etcd-client.crt'}"
    assert flags in again.stdout

    bad = kmesh("--out", str(tmp_path / "x"), "--member", "m1", "--ip", "nope")
    assert bad.returncode == 2 and "--ip" in bad.stderr and "'nope' is not an IP address" in bad.stderr
    missing = kmesh("--out", str(tmp_path / "x"), "--ca-dir", str(tmp_path / "none"), "--existing-ca")
    assert missing.returncode == 2 and "--ca-dir" in missing.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "none").exists()
    assert kmesh("--member", "m1").returncode == 2  # --out is required


@pytest.mark.etcd
async def test_a_real_etcd_serves_with_them(tmp_path: Path) -> None:
    require_binary("etcd")
    r = make_etcd_certs(tmp_path / "pki", member="m1", ips=["127.0.0.1"], clients=CLIENTS)
    tls = EtcdServerTLS(r.cafile, *r.pair("server"), *r.pair("peer"), *r.pair("healthcheck-client"))
    with EtcdServer(tmp_path / "data", die_with_parent=True, tls=tls) as etcd:  # returns once it is healthy
        apiserver = EtcdTLS(str(r.cafile), *map(str, r.clients["apiserver-etcd-client"]))
        prefix = f"/kmesh-test-{uuid.uuid4().hex[:8]}"
        async with open_store(etcd.url, prefix=prefix, etcd_tls=apiserver) as store:
            await store.list("/")
        with pytest.raises((Unavailable, StoreError)):
            async with open_store(etcd.url, prefix=prefix, etcd_tls=EtcdTLS(str(r.cafile))) as store:
                await store.list("/")
