"""The client side of joining (``kmesh.client.bootstrap``): the join token's format, and the exchange against a
real API server (the ``cluster`` fixture): CA pinning, node credentials, the server bootstrap."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from kmesh.apiserver.authn import AUTHENTICATED, Authenticator
from kmesh.apiserver.pki import ensure_join_secrets
from kmesh.client.api import Client
from kmesh.client.bootstrap import (
    JoinError,
    JoinToken,
    ca_hash,
    fetch_ca,
    request_node_credentials,
    request_server_bootstrap,
)
from kmesh.client.kubeconfig import Credentials
from tests.support.cluster import Cluster

T = TypeVar("T")
HASH = "0123456789abcdef" * 4  # 64 lowercase hex digits


async def _thread(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """The bootstrap calls are blocking httpx: run them off the loop that serves the API."""
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kw))


def _tokens(cluster: Cluster) -> tuple[JoinToken, JoinToken]:
    """(agent token, server token) of the fixture's cluster, as `kmesh up --runtime host` writes them."""
    secrets = ensure_join_secrets(cluster.data_dir)  # the same files the server checks against
    pinned = ca_hash(cluster.server.pki.ca_pem())
    return JoinToken(pinned, secrets.join_token), JoinToken(pinned, secrets.server_token, server=True)


# ------------------------------------------------------------------ the token's format


def test_agent_and_server_tokens_round_trip() -> None:
    agent = JoinToken(HASH, "abcdef.0123456789abcdef")
    text = agent.format()
    assert text == f"K10{HASH}::abcdef.0123456789abcdef"
    assert JoinToken.parse(text) == agent
    assert JoinToken.parse(f"  {text}\n") == agent  # as read from D/join-token
    server = JoinToken(HASH, "a" * 16 + "0" * 16, server=True)
    text = server.format()
    assert text == f"K10{HASH}::server:{'a' * 16}{'0' * 16}"
    parsed = JoinToken.parse(text)
    assert parsed == server and parsed.server and not JoinToken.parse(agent.format()).server


@pytest.mark.parametrize("text", [
    pytest.param(f"{HASH}::abcdef.0123456789abcdef", id="missing-K10"),
    pytest.param(f"K10{HASH[:63]}::abcdef.0123456789abcdef", id="short-hash"),
    pytest.param(f"K10{HASH.upper()}::abcdef.0123456789abcdef", id="uppercase-hex"),
    pytest.param(f"K10{HASH}::abcde.0123456789abcdef", id="bootstrap-id-5"),
    pytest.param(f"K10{HASH}::abcdefg.0123456789abcdef", id="bootstrap-id-7"),
    pytest.param(f"K10{HASH}::abcdef.0123456789abcde", id="bootstrap-secret-15"),
    pytest.param(f"K10{HASH}::abcdef.0123456789abcdef0", id="bootstrap-secret-17"),
    pytest.param(f"K10{HASH}::ABCDEF.0123456789abcdef", id="bootstrap-uppercase"),
    pytest.param(f"K10{HASH}::abcdef0123456789abcdef", id="bootstrap-no-dot"),
    pytest.param(f"K10{HASH}::server:{'a' * 31}", id="server-secret-31"),
    pytest.param(f"K10{HASH}::server:{'a' * 33}", id="server-secret-33"),
    pytest.param(f"K10{HASH}::server:abcdef.0123456789abcdef", id="server-with-bootstrap-token"),
    pytest.param(f"K10{HASH}::", id="nothing-after-colons"),
    pytest.param("", id="empty"),
    pytest.param("   ", id="blank"),
])
def test_malformed_tokens_are_refused_naming_the_flag(text: str) -> None:
    with pytest.raises(JoinError) as exc:
        JoinToken.parse(text)
    assert "--token" in str(exc.value)


def test_ca_hash_is_sha256_of_the_pem_bytes() -> None:
    assert ca_hash(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2
    assert ca_hash(b"abc\n") != ca_hash(b"abc")  # the bytes as served, not a normalised form


# ------------------------------------------------------------------ against a real server


async def test_fetch_ca_checks_the_pinned_hash(cluster: Cluster) -> None:
    ca_pem = cluster.server.pki.ca_pem()
    agent, _ = _tokens(cluster)
    assert await _thread(fetch_ca, cluster.server.url, agent) == ca_pem

    wrong = JoinToken("f" * 64, agent.secret)
    with pytest.raises(JoinError) as exc:
        await _thread(fetch_ca, cluster.server.url, wrong)
    message = str(exc.value)
    assert ca_hash(ca_pem) in message and "f" * 64 in message


async def test_node_credentials_name_the_node_and_authenticate(cluster: Cluster) -> None:
    agent, _ = _tokens(cluster)
    creds = await _thread(request_node_credentials, cluster.server.url, agent, "worker-1")
    ca_pem = cluster.server.pki.ca_pem()
    assert creds.ca_pem == ca_pem
    cert = x509.load_pem_x509_certificate(creds.cert_pem)
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == ["system:node:worker-1"]
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["system:nodes"]
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))  # raises if the CA did not sign it

    user = Authenticator(cluster.server.pki.token, ca_pem).user_from_certificate(cert.public_bytes(Encoding.DER))
    assert user is not None and user.name == "system:node:worker-1"
    assert set(user.groups) == {"system:nodes", AUTHENTICATED}

    # No token: the certificate (and the key generated for it) alone authenticate.
    node = Client(Credentials(cluster.server.url, ca_pem, client_cert_pem=creds.cert_pem, client_key_pem=creds.key_pem))
    try:
        doc = await node.list("Node")
        assert doc["kind"] == "NodeList"
    finally:
        await node.aclose()


async def test_server_bootstrap_needs_the_server_token(cluster: Cluster) -> None:
    agent, server = _tokens(cluster)
    url = cluster.server.url
    with pytest.raises(JoinError) as exc:  # refused before asking: the agent token is not a server token
        await _thread(request_server_bootstrap, url, agent)
    assert "--token" in str(exc.value)
    # The agent's secret presented as if it were a server secret: the server answers 401.
    with pytest.raises(JoinError) as exc:
        await _thread(request_server_bootstrap, url, JoinToken(agent.ca_hash, agent.secret, server=True))
    assert "refused the token" in str(exc.value)

    files = await _thread(request_server_bootstrap, url, server)
    pki = cluster.data_dir / "pki"
    assert set(files) == {"ca.crt", "ca.key", "token", "join.token", "server.token"}
    for name, text in files.items():
        assert text == (pki / name).read_text(), name
    assert files["ca.crt"].encode() == cluster.server.pki.ca_pem()
    assert files["token"].strip() == cluster.server.pki.token
    assert files["join.token"].strip() == agent.secret and files["server.token"].strip() == server.secret


async def test_a_wrong_secret_is_refused(cluster: Cluster) -> None:
    agent, server = _tokens(cluster)
    wrong_agent = JoinToken(agent.ca_hash, "zzzzzz.zzzzzzzzzzzzzzzz")
    assert wrong_agent.secret != agent.secret
    with pytest.raises(JoinError) as exc:
        await _thread(request_node_credentials, cluster.server.url, wrong_agent, "worker-2")
    assert "refused the token" in str(exc.value)
    wrong_server = JoinToken(server.ca_hash, "z" * 32, server=True)
    assert wrong_server.secret != server.secret
    with pytest.raises(JoinError) as exc:
        await _thread(request_server_bootstrap, cluster.server.url, wrong_server)
    assert "refused the token" in str(exc.value)
