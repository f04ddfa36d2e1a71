"""Path rewriting, redirect Locations and header modification, as the Gateway API defines them.

Pure functions over strings and header lists, used by the engine per request
and tested on their own.
"""

from __future__ import annotations

from kmesh.l7.model import HeaderModifier, PathMatch, PathModifier, RequestRedirect

WELL_KNOWN_PORTS = {"http": 80, "https": 443}


def rewrite_path(path: str, modifier: PathModifier, matched: PathMatch) -> str:
    """``path`` (no query) after ``modifier``; ``matched`` is the entry's path match (for ReplacePrefixMatch)."""
    if modifier.kind == "ReplaceFullPath":
        return modifier.value or "/"
    prefix = matched.value.rstrip("/") if matched.kind == "PathPrefix" else path.rstrip("/")
    rest = path[len(prefix):] if path.startswith(prefix) else path
    if not rest:
        return modifier.value or "/"
    if not rest.startswith("/"):
        rest = "/" + rest
    return modifier.value.rstrip("/") + rest or "/"


def redirect_location(
    redirect: RequestRedirect, scheme: str, host: str, path: str, query: str,
    listener_port: int, matched: PathMatch,
) -> str:
    """The Location of a RequestRedirect: fields left None keep the request's; the port rule is the spec's.

    No port given: a set ``scheme`` means that scheme's well-known port, else
    the listener's port; a scheme's well-known port is left out.
    """
    new_scheme = redirect.scheme or scheme
    new_host = redirect.hostname or host
    if redirect.port is not None:
        port = redirect.port
    elif redirect.scheme is not None:
        port = WELL_KNOWN_PORTS.get(new_scheme, listener_port)
    else:
        port = listener_port
    new_path = rewrite_path(path, redirect.path, matched) if redirect.path is not None else path
    authority = new_host if WELL_KNOWN_PORTS.get(new_scheme) == port else f"{new_host}:{port}"
    location = f"{new_scheme}://{authority}{new_path}"
    return f"{location}?{query}" if query else location


def modify_headers(headers: list[tuple[bytes, bytes]], mod: HeaderModifier) -> list[tuple[bytes, bytes]]:
    """``headers`` after a HeaderModifier: set replaces every value, add appends one, remove drops a name."""
    drop = {n.lower().encode("latin-1") for n in mod.remove}
    drop.update(n.lower().encode("latin-1") for n, _ in mod.set)
    out = [(k, v) for k, v in headers if k.lower() not in drop] if drop else list(headers)
    for name, value in mod.set:
        out.append((name.encode("latin-1"), value.encode("latin-1")))
    for name, value in mod.add:
        out.append((name.encode("latin-1"), value.encode("latin-1")))
    return out
