"""HTTPS listeners: the certificate is picked by SNI (exact, wildcard, default), TLS 1.2 at least."""

from __future__ import annotations

import ssl

import pytest
import trio

from kmesh.l7.engine import Engine
from kmesh.l7.model import Certificate, Config, HostMatch, Listener, Match, RouteEntry, Rule
from tests.l7.support import Backend, ref, server_cert, set_backends, start_engine


async def _peer_cn(engine: Engine, server_name: str | None, ctx: ssl.SSLContext | None = None) -> str:
    if ctx is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    tcp = await trio.open_tcp_stream(*engine.address(443))
    stream = trio.SSLStream(tcp, ctx, server_hostname=server_name)
    await stream.do_handshake()
    cert = stream.getpeercert(binary_form=True)
    await stream.aclose()
    from cryptography import x509
    return x509.load_der_x509_certificate(cert).subject.rfc4514_string()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_sni_picks_the_certificate(nursery: trio.Nursery, tmp_path) -> None:
    b = await Backend("a").start(nursery)
    default = server_cert("default.example")
    exact = server_cert("a.example")
    wild = server_cert("*.b.example")
    cfg = Config((Listener(443, (RouteEntry(HostMatch(), Match(), Rule((ref(b),))),), certificates=(
        Certificate(*exact, host=HostMatch("exact", "a.example")),
        Certificate(*wild, host=HostMatch("wildcard-one", "*.b.example")),
        Certificate(*default),
    )),))
    engine = await start_engine(nursery, cfg)
    set_backends(engine, b)
    assert await _peer_cn(engine, "a.example") == "CN=a.example"
    assert await _peer_cn(engine, "x.b.example") == "CN=*.b.example"
    assert await _peer_cn(engine, "y.x.b.example") == "CN=default.example"
    assert await _peer_cn(engine, None) == "CN=default.example"
    # curl verifies the chain and the name, and gets the answer over HTTPS
    (tmp_path / "a.pem").write_bytes(exact[0])
    port = engine.address(443)[1]
    result = await trio.run_process(
        ["curl", "-sS", "--fail", "--cacert", str(tmp_path / "a.pem"), "--resolve", f"a.example:{port}:127.0.0.1",
         f"https://a.example:{port}/secure"], capture_stdout=True)
    assert b'"path": "/secure"' in result.stdout
    assert b'"x-forwarded-proto": "https"' in result.stdout
    # TLS 1.2 is enough; 1.1 and older are refused
    tls12 = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls12.check_hostname = False
    tls12.verify_mode = ssl.CERT_NONE
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert await _peer_cn(engine, "a.example", tls12) == "CN=a.example"
    assert engine.listener_state(443).ssl_context.minimum_version == ssl.TLSVersion.TLSv1_2
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    try:
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with pytest.raises((trio.BrokenResourceError, ssl.SSLError)):
        await _peer_cn(engine, "a.example", old)


async def test_bad_certificate_leaves_the_old_config(nursery: trio.Nursery) -> None:
    b = await Backend("a").start(nursery)
    good = Config((Listener(443, (RouteEntry(HostMatch(), Match(), Rule((ref(b),))),),
                            certificates=(Certificate(*server_cert("a.example")),)),))
    engine = await start_engine(nursery, good)
    with pytest.raises(ssl.SSLError):
        await engine.apply(Config((Listener(443, certificates=(Certificate(b"junk", b"junk"),)),)))
    assert engine.config is good
    assert await _peer_cn(engine, "a.example") == "CN=a.example"
