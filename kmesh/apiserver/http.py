"""The API server's HTTP face: an ASGI app mapping Kubernetes REST paths to the registry."""

from __future__ import annotations

import json
import random
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, unquote

import trio
import yaml
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kmesh.api import codec, tables
from kmesh.api import errors as E
from kmesh.api.kinds import Kind, as_version, by_resource
from kmesh.apiserver import discovery, openapi
from kmesh.apiserver.authn import Authenticator, UserInfo, peer_certificate
from kmesh.apiserver.fieldvalidation import FieldValidation
from kmesh.apiserver.metrics import Metrics, request_info
from kmesh.apiserver.nodebootstrap import NodeBootstrap
from kmesh.apiserver.podlogs import LogOptions, log_file, stream_log
from kmesh.apiserver.registry import (
    ListOptions,
    Registry,
    WatchEvent,
    check_delete_options,
)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PUBLIC_PATHS = {"/healthz", "/livez", "/readyz", "/version"}
MAX_BODY = 3 * 1024 * 1024  # kube-apiserver's request size limit
# Encoded events queued for one watcher before the watch waits for the socket (one larger event
# always fits); a client that then reads nothing for ConnectionLimits.write_stall is dropped.
WATCH_BUFFER_BYTES = 32 * 1024
ENCODED_CACHE_BYTES = 8 * 1024 * 1024  # the shared cache of encoded watch lines, all watchers together


class EncodedEvents:
    """Watch-event lines encoded once and shared by every watcher that sends the same event.

    Bounded by count and by bytes: a few large objects must not pin
    hundreds of megabytes after their watchers have moved on."""

    def __init__(self, size: int = 8192, max_bytes: int = ENCODED_CACHE_BYTES) -> None:
        self._lines: OrderedDict[tuple[str, str, str, str, str], bytes] = OrderedDict()
        self._size = size
        self._max_bytes = max_bytes
        self.bytes = 0

    def line(self, ev: WatchEvent) -> bytes:
        """The JSON line of ``ev`` (cached by type, resourceVersion and object identity)."""
        md = ev.obj.get("metadata") or {}
        rv = md.get("resourceVersion") or ""
        if ev.type in ("ERROR", "BOOKMARK") or not rv:
            return _json({"type": ev.type, "object": ev.obj}) + b"\n"
        key = (ev.type, rv, md.get("namespace") or "", md.get("name") or "", ev.obj.get("apiVersion") or "")
        line = self._lines.get(key)
        if line is None:
            line = _json({"type": ev.type, "object": ev.obj}) + b"\n"
            if len(line) > self._max_bytes // 16:
                return line  # too large to be worth a slot
            self._lines[key] = line
            self.bytes += len(line)
            while len(self._lines) > self._size or self.bytes > self._max_bytes:
                self.bytes -= len(self._lines.popitem(last=False)[1])
        return line

    def __len__(self) -> int:
        return len(self._lines)


class LineBuffer:
    """One watcher's encoded lines on their way to its socket, bounded in bytes.

    ``put`` waits while the buffer is full (a line larger than the bound is
    admitted alone); ``take`` returns everything queued as one chunk."""

    def __init__(self, max_bytes: int = WATCH_BUFFER_BYTES) -> None:
        self._lines: list[bytes] = []
        self._bytes = 0
        self._max_bytes = max_bytes
        self._closed = False
        self._space = trio.lowlevel.ParkingLot()
        self._data = trio.lowlevel.ParkingLot()

    async def put(self, line: bytes) -> None:
        """Queue ``line``, first waiting for room."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while self._bytes and self._bytes + len(line) > self._max_bytes:
            await self._space.park()
        self._lines.append(line)
        self._bytes += len(line)
        if self._data:
            self._data.unpark_all()
        # Yield only now, with the line queued (as a channel's send does): lines put while the
        # sender waits for its turn go out together, not one write each.
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def take(self) -> bytes | None:
        """Everything queued, waiting for at least one line; None once closed and empty."""
        await trio.lowlevel.checkpoint()  # lines put by tasks ready to run now join this chunk
        while not self._lines:
            if self._closed:
                return None
            await self._data.park()
        chunk = b"".join(self._lines)
        self._lines.clear()
        self._bytes = 0
        if self._space:
            self._space.unpark_all()
        return chunk

    def close(self) -> None:
        """No more lines: ``take`` returns what is left, then None."""
        self._closed = True
        self._data.unpark_all()


@dataclass
class Request:
    """What a handler needs of one HTTP request."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    user: UserInfo | None = None  # who is asking (None only on the public paths)

    def flag(self, name: str) -> bool:
        """A boolean query parameter (``watch=1``, ``watch=true``)."""
        return self.query.get(name, "").lower() in ("1", "true", "yes")

    def int_param(self, name: str) -> int | None:
        """An int64 query parameter (limit, timeoutSeconds, gracePeriodSeconds); 400 in the words of
        upstream's parameter decoder (strconv.ParseInt) if it is not one."""
        raw = self.query.get(name)
        if raw in (None, ""):
            return None
        digits = raw[1:] if raw[:1] in ("+", "-") else raw
        if not (digits.isascii() and digits.isdigit()):
            raise E.bad_request(f'strconv.ParseInt: parsing "{raw}": invalid syntax')
        value = int(raw) if len(digits) <= 19 else 1 << 64
        if not -(1 << 63) <= value < (1 << 63):
            raise E.bad_request(f'strconv.ParseInt: parsing "{raw}": value out of range')
        return value


def _noting(send: Send, sent: list[int]) -> Send:
    """``send`` that also notes the response status in ``sent[0]`` and adds the body bytes to ``sent[1]``."""

    async def noting(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            sent[0] = msg["status"]
        elif msg["type"] == "http.response.body":
            sent[1] += len(msg.get("body", b""))
        await send(msg)

    return noting


def _too_large() -> E.APIError:
    return E.APIError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {MAX_BODY}")


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _wants_table(accept: str) -> bool:
    return any("as=Table" in part for part in accept.split(","))


def _list_doc(kind: Kind, items: list[dict[str, Any]], rv: int, cont: str) -> dict[str, Any]:
    md: dict[str, Any] = {"resourceVersion": str(rv)}
    if cont:
        md["continue"] = cont
    return {"kind": kind.list_kind, "apiVersion": kind.api_version, "metadata": md, "items": items}


class APIApp:
    """ASGI application serving the Kubernetes API from a Registry."""

    def __init__(self, registry: Registry, token: str, server_address: str = "127.0.0.1:6443",
                 nodes_dir: Path | None = None, client_ca_pem: bytes | None = None,
                 request_timeout: float = 60.0, bootstrap: NodeBootstrap | None = None) -> None:
        self.registry = registry
        self.bootstrap = bootstrap  # the join paths (/cacerts, /v1-kmesh/...), which check their own secrets
        self.request_timeout = request_timeout  # seconds a request body may take to arrive
        self.nodes_dir = nodes_dir  # where the lab's node agents keep their pods' logs
        self.token = token
        self.authenticator = Authenticator(token, client_ca_pem)  # client certificates, then the bearer token
        self.server_address = server_address
        self.metrics = Metrics()
        self.min_request_timeout = 1800
        self._encoded = EncodedEvents()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode(), keep_blank_values=True).items()}
        path = scope["path"]
        started = time.perf_counter()
        info = request_info(scope["method"], path, query, headers.get("content-type", ""))
        sent = [0, 0]  # the status sent, the body bytes sent: what the metrics count
        send = _noting(send, sent)
        self.metrics.started(info)
        try:
            if self.bootstrap is not None and self.bootstrap.handles(path):
                body = await self._read_body(receive, headers, self.request_timeout) if scope["method"] == "POST" else b""
                status, out, content_type = self.bootstrap.answer(scope["method"], path, headers, body)
                await self._send(send, status, out, content_type)
                return
            public = path in PUBLIC_PATHS
            user = None if public else self.authenticator.authenticate(headers, peer_certificate())
            if not public and user is None:
                raise E.APIError(401, "Unauthorized", "Unauthorized")
            body = b""
            if scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
                body = await self._read_body(receive, headers, self.request_timeout)
            req = Request(scope["method"], path, query, headers, body, user)
            await self._dispatch(req, receive, send)
        except E.APIError as exc:
            extra = [(b"retry-after", str(exc.retry_after).encode())] if exc.retry_after else []
            await self._send(send, exc.code, _json(exc.status()), extra_headers=extra)
        except Exception as exc:  # noqa: BLE001 - the server must answer, not crash
            err = E.APIError(500, "InternalError", f"Internal error occurred: {exc!r}")
            await self._send(send, 500, _json(err.status()))
        finally:
            self.metrics.finished(info, sent[0], time.perf_counter() - started, sent[1])

    @staticmethod
    async def _read_body(receive: Receive, headers: dict[str, str], timeout: float) -> bytes:
        """The request body, at most MAX_BODY bytes (413, from Content-Length before reading, else as
        counted), arriving whole within ``timeout`` seconds (504, as kube-apiserver's request timeout)."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            raise _too_large()
        chunks: list[bytes] = []
        size = 0
        with trio.move_on_after(timeout):
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    raise E.bad_request("client went away")
                chunk = msg.get("body", b"")
                size += len(chunk)
                if size > MAX_BODY:
                    raise _too_large()
                chunks.append(chunk)
                if not msg.get("more_body"):
                    return b"".join(chunks)
        raise E.APIError(504, "Timeout",
                         "Timeout: request did not complete within requested timeout - context deadline exceeded")

    @staticmethod
    async def _send(
        send: Send, status: int, body: bytes, content_type: str = "application/json",
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        headers += extra_headers or []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # ---------------------------------------------------------------- routing

    async def _dispatch(self, req: Request, receive: Receive, send: Send) -> tuple[str, str]:
        path = req.path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz"):
            await self._send(send, 200, b"ok", "text/plain")
            return "get", ""
        if path == "/metrics":
            await self._send(send, 200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST)
            return "get", ""
        if path == "/version":
            await self._send(send, 200, _json(discovery.version()))
            return "get", ""
        if path == "/api":
            await self._send(send, 200, _json(discovery.api_versions(self.server_address)))
            return "get", ""
        if path == "/apis":
            await self._send(send, 200, _json(discovery.api_group_list()))
            return "get", ""
        if path == "/openapi/v2":
            body, content_type, etag = openapi.v2_body(openapi.v2_wants_protobuf(req.headers.get("accept", "")))
            if etag in req.headers.get("if-none-match", ""):
                await self._send(send, 304, b"", content_type, [(b"etag", etag.encode())])
            else:
                await self._send(send, 200, body, content_type, [(b"etag", etag.encode())])
            return "get", ""
        if path == openapi.CRD_LIST_PATH and req.method == "GET" and not req.flag("watch"):
            await self._send(send, 200, _json(openapi.crd_list()))
            return "list", "customresourcedefinitions"
        if path == "/openapi/v3":
            await self._send(send, 200, _json(openapi.index()))
            return "get", ""
        if path.startswith("/openapi/v3/"):
            gv = path[len("/openapi/v3/"):].split("/")
            doc = None
            if len(gv) == 2 and gv[0] == "api":
                doc = openapi.gv_document("", gv[1])
            elif len(gv) == 3 and gv[0] == "apis":
                doc = openapi.gv_document(gv[1], gv[2])
            if doc is None:
                raise E.APIError(404, "NotFound", "the server could not find the requested resource")
            await self._send(send, 200, _json(doc))
            return "get", ""
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 2:
            if len(parts) == 2:
                doc = discovery.api_group(parts[1])
                if doc is None:
                    raise E.APIError(404, "NotFound", "the server could not find the requested resource")
                await self._send(send, 200, _json(doc))
                return "get", ""
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise E.APIError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            doc = discovery.resource_list(group, version)
            if doc is None:
                raise E.APIError(404, "NotFound", "the server could not find the requested resource")
            await self._send(send, 200, _json(doc))
            return "get", ""
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        kind = by_resource(group, rest[0], version)
        if kind is None or len(rest) > 3:
            raise E.APIError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else None
        if sub is not None and sub not in kind.subresources:
            raise E.APIError(404, "NotFound", "the server could not find the requested resource")
        if name is not None and kind.namespaced and namespace is None:
            raise E.APIError(404, "NotFound", "the server could not find the requested resource")
        if name is None:
            return await self._collection(req, kind, namespace, receive, send)
        if sub == "log":
            await self._log(req, kind, namespace, name, receive, send)
            return "get", "pods/log"
        return await self._item(req, kind, namespace, name, sub, send)

    # ------------------------------------------------------------- collection

    def _list_options(self, req: Request) -> ListOptions:
        return ListOptions(
            label_selector=req.query.get("labelSelector", ""),
            field_selector=req.query.get("fieldSelector", ""),
            limit=req.int_param("limit") or 0,
            continue_token=req.query.get("continue", ""),
            resource_version=req.query.get("resourceVersion", ""),
            resource_version_match=req.query.get("resourceVersionMatch", ""),
            send_initial_events=req.query.get("sendInitialEvents"),
        )

    async def _collection(
        self, req: Request, kind: Kind, namespace: str | None, receive: Receive, send: Send
    ) -> tuple[str, str]:
        r = self.registry
        if req.method == "GET":
            if req.flag("watch"):
                await self._watch(req, kind, namespace, receive, send)
                return "watch", kind.plural
            page = await r.list(kind, namespace, self._list_options(req))
            if _wants_table(req.headers.get("accept", "")):
                doc = tables.table(
                    kind, page.items, include_object=req.query.get("includeObject", "Metadata"),
                    resource_version=str(page.revision), continue_token=page.continue_token,
                )
            else:
                items = []
                for obj in page.items:
                    item = dict(obj)
                    item.pop("apiVersion", None)
                    item.pop("kind", None)
                    items.append(item)
                doc = _list_doc(kind, items, page.revision, page.continue_token)
            await self._send(send, 200, _json(doc))
            return "list", kind.plural
        if req.method == "POST":
            obj = self._decode(req, kind)
            fields = FieldValidation.from_query(req.query.get("fieldValidation"))
            created = await r.create(kind, namespace, obj, dry_run=self._dry_run(req), fields=fields, user=req.user)
            await self._send(send, 201, _json(as_version(kind, created)), extra_headers=fields.headers())
            return "create", kind.plural
        if req.method == "DELETE":
            opts = self._delete_options(req)
            gone = await r.delete_collection(kind, namespace, self._list_options(req), opts.get("gracePeriodSeconds"))
            await self._send(send, 200, _json(_list_doc(kind, gone, 0, "")))
            return "deletecollection", kind.plural
        raise E.APIError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    # ------------------------------------------------------------------- item

    async def _item(
        self, req: Request, kind: Kind, namespace: str | None, name: str, sub: str | None, send: Send
    ) -> tuple[str, str]:
        r = self.registry
        res = kind.plural + (f"/{sub}" if sub else "")
        dry = self._dry_run(req)
        if req.method == "GET":
            obj = await (r.get_scale(kind, namespace, name) if sub == "scale" else r.get(kind, namespace, name))
            if sub is None and _wants_table(req.headers.get("accept", "")):
                obj = tables.table(kind, [obj], include_object=req.query.get("includeObject", "Metadata"))
            await self._send(send, 200, _json(as_version(kind, obj)))
            return "get", res
        if sub == "binding" and req.method != "POST":
            raise E.APIError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if req.method == "POST" and sub == "binding" and namespace is not None:
            out = await r.bind(namespace, name, self._decode(req))
            await self._send(send, 201, _json(out))
            return "create", res
        if req.method == "PUT":
            obj = self._decode(req, kind if sub != "scale" else None)
            fields = FieldValidation.from_query(req.query.get("fieldValidation"))
            if sub == "scale":
                out = await r.update_scale(kind, namespace, name, obj)
            else:
                out = await r.update(kind, namespace, name, obj, subresource=sub, dry_run=dry, fields=fields)
            await self._send(send, 200, _json(as_version(kind, out)), extra_headers=fields.headers())
            return "update", res
        if req.method == "PATCH":
            fields = FieldValidation.from_query(req.query.get("fieldValidation"))
            out = await r.patch(
                kind, namespace, name, req.headers.get("content-type", ""), req.body, subresource=sub, dry_run=dry,
                fields=fields,
            )
            await self._send(send, 200, _json(as_version(kind, out)), extra_headers=fields.headers())
            return "patch", res
        if req.method == "DELETE" and sub is None:
            opts = self._delete_options(req)
            obj, gone = await r.delete(
                kind, namespace, name,
                grace_period=opts.get("gracePeriodSeconds"),
                preconditions=opts.get("preconditions"),
                dry_run=dry or "All" in (opts.get("dryRun") or []),  # kubectl sends DeleteOptions.dryRun in the body
            )
            if gone and kind.kind not in ("Pod",):
                md = obj.get("metadata", {})
                status = {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": name, "group": kind.group, "kind": kind.plural, "uid": md.get("uid")},
                }
                await self._send(send, 200, _json(status))
            else:
                await self._send(send, 200, _json(as_version(kind, obj)))
            return "delete", res
        raise E.APIError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    # ------------------------------------------------------------------ watch

    async def _watch(self, req: Request, kind: Kind, namespace: str | None, receive: Receive, send: Send) -> None:
        opts = self._list_options(req)
        opts.validate(watch=True)  # option and selector errors are answered before the stream starts
        opts.filter(kind)
        as_table = _wants_table(req.headers.get("accept", ""))
        include = req.query.get("includeObject", "Metadata")
        timeout = req.int_param("timeoutSeconds")
        if timeout is None or timeout <= 0:
            timeout = int(self.min_request_timeout * (1 + random.random()))
        bookmarks = req.flag("allowWatchBookmarks")
        sent_columns = False
        lines = LineBuffer()

        async def emit(ev: WatchEvent) -> None:
            nonlocal sent_columns
            if not kind.storage and ev.type in ("ADDED", "MODIFIED", "DELETED"):
                ev = WatchEvent(ev.type, as_version(kind, ev.obj))
            if as_table and ev.type in ("ADDED", "MODIFIED", "DELETED"):
                obj = tables.table(kind, [ev.obj], include_object=include)
                if sent_columns:
                    obj["columnDefinitions"] = []
                sent_columns = True
                line = _json({"type": ev.type, "object": obj}) + b"\n"
            else:
                line = self._encoded.line(ev)
            await lines.put(line)

        async def sender() -> None:
            # Everything queued while the last write was in flight goes out as one chunk.
            while (chunk := await lines.take()) is not None:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

        async def body() -> None:
            async with trio.open_nursery() as streaming:
                streaming.start_soon(sender)
                try:
                    with trio.move_on_after(timeout):
                        try:
                            await self.registry.watch(kind, namespace, opts, emit, bookmarks=bookmarks)
                        except E.APIError as exc:
                            await emit(WatchEvent("ERROR", exc.status()))
                finally:
                    lines.close()

        await self._stream(receive, send, b"application/json", body)

    @staticmethod
    async def _stream(receive: Receive, send: Send, content_type: bytes, body: Callable[[], Awaitable[None]]) -> None:
        """A chunked 200 answer: headers at once (as kube-apiserver flushes them), the chunks ``body`` sends,
        then the end, unless the client left first (which also cancels ``body``)."""
        gone = False

        async def until_disconnect(cancel: trio.CancelScope) -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            cancel.cancel()

        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", content_type), (b"transfer-encoding", b"chunked")]})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(until_disconnect, nursery.cancel_scope)
            await body()
            nursery.cancel_scope.cancel()
        if not gone:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _log(self, req: Request, kind: Kind, namespace: str | None, name: str, receive: Receive,
                   send: Send) -> None:
        if req.method != "GET":
            raise E.APIError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        opts = LogOptions.parse(req.query)
        nodes_dir = self.nodes_dir
        if nodes_dir is None:
            raise E.bad_request("this API server has no node directories to read pod logs from")
        pod = await self.registry.get(kind, namespace, name)
        path = log_file(nodes_dir, pod, opts)
        uid = pod["metadata"].get("uid")

        async def still_current() -> bool:
            try:
                now = await self.registry.get(kind, namespace, name)
            except E.APIError:
                return False
            return now["metadata"].get("uid") == uid and log_file(nodes_dir, now, opts) == path

        async def write(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        async def body() -> None:
            try:
                await stream_log(path, opts, write, still_current)
            except (OSError, E.APIError):
                pass  # the file or the pod went away mid-stream: the log ends there

        await self._stream(receive, send, b"text/plain", body)

    # ---------------------------------------------------------------- parsing

    @staticmethod
    def _decode(req: Request, kind: Kind | None = None) -> dict[str, Any]:
        """The body as a wire dict, decoded within ``kmesh.api.codec``'s bounds (depth, aliases, numbers);
        400 as kube-apiserver words it for a body of ``kind`` that does not decode, 415 for an unknown type."""
        ct = req.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        try:
            if ct in ("application/yaml", "application/x-yaml", "text/yaml"):
                obj = codec.loads_yaml(req.body)
            elif ct in ("application/json", ""):
                try:
                    obj = codec.loads_json(req.body or b"null")
                except codec.DecodeError as exc:
                    raise codec.DecodeError(f"couldn't get version/kind; json parse error: {exc}") from None
            elif ct == "application/vnd.kubernetes.protobuf":
                from kmesh.api import protobuf

                obj = protobuf.decode(req.body)
                codec.check_depth(obj)
            else:
                raise E.APIError(
                    415, "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: "
                    "application/json, application/yaml, application/vnd.kubernetes.protobuf",
                )
        except (ValueError, yaml.YAMLError, RecursionError) as exc:
            if kind is not None:
                raise E.bad_request(f"the object provided is unrecognized (must be of type {kind.kind}): {exc} "
                                    f"({codec.summarize(req.body)})") from None
            raise E.bad_request(f"error decoding request body: {exc}") from None
        if not isinstance(obj, dict):
            raise E.bad_request("the request body must be an object")
        return obj

    @staticmethod
    def _dry_run(req: Request) -> bool:
        value = req.query.get("dryRun", "")
        if value and value != "All":
            raise E.bad_request(f'invalid dryRun value {value!r}: supported values: "All"')
        return value == "All"

    def _delete_options(self, req: Request) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if req.body.strip():
            try:
                parsed: Any = self._decode(req)
            except E.APIError as exc:
                raise E.bad_request(f"error decoding DeleteOptions: {exc.message}") from None
            if isinstance(parsed, dict):
                opts = parsed
        grace = req.int_param("gracePeriodSeconds")
        if grace is not None:
            opts["gracePeriodSeconds"] = grace
        if req.query.get("propagationPolicy"):
            opts["propagationPolicy"] = req.query["propagationPolicy"]
        if req.query.get("orphanDependents"):
            opts["orphanDependents"] = req.flag("orphanDependents")
        check_delete_options(opts)
        return opts

