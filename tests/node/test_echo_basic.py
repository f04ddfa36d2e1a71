"""The Gateway API conformance backend (echo-basic) as a built-in image, on the sim runtime, asked with curl and h11."""

from __future__ import annotations

import json
import ssl
import subprocess

import h11
import pytest
import trio

from kmesh.node.apps import lookup
from kmesh.node.apps.echobasic_handler import canonical_header, echo_set_headers, go_json, parse_go_duration, DurationError
from tests.node.conftest import create_bound, pod, running_ready, wait_pod

ECHO_BASIC = "gcr.io/k8s-staging-gateway-api/echo-basic:v20231214-v1.0.0-140-gf544a46e"


def echo_container(name: str = "echo", **kw: object) -> dict[str, object]:
    """The container of the conformance manifests: POD_NAME and NAMESPACE from the downward API."""
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        *kw.pop("env", []),  # type: ignore[misc]
    ]
    return {"name": name, "image": ECHO_BASIC, "env": env, **kw}


async def curl(*args: str) -> tuple[int, str, str]:
    """Run the real curl: (exit code, body, response headers)."""
    proc = await trio.run_process(["curl", "-sS", "--noproxy", "*", "-D", "/dev/stderr", "--max-time", "10", *args],
                                  capture_stdout=True, capture_stderr=True, check=False)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


async def h11_request(host: str, port: int, target: str, headers: list[tuple[str, str]]) -> tuple[h11.Response, bytes]:
    """One HTTP/1.1 request with exactly these header lines (names as written); the response and its body."""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            await stream.send_all(conn.send(h11.Request(method="GET", target=target, headers=headers))
                                  + conn.send(h11.EndOfMessage()))
            resp: h11.Response | None = None
            body = b""
            while True:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(ev, h11.Response):
                    resp = ev
                elif isinstance(ev, h11.Data):
                    body += ev.data
                elif isinstance(ev, h11.EndOfMessage):
                    assert resp is not None
                    return resp, body


def test_registered_under_both_registries_and_helpers() -> None:
    assert lookup(ECHO_BASIC) is not None
    assert lookup("registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0") is not None
    assert canonical_header("x-forwarded-for") == "X-Forwarded-For"
    assert canonical_header("weird header") == "weird header"
    assert parse_go_duration("1.5s") == 1.5 and parse_go_duration("2m3s") == 123 and parse_go_duration("0") == 0
    with pytest.raises(DurationError, match='time: invalid duration "abc"'):
        parse_go_duration("abc")
    with pytest.raises(DurationError, match='time: missing unit in duration "10"'):
        parse_go_duration("10")
    assert echo_set_headers(["X-A: 1, x-b: 2", "X-A: 3"]) == [("X-A", "1,3"), ("x-b", "2")]
    assert go_json({"a": ["<&>"]}) == b'{\n "a": [\n  "\\u003c\\u0026\\u003e"\n ]\n}'


async def test_echo_json_headers_and_special_paths(api, node1, pods) -> None:
    env = [{"name": "SERVICE_NAME", "value": "infra-backend-v1"}]
    await create_bound(api.client, pod("echo-basic", echo_container(env=env)))
    p = await wait_pod(pods, "echo-basic", running_ready)
    ip = p["status"]["podIP"]

    code, body, head = await curl(f"http://{ip}:3000/some//path?x=1&y=2", "-H", "X-Foo: a", "-H", "x-foo: b",
                                  "-H", "Host: example.com")
    assert code == 0, head
    doc = json.loads(body)
    assert doc == {
        "path": "/some//path?x=1&y=2", "host": "example.com", "method": "GET", "proto": "HTTP/1.1",
        "headers": {"Accept": ["*/*"], "User-Agent": doc["headers"]["User-Agent"], "X-Foo": ["a", "b"]},
        "httpPort": "3000", "namespace": "default", "ingress": "", "service": "infra-backend-v1", "pod": "echo-basic",
    }
    # Go's encoding/json: one-space indent, "&" written as \u0026.
    assert body.startswith('{\n "path": "/some//path?x=1\\u0026y=2",\n "host": "example.com",')
    assert "content-type: application/json" in head.lower() and "x-content-type-options: nosniff" in head.lower()

    # X-Echo-Set-Header: each "Name: value" pair is answered as a header, its name's casing kept.
    resp, body = await h11_request(ip, 3000, "/echo", [("Host", "h"), ("X-Echo-Set-Header", "X-Foo: one, x-bar: two"),
                                                       ("X-Echo-Set-Header", "X-Foo: three")])
    raw = {n.decode(): v.decode() for n, v in resp.headers.raw_items()}
    assert raw["X-Foo"] == "one,three" and raw["x-bar"] == "two"
    assert json.loads(body)["headers"]["X-Echo-Set-Header"] == ["X-Foo: one, x-bar: two", "X-Foo: three"]

    code, body, head = await curl(f"http://{ip}:3000/health")
    assert body == "OK" and head.startswith("HTTP/1.1 200")
    code, body, head = await curl(f"http://{ip}:3000/status/418")
    assert head.startswith("HTTP/1.1 418") and body == ""
    code, body, head = await curl(f"http://{ip}:3000/status/418?x=1")  # matched on the raw target: 400
    assert head.startswith("HTTP/1.1 400")
    code, body, head = await curl(f"http://{ip}:3000/?delay=bogus")
    assert head.startswith("HTTP/1.1 500") and json.loads(body) == {"message": 'time: invalid duration "bogus"'}
    code, body, head = await curl(f"http://{ip}:3000/?delay=10ms")
    assert head.startswith("HTTP/1.1 200") and json.loads(body)["path"] == "/?delay=10ms"

    # /retry: the first succeedAfter attempts of a uuid fail (reset, or the given status), then it echoes.
    code, body, head = await curl(f"http://{ip}:3000/retry/x?uuid=u1&succeedAfter=1")
    assert code in (52, 56), (code, head)  # empty reply / connection reset
    code, body, head = await curl(f"http://{ip}:3000/retry/x?uuid=u1&succeedAfter=1")
    assert head.startswith("HTTP/1.1 200") and json.loads(body)["path"] == "/retry/x?uuid=u1&succeedAfter=1"
    code, body, head = await curl(f"http://{ip}:3000/retry/x?uuid=u2&succeedAfter=2&responseCode=503")
    assert head.startswith("HTTP/1.1 503")
    code, body, head = await curl(f"http://{ip}:3000/retry/x?succeedAfter=2")
    assert head.startswith("HTTP/1.1 400") and body == "uuid is required"

    # h2c on 3001: HTTP/2 with prior knowledge is echoed; plain HTTP/1.1 is refused.
    code, body, head = await curl("--http2-prior-knowledge", f"http://{ip}:3001/h2?q=1")
    assert code == 0 and head.startswith("HTTP/2 200")
    doc = json.loads(body)
    assert doc["proto"] == "HTTP/2.0" and doc["path"] == "/h2?q=1" and doc["host"] == f"{ip}:3001"
    code, body, head = await curl(f"http://{ip}:3001/")
    assert head.startswith("HTTP/1.1 400") and body == "Expected h2c request"
    # An HTTP/1.1 request offering the h2c upgrade is echoed over HTTP/1.1 (the upgrade is not taken).
    code, body, head = await curl("--http2", f"http://{ip}:3001/up")
    assert head.startswith("HTTP/1.1 200") and json.loads(body)["headers"]["Upgrade"] == ["h2c"]


async def test_websocket_echo(api, node1, pods) -> None:
    await create_bound(api.client, pod("echo-ws", echo_container()))
    p = await wait_pod(pods, "echo-ws", running_ready)
    ip = p["status"]["podIP"]
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(ip, 3000)
        async with stream:
            await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some(4096)
            head, _, rest = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101") and b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
            mask = b"\x01\x02\x03\x04"
            payload = b"hello"
            await stream.send_all(b"\x81\x85" + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))
            while len(rest) < 7:
                rest += await stream.receive_some(4096)
            assert rest[:7] == b"\x81\x05hello"


def test_curl_is_real() -> None:
    assert subprocess.run(["curl", "--version"], capture_output=True).returncode == 0


async def test_tcp_and_udp_echo_modes(api, node1, pods, tmp_path) -> None:
    from tests.node.netutil import udp_ask
    from tests.node.test_volumes import secret, server_cert
    from tests.support.certs import CA

    ca = CA.new("l4")
    crt, key = server_cert(ca, "abc.example.com")
    await api.client.create(secret("l4-cert", {"tls.crt": crt, "tls.key": key}))
    tcp_env = [{"name": "TCP_ECHO_SERVER", "value": "1"},
               {"name": "TLS_SERVER_CERT", "value": "/etc/secret-volume/crt"},
               {"name": "TLS_SERVER_PRIV_KEY", "value": "/etc/secret-volume/key"}]
    vol = {"name": "secret-volume", "secret": {"secretName": "l4-cert",
                                               "items": [{"key": "tls.crt", "path": "crt"}, {"key": "tls.key", "path": "key"}]}}
    await create_bound(api.client, pod("tcp-backend", echo_container(
        env=tcp_env, volumeMounts=[{"name": "secret-volume", "mountPath": "/etc/secret-volume"}]), volumes=[vol]))
    await create_bound(api.client, pod("udp-backend", echo_container(env=[{"name": "UDP_ECHO_SERVER", "value": "1"}])))
    ip = (await wait_pod(pods, "tcp-backend", running_ready))["status"]["podIP"]
    uip = (await wait_pod(pods, "udp-backend", running_ready))["status"]["podIP"]

    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(ip, 3000)
        async with stream:
            await stream.send_all(b"PING\nIS_TLS\nTEST\n")
            data = b""
            while data.count(b"\n") < 4:
                data += await stream.receive_some(65536)
    welcome, pong, is_tls, test = data.decode().splitlines()[:4]
    assert (welcome, pong, is_tls) == ("Gateway API Test TCP Server", "PONG", "false")
    assert json.loads(test) == {"namespace": "default", "ingress": "", "service": "", "pod": "tcp-backend",
                                "tcpport": "3000", "tlsport": "8443", "isTLS": False}

    (tmp_path / "ca.crt").write_bytes(ca.pem())
    sctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    with trio.fail_after(10):
        tls = trio.SSLStream(await trio.open_tcp_stream(ip, 8443), sctx, server_hostname="abc.example.com")
        async with tls:
            await tls.send_all(b"TEST\n")
            data = b""
            while data.count(b"\n") < 2:
                data += await tls.receive_some(65536)
    doc = json.loads(data.decode().splitlines()[1])
    assert doc["isTLS"] is True and doc["tls"]["serverName"] == "abc.example.com"
    assert doc["tls"]["version"] == "TLS 1.3" and doc["tls"]["cipherSuite"].startswith("TLS_")

    reply = json.loads(await udp_ask(uip, 8080, b"hello"))
    assert reply == {"request": "hello", "namespace": "default", "ingress": "", "service": "", "pod": "udp-backend"}


def pb_decode(data: bytes) -> list[tuple[int, bytes]]:
    """The length-delimited fields of a protobuf message: (field number, bytes)."""
    out, pos = [], 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        length, pos = _varint(data, pos)
        assert key & 7 == 2
        out.append((key >> 3, data[pos:pos + length]))
        pos += length
    return out


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos


async def test_grpc_echo_mode_with_curl(api, node1, pods, tmp_path) -> None:
    await create_bound(api.client, pod("grpc-backend", echo_container(env=[{"name": "GRPC_ECHO_SERVER", "value": "1"}])))
    ip = (await wait_pod(pods, "grpc-backend", running_ready))["status"]["podIP"]
    (tmp_path / "req").write_bytes(b"\x00\x00\x00\x00\x00")  # an empty EchoRequest, uncompressed
    svc = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho"
    grpc = ["--http2-prior-knowledge", "-X", "POST", "-H", "content-type: application/grpc", "-H", "te: trailers",
            "-H", "x-grpc-test: yes", "--data-binary", f"@{tmp_path / 'req'}", "-o", str(tmp_path / "resp")]
    code, _, head = await curl(*grpc, f"http://{ip}:3000/{svc}/EchoTwo")
    assert code == 0 and head.startswith("HTTP/2 200") and "grpc-status: 0" in head, head
    raw = (tmp_path / "resp").read_bytes()
    assert raw[0] == 0 and int.from_bytes(raw[1:5], "big") == len(raw) - 5
    (field, assertions), = pb_decode(raw[5:])
    fields = pb_decode(assertions)
    assert field == 1 and fields[0] == (1, f"/{svc}/EchoTwo".encode())
    headers = [tuple(v for _, v in pb_decode(h)) for n, h in fields if n == 2]
    assert (b"x-grpc-test", b"yes") in headers and (b"content-type", b"application/grpc") in headers
    assert (3, f"{ip}:3000".encode()) in fields
    context = dict(pb_decode(next(v for n, v in fields if n == 4)))
    assert context == {1: b"default", 4: b"grpc-backend"}

    code, _, head = await curl(*grpc, f"http://{ip}:3000/{svc}/EchoThree")
    assert "grpc-status: 12" in head and "grpc-message: method EchoThree not implemented" in head
