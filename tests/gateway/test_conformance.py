"""Upstream's HTTPRoute conformance table (the same manifests, requests and expected backends, transcribed in
conformance_cases.py) through kmesh's translation and L7 engine, with echo-basic backends on loopback."""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from typing import Any

import pytest
import trio

from tests.gateway.conformance_cases import CASES, MANIFESTS, STATUSES, Case
from tests.gateway.manifests import gateway_class, load, with_defaults
from tests.gateway.checks import check as _check
from tests.gateway.rig import Rig, rig


def _objects(test: str) -> list[dict[str, Any]]:
    return with_defaults([gateway_class(), *load("manifests.yaml", MANIFESTS[test])])


def _key(ref: str) -> tuple[str, str]:
    ns, _, name = ref.partition("/")
    return ns, name


async def _weights(r: Rig, case: Case) -> None:
    """Upstream's check: 500 requests; each backend's share within 0.05 of its weight; up to 10 rounds."""
    want = {"infra-backend-v1": 0.7, "infra-backend-v2": 0.3, "infra-backend-v3": 0.0}
    for _ in range(10):
        got: Counter[str] = Counter()
        for _ in range(500):
            reply = await r.request(_key(case.gateway), case.path, host=case.host)
            assert reply.status == 200 and reply.echo
            got[str(reply.echo["pod"]).removesuffix("-pod")] += 1
        if set(got) <= {"infra-backend-v1", "infra-backend-v2"} and all(
                abs(got[b] / 500 - w) <= 0.05 for b, w in want.items()):
            return
    raise AssertionError(f"split {dict(got)} not within 0.05 of {want} in 10 rounds")


@pytest.mark.parametrize("test", sorted(CASES))
async def test_httproute_conformance(test: str) -> None:
    async with rig(_objects(test)) as r:
        for route, gateway, ctype, status, reason in STATUSES.get(test, []):
            parents = r.translation.route_parents.get(_key(route), [])
            conds = [c for p in parents if p["parentRef"]["name"] == _key(gateway)[1]
                     for c in p["conditions"] if c["type"] == ctype]
            assert conds and {(c["status"], c["reason"]) for c in conds} == {(status, reason)}, (route, ctype, parents)
        cases = CASES[test]
        if test == "HTTPRouteReferenceGrant":  # its last case is sent once the ReferenceGrant is deleted
            cases, after = cases[:-1], cases[-1]
        for case in cases:
            if "{uuid}" in case.path:  # the retry cases: a fresh uuid per request, as upstream's probes
                case = dataclasses.replace(case, path=case.path.replace("{uuid}", uuid.uuid4().hex))
            if test == "HTTPRouteWeight":
                await _weights(r, case)
                continue
            reply = await r.request(_key(case.gateway), case.path, host=case.host, method=case.method,
                                    headers=case.headers)
            _check(case, reply)
        if test == "HTTPRouteReferenceGrant":
            async with rig([o for o in _objects(test) if o["kind"] != "ReferenceGrant"]) as r2:
                _check(after, await r2.request(_key(after.gateway), after.path))
        if test == "HTTPRouteRequestMirror":  # the mirrored copies reach infra-backend-v2
            with trio.fail_after(10):
                await r.wait_seen(("gateway-conformance-infra", "infra-backend-v2"), [c.path for c in CASES[test]])


async def test_https_listener() -> None:
    """Upstream's HTTPRouteHTTPSListener: routes on the base manifests' HTTPS Gateway, TLS with SNI, the
    certificate from the Secret the suite creates (here made with a CA of the test's own)."""
    import base64
    import ssl

    from tests.support.certs import CA, server_pair

    ca = CA.new("conformance")
    crt, key = server_pair(ca, "example.org", "second-example.org", "unknown-example.org", "*.wildcard.org")
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
              "metadata": {"name": "tls-validity-checks-certificate", "namespace": "gateway-conformance-infra"},
              "data": {"tls.crt": base64.b64encode(crt).decode(), "tls.key": base64.b64encode(key).decode()}}
    objs = with_defaults([gateway_class(), secret, *load("manifests.yaml", "httproute-https-listener.yaml")])
    ctx = ssl.create_default_context(cadata=ca.pem().decode())
    gw = ("gateway-conformance-infra", "same-namespace-with-https-listener")
    async with rig(objs) as r:
        for route in ("httproute-https-test", "httproute-https-test-no-hostname"):
            (parent,) = r.translation.route_parents[("gateway-conformance-infra", route)]
            assert {c["type"]: c["status"] for c in parent["conditions"]} == {"Accepted": "True", "ResolvedRefs": "True"}
        for host, status, backend in (("example.org", 200, "infra-backend-v1"), ("unknown-example.org", 404, ""),
                                      ("second-example.org", 200, "infra-backend-v2")):
            reply = await r.request(gw, "/", host=host, port=443, tls=ctx)
            assert reply.status == status, (host, reply.status)
            if backend:
                assert reply.echo and str(reply.echo["pod"]).startswith(backend), (host, reply.echo)


async def _ws_roundtrip(port: int, path: str, messages: list[str | bytes]) -> list[str | bytes]:
    """A WebSocket client (wsproto) on a fresh connection: the handshake, then each message and its echo."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Message, Request, TextMessage

    ws = WSConnection(ConnectionType.CLIENT)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    replies: list[str | bytes] = []
    async with stream:
        await stream.send_all(ws.send(Request(host="gateway", target=path)))

        async def next_event() -> object:
            while True:
                for ev in ws.events():
                    return ev
                data = await stream.receive_some(65536)
                assert data, "the connection closed"
                ws.receive_data(data)

        assert isinstance(await next_event(), AcceptConnection)
        for m in messages:
            await stream.send_all(ws.send(TextMessage(data=m) if isinstance(m, str) else BytesMessage(data=m)))
            ev = await next_event()
            assert isinstance(ev, Message), ev
            replies.append(ev.data if isinstance(ev, TextMessage) else bytes(ev.data))  # type: ignore[arg-type]
            assert ev.message_finished or isinstance(ev, BytesMessage)
        await stream.send_all(ws.send(CloseConnection(code=1000)))
    return replies


async def test_websocket_backend_protocol() -> None:
    """Upstream's HTTPRouteBackendProtocolWebSocket: a WebSocket through the Gateway to echo-basic's /ws (the
    backend port has appProtocol kubernetes.io/ws); a text and a binary message come back."""
    objs = with_defaults([gateway_class(), *load("manifests.yaml", "httproute-backend-protocol-websocket.yaml")])
    async with rig(objs) as r:
        engine = r.engines[("gateway-conformance-infra", "same-namespace")]
        logged = trio.Event()
        engine.metrics.access_log = lambda rec: logged.set()  # the exchange is counted when the tunnel ends
        with trio.fail_after(10):
            replies = await _ws_roundtrip(r.ports[("gateway-conformance-infra", "same-namespace")][80], "/ws",
                                          ["Websocket Support!", bytes([1, 2, 3, 4, 5, 6, 7])])
        # upstream's echo answers every frame as text (x/net/websocket's io.Copy), and its test reads the binary
        # reply's bytes whatever the frame type: compare contents
        assert [r.encode() if isinstance(r, str) else r for r in replies] == [b"Websocket Support!",
                                                                             bytes([1, 2, 3, 4, 5, 6, 7])]
        with trio.fail_after(10):
            await logged.wait()
        assert engine.metrics.count(status=101) == 1
