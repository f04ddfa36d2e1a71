"""HTTP/1.x message reading on trio streams with httptools (llhttp, a C parser) and head serialization.

Why not h11: the proxy parses every request and every response on its hot
path, and h11 is pure Python; httptools does the same work in C and hands back
events through callbacks. Those callbacks land in a queue here, so the proxy
pulls one event at a time (a head, a body piece, the end), reads from the
socket only when the queue is empty (natural backpressure: a body is streamed,
never buffered whole) and sees pipelined requests in order.
"""

from __future__ import annotations

from collections import deque
from http import HTTPStatus
from typing import Any

import httptools
import trio

RECV_SIZE = 65536
MAX_HEAD = 64 * 1024
"""The largest request or response head (request line/status line and headers) accepted."""

END = None
"""The event that ends a message's body."""


class ProtocolError(Exception):
    """The peer sent something that is not HTTP/1.x (or is too large): answer 400 (431) and close."""

    def __init__(self, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.status = status


class Head:
    """A parsed request or response head: start line parts, raw headers, framing facts."""

    __slots__ = ("method", "target", "status", "headers", "version", "keep_alive", "chunked",
                 "content_length", "has_body", "upgrade", "upgrade_to")

    def __init__(self) -> None:
        self.method = b""
        self.target = b""
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.version = "1.1"
        self.keep_alive = True
        self.chunked = False
        self.content_length: int | None = None
        self.has_body = False
        self.upgrade = False
        """An upgrade (``Connection: upgrade`` with ``Upgrade``): a request asking for one, a 101 granting it."""
        self.upgrade_to = b""
        """A response's ``Upgrade`` value (the field itself is dropped with the other hop-by-hop ones)."""


class _Reader:
    """Feeds bytes from a stream to an httptools parser and queues the parser's events."""

    parser: Any

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.events: deque[Head | bytes | None] = deque()
        self.head = Head()
        """The head being parsed; a fresh one is made when a message ends (no ``on_message_begin``
        callback: each callback from the parser costs a Python call per message)."""
        self.head_bytes = 0
        self.in_head = True
        self.upgraded = False
        self.rest = b""
        """After an upgrade: the bytes that followed the head (the new protocol's), not parsed."""
        self.close_delimited = False

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.head.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        head = self.head
        head.headers.append((name, value))
        if name[0] | 0x20 != 0x63 and name[0] | 0x20 != 0x74:  # neither c... nor t...: not framing
            return
        n = name.lower()
        if n == b"content-length":
            head.content_length = int(value)
            head.has_body = head.content_length > 0
        elif n == b"transfer-encoding":
            head.chunked = b"chunked" in value.lower()
            head.has_body = True

    def _complete_head(self) -> Head:
        self.in_head = False
        self.head_bytes = 0
        head = self.head
        head.version = self.parser.get_http_version()
        head.keep_alive = self.parser.should_keep_alive()
        head.upgrade = self.parser.should_upgrade()
        self.events.append(head)
        return head

    def on_body(self, body: bytes) -> None:
        self.events.append(body)

    def on_message_complete(self) -> None:
        self.close_delimited = False
        self.events.append(END)
        self.head = Head()
        self.in_head = True

    def feed(self, data: bytes) -> None:
        """Parse ``data``; events land in ``self.events``. ``b""`` is the end of the stream: it ends a
        close-delimited body, else raises EOFError."""
        if not data:
            if self.close_delimited:
                self.close_delimited = False
                self.events.append(END)
                return
            raise EOFError
        if self.upgraded:
            raise ProtocolError("data after an upgrade request")
        if self.in_head:
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD:
                raise ProtocolError("head too large", 431)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self.upgraded = True
            self.rest = data[e.args[0]:] if e.args else b""
        except httptools.HttpParserError as e:
            raise ProtocolError(str(e)) from None
        except ValueError as e:  # a Content-Length that is not a number
            raise ProtocolError(str(e)) from None

    async def next(self) -> Head | bytes | None:
        """The next event: a Head, a body piece, or END; raises EOFError when the peer closed first."""
        events = self.events
        while not events:
            self.feed(await self.stream.receive_some(RECV_SIZE))
        return events.popleft()


class RequestReader(_Reader):
    """Reads requests (possibly pipelined) from a client stream."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        super().__init__(stream)
        self.parser = httptools.HttpRequestParser(self)

    def on_headers_complete(self) -> None:
        self._complete_head().method = self.parser.get_method()


HOP_RESPONSE = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                          b"transfer-encoding", b"upgrade"})
"""Response fields that describe one hop only: the reader drops them (``Head.headers`` has the rest)."""
HOP_INITIALS = frozenset(n[0] for n in HOP_RESPONSE) | {ord("c")}  # c: also content-length, for framing


class ResponseReader(_Reader):
    """Reads responses from an upstream stream; ``expect_no_body`` marks an answer to HEAD.

    Its heads carry only end-to-end fields: hop-by-hop ones are dropped as they are parsed. The reason
    phrase is not kept: the proxy writes the standard one for the status,
    as Envoy does (RFC 9112 §4: clients ignore it)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        super().__init__(stream)
        self.parser = httptools.HttpResponseParser(self)
        self.expect_no_body = False

    def on_header(self, name: bytes, value: bytes) -> None:
        # Hop-by-hop fields (RFC 9110 §7.6.1) are never relayed: drop them here, in the one pass over the head.
        if name[0] | 0x20 in HOP_INITIALS:
            n = name.lower()
            if n in HOP_RESPONSE:
                if n == b"transfer-encoding":
                    self.head.chunked = b"chunked" in value.lower()
                    self.head.has_body = True
                elif n == b"upgrade":
                    self.head.upgrade_to = value
                return
            if n == b"content-length":
                self.head.content_length = int(value)
                self.head.has_body = self.head.content_length > 0
        self.head.headers.append((name, value))

    def on_headers_complete(self) -> None:
        head = self._complete_head()
        head.status = self.parser.get_status_code()
        if self.expect_no_body and head.status >= 200:
            # llhttp cannot be told "this answers HEAD": end the message here and start a fresh parser.
            self.events.append(END)
            head.has_body = False
            self.parser = httptools.HttpResponseParser(self)
            self.head = Head()
        elif head.status in (204, 304) or 100 <= head.status < 200:
            head.has_body = False
        elif not head.chunked and head.content_length is None:
            head.has_body = True  # delimited by the connection closing
            head.keep_alive = False
            self.close_delimited = True


def serialize_request_head(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """An HTTP/1.1 request line and headers, ready to send."""
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for k, v in headers:
        parts += (k, b": ", v, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}


def serialize_response_head(status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """An HTTP/1.1 status line and headers, ready to send."""
    line = _STATUS_LINES.get((status, reason))
    if line is None:
        line = b"HTTP/1.1 %d %b\r\n" % (status, reason)
        if len(_STATUS_LINES) < 1024:
            _STATUS_LINES[(status, reason)] = line
    parts = [line]
    for k, v in headers:
        parts += (k, b": ", v, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    """One chunk of chunked transfer coding."""
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"

REASONS = {s.value: s.phrase.encode() for s in HTTPStatus} | {413: b"Content Too Large", 422: b"Unprocessable Content"}
"""Reason phrases by status (RFC 9110's names where Python's table has older ones)."""
