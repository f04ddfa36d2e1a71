"""What the Gateway API's conformance echo server (``echo-basic``) answers to one request, protocol aside.

The HTTP/1.1 and HTTP/2 front ends (``echobasic_h1``/``echobasic_h2``) turn
what they read into an ``EchoRequest`` and write back the ``EchoResponse``
that ``EchoServer.handle`` returns. Facts kept from upstream's Go server:

- routes (Go ServeMux after ``//`` → ``/``): ``/health`` answers ``OK``,
  ``/status/NNN`` answers status NNN (matched on the raw request target),
  ``/retry/...?uuid=U&succeedAfter=N[&responseCode=C][&delayRetry=D]`` fails
  the first N attempts per uuid (a TCP reset, or status C), then echoes;
  ``/ws`` is the WebSocket echo; everything else is the JSON echo;
- the echo body is indented JSON (one space) with ``path`` (the raw request
  target), ``host``, ``method``, ``proto``, ``headers`` (canonical names, lists
  of values, without Host), ``httpPort``, ``namespace``, ``ingress``,
  ``service``, ``pod`` and, over TLS, ``tls`` (version, serverName,
  negotiatedProtocol, cipherSuite, peerCertificates);
- ``?delay=<Go duration>`` waits before answering; a bad duration is a 500
  with ``{"message": ...}``;
- every ``X-Echo-Set-Header: Name: value, Other: value`` pair becomes a
  response header, name casing kept.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import parse_qs, unquote, urlsplit

import trio

_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_STATUS_RE = re.compile(r"^/status/(\d\d\d)$")
_NUMBER = re.compile(r"\d*(?:\.\d*)?")
_UNIT = re.compile(r"[^\d.]*")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def canonical_header(name: str) -> str:
    """Go's ``CanonicalMIMEHeaderKey``: ``x-foo-bar`` → ``X-Foo-Bar``; names with non-token bytes stay as they are."""
    if not name or any(c not in _TOKEN for c in name):
        return name
    out = []
    upper = True
    for c in name:
        out.append(c.upper() if upper else c.lower())
        upper = c == "-"
    return "".join(out)


class DurationError(ValueError):
    """A string Go's ``time.ParseDuration`` would reject (the message is Go's)."""


def parse_go_duration(text: str) -> float:
    """Seconds of a Go duration such as ``300ms``, ``1.5h``, ``2h45m`` or ``-1s`` (Go's errors otherwise)."""
    s = text
    sign = 1.0
    if s[:1] in ("+", "-") and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise DurationError(f'time: invalid duration "{text}"')
    total = 0.0
    pos = 0
    while pos < len(s):
        num = _NUMBER.match(s, pos).group(0)  # type: ignore[union-attr]
        if num in ("", "."):
            raise DurationError(f'time: invalid duration "{text}"')
        pos += len(num)
        unit = _UNIT.match(s, pos).group(0)  # type: ignore[union-attr]
        pos += len(unit)
        if not unit:
            raise DurationError(f'time: missing unit in duration "{text}"')
        if unit not in _UNITS:
            raise DurationError(f'time: unknown unit "{unit}" in duration "{text}"')
        total += float(num) * _UNITS[unit]
    return sign * total


@dataclass
class EchoRequest:
    """One request as the Go server sees it: the raw target, the Host, the protocol and the header lines."""

    method: str
    target: str
    host: str
    proto: str
    headers: list[tuple[str, str]]
    tls: dict[str, object] | None = None
    can_reset: bool = True  # HTTP/1 can drop its connection (Go's Hijack); HTTP/2 cannot


@dataclass
class EchoResponse:
    """What to send back: status, header lines (names as given), body; or ``reset`` to abort the connection."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    reset: bool = False
    websocket: bool = False  # accept a WebSocket handshake and echo messages


def go_json(doc: object, *, indent: bool = True) -> bytes:
    """JSON as Go's ``json.MarshalIndent(v, "", " ")`` (or, ``indent=False``, ``json.Marshal``) writes it
    (``<``, ``>``, ``&`` escaped)."""
    if indent:
        text = json.dumps(doc, indent=1, ensure_ascii=False)
    else:
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    for c, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(c, esc)
    return text.encode()


def _base_headers(content_type: str | None) -> list[tuple[str, str]]:
    out = [("Date", formatdate(usegmt=True))]
    if content_type:
        out.append(("Content-Type", content_type))
    return out


def error_response(message: str, code: int) -> EchoResponse:
    """Go's ``processError``: ``{"message": ...}`` with the code."""
    body = go_json({"message": message}, indent=False)
    return EchoResponse(code, [*_base_headers("application/json"), ("X-Content-Type-Options", "nosniff")], body)


def clean_path(p: str) -> str:
    """Go's ``path.Clean`` as ServeMux uses it (rooted, a trailing slash kept)."""
    if not p:
        return "/"
    if not p.startswith("/"):
        p = "/" + p
    cleaned = posixpath.normpath(p)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    if p.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


class EchoServer:
    """The state of one echo-basic process: its context (env) and the retry attempts it has counted."""

    def __init__(self, env: dict[str, str], http_port: str) -> None:
        self.http_port = http_port
        self.context = {
            "namespace": env.get("NAMESPACE", ""),
            "ingress": env.get("INGRESS_NAME", ""),
            "service": env.get("SERVICE_NAME", ""),
            "pod": env.get("POD_NAME", ""),
        }
        self.attempts: dict[str, int] = {}
        self._retry_lock = trio.Lock()

    # ------------------------------------------------------------ routing

    async def handle(self, req: EchoRequest) -> EchoResponse:
        """The mux of the HTTP and HTTPS ports."""
        split = urlsplit(req.target) if req.target != "*" else None
        path = unquote(split.path) if split is not None else req.target
        query = split.query if split is not None else ""
        path = path.replace("//", "/")
        if req.method != "CONNECT" and path != "*":
            cleaned = clean_path(path)
            if cleaned != path:
                return self._redirect(req, cleaned, query)
        if path == "/health":
            return EchoResponse(200, _base_headers("text/plain; charset=utf-8"), b"OK")
        if path == "/ws":
            if not _is_ws(req):
                return EchoResponse(400, _base_headers("text/plain; charset=utf-8"), b"not websocket protocol")
            return EchoResponse(101, websocket=True)
        if path in ("/status", "/retry"):
            return self._redirect(req, path + "/", query)
        if path.startswith("/status/"):
            m = _STATUS_RE.match(req.target)
            return EchoResponse(int(m.group(1)) if m else 400, _base_headers(None))
        if path.startswith("/retry/"):
            return await self._retry(req, query)
        return await self.echo(req, query)

    def _redirect(self, req: EchoRequest, path: str, query: str) -> EchoResponse:
        url = path + ("?" + query if query else "")
        headers = [("Location", url)]
        body = b""
        if req.method in ("GET", "HEAD"):
            headers += _base_headers("text/html; charset=utf-8")
            body = f'<a href="{url}">Moved Permanently</a>.\n\n'.encode()
        else:
            headers += _base_headers(None)
        return EchoResponse(301, headers, body)

    # --------------------------------------------------------------- echo

    def assertions(self, req: EchoRequest) -> dict[str, object]:
        """The JSON document the echo answers (upstream's RequestAssertions)."""
        headers: dict[str, list[str]] = {}
        for name, value in req.headers:
            key = canonical_header(name)
            if key == "Host":
                continue
            headers.setdefault(key, []).append(value)
        doc: dict[str, object] = {
            "path": req.target, "host": req.host, "method": req.method, "proto": req.proto,
            "headers": dict(sorted(headers.items())), "httpPort": self.http_port, **self.context,
        }
        if req.tls is not None:
            doc["tls"] = req.tls
        return doc

    async def echo(self, req: EchoRequest, query: str) -> EchoResponse:
        """Upstream's echoHandler: optional ``?delay=``, then the JSON body and the X-Echo-Set-Header headers."""
        delay = _form_value(query, "delay")
        if delay:
            try:
                await trio.sleep(max(parse_go_duration(delay), 0.0))
            except DurationError as exc:
                return error_response(str(exc), 500)
        body = go_json(self.assertions(req))
        extra = echo_set_headers([v for n, v in req.headers if canonical_header(n) == "X-Echo-Set-Header"])
        extra = [(n, v) for n, v in extra if n not in ("Content-Type", "X-Content-Type-Options")]
        headers = [*extra, *_base_headers("application/json"), ("X-Content-Type-Options", "nosniff")]
        return EchoResponse(200, headers, body)

    async def _retry(self, req: EchoRequest, query: str) -> EchoResponse:
        uuid = _form_value(query, "uuid")
        if not uuid:
            return EchoResponse(400, _base_headers("text/plain; charset=utf-8"), b"uuid is required")
        try:
            succeed_after = int(_form_value(query, "succeedAfter"))
        except ValueError:
            return EchoResponse(400, _base_headers("text/plain; charset=utf-8"), b"succeedAfter is required")
        code: int | None = None
        try:
            code = int(_form_value(query, "responseCode"))
        except ValueError:
            pass
        async with self._retry_lock:
            if self.attempts.get(uuid, 0) < succeed_after:
                self.attempts[uuid] = self.attempts.get(uuid, 0) + 1
                delay = _form_value(query, "delayRetry")
                if delay:
                    try:
                        await trio.sleep(max(parse_go_duration(delay), 0.0))
                    except DurationError as exc:
                        return error_response(str(exc), 500)
                if code is not None:
                    return EchoResponse(code, _base_headers(None))
                if not req.can_reset:
                    return error_response("response writer does not support hijacking", 500)
                return EchoResponse(0, reset=True)
        return await self.echo(req, query)


def echo_set_headers(values: list[str]) -> list[tuple[str, str]]:
    """The response headers ``X-Echo-Set-Header`` values ask for: repeated names joined with ``,``."""
    out: dict[str, str] = {}
    for kv_list in values:
        for kv in kv_list.split(","):
            name, _, value = kv.strip().partition(":")
            if name in out:
                out[name] += "," + value.strip()
            else:
                out[name] = value
    return [(n, v.strip()) for n, v in out.items() if n and all(c in _TOKEN for c in n)]


def _form_value(query: str, key: str) -> str:
    values = parse_qs(query, keep_blank_values=True).get(key)
    return values[0] if values else ""


def _is_ws(req: EchoRequest) -> bool:
    hdr = {canonical_header(n): v for n, v in req.headers}
    return (
        req.method == "GET" and "websocket" in hdr.get("Upgrade", "").lower()
        and "upgrade" in hdr.get("Connection", "").lower() and bool(hdr.get("Sec-Websocket-Key"))
    )
