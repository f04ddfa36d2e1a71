"""The server side of joining (``kmesh.apiserver.nodebootstrap``) over real HTTPS: ``/cacerts`` to anyone, node
certificates to holders of the join secret only, with the subject the server chooses, and the join secrets never
users of the Kubernetes API."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kmesh.apiserver.pki import JoinSecrets, ensure_join_secrets
from kmesh.client.bootstrap import CACERTS_PATH, NODE_CREDENTIALS_PATH, SERVER_BOOTSTRAP_PATH, node_csr
from tests.support.cluster import Cluster


@pytest.fixture
async def http(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTPS client of the fixture's server: trusts its CA, sends no credentials of its own."""
    ctx = ssl.create_default_context(cadata=cluster.server.pki.ca_pem().decode())
    async with httpx.AsyncClient(base_url=cluster.server.url, verify=ctx, trust_env=False, timeout=30) as c:
        yield c


@pytest.fixture
def secrets(cluster: Cluster) -> JoinSecrets:
    """The cluster's join secrets (the files the server checks against)."""
    return ensure_join_secrets(cluster.data_dir)


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _message(r: httpx.Response) -> str:
    doc = r.json()
    assert doc["kind"] == "Status" and doc["code"] == r.status_code
    return str(doc["message"])


def _subject(cert_pem: str) -> tuple[list[Any], list[Any]]:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return ([a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)],
            [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)])


async def test_cacerts_is_public_and_read_only(cluster: Cluster, http: httpx.AsyncClient) -> None:
    r = await http.get(CACERTS_PATH)
    assert r.status_code == 200
    assert r.content == cluster.server.pki.ca_pem()
    assert r.headers["content-type"] == "application/x-pem-file"
    r = await http.post(CACERTS_PATH, content=b"{}")
    assert r.status_code == 405


async def test_node_credentials_need_a_join_secret(cluster: Cluster, http: httpx.AsyncClient,
                                                   secrets: JoinSecrets) -> None:
    _, csr = node_csr("worker-1")
    body = json.dumps({"nodeName": "worker-1", "csr": csr.decode()})
    assert (await http.post(NODE_CREDENTIALS_PATH, content=body)).status_code == 401
    assert (await http.post(NODE_CREDENTIALS_PATH, content=body, headers=_bearer("zzzzzz.zzzzzzzzzzzzzzzz"))).status_code == 401
    # The API's own admin token is not a join secret either.
    assert (await http.post(NODE_CREDENTIALS_PATH, content=body,
                            headers=_bearer(cluster.server.pki.token))).status_code == 401
    # The server bootstrap wants the server secret: the agents' is not enough.
    assert (await http.post(SERVER_BOOTSTRAP_PATH, content=b"{}",
                            headers=_bearer(secrets.join_token))).status_code == 401
    r = await http.post(NODE_CREDENTIALS_PATH, content=body, headers=_bearer(secrets.join_token))
    assert r.status_code == 200, r.text
    assert _subject(r.json()["certificate"]) == (["system:node:worker-1"], ["system:nodes"])
    assert r.json()["ca"].encode() == cluster.server.pki.ca_pem()


@pytest.mark.parametrize(("body", "field"), [
    pytest.param(b"", "nodeName", id="no-body"),
    pytest.param(b"this is not json", "JSON", id="not-json"),
    pytest.param(b"[1, 2]", "nodeName", id="json-not-an-object"),
    pytest.param(json.dumps({"csr": "x"}).encode(), "nodeName", id="nodeName-missing"),
    pytest.param(json.dumps({"nodeName": "Bad_Name", "csr": "x"}).encode(), "nodeName", id="nodeName-invalid"),
    pytest.param(json.dumps({"nodeName": 7, "csr": "x"}).encode(), "nodeName", id="nodeName-not-a-string"),
    pytest.param(json.dumps({"nodeName": "worker-1"}).encode(), "csr", id="csr-missing"),
    pytest.param(json.dumps({"nodeName": "worker-1", "csr": "-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n"
                                                              "-----END CERTIFICATE REQUEST-----\n"}).encode(),
                 "csr", id="csr-not-pem"),
])
async def test_bad_requests_get_400_naming_the_field(http: httpx.AsyncClient, secrets: JoinSecrets,
                                                     body: bytes, field: str) -> None:
    r = await http.post(NODE_CREDENTIALS_PATH, content=body, headers=_bearer(secrets.join_token))
    assert r.status_code == 400, r.text
    assert field in _message(r)


async def test_a_csr_whose_signature_does_not_verify_is_refused(http: httpx.AsyncClient, secrets: JoinSecrets) -> None:
    _, pem = node_csr("worker-1")
    der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte of the signature's s
    tampered = x509.load_der_x509_csr(bytes(der))
    assert not tampered.is_signature_valid  # still a CSR, only its signature is wrong
    body = json.dumps({"nodeName": "worker-1", "csr": tampered.public_bytes(serialization.Encoding.PEM).decode()})
    r = await http.post(NODE_CREDENTIALS_PATH, content=body, headers=_bearer(secrets.join_token))
    assert r.status_code == 400, r.text
    assert "csr" in _message(r)


async def test_the_server_sets_the_subject_whatever_the_csr_asks(http: httpx.AsyncClient, secrets: JoinSecrets) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    greedy = (x509.CertificateSigningRequestBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                                       x509.NameAttribute(NameOID.COMMON_NAME, "system:masters")]))
              .sign(key, hashes.SHA256()))
    body = json.dumps({"nodeName": "worker-2",
                       "csr": greedy.public_bytes(serialization.Encoding.PEM).decode()})
    r = await http.post(NODE_CREDENTIALS_PATH, content=body, headers=_bearer(secrets.server_token))  # also fine
    assert r.status_code == 200, r.text
    cert = x509.load_pem_x509_certificate(r.json()["certificate"].encode())
    assert _subject(r.json()["certificate"]) == (["system:node:worker-2"], ["system:nodes"])
    assert cert.public_key() == key.public_key()  # for the CSR's key, though


async def test_join_secrets_are_not_api_credentials(cluster: Cluster, http: httpx.AsyncClient,
                                                    secrets: JoinSecrets) -> None:
    for secret in (secrets.join_token, secrets.server_token):
        r = await http.get("/api/v1/nodes", headers=_bearer(secret))
        assert r.status_code == 401, r.text
    r = await http.get("/api/v1/nodes", headers=_bearer(cluster.server.pki.token))  # the control: the admin token
    assert r.status_code == 200, r.text
