"""A minimal client for etcd's v3 JSON gRPC gateway (etcd >= 3.4).

Only what the store needs: unary POSTs (``/v3/kv/range``, ``put``, ``txn``,
``deleterange``, ``compaction``) and the streaming ``/v3/watch``. Keys and
values travel base64-encoded; 64-bit integers come back as strings. Errors
map onto the store's: a compacted revision is Gone, a future one
RevisionTooLarge, an unreachable server Unavailable.

``https://`` endpoints speak TLS; ``EtcdTLS`` names the CA that signed etcd's
server certificate and this client's certificate and key, as kube-apiserver's
``--etcd-cafile``, ``--etcd-certfile`` and ``--etcd-keyfile`` do (an etcd
started with ``--client-cert-auth`` refuses clients without one).
"""

from __future__ import annotations

import base64
import json
import ssl
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Sequence

import httpx

from kmesh.store.base import Gone, RevisionTooLarge, StoreError, Unavailable
from kmesh.store.etcd_transport import LeanTransport

Json = dict[str, Any]

_KV_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
_WATCH_TIMEOUT = httpx.Timeout(15.0, connect=5.0, read=None)
_GRPC_UNAVAILABLE = 14
_JSON_HEADERS = {"content-type": "application/json"}


def b64(data: bytes) -> str:
    """The gateway's encoding of a key or value."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """The bytes of a gateway-encoded key or value."""
    return base64.b64decode(text)


def range_end(prefix: bytes) -> bytes:
    """The etcd ``range_end`` that selects every key starting with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b"\0"  # every key
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


@dataclass(frozen=True)
class EtcdTLS:
    """TLS towards etcd: the CA file that verifies its server, and this client's certificate and key.

    ``cafile`` empty: the system's CAs. ``certfile``/``keyfile`` empty: no
    client certificate (an etcd with ``--client-cert-auth`` then refuses).
    """

    cafile: str = ""
    certfile: str = ""
    keyfile: str = ""

    def __post_init__(self) -> None:
        if bool(self.certfile) != bool(self.keyfile):
            raise ValueError("an etcd client certificate needs both its certificate file and its key file")

    def ssl_context(self) -> ssl.SSLContext:
        """A client context: etcd's server verified against ``cafile``, our certificate presented."""
        try:
            ctx = ssl.create_default_context(cafile=self.cafile or None)
            if self.certfile:
                ctx.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"cannot load the etcd TLS files: {e}") from e
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx


def split_endpoints(url: str | Sequence[str], *, secure: bool = False) -> list[str]:
    """``"etcd://a:2379,b:2379"`` or a list → ``["http://a:2379", "http://b:2379"]``.

    ``etcd://`` and scheme-less endpoints become ``https://`` when ``secure``
    (TLS files were given); explicit ``http://``/``https://`` stay as written.
    """
    parts = url.split(",") if isinstance(url, str) else list(url)
    default = "https://" if secure else "http://"
    out = []
    for part in parts:
        part = part.strip().rstrip("/")
        if not part:
            continue
        if part.startswith("etcd://"):
            part = default + part[len("etcd://") :]
        elif "://" not in part:
            part = default + part
        scheme = part.split("://", 1)[0].lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"etcd endpoint {part!r}: the scheme must be http, https or etcd")
        out.append(part)
    if not out:
        raise ValueError(f"no etcd endpoint in {url!r}")
    return out


def client_endpoints(url: str | Sequence[str], tls: EtcdTLS | None) -> list[str]:
    """The endpoints a client of ``url`` with ``tls`` talks to; ValueError for a plain http one with TLS files
    (the cluster's data is not sent in the clear to a server we meant to verify)."""
    endpoints = split_endpoints(url, secure=tls is not None)
    plain = [e for e in endpoints if e.lower().startswith("http://")]
    if tls is not None and plain:
        raise ValueError(f"etcd TLS files given, but {', '.join(plain)} is plain http (use https://)")
    return endpoints


def error_from(status: int, body: bytes) -> StoreError:
    """The store error for a gateway error response."""
    try:
        doc = json.loads(body)
        message = str(doc.get("message") or doc.get("error") or body[:200])
        code = int(doc.get("code", 0))
    except (ValueError, AttributeError):
        message, code = body[:200].decode("utf-8", "replace"), 0
    return error_for(message, code, status)


def error_for(message: str, code: int = 0, status: int = 0) -> StoreError:
    """The store error for an etcd error message / gRPC code."""
    if "required revision has been compacted" in message:
        return Gone(message)
    if "required revision is a future revision" in message:
        return RevisionTooLarge(message)
    if code == _GRPC_UNAVAILABLE or status in (502, 503, 504):
        return Unavailable(f"etcd: {message}")
    return StoreError(f"etcd: {message}")


class EtcdClient:
    """POSTs to the gateway of the first reachable endpoint (fails over on refusal).

    ``tls``: the CA and client certificate for ``https://`` endpoints; with it,
    ``etcd://host:port`` means https, and a plain ``http://`` endpoint is refused
    rather than sent the cluster's data in the clear.
    """

    def __init__(self, url: str | Sequence[str], tls: EtcdTLS | None = None) -> None:
        self.endpoints = client_endpoints(url, tls)
        self.tls = tls
        context = None
        if any(e.lower().startswith("https://") for e in self.endpoints):
            context = (tls or EtcdTLS()).ssl_context()
        self._current = 0
        # LeanTransport: a fraction of httpcore's CPU per request, and no pool
        # limit, so watches holding their connection open never block others.
        self._kv = httpx.AsyncClient(timeout=_KV_TIMEOUT, transport=LeanTransport(ssl_context=context))
        # Watch streams talk to their transport directly: httpx's response
        # iterators are async generators, which a stream dropped half-way
        # would leave to the garbage collector.
        self._streaming = LeanTransport(max_idle=0, ssl_context=context)
        self._streams: set[WatchStream] = set()
        self.closed = False

    async def call(self, path: str, body: Json) -> Json:
        """POST ``body`` to ``path`` (e.g. ``/v3/kv/range``) and return the JSON answer."""
        if self.closed:
            raise Unavailable("etcd client is closed")
        last: Exception | None = None
        for _ in range(len(self.endpoints)):
            base = self.endpoints[self._current]
            try:
                resp = await self._kv.post(base + path, content=json.dumps(body), headers=_JSON_HEADERS)
            except httpx.ConnectError as e:  # nothing was sent: safe to try the next one
                last = e
                self._current = (self._current + 1) % len(self.endpoints)
                continue
            except httpx.TransportError as e:
                raise Unavailable(f"etcd {base}: {e!r}") from e
            if resp.status_code != 200:
                raise error_from(resp.status_code, resp.content)
            answer: Json = json.loads(resp.content)
            return answer
        raise Unavailable(f"etcd unreachable at {', '.join(self.endpoints)}: {last!r}") from last

    @asynccontextmanager
    async def watch(self, create_request: Json) -> AsyncIterator[AsyncIterator[Json]]:
        """Open one watch stream; iterate its ``result`` messages.

        Raises Unavailable when the stream cannot be opened or breaks.
        """
        stream = WatchStream(self, create_request)
        try:
            await stream.open()
            yield stream
        finally:
            await stream.aclose()

    async def aclose(self) -> None:
        """Close every connection, open watch streams included (their readers get Unavailable)."""
        self.closed = True
        for stream in list(self._streams):
            await stream.aclose()
        await self._kv.aclose()
        await self._streaming.aclose()


class WatchStream:
    """One open ``/v3/watch`` stream, read message by message.

    Usable without ``async with`` across awaits of a consumer (no cancel
    scope is held): ``open()``, then ``__anext__``, then ``aclose()`` —
    which another task may call to end a blocked reader with Unavailable.
    """

    def __init__(self, client: EtcdClient, create_request: Json) -> None:
        self._client = client
        self._request = create_request
        self._body: httpx.AsyncByteStream | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._buf = bytearray()

    async def open(self) -> None:
        """Connect (failing over between endpoints like ``call``)."""
        client = self._client
        if client.closed:
            raise Unavailable("etcd client is closed")
        content = json.dumps({"create_request": self._request})
        last: Exception | None = None
        for _ in range(len(client.endpoints)):
            base = client.endpoints[client._current]
            request = httpx.Request(
                "POST",
                base + "/v3/watch",
                content=content,
                headers=_JSON_HEADERS,
                extensions={"timeout": _WATCH_TIMEOUT.as_dict()},
            )
            try:
                resp = await client._streaming.handle_async_request(request)
            except httpx.ConnectError as e:
                last = e
                client._current = (client._current + 1) % len(client.endpoints)
                continue
            except httpx.TransportError as e:
                raise Unavailable(f"etcd {base}: {e!r}") from e
            body = resp.stream
            assert isinstance(body, httpx.AsyncByteStream)
            if resp.status_code != 200:
                try:
                    content_bytes = b"".join([chunk async for chunk in body])
                except httpx.TransportError as e:
                    raise Unavailable(f"etcd {base}: {e!r}") from e
                finally:
                    await body.aclose()
                raise error_from(resp.status_code, content_bytes)
            self._body = body
            self._chunks = body.__aiter__()
            client._streams.add(self)
            return
        raise Unavailable(f"etcd unreachable at {', '.join(client.endpoints)}: {last!r}") from last

    def __aiter__(self) -> WatchStream:
        return self

    async def _line(self) -> bytes:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                return line
            if self._body is None or self._chunks is None:
                raise Unavailable("etcd watch stream is closed")
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                raise Unavailable("etcd closed the watch stream") from None
            except httpx.TransportError as e:
                raise Unavailable(f"etcd watch stream broke: {e!r}") from e
            self._buf += chunk

    async def __anext__(self) -> Json:
        while True:
            line = await self._line()
            if not line.strip():
                continue
            doc = json.loads(line)
            if "error" in doc:
                err = doc["error"]
                raise error_for(str(err.get("message", err)), int(err.get("grpc_code", err.get("code", 0))))
            result: Json = doc.get("result", {})
            if result.get("canceled"):
                if int(result.get("compact_revision", 0)):
                    raise Gone(f"etcd watch: revision compacted (oldest is {result['compact_revision']})")
                raise Unavailable(f"etcd canceled the watch: {result.get('cancel_reason', '')}")
            return result

    async def aclose(self) -> None:
        """Drop the connection (also from another task than the reader's)."""
        self._client._streams.discard(self)
        body, self._body = self._body, None
        if body is not None:
            await body.aclose()
