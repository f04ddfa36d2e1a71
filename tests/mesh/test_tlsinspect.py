"""Reading a ClientHello's ALPN from peeked bytes: real ClientHellos from the ssl module, cut anywhere."""

from __future__ import annotations

import ssl

import pytest

from kmesh.mesh.tlsinspect import Incomplete, client_hello_alpn, looks_like_tls


def _client_hello(alpn: list[str] | None, server_name: str | None = "web.shop.svc") -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("alpn", [["kmesh"], ["h2", "http/1.1"], ["http/1.1", "kmesh"], None])
def test_alpn_of_a_real_client_hello(alpn: list[str] | None) -> None:
    hello = _client_hello(alpn)
    assert looks_like_tls(hello)
    assert client_hello_alpn(hello) == [a.encode() for a in alpn or []]
    assert client_hello_alpn(hello + b"more bytes after it") == [a.encode() for a in alpn or []]


def test_cut_short_asks_for_more() -> None:
    hello = _client_hello(["kmesh"], server_name=None)
    for cut in (1, 4, 5, 50, len(hello) - 1):
        with pytest.raises(Incomplete):
            client_hello_alpn(hello[:cut])


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"SSH-2.0-OpenSSH_9.2\r\n",
                                  b"\x16\x03\x03\x00\x05\x02\x00\x00\x01\x00"])  # the last: a ServerHello
def test_other_protocols_are_not_client_hellos(data: bytes) -> None:
    assert client_hello_alpn(data) is None
