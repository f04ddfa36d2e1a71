"""Reading kubeconfigs as kubectl does: file references, -data forms, $KUBECONFIG merging, contexts, errors."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from kmesh.client.kubeconfig import Credentials, kubeconfig_files, load_kubeconfig, write_kubeconfig
from tests.support.certs import CA


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(path: Path, *, clusters: dict[str, dict[str, Any]], users: dict[str, dict[str, Any]],
               contexts: dict[str, dict[str, Any]], current: str | None = None) -> Path:
    """Write a kubeconfig of these named entries."""
    doc: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": n, "cluster": c} for n, c in clusters.items()],
        "users": [{"name": n, "user": u} for n, u in users.items()],
        "contexts": [{"name": n, "context": c} for n, c in contexts.items()],
    }
    if current:
        doc["current-context"] = current
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def test_file_references_are_relative_to_the_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = CA.new("lab")
    cert, key = ca.issue("alice", ("system:masters",))
    d = tmp_path / "conf"
    (d / "pki").mkdir(parents=True)
    (d / "pki" / "ca.crt").write_bytes(ca.pem())
    (d / "pki" / "alice.crt").write_bytes(cert)
    (d / "pki" / "alice.key").write_bytes(key)
    kc = kubeconfig(
        d / "config", current="lab",
        clusters={"lab": {"server": "https://127.0.0.1:6443", "certificate-authority": "pki/ca.crt"}},
        users={"alice": {"client-certificate": "pki/alice.crt", "client-key": "pki/alice.key"}},
        contexts={"lab": {"cluster": "lab", "user": "alice", "namespace": "demo"}},
    )
    monkeypatch.chdir(tmp_path)  # the paths resolve against the file's directory, not the working one
    creds = load_kubeconfig(kc)
    assert (creds.server, creds.ca_pem, creds.client_cert_pem, creds.client_key_pem, creds.token, creds.namespace) == (
        "https://127.0.0.1:6443", ca.pem(), cert, key, "", "demo")
    creds.ssl_context()  # the pair loads


def test_data_forms_as_kind_and_k3s_write_them(tmp_path: Path) -> None:
    ca = CA.new("kind")
    for rsa_key in (True, False):  # kind: RSA PKCS#1 keys; k3s: EC keys
        cert, key = ca.issue("kubernetes-admin", ("kubeadm:cluster-admins",), rsa_key=rsa_key)
        kc = kubeconfig(
            tmp_path / "kind.yaml", current="kind-kind",
            clusters={"kind-kind": {"server": "https://127.0.0.1:39999", "certificate-authority-data": b64(ca.pem())}},
            users={"kind-kind": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}},
            contexts={"kind-kind": {"cluster": "kind-kind", "user": "kind-kind"}},
        )
        creds = load_kubeconfig(str(kc))
        assert (creds.ca_pem, creds.client_cert_pem, creds.client_key_pem) == (ca.pem(), cert, key)
        creds.ssl_context()


def test_kubeconfig_list_merges_first_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$KUBECONFIG's rules: the first file naming an entry wins; current-context from the first that sets one."""
    one = kubeconfig(
        tmp_path / "a" / "one.yaml", current="first",
        clusters={"shared": {"server": "https://one:1"}},
        users={"u": {"token": "from-one"}},
        contexts={"first": {"cluster": "shared", "user": "u"}},
    )
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "token").write_text("from-file\n")
    two = kubeconfig(
        tmp_path / "b" / "two.yaml", current="second",
        clusters={"shared": {"server": "https://two:2"}, "own": {"server": "https://own:3",
                                                                 "insecure-skip-tls-verify": True}},
        users={"u": {"token": "from-two"}, "v": {"tokenFile": "token"}},
        contexts={"second": {"cluster": "own", "user": "v"}, "first": {"cluster": "own", "user": "v"}},
    )
    missing = tmp_path / "nowhere.yaml"
    spec = os.pathsep.join(map(str, (missing, one, two)))
    assert kubeconfig_files(spec) == [missing, one, two]
    creds = load_kubeconfig(spec)
    assert (creds.server, creds.token) == ("https://one:1", "from-one")
    creds = load_kubeconfig(spec, context="second")
    assert (creds.server, creds.token, creds.insecure) == ("https://own:3", "from-file", True)  # tokenFile: beside two
    # the same through the environment, as every --kubeconfig default reads it
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join(map(str, (two, one))))
    assert load_kubeconfig().server == "https://own:3"
    with pytest.raises(FileNotFoundError):
        load_kubeconfig(str(missing))


def test_token_file_wins_over_token(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("rotated\n")
    kc = kubeconfig(tmp_path / "k", current="c", clusters={"c": {"server": "https://x:1"}},
                    users={"u": {"token": "old", "tokenFile": "t"}}, contexts={"c": {"cluster": "c", "user": "u"}})
    assert load_kubeconfig(kc).token == "rotated"


@pytest.mark.parametrize("cluster,user,message", [
    ({"certificate-authority": "ca.crt", "certificate-authority-data": b64(b"x")}, {}, "both specified"),
    ({"certificate-authority-data": b64(b"x"), "insecure-skip-tls-verify": True}, {}, "insecure-skip-tls-verify"),
    ({}, {"client-certificate-data": b64(b"x"), "client-certificate": "c.crt", "client-key-data": b64(b"k")},
     "both specified"),
    ({}, {"client-certificate-data": b64(b"x")}, "go together"),
    ({}, {"client-certificate": "missing.crt", "client-key": "missing.key"}, "unable to read"),
    ({}, {"exec": {"command": "aws"}}, "exec"),
])
def test_what_kubectl_refuses_is_refused(tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any],
                                         message: str) -> None:
    kc = kubeconfig(tmp_path / "k", current="c", clusters={"c": {"server": "https://x:1", **cluster}},
                    users={"u": user}, contexts={"c": {"cluster": "c", "user": "u"}})
    with pytest.raises(ValueError, match=message):
        load_kubeconfig(kc)


def test_unknown_context_and_no_current_context(tmp_path: Path) -> None:
    kc = kubeconfig(tmp_path / "k", clusters={"c": {"server": "https://x:1"}}, users={"u": {}},
                    contexts={"c": {"cluster": "c", "user": "u"}})
    with pytest.raises(ValueError, match="no current-context"):
        load_kubeconfig(kc)
    with pytest.raises(ValueError, match="'other' not found"):
        load_kubeconfig(kc, context="other")
    assert load_kubeconfig(kc, context="c").server == "https://x:1"


def test_written_kubeconfig_round_trips_privately(tmp_path: Path) -> None:
    ca = CA.new()
    cert, key = ca.issue("bob")
    creds = Credentials("https://127.0.0.1:1", ca.pem(), "tok", cert, key)
    path = tmp_path / "kubeconfig.yaml"
    write_kubeconfig(path, "lab", creds, mode=0o640)
    assert load_kubeconfig(path) == creds
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["kubeconfig.yaml"]
