"""``client``: Istio's echo client, the command the Gateway API mesh suite execs in the echo-advanced pods.

    client URL [--method=M] [-H Name:value ...] [--count=N] [--timeout=5s] [--qps=Q] [--msg=M]
               [-L|--follow-redirects] [--server-name=S] [--http2] [--insecure-skip-verify]

``kubectl exec POD -c echo -- client http://echo/path`` (in kmesh ``kmesh exec -n NS POD -- client ...``)
runs this module inside the pod's network namespace, as a plain process: its
connections leave the pod like the app's own, so a sidecar's redirect rules
catch them. Schemes: ``http``, ``https`` (any certificate is accepted, SNI is
the Host), ``tcp`` (sends ``--msg`` and a newline, prints what comes back);
requests are HTTP/1.1 (``--http2`` and Istio's other switches are accepted
and have no effect; ``grpc://`` is not spoken).

What it prints is what Istio's forwarder prints, one block per request, in
request order, each ended by a blank line (the suite's ``parseMultipleResponses``
splits on it)::

    [0] Url=http://echo/
    [0] Header=Version:two          (each request header given with -H)
    [0] StatusCode=200
    [0] ResponseHeader=Content-Type:application/text
    [0 body] ServiceVersion=...     (each non-empty line of the body)

Requests run ``min(count, 10)`` at a time (keep-alive connections, one per
worker), or spaced out by ``--qps``. A request that fails is reported on stderr
and the exit status is 1, after the answers that did come are printed.
This module imports only the standard library: it starts as a fresh process
for every exec.
"""

from __future__ import annotations

import csv
import http.client
import socket
import ssl
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

DEFAULT_TIMEOUT = 5.0
MAX_WORKERS = 10
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class UsageError(ValueError):
    """A bad command line."""


def parse_duration(text: str) -> float:
    """Seconds of a simple Go duration (``5s``, ``500ms``, ``1m30s``); a bare number is seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    total, num, unit = 0.0, "", ""
    for c in text + "\0":
        if c.isdigit() or c == ".":
            if unit:
                total += float(num) * _UNITS[unit]
                num, unit = "", ""
            num += c
        elif c == "\0" or c.isalpha() or c == "µ":
            if c != "\0":
                unit += c
            elif num and unit in _UNITS:
                total += float(num) * _UNITS[unit]
            else:
                raise UsageError(f'invalid duration "{text}"')
    return total


class Options:
    """The parsed command line."""

    def __init__(self) -> None:
        self.url = ""
        self.method = ""
        self.headers: list[tuple[str, str]] = []
        self.count = 1
        self.timeout = DEFAULT_TIMEOUT
        self.qps = 0
        self.msg = "HelloWorld"
        self.follow = False
        self.server_name = ""


_VALUE_FLAGS = {"method", "header", "H", "count", "timeout", "qps", "msg", "server-name", "ca", "uds",
                "alpn", "client-cert", "client-key"}
_BOOL_FLAGS = {"follow-redirects", "L", "http2", "server-first", "insecure-skip-verify", "http3", "new-connection"}


def parse_args(argv: list[str]) -> Options:
    """pflag's rules (``--name=v``, ``--name v``, ``-H v``, ``-Hv``); -H values are comma-separated lists."""
    opts = Options()
    urls: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            urls.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            urls.append(arg)
            continue
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
        else:
            name, value = arg[1:2], arg[2:]
            eq = "=" if value else ""
            value = value.removeprefix("=")
        if name in _BOOL_FLAGS:
            if name in ("follow-redirects", "L"):
                opts.follow = value.lower() not in ("false", "0") if eq else True
            continue
        if name not in _VALUE_FLAGS:
            raise UsageError(f"unknown flag: {arg}")
        if not eq:
            if i >= len(argv):
                raise UsageError(f"flag needs an argument: {arg}")
            value = argv[i]
            i += 1
        if name in ("header", "H"):
            for item in next(csv.reader([value])) if value else []:
                parts = item.split(":")
                if len(parts) != 2:
                    raise UsageError(f'invalid header format: "{item}" (want name:value)')
                opts.headers.append((parts[0], parts[1].strip(" ")))
        elif name == "method":
            opts.method = value
        elif name in ("count", "qps"):
            try:
                setattr(opts, name, int(value))
            except ValueError:
                raise UsageError(f'invalid argument "{value}" for "--{name}" flag') from None
        elif name == "timeout":
            opts.timeout = parse_duration(value)
        elif name == "msg":
            opts.msg = value
        elif name == "server-name":
            opts.server_name = value
    if len(urls) != 1:
        raise UsageError(f"accepts 1 arg(s), received {len(urls)}")
    url = urls[0]
    opts.url = url if "://" in url else "http://" + url
    if opts.count < 1:
        opts.count = 1
    return opts


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, raw path with query) — the path kept byte for byte, as Istio sends it."""
    scheme, _, rest = url.partition("://")
    slash = rest.find("/")
    authority, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
    parts = urlsplit(f"{scheme}://{authority}")
    default = {"http": 80, "https": 443}.get(scheme.lower(), 0)
    return scheme.lower(), parts.hostname or "", parts.port or default, path


class Worker:
    """One keep-alive connection, reused for the requests this worker sends."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.conn: http.client.HTTPConnection | None = None

    def _connection(self, scheme: str, host: str, port: int, sni: str) -> http.client.HTTPConnection:
        if self.conn is None:
            if scheme == "https":
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                ctx.set_alpn_protocols(["http/1.1"])
                conn: http.client.HTTPConnection = _SNIConnection(host, port, timeout=self.opts.timeout,
                                                                  context=ctx, sni=sni)
            else:
                conn = http.client.HTTPConnection(host, port, timeout=self.opts.timeout)
            self.conn = conn
        return self.conn

    def http(self, index: int, url: str) -> str:
        """One HTTP request; its output block."""
        opts = self.opts
        scheme, host, port, path = split_url(url)
        out = [f"[{index}] Url={url}\n"]
        host_header = ""
        extra: list[tuple[str, str]] = []
        for name, value in opts.headers:
            out.append(f"[{index}] Header={name}:{value}\n")
            if name.lower() == "host":
                host_header = value
            else:
                extra.append((name, value))
        authority = host_header or (host if port in (80, 443) and scheme in ("http", "https") else f"{host}:{port}")
        if ":" in host and not host.startswith("["):
            authority = host_header or f"[{host}]:{port}"
        for attempt in (0, 1):  # a kept-alive connection the server closed meanwhile: once more on a new one
            conn = self._connection(scheme, host, port, opts.server_name or host_header or host)
            try:
                conn.putrequest(opts.method or "GET", path, skip_host=True, skip_accept_encoding=True)
                conn.putheader("Host", authority)
                conn.putheader("User-Agent", "Go-http-client/1.1")
                for name, value in extra:
                    conn.putheader(name, value)
                conn.endheaders()
                resp = conn.getresponse()
                body = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt:
                    raise
        if resp.will_close:
            self.close()
        out.append(f"[{index}] StatusCode={resp.status}\n")
        for name in sorted({canonical(n) for n, _ in resp.getheaders()}):
            for value in [v for n, v in resp.getheaders() if canonical(n) == name]:
                out.append(f"[{index}] ResponseHeader={name}:{value}\n")
        for line in body.decode("utf-8", "replace").split("\n"):
            if line:
                out.append(f"[{index} body] {line}\n")
        return "".join(out)

    def tcp(self, index: int, url: str) -> str:
        """One TCP exchange: send the message, read until the server closes or echoes it back."""
        _, host, port, _ = split_url(url)
        out = [f"[{index}] Url={url}\n"]
        with socket.create_connection((host, port), timeout=self.opts.timeout) as s:
            s.sendall(self.opts.msg.encode() + b"\n")
            data = b""
            while self.opts.msg.encode() not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        for line in data.decode("utf-8", "replace").split("\n"):
            if line:
                out.append(f"[{index} body] {line}\n")
        return "".join(out)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class _SNIConnection(http.client.HTTPSConnection):
    """HTTPS with the SNI name given apart from the address dialled."""

    def __init__(self, host: str, port: int, *, timeout: float, context: ssl.SSLContext, sni: str) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._sni = sni
        self._ctx = context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._ctx.wrap_socket(self.sock, server_hostname=self._sni or None)


def canonical(name: str) -> str:
    """Go's canonical header key (``content-type`` → ``Content-Type``)."""
    return "-".join(p[:1].upper() + p[1:].lower() for p in name.split("-"))


def run(opts: Options) -> tuple[list[str | None], list[str]]:
    """Send ``opts.count`` requests; (output block per request or None, error messages)."""
    scheme = opts.url.split("://", 1)[0].lower()
    if scheme not in ("http", "https", "tcp"):
        return [None] * opts.count, [f"unsupported scheme {scheme!r} (this client speaks http, https and tcp)"]
    outputs: list[str | None] = [None] * opts.count
    errors: list[str] = []
    lock = threading.Lock()
    local = threading.local()
    workers: list[Worker] = []
    start = time.monotonic()

    def one(index: int) -> None:
        if opts.qps > 0:
            time.sleep(max(0.0, start + index / opts.qps - time.monotonic()))
        worker = getattr(local, "worker", None)
        if worker is None:
            worker = local.worker = Worker(opts)
            with lock:
                workers.append(worker)
        url = opts.url
        try:
            for _ in range(10 if opts.follow else 1):
                if scheme == "tcp":
                    outputs[index] = worker.tcp(index, url)
                    break
                block = worker.http(index, url)
                outputs[index] = block
                location = _redirect_target(block, index, url)
                if not location:
                    break
                url = location
                worker.close()
        except (OSError, http.client.HTTPException, ValueError) as exc:
            worker.close()
            with lock:
                errors.append(f"request {index} to {url}: {exc or type(exc).__name__}")

    with ThreadPoolExecutor(max_workers=min(opts.count, MAX_WORKERS)) as pool:
        list(pool.map(one, range(opts.count)))
    for w in workers:
        w.close()
    return outputs, errors


def _redirect_target(block: str, index: int, url: str) -> str:
    code = ""
    location = ""
    for line in block.splitlines():
        if line.startswith(f"[{index}] StatusCode="):
            code = line.split("=", 1)[1]
        elif line.lower().startswith(f"[{index}] responseheader=location:"):
            location = line.split(":", 1)[1]
    if code not in ("301", "302", "303", "307", "308") or not location:
        return ""
    if "://" in location:
        return location
    scheme, _, rest = url.partition("://")
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}{location if location.startswith('/') else '/' + location}"


def main(argv: list[str] | None = None) -> int:
    """The command: print the blocks, exit 1 if any request failed."""
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    outputs, errors = run(opts)
    text = "".join(block + "\n" for block in outputs if block is not None)
    sys.stdout.write(text)
    sys.stdout.flush()
    if errors:
        print(f"Error {len(errors)}/{opts.count} requests had errors; first error: {errors[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
