"""A lab's own etcd opens to the lab alone (issue 12 point 8): a sim lab with ``--store etcd``.

etcd listens on 127.0.0.1 only, over TLS, and takes only clients presenting
a certificate of its own CA, whose keys are the lab's (0600 in the 0700
data dir). A local user (``nobody``) gets nothing with or without TLS; a
certificate of the cluster CA (what kubectl users hold) is refused; the API
server, holding ``apiserver-etcd-client``, stores the cluster there.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kmesh.lab.datadir import DataDir
from tests.conftest import require, require_binary
from tests.e2e.etcdprobe import apiserver_files, client_urls, etcdctl, flag_value, lab_etcd_argv

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

KMESH = [sys.executable, "-m", "kmesh.cli"]


def kmesh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KMESH, *args], capture_output=True, text=True, timeout=180)


def kubectl(dd: DataDir, *args: str) -> str:
    out = subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, KUBECONFIG=str(dd.kubeconfig)))
    assert out.returncode == 0, out.stderr
    return out.stdout


def cluster_ca_client(dd: DataDir, out: Path) -> tuple[Path, Path]:
    """A client certificate of the cluster CA (as a kubectl user's), written outside the lab."""
    ca_cert = x509.load_pem_x509_certificate((dd.root / "pki" / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((dd.root / "pki" / "ca.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
        .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    crt, pem = out / "admin.crt", out / "admin.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


def test_sim_lab_etcd_takes_only_the_labs_certificates(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "root (to try etcd as the user nobody)")
    for prog in ("etcd", "etcdctl", "kubectl", "curl", "runuser"):
        require_binary(prog)
    dd = DataDir(tmp_path / "lab")
    name = f"t{uuid.uuid4().hex[:5]}"
    try:
        up = kmesh("up", "--runtime", "sim", "--store", "etcd", "--name", name, "--data-dir", str(dd.root), "--port", "0")
        assert up.returncode == 0, up.stdout + up.stderr
        kubectl(dd, "create", "configmap", "etcd-probe", "--from-literal=secret=s3cr3t")

        argv = lab_etcd_argv(dd)
        urls = client_urls(argv)
        assert urls and all(u.startswith("https://127.0.0.1:") for u in urls), urls
        assert flag_value(argv, "listen-peer-urls").startswith("https://127.0.0.1:")
        assert "--client-cert-auth=true" in argv and "--peer-client-cert-auth=true" in argv
        assert flag_value(argv, "trusted-ca-file") == str(dd.root / "pki" / "etcd" / "ca.crt")
        url = urls[0]

        pki = dd.root / "pki"
        for d in (dd.root, pki, pki / "etcd", dd.root / "etcd"):
            assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
        for key in [*pki.glob("*etcd-client.key"), *(pki / "etcd").glob("*.key")]:
            assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        assert {k.name for k in (pki / "etcd").glob("*.key")} == {"ca.key", "server.key", "peer.key",
                                                                  "healthcheck-client.key"}

        # The lab's own client certificate: the whole cluster, the ConfigMap included.
        ok = etcdctl(url, "get", "", "--from-key", files=apiserver_files(dd))
        assert ok.returncode == 0, ok.stderr
        assert "etcd-probe" in ok.stdout and "s3cr3t" in ok.stdout

        # A local user: no certificate (and no way to read the lab's), so nothing.
        nobody = etcdctl(url, "get", "", "--from-key", user="nobody")
        assert nobody.returncode != 0 and "etcd-probe" not in nobody.stdout, nobody.stdout + nobody.stderr
        for f in apiserver_files(dd):
            peek = subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(f)], capture_output=True, text=True)
            assert peek.returncode != 0 and "Permission denied" in peek.stderr, f
        body = json.dumps({"key": "AA==", "range_end": "AA=="})
        for scheme, flags in (("https", ["-k"]), ("http", [])):
            probe = subprocess.run(
                ["runuser", "-u", "nobody", "--", "curl", "-s", "--max-time", "5", *flags, "-d", body,
                 url.replace("https://", f"{scheme}://") + "/v3/kv/range"], capture_output=True, text=True)
            assert probe.returncode != 0 and "kvs" not in probe.stdout, (scheme, probe.returncode, probe.stdout)

        # A certificate of the cluster CA (what kubectl users get) is not one of etcd's.
        tmp_path.joinpath("user").mkdir()
        crt, key = cluster_ca_client(dd, tmp_path / "user")
        user = etcdctl(url, "get", "", "--from-key", files=(pki / "etcd" / "ca.crt", crt, key))
        assert user.returncode != 0 and "etcd-probe" not in user.stdout, user.stdout + user.stderr
    finally:
        down = kmesh("down", "--data-dir", str(dd.root))
    assert down.returncode == 0, down.stdout + down.stderr
    assert not dd.root.exists()
    with pytest.raises(AssertionError):
        lab_etcd_argv(dd)  # etcd went with the lab


def test_a_users_etcd_over_tls(tmp_path: Path) -> None:
    """``kmesh up --etcd https://… --etcd-cafile --etcd-certfile --etcd-keyfile``: the lab keeps its objects
    in the user's etcd with the user's certificate; TLS files with a plain http URL are refused."""
    require_binary("etcd")
    require_binary("kubectl")
    from kmesh.apiserver.pki import ensure_etcd_pki
    from kmesh.store.etcd_server import EtcdServer

    pki = ensure_etcd_pki(tmp_path / "theirs")
    ca, (crt, key) = pki.ca_cert, pki.pair("apiserver-etcd-client")
    files = ["--etcd-cafile", str(ca), "--etcd-certfile", str(crt), "--etcd-keyfile", str(key)]
    dd = DataDir(tmp_path / "lab")
    name = f"u{uuid.uuid4().hex[:5]}"

    bad = kmesh("up", "--runtime", "sim", "--store", "etcd", "--etcd", "http://127.0.0.1:2379", *files,
                "--data-dir", str(dd.root), "--port", "0")
    assert bad.returncode == 2 and "plain http" in bad.stderr, bad.stderr
    alone = kmesh("up", "--runtime", "sim", "--etcd-certfile", str(crt), "--data-dir", str(dd.root), "--port", "0")
    assert alone.returncode == 2 and "go with an etcd URL" in alone.stderr, alone.stderr
    assert not dd.root.exists()

    with EtcdServer(tmp_path / "etcd", die_with_parent=True, tls=pki.server_tls()) as etcd:
        try:
            up = kmesh("up", "--runtime", "sim", "--store", "etcd", "--etcd", etcd.url.replace("https://", "etcd://"),
                       *files, "--name", name, "--data-dir", str(dd.root), "--port", "0")
            assert up.returncode == 0, up.stdout + up.stderr
            kubectl(dd, "create", "configmap", "in-their-etcd")
            got = etcdctl(etcd.url, "get", "", "--from-key", "--keys-only", files=(ca, crt, key))
            assert got.returncode == 0 and "in-their-etcd" in got.stdout, got.stderr
            assert not (dd.root / "pki" / "etcd").exists()  # no etcd of the lab's own, so no etcd PKI either
        finally:
            down = kmesh("down", "--data-dir", str(dd.root))
        assert down.returncode == 0, down.stdout + down.stderr
