"""Client certificates: the x509 authenticator (CN = user, O = groups), with kmesh's client and the real kubectl."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import yaml
from cryptography.x509.oid import ExtendedKeyUsageOID

from kmesh.api import errors as E
from kmesh.apiserver.authn import Authenticator
from kmesh.client.api import APIUnavailable, Client
from kmesh.client.kubeconfig import Credentials
from tests.support.certs import CA
from tests.support.cluster import Cluster


def lab_ca(cluster: Cluster) -> CA:
    pki = cluster.server.pki
    return CA.load(pki.ca_cert, pki.ca_key)


def cert_kubeconfig(cluster: Cluster, directory: Path, cert: bytes, key: bytes) -> Path:
    """A kubeconfig using a client certificate by relative file paths, as users write them by hand."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.crt").write_bytes(cluster.server.pki.ca_pem())
    (directory / "user.crt").write_bytes(cert)
    (directory / "user.key").write_bytes(key)
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": cluster.server.url, "certificate-authority": "ca.crt"}}],
        "users": [{"name": "u", "user": {"client-certificate": "user.crt", "client-key": "user.key"}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "u"}}],
    }
    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


async def test_a_lab_signed_certificate_authenticates_kmesh_client_and_kubectl(cluster: Cluster, tmp_path: Path) -> None:
    cert, key = lab_ca(cluster).issue("alice", ("system:masters",))
    kc = cert_kubeconfig(cluster, tmp_path / "alice", cert, key)
    async with Client.from_kubeconfig(kc) as alice:
        assert alice.creds.token == ""
        await alice.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "by-alice"}})
    out = await cluster.kubectl("--kubeconfig", str(kc), "get", "configmap", "by-alice", "-o", "name")
    assert out.stdout.split() == ["configmap/by-alice"]
    # kind writes RSA keys inline (client-certificate-data); that works as well
    cert, key = lab_ca(cluster).issue("kind-admin", ("system:masters",), rsa_key=True)
    async with Client(Credentials(cluster.server.url, cluster.server.pki.ca_pem(), client_cert_pem=cert,
                                  client_key_pem=key)) as kind:
        assert (await kind.get("ConfigMap", "by-alice", "default"))["metadata"]["name"] == "by-alice"


async def test_connections_keep_their_own_identity(cluster: Cluster) -> None:
    """A certificate authenticates its own connection only: a client without one stays 401 meanwhile."""
    cert, key = lab_ca(cluster).issue("alice", ("system:masters",))
    ca = cluster.server.pki.ca_pem()
    async with Client(Credentials(cluster.server.url, ca, client_cert_pem=cert, client_key_pem=key)) as alice, \
            Client(Credentials(cluster.server.url, ca)) as nobody:
        refused = 0

        async def as_alice() -> None:
            for _ in range(20):
                await alice.list("Namespace")

        async def as_nobody() -> None:
            nonlocal refused
            for _ in range(20):
                with pytest.raises(E.APIError) as exc:
                    await nobody.list("Namespace")
                assert exc.value.code == 401
                refused += 1

        async with trio.open_nursery() as n:
            for _ in range(3):
                n.start_soon(as_alice)
                n.start_soon(as_nobody)
    assert refused == 60


async def test_certificates_the_cluster_ca_did_not_issue_for_clients_are_refused(cluster: Cluster, tmp_path: Path) -> None:
    ca = cluster.server.pki.ca_pem()
    # another CA: the TLS handshake fails with an alert that says so (Python's ssl cannot defer the verdict
    # to a 401 as kube-apiserver does, see docs/differences.md)
    cert, key = CA.new().issue("mallory", ("system:masters",))
    async with Client(Credentials(cluster.server.url, ca, client_cert_pem=cert, client_key_pem=key)) as c:
        with pytest.raises(APIUnavailable):
            await c.list("Namespace")
    out = await cluster.kubectl("--kubeconfig", str(cert_kubeconfig(cluster, tmp_path / "m", cert, key)),
                                "get", "ns", check=False)
    assert out.returncode != 0 and "tls: unknown certificate authority" in out.stderr
    # the lab's CA, but a server certificate: not for clients
    cert, key = lab_ca(cluster).issue("server", ("system:masters",), usage=ExtendedKeyUsageOID.SERVER_AUTH)
    async with Client(Credentials(cluster.server.url, ca, client_cert_pem=cert, client_key_pem=key)) as c:
        with pytest.raises(APIUnavailable):
            await c.list("Namespace")
    # the lab's CA, a client certificate, but no CN: no user, so 401 as upstream
    cert, key = lab_ca(cluster).issue("", ("system:masters",))
    async with Client(Credentials(cluster.server.url, ca, client_cert_pem=cert, client_key_pem=key)) as c:
        with pytest.raises(E.APIError) as exc:
            await c.list("Namespace")
    assert exc.value.code == 401
    out = await cluster.kubectl("--kubeconfig", str(cert_kubeconfig(cluster, tmp_path / "nocn", cert, key)),
                                "get", "ns", check=False)
    assert out.returncode != 0 and "You must be logged in to the server" in out.stderr  # a 401


def test_the_authenticator_reads_cn_and_o() -> None:
    ca, other = CA.new("lab"), CA.new("other")
    auth = Authenticator("tok", ca.pem())
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    def der(pem: bytes) -> bytes:
        return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)

    user = auth.authenticate({}, der(ca.issue("alice", ("system:masters", "devs"))[0]))
    assert user is not None and (user.name, user.groups) == ("alice", ("system:masters", "devs", "system:authenticated"))
    assert auth.authenticate({}, der(other.issue("alice", ("system:masters",))[0])) is None
    assert auth.authenticate({"authorization": "Bearer tok"}, der(other.issue("x")[0])) is not None  # union
    assert auth.authenticate({"authorization": "Bearer nope"}, None) is None
