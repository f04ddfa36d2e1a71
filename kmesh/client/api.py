"""Async client of the Kubernetes API (kmesh's own or any real one) over httpx."""

from __future__ import annotations

import json
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Literal

import httpx

from kmesh.api import errors as E
from kmesh.api.kinds import Kind
from kmesh.api.kinds import get as kind_named
from kmesh.api.obj import Obj
from kmesh.client.kubeconfig import Credentials, KubeconfigSpec, load_kubeconfig

PatchType = Literal["merge", "strategic", "json"]
PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}

log = logging.getLogger("kmesh.client")


class APIUnavailable(Exception):
    """The API server could not be reached (connection refused, reset, timed out)."""


def _query(**params: Any) -> dict[str, Any]:
    """Query parameters without the empty ones (the API treats absent and empty alike)."""
    return {name: value for name, value in params.items() if value}


def _kind(kind: Kind | str) -> Kind:
    return kind if isinstance(kind, Kind) else kind_named(kind)


def _error(resp: httpx.Response) -> E.APIError:
    try:
        st = resp.json()
    except ValueError:
        st = {}
    if not isinstance(st, dict) or st.get("kind") != "Status":
        return E.APIError(resp.status_code, "Unknown", resp.text[:500] or resp.reason_phrase)
    d = st.get("details") or {}
    return E.APIError(
        int(st.get("code") or resp.status_code),
        st.get("reason") or "Unknown",
        st.get("message") or "",
        kind=d.get("kind", ""),
        name=d.get("name", ""),
        group=d.get("group", ""),
        causes=d.get("causes") or [],
        retry_after=d.get("retryAfterSeconds"),
    )


class Client:
    """CRUD, patch and watch against one API server."""

    def __init__(self, creds: Credentials, *, timeout: float = 30.0) -> None:
        self.creds = creds
        headers = {"Accept": "application/json"}
        if creds.token:
            headers["Authorization"] = f"Bearer {creds.token}"
        self._http = httpx.AsyncClient(
            base_url=creds.server,
            verify=creds.ssl_context(),
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=5.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )

    @classmethod
    def from_kubeconfig(cls, path: KubeconfigSpec = None, *, context: str | None = None, **kw: Any) -> "Client":
        """A client for the current (or named) context, read as kubectl reads kubeconfigs.

        ``path``: one file, a ``$KUBECONFIG``-style ``a:b`` string or a list; None: $KUBECONFIG,
        else ~/.kube/config."""
        return cls(load_kubeconfig(path, context), **kw)

    async def aclose(self) -> None:
        """Close connections."""
        await self._http.aclose()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None,
        body: Any = None, content_type: str = "application/json",
    ) -> Obj:
        """One request; the decoded JSON answer, or APIError / APIUnavailable."""
        content = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if content is not None else None
        try:
            resp = await self._http.request(method, path, params=params, content=content, headers=headers)
        except httpx.TransportError as exc:
            raise APIUnavailable(f"{method} {path}: {exc!r}") from exc
        if resp.status_code >= 400:
            raise _error(resp)
        for warning in resp.headers.get_list("warning"):
            log.warning("%s %s: server warning: %s", method, path, warning)  # as client-go prints them
        return resp.json()

    # -------------------------------------------------------------- the verbs

    async def get(self, kind: Kind | str, name: str, namespace: str | None = None) -> Obj:
        """One object."""
        k = _kind(kind)
        return await self.request("GET", k.path(namespace, name))

    async def list(
        self, kind: Kind | str, namespace: str | None = None, *, label_selector: str = "",
        field_selector: str = "", limit: int = 0, continue_token: str = "", resource_version: str = "",
    ) -> Obj:
        """A list document (items carry kind and apiVersion filled in)."""
        k = _kind(kind)
        params = _query(
            labelSelector=label_selector, fieldSelector=field_selector,
            limit=limit, resourceVersion=resource_version, **{"continue": continue_token},
        )
        doc = await self.request("GET", k.path(namespace), params=params)
        for item in doc.get("items") or []:
            item.setdefault("apiVersion", k.api_version)
            item.setdefault("kind", k.kind)
        return doc

    async def list_all(self, kind: Kind | str, namespace: str | None = None, *, page: int = 500, **kw: Any) -> tuple[list[Obj], str]:
        """Every object, following continue tokens; returns (items, resourceVersion)."""
        items: list[Obj] = []
        token = ""
        while True:
            doc = await self.list(kind, namespace, limit=page, continue_token=token, **kw)
            items.extend(doc.get("items") or [])
            token = doc["metadata"].get("continue", "")
            if not token:
                return items, doc["metadata"]["resourceVersion"]

    async def create(self, obj: Obj, namespace: str | None = None) -> Obj:
        """Create ``obj`` (kind from its apiVersion/kind)."""
        k = _kind_of(obj)
        ns = namespace or (obj.get("metadata") or {}).get("namespace") or ("default" if k.namespaced else None)
        return await self.request("POST", k.path(ns), body=obj)

    async def update(self, obj: Obj, *, subresource: str | None = None) -> Obj:
        """Replace ``obj`` (optimistic concurrency on its resourceVersion)."""
        k = _kind_of(obj)
        md = obj["metadata"]
        path = k.path(md.get("namespace"), md["name"]) + (f"/{subresource}" if subresource else "")
        return await self.request("PUT", path, body=obj)

    async def update_status(self, obj: Obj) -> Obj:
        """Replace the status of ``obj``."""
        return await self.update(obj, subresource="status")

    async def patch(
        self, kind: Kind | str, name: str, patch: Any, namespace: str | None = None, *,
        patch_type: PatchType = "merge", subresource: str | None = None,
    ) -> Obj:
        """Patch one object (merge, strategic or JSON patch)."""
        k = _kind(kind)
        path = k.path(namespace, name) + (f"/{subresource}" if subresource else "")
        return await self.request("PATCH", path, body=patch, content_type=PATCH_TYPES[patch_type])

    async def delete(
        self, kind: Kind | str, name: str, namespace: str | None = None, *,
        grace_period: int | None = None, uid: str | None = None,
    ) -> Obj:
        """Delete one object (optionally with a grace period and a UID precondition)."""
        k = _kind(kind)
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period is not None:
            body["gracePeriodSeconds"] = grace_period
        if uid:
            body["preconditions"] = {"uid": uid}
        return await self.request("DELETE", k.path(namespace, name), body=body)

    async def bind(self, namespace: str, name: str, node: str, uid: str | None = None) -> Obj:
        """Bind a pod to a node through pods/binding (what a scheduler does)."""
        body: Obj = {
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace, **({"uid": uid} if uid else {})},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        return await self.request("POST", _kind("Pod").path(namespace, name) + "/binding", body=body)

    @asynccontextmanager
    async def watch(
        self, kind: Kind | str, namespace: str | None = None, *, resource_version: str = "",
        label_selector: str = "", field_selector: str = "", timeout_seconds: int | None = None,
        bookmarks: bool = True,
    ) -> AsyncIterator[AsyncIterator[tuple[str, Obj]]]:
        """A watch stream of (type, object); ERROR events raise APIError (410 → re-list)."""
        k = _kind(kind)
        params = _query(
            watch="1", resourceVersion=resource_version, labelSelector=label_selector,
            fieldSelector=field_selector, timeoutSeconds=timeout_seconds,
            allowWatchBookmarks="true" if bookmarks else "",
        )
        try:
            async with self._http.stream(
                "GET", k.path(namespace), params=params, timeout=httpx.Timeout(None, connect=5.0)
            ) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise _error(resp)
                yield _events(resp, k)
        except httpx.TransportError as exc:
            raise APIUnavailable(f"watch {k.plural}: {exc!r}") from exc


async def _events(resp: httpx.Response, k: Kind) -> AsyncIterator[tuple[str, Obj]]:
    async for line in resp.aiter_lines():
        if not line.strip():
            continue
        ev = json.loads(line)
        if ev.get("type") == "ERROR":
            st = ev.get("object") or {}
            raise E.APIError(int(st.get("code") or 500), st.get("reason") or "Unknown", st.get("message") or "")
        obj = ev.get("object") or {}
        obj.setdefault("apiVersion", k.api_version)
        obj.setdefault("kind", k.kind)
        yield ev["type"], obj


def _kind_of(obj: Obj) -> Kind:
    from kmesh.api.kinds import by_kind

    k = by_kind(obj.get("apiVersion", ""), obj.get("kind", ""))
    if k is None:
        raise ValueError(f"kmesh does not serve {obj.get('apiVersion')}/{obj.get('kind')}")
    return k
