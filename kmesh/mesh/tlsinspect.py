"""Read the ALPN protocols a TLS ClientHello offers, from bytes peeked off a socket (nothing consumed).

The inbound side of a sidecar must tell mesh TLS (another sidecar, ALPN
``kmesh``) from an app's own TLS and from plaintext before it answers, as
Envoy's TLS inspector listener filter does. No library parses a ClientHello
without taking part in the handshake, so this walks the record by hand: the
record header (RFC 8446 §5.1), the handshake header, then the ClientHello's
fields up to its extensions and the ALPN extension (type 16, RFC 7301).
"""

from __future__ import annotations

HANDSHAKE = 22
CLIENT_HELLO = 1
ALPN_EXTENSION = 16


class Incomplete(Exception):
    """The bytes so far are the start of a ClientHello, not all of it: peek again when more arrived."""


def looks_like_tls(first: bytes) -> bool:
    """Whether a stream starts with a TLS handshake record (content type 22, version 3.x)."""
    return len(first) >= 3 and first[0] == HANDSHAKE and first[1] == 3 and first[2] <= 4


def client_hello_alpn(data: bytes) -> list[bytes] | None:
    """The ALPN protocols offered by the ClientHello at the start of ``data`` ([] when it offers none);
    None when ``data`` does not start with a ClientHello; Incomplete when more bytes are needed."""
    if len(data) < 5:
        raise Incomplete
    if not looks_like_tls(data):
        return None
    record_len = int.from_bytes(data[3:5], "big")
    if len(data) < 5 + record_len:
        raise Incomplete
    body = data[5:5 + record_len]
    if len(body) < 4 or body[0] != CLIENT_HELLO:
        return None
    hello = body[4:4 + int.from_bytes(body[1:4], "big")]
    try:
        i = 2 + 32  # legacy_version, random
        i += 1 + hello[i]  # legacy_session_id
        i += 2 + int.from_bytes(hello[i:i + 2], "big")  # cipher_suites
        i += 1 + hello[i]  # legacy_compression_methods
        if i >= len(hello):
            return []  # no extensions
        end = i + 2 + int.from_bytes(hello[i:i + 2], "big")
        i += 2
        while i + 4 <= end:
            ext_type = int.from_bytes(hello[i:i + 2], "big")
            ext_len = int.from_bytes(hello[i + 2:i + 4], "big")
            ext = hello[i + 4:i + 4 + ext_len]
            i += 4 + ext_len
            if ext_type != ALPN_EXTENSION:
                continue
            protocols: list[bytes] = []
            j, stop = 2, 2 + int.from_bytes(ext[0:2], "big")
            while j < stop:
                n = ext[j]
                protocols.append(bytes(ext[j + 1:j + 1 + n]))
                j += 1 + n
            return protocols
    except IndexError:
        return None  # a ClientHello too short for its own lengths: not one we can read
    return []
