"""echo-advanced (Istio's echo, the Gateway API mesh suite's backend) and its ``client``, on loopback.

The server runs as the agent runs a built-in app (``main(AppContext)``); the client runs as the
process an exec starts (``apps.exec_argv``), and its output is read back the way the suite's
``conformance/utils/echo/parse.go`` reads it (``parse_response`` below is its Python twin).
"""

from __future__ import annotations

import re
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
import trio

from kmesh.node.apps import AppContext, exec_argv, lookup
from kmesh.node.apps.echoadvanced import FlagError, main, parse_args, pick_code
from kmesh.node.apps.echoadvanced_client import parse_args as client_args
from kmesh.node.runtime import Sandbox

IMAGE = "registry.k8s.io/gateway-api/conformance/echo-advanced:v0.1.0"


# ---------------------------------------------------------------- parse.go in Python

_FIELDS = {"Version": "ServiceVersion", "Port": "ServicePort", "Code": "StatusCode", "URL": "URL", "Host": "Host",
           "Hostname": "Hostname", "Method": "Method", "Protocol": "Proto", "Alpn": "Alpn", "Cluster": "Cluster",
           "IP": "IP"}


@dataclass
class Parsed:
    """parse.go's Response: the first match of each ``Field=(.*)`` regex, and the header lines."""

    fields: dict[str, str]
    request_headers: dict[str, list[str]]
    response_headers: dict[str, str]

    def __getattr__(self, name: str) -> str:
        return self.fields.get(name, "")


def _canonical(name: str) -> str:
    return "-".join(p[:1].upper() + p[1:].lower() for p in name.split("-"))


def parse_response(output: str) -> Parsed:
    """``ParseResponse``: unanchored, case-sensitive ``Key=(.*)`` regexes, first match wins; RequestHeader values
    are added, ResponseHeader values set, under Go's canonical names."""
    fields = {}
    for attr, key in _FIELDS.items():
        m = re.search(key + "=(.*)", output)
        if m:
            fields[attr] = m.group(1)
    req: dict[str, list[str]] = {}
    for m in re.finditer("RequestHeader=(.*)", output):
        name, sep, value = m.group(1).partition(":")
        if sep:
            req.setdefault(_canonical(name), []).append(value)
    resp: dict[str, str] = {}
    for m in re.finditer("ResponseHeader=(.*)", output):
        name, sep, value = m.group(1).partition(":")
        if sep:
            resp[_canonical(name)] = value
    return Parsed(fields, req, resp)


def parse_multiple(output: str) -> list[Parsed]:
    """``parseMultipleResponses``: sections split on a blank line, those with a Hostname or a Code kept."""
    out = []
    for section in output.split("\n\n"):
        section = section.strip()
        if section:
            r = parse_response(section)
            if r.Hostname or r.Code:
                out.append(r)
    return out


# ---------------------------------------------------------------- the server


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Server:
    http: int
    tls: int
    tcp: int
    grpc: int
    ctx: AppContext


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Server]:
    """echo-advanced with the manifests' flags (TLS from files that do not exist: the in-memory certificate)."""
    http, tls, tcp, grpc = _free_ports(4)
    sandbox = Sandbox("uid", "ns", "echo-v1-abc", "127.0.0.1", "127.0.0.1", tmp_path, "echo-v1-abc-xyz")
    args = [f"--tcp={tcp}", f"--port={http}", f"--grpc={grpc}", f"--port={tls}", f"--tls={tls}",
            "--crt=/nonexistent/cert.crt", "--key=/nonexistent/cert.key"]
    ctx = AppContext(pod={}, container={"name": "echo", "image": IMAGE}, args=args, env={}, sandbox=sandbox,
                     log_path=tmp_path / "echo.log", hostname="echo-v1-abc-xyz")
    done = trio.Event()

    async def run() -> None:
        try:
            await main(ctx)
        finally:
            done.set()

    nursery.start_soon(run)
    with trio.fail_after(10):
        for port in (http, tls, tcp, grpc):
            while True:
                try:
                    s = await trio.open_tcp_stream("127.0.0.1", port)
                    await s.aclose()
                    break
                except OSError:
                    await trio.sleep(0.02)
    yield Server(http, tls, tcp, grpc, ctx)
    ctx.sigterm.set()
    with trio.fail_after(5):
        await done.wait()


async def _raw(port: int, data: bytes, *, tls: bool = False, until: bytes = b"") -> bytes:
    with trio.fail_after(5):
        stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["http/1.1"])
            stream = trio.SSLStream(stream, ctx, server_hostname="echo", https_compatible=True)
        async with stream:
            await stream.send_all(data)
            out = b""
            while not (until and until in out):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                out += chunk
            return out


def _body(raw: bytes) -> tuple[str, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.decode(), body.decode()


async def test_http1_answer_is_istio_text(server: Server) -> None:
    raw = await _raw(server.http, b"GET /hello?x=1 HTTP/1.1\r\nHost: echo\r\nX-Multi: a\r\nx-multi: b\r\n"
                                  b"Connection: close\r\n\r\n")
    head, body = _body(raw)
    assert head.startswith("HTTP/1.1 200 OK")
    assert "Content-Type: application/text" in head
    lines = body.splitlines()
    assert lines[:10] == ["ServiceVersion=", f"ServicePort={server.http}", "Host=echo", "URL=/hello?x=1", "Cluster=",
                          "IstioVersion=", "Method=GET", "Proto=HTTP/1.1", "IP=127.0.0.1", "Alpn="]
    assert "RequestHeader=X-Multi:a" in lines and "RequestHeader=X-Multi:b" in lines
    assert "RequestHeader=Connection:close" in lines
    assert not any(line.startswith("RequestHeader=Host:") for line in lines)
    assert lines[-1] == "Hostname=echo-v1-abc-xyz"


async def test_http_query_codes_headers(server: Server) -> None:
    raw = await _raw(server.http, b"GET /?codes=418&headers=X-A:1,X-B:2 HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n")
    head, body = _body(raw)
    assert head.startswith("HTTP/1.1 418 ")
    assert "X-A: 1" in head and "X-B: 2" in head
    assert "Hostname=echo-v1-abc-xyz" in body
    assert pick_code("500:0,200:1") == (200, "")
    assert pick_code("99")[0] == 400


async def test_h2c_prior_knowledge(server: Server) -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "GET"), (":path", "/h2"), (":scheme", "http"), (":authority", "echo:80"),
                          ("x-h", "v")], end_stream=True)
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", server.http)
        async with stream:
            await stream.send_all(conn.data_to_send())
            body, status, ended = b"", "", False
            while not ended:
                for ev in conn.receive_data(await stream.receive_some(65536)):
                    if isinstance(ev, h2.events.ResponseReceived):
                        status = dict(ev.headers)[":status"]
                    elif isinstance(ev, h2.events.DataReceived):
                        body += ev.data
                    elif isinstance(ev, h2.events.StreamEnded):
                        ended = True
                await stream.send_all(conn.data_to_send())
    text = body.decode()
    assert status == "200"
    assert "Proto=HTTP/2.0" in text and "Host=echo:80" in text and "URL=/h2" in text
    assert "RequestHeader=X-H:v" in text


async def test_tls_port_self_signed_and_alpn(server: Server) -> None:
    raw = await _raw(server.tls, b"GET /tls HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n", tls=True)
    head, body = _body(raw)
    assert head.startswith("HTTP/1.1 200")
    assert f"ServicePort={server.tls}" in body and "Alpn=http/1.1" in body
    assert "self-signed" in (server.ctx.log_path).read_text()


async def _grpc(port: int, path: str, message: bytes) -> tuple[dict[str, str], bytes]:
    """One unary gRPC call over h2c: (headers and trailers, the response message)."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":path", path), (":scheme", "http"), (":authority", "echo:7070"),
                          ("content-type", "application/grpc"), ("te", "trailers"), ("x-md", "m")])
    conn.send_data(1, struct.pack("!BI", 0, len(message)) + message, end_stream=True)
    headers: dict[str, str] = {}
    body = b""
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(conn.data_to_send())
            ended = False
            while not ended:
                for ev in conn.receive_data(await stream.receive_some(65536)):
                    if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                        headers.update(dict(ev.headers))
                    elif isinstance(ev, h2.events.DataReceived):
                        body += ev.data
                    elif isinstance(ev, h2.events.StreamEnded):
                        ended = True
                await stream.send_all(conn.data_to_send())
    return headers, body[5:]


async def test_grpc_echo(server: Server) -> None:
    headers, msg = await _grpc(server.grpc, "/proto.EchoTestService/Echo", b"\x0a\x05hello")  # message: "hello"
    assert headers["grpc-status"] == "0"
    assert msg[0] == 0x0A
    text = msg[2:].decode() if msg[1] < 0x80 else msg[3:].decode()
    r = parse_response(text)
    assert (r.Code, r.Host, r.Protocol, r.Port, r.Hostname) == ("200", "echo:7070", "GRPC", str(server.grpc),
                                                                 "echo-v1-abc-xyz")
    assert "Echo=hello\n" in text and r.request_headers["X-Md"] == ["m"]
    headers, _ = await _grpc(server.grpc, "/proto.EchoTestService/ForwardEcho", b"")
    assert headers["grpc-status"] == "12"


async def test_tcp_echo(server: Server) -> None:
    out = (await _raw(server.tcp, b"HelloWorld\n", until=b"HelloWorld\n")).decode()
    assert "StatusCode=200\n" in out and f"ServicePort={server.tcp}\n" in out
    assert "Hostname=echo-v1-abc-xyz\n" in out and out.endswith("HelloWorld\n")


def test_flags() -> None:
    opts = parse_args([])
    assert (opts.http, opts.grpc, opts.tcp, opts.tls) == ([8080], [7070], [9090], [])
    opts = parse_args(["--port=1,2", "--port", "3", "--tls=3", "--version=v2"])
    assert opts.http == [1, 2, 3] and opts.tls == [3] and opts.version == "v2" and opts.tcp == [9090]
    with pytest.raises(FlagError):
        parse_args(["--port=x"])
    with pytest.raises(FlagError):
        parse_args(["--bogus=1"])
    c = client_args(["http://echo/x", "-H", "A:1", "-HB: 2", "--header=C:3,D:4", "--count", "3", "--method=PUT"])
    assert c.headers == [("A", "1"), ("B", "2"), ("C", "3"), ("D", "4")]
    assert (c.count, c.method, c.url) == (3, "PUT", "http://echo/x")
    assert client_args(["echo:8080"]).url == "http://echo:8080"


# ---------------------------------------------------------------- the client, as an exec runs it


def test_exec_argv_maps_the_image_tools() -> None:
    assert lookup(IMAGE) is not None
    argv = exec_argv(IMAGE, ["client", "http://x/"])
    assert argv[:2] == [sys.executable, "-P"] and argv[2].endswith("echoadvanced_client.py") and argv[3:] == ["http://x/"]
    assert exec_argv(IMAGE, ["/usr/local/bin/client"])[2].endswith("echoadvanced_client.py")
    assert exec_argv(IMAGE, ["sh", "-c", "true"]) == ["sh", "-c", "true"]
    assert exec_argv("registry.k8s.io/e2e-test-images/agnhost:2.52", ["client"]) == ["client"]


async def _client(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(exec_argv(IMAGE, ["client", *args]), capture_stdout=True, capture_stderr=True,
                                  check=False)


async def test_client_output_parses_as_the_suite_parses_it(server: Server) -> None:
    url = f"http://127.0.0.1:{server.http}/path?q=1"
    proc = await _client(url, "--method=POST", "-H", "Version:two", "-H", "Host:echo", "-H", "x-lower: v ")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert out.startswith(f"[0] Url={url}\n") and out.endswith("\n\n")
    r = parse_response(out)
    assert (r.Code, r.Method, r.Host, r.URL, r.Hostname, r.Protocol) == (
        "200", "POST", "echo", "/path?q=1", "echo-v1-abc-xyz", "HTTP/1.1")
    assert r.Port == str(server.http) and r.IP == "127.0.0.1"
    assert r.request_headers["Version"] == ["two"] and r.request_headers["X-Lower"] == ["v"]
    assert r.response_headers["Content-Type"] == "application/text"
    assert all(line.startswith(("[0] ", "[0 body] ")) for line in out.strip().splitlines())


async def test_client_count_gives_one_section_each(server: Server) -> None:
    proc = await _client(f"http://127.0.0.1:{server.http}/?headers=X-Set:yes", "--count=25")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    sections = parse_multiple(out)
    assert len(sections) == 25
    assert all(s.Code == "200" and s.response_headers.get("X-Set") == "yes" for s in sections)
    assert [int(m) for m in re.findall(r"^\[(\d+)\] Url=", out, re.M)] == list(range(25))


async def test_client_status_redirect_tls_tcp_and_failure(server: Server) -> None:
    proc = await _client(f"http://127.0.0.1:{server.http}/?codes=302&headers=Location:/next")
    r = parse_response(proc.stdout.decode())
    assert proc.returncode == 0 and r.Code == "302" and r.response_headers["Location"] == "/next"
    proc = await _client(f"https://127.0.0.1:{server.tls}/", "-H", "Host:echo")
    r = parse_response(proc.stdout.decode())
    assert proc.returncode == 0, proc.stderr
    assert (r.Code, r.Alpn, r.Port) == ("200", "http/1.1", str(server.tls))
    proc = await _client(f"tcp://127.0.0.1:{server.tcp}", "--msg=ping")
    out = proc.stdout.decode()
    assert proc.returncode == 0 and parse_response(out).Code == "200" and "[0 body] ping" in out
    dead = _free_ports(1)[0]
    proc = await _client(f"http://127.0.0.1:{dead}/", "--timeout=1s")
    assert proc.returncode == 1 and b"requests had errors" in proc.stderr


async def test_exec_in_a_container_of_the_image_runs_its_client(server: Server) -> None:
    """The runtimes' exec path (``exec_in_container``, behind the pod's namespace prefix in the netns runtime)
    runs the image's tool; other images' argv[0] are looked up on PATH as before."""
    from kmesh.node.containers import exec_in_container

    res = await exec_in_container({"name": "echo", "image": IMAGE}, ["client", f"http://127.0.0.1:{server.http}/x"],
                                  {"PATH": "/usr/bin:/bin"}, 10)
    assert res.exit_code == 0, res.output
    assert parse_response(res.output.decode()).URL == "/x"
    res = await exec_in_container({"name": "c", "image": "busybox"}, ["client"], {"PATH": "/nonexistent"}, 10)
    assert res.exit_code != 0
