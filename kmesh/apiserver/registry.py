"""Server-side REST semantics over a Store: what each verb does to objects.

The HTTP layer parses requests and calls a ``Registry``; the registry applies
defaults, validation, metadata rules, admission hooks, graceful deletion and
namespace life cycle, and translates store errors to API errors. Nothing is
written when a step fails.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

import trio

from kmesh.api import codec, defaults, fieldschema, meta, patch, selectors, validation
from kmesh.api import errors as E
from kmesh.api.certificates import set_requester
from kmesh.api.kinds import KINDS, Kind, get as kind_named, storage_of
from kmesh.apiserver.authn import UserInfo
from kmesh.apiserver.fieldvalidation import FieldValidation
from kmesh.store import base as S
from kmesh.store.base import Obj, Store

PATCH_RETRY_SECONDS = 60.0
"""How long a patch (or a binding) is retried on write conflicts (upstream's default request timeout)."""

IGNORE = FieldValidation("Ignore")  # what the registry's own callers get: unknown fields dropped, nothing said

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class Admission(Protocol):
    """A hook that can mutate or refuse writes of one kind (e.g. IP allocation)."""

    async def on_create(self, kind: Kind, obj: Obj) -> None: ...
    async def on_update(self, kind: Kind, new: Obj, old: Obj) -> None: ...
    async def on_delete(self, kind: Kind, obj: Obj) -> None: ...
    async def on_create_failed(self, kind: Kind, obj: Obj) -> None: ...

    # Optional (looked up with getattr): after an update was stored, or when it was not
    # (store error, dry run), so a hook can release or give back what on_update took.
    # async def on_updated(self, kind: Kind, new: Obj, old: Obj) -> None: ...
    # async def on_update_failed(self, kind: Kind, new: Obj, old: Obj) -> None: ...


RV_MATCHES = ("Exact", "NotOlderThan")
PROPAGATION_POLICIES = ("Foreground", "Background", "Orphan")


@dataclass
class ListOptions:
    """Parsed list/watch query parameters."""

    label_selector: str = ""
    field_selector: str = ""
    limit: int = 0
    continue_token: str = ""
    resource_version: str = ""
    resource_version_match: str = ""
    send_initial_events: str | None = None  # the raw parameter, None when absent

    def validate(self, *, watch: bool = False) -> None:
        """Refuse what upstream's ``ValidateListOptions`` refuses (422 on ListOptions), and a resourceVersion
        that is no uint64 (400). kmesh has no WatchList (``sendInitialEvents``): it answers as upstream does
        with that feature off, so that clients fall back to list and watch."""
        parse_resource_version(self.resource_version)
        match, causes = self.resource_version_match, []
        if watch:
            if self.send_initial_events is not None:
                if match != "NotOlderThan":
                    causes.append(E.forbidden(
                        "resourceVersionMatch", "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"))
                causes.append(E.forbidden(
                    "sendInitialEvents", "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled"))
            if match:
                if self.send_initial_events is None:
                    causes.append(E.forbidden(
                        "resourceVersionMatch", "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"))
                if match != "NotOlderThan":
                    causes.append(E.not_supported("resourceVersionMatch", match, ["NotOlderThan"]))
                if self.continue_token:
                    causes.append(E.forbidden("resourceVersionMatch", "resourceVersionMatch is forbidden when continue is provided"))
        else:
            if match:
                if not self.resource_version:
                    causes.append(E.forbidden(
                        "resourceVersionMatch", "resourceVersionMatch is forbidden unless resourceVersion is provided"))
                if self.continue_token:
                    causes.append(E.forbidden("resourceVersionMatch", "resourceVersionMatch is forbidden when continue is provided"))
                if match not in RV_MATCHES:
                    causes.append(E.not_supported("resourceVersionMatch", match, [*RV_MATCHES, ""]))
                if match == "Exact" and self.resource_version == "0":
                    causes.append(E.forbidden(
                        "resourceVersionMatch", 'resourceVersionMatch "exact" is forbidden for resourceVersion "0"'))
            if self.send_initial_events is not None:
                causes.append(E.forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list"))
        if causes:
            raise E.invalid_object("ListOptions", "", "meta.k8s.io", causes)

    def filter(self, kind: Kind) -> Callable[[Obj], bool] | None:
        """A predicate for the selectors, or None when nothing is filtered."""
        ls = selectors.parse_label_selector(self.label_selector) if self.label_selector else None
        fs = selectors.parse_field_selector(self.field_selector, kind) if self.field_selector else None
        if ls is None and fs is None:
            return None

        def match(obj: Obj) -> bool:
            if ls is not None and not ls.matches((obj.get("metadata") or {}).get("labels") or {}):
                return False
            return fs is None or fs.matches(obj)

        return match


@dataclass
class ListPage:
    """A page of a list: items, the revision, and the continue token."""

    items: list[Obj]
    revision: int
    continue_token: str = ""
    remaining: int | None = None


@dataclass
class WatchEvent:
    """One event on an API watch stream (type ADDED/MODIFIED/DELETED/BOOKMARK/ERROR)."""

    type: str
    obj: Obj


@dataclass
class Registry:
    """REST verbs for every served kind, backed by one store."""

    store: Store
    admission: dict[str, list[Admission]] = field(default_factory=dict)
    nursery: trio.Nursery | None = None
    loopback_ok: bool = False  # the sim runtime's endpoints live on 127.0.0.0/8

    # ---------------------------------------------------------------- helpers

    def _err(self, kind: Kind, exc: S.StoreError, name: str) -> E.APIError:
        if isinstance(exc, S.NotFound):
            return E.not_found(kind.plural, name, kind.group)
        if isinstance(exc, S.AlreadyExists):
            return E.already_exists(kind.plural, name, kind.group)
        if isinstance(exc, S.Conflict):
            return E.conflict(kind.plural, name, kind.group)
        if isinstance(exc, S.Gone):
            return E.APIError(410, "Expired", "too old resource version: " + str(exc))
        if isinstance(exc, S.RevisionTooLarge):
            return E.APIError(504, "Timeout", f"Too large resource version: {exc}", retry_after=1,
                              causes=[{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}])
        if isinstance(exc, S.Unavailable):
            return E.APIError(503, "ServiceUnavailable", f"storage unavailable: {exc}", retry_after=1)
        return E.APIError(500, "InternalError", str(exc))

    async def _hooks(self, kind: Kind, event: str, *args: Obj) -> None:
        for hook in self.admission.get(kind.kind, []):
            fn = getattr(hook, event, None)
            if fn is not None:
                await fn(kind, *args)

    async def _get_raw(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        try:
            return await self.store.get(kind.key(namespace, name))
        except S.StoreError as exc:
            raise self._err(kind, exc, name) from None

    async def _check_namespace(self, kind: Kind, namespace: str | None) -> None:
        if not kind.namespaced:
            return
        ns_kind = kind_named("Namespace")
        try:
            ns = await self.store.get(ns_kind.key(None, namespace or ""))
        except S.NotFound:
            raise E.not_found("namespaces", namespace or "") from None
        except S.StoreError as exc:
            raise self._err(ns_kind, exc, namespace or "") from None
        if ns.get("metadata", {}).get("deletionTimestamp"):
            raise E.APIError(
                403,
                "Forbidden",
                f'{kind.plural} "..." is forbidden: unable to create new content in namespace '
                f"{namespace} because it is being terminated",
                kind=kind.plural,
            )

    @staticmethod
    def _check_type(kind: Kind, obj: Obj) -> None:
        if not isinstance(obj, dict):
            raise E.bad_request("the request body must be a JSON object")
        api_version = obj.get("apiVersion")
        if api_version and api_version != kind.api_version:
            raise E.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version ({kind.api_version})"
            )
        k = obj.get("kind")
        if k and k != kind.kind:
            raise E.bad_request(f"the kind in the data ({k}) does not match the expected kind ({kind.kind})")
        md = obj.get("metadata")
        if md is not None and not isinstance(md, dict):
            raise E.bad_request("metadata must be an object")

    @staticmethod
    def _check_decodes(kind: Kind, obj: Obj) -> None:
        """400 for a value Go's decoder would not put in the kind's struct (a ConfigMap value that is an
        object, replicas beyond int32), in kube-apiserver's words."""
        err = fieldschema.decode_error(kind.group, kind.version, kind.kind, obj)
        if err is not None:
            raise E.bad_request(f'{kind.kind} in version "{kind.version}" cannot be handled as a {kind.kind}: {err}')

    @staticmethod
    def _check_size(obj: Obj) -> None:
        """413 for an object larger than a request body may be (a patch or a YAML alias that grew it)."""
        if codec.encoded_size(obj) > codec.MAX_OBJECT_BYTES:
            raise E.APIError(413, "RequestEntityTooLarge",
                             f"Request entity too large: limit is {codec.MAX_OBJECT_BYTES}")

    def _validate(self, kind: Kind, obj: Obj, old: Obj | None = None, subresource: str | None = None) -> None:
        if old is None:
            causes = validation.validate(kind, obj, loopback_ok=self.loopback_ok)
        else:
            causes = validation.validate_update(kind, obj, old, subresource=subresource, loopback_ok=self.loopback_ok)
        if causes:
            raise E.invalid_object(kind.kind, meta.name(obj), kind.group, causes)

    # ------------------------------------------------------------------ verbs

    async def create(self, kind: Kind, namespace: str | None, obj: Obj, *, dry_run: bool = False,
                     fields: FieldValidation | None = None, user: UserInfo | None = None) -> Obj:
        """Create an object; 409 if the name is taken, 422 if it is invalid, 400 for unknown fields if Strict
        or a value its field cannot hold, 413 if it is larger than a body may be. ``user`` is who asks: a
        CertificateSigningRequest's requester fields become theirs (in-process callers pass None: kept)."""
        self._check_type(kind, obj)
        self._check_decodes(kind, obj)
        obj = copy.deepcopy(obj)
        (fields or IGNORE).check(kind, obj)
        obj["apiVersion"] = storage_of(kind).api_version  # v1beta1 Gateway API objects are stored as v1
        obj["kind"] = kind.kind
        md = obj.setdefault("metadata", {})
        if kind.namespaced:
            body_ns = md.get("namespace")
            if body_ns and namespace and body_ns != namespace:
                raise E.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            namespace = namespace or body_ns or "default"
            md["namespace"] = namespace
        else:
            md.pop("namespace", None)
        defaults.apply_defaults(kind, obj)
        meta.prepare_create(kind, obj, namespace)
        if kind.kind == "CertificateSigningRequest" and user is not None:
            set_requester(obj, user.name, user.groups)
        self._validate(kind, obj)
        self._check_size(obj)
        await self._check_namespace(kind, namespace)
        await self._hooks(kind, "on_create", obj)
        if dry_run:
            await self._hooks(kind, "on_create_failed", obj)
            return obj
        try:
            return await self.store.create(kind.key(namespace, meta.name(obj)), obj)
        except S.StoreError as exc:
            await self._hooks(kind, "on_create_failed", obj)
            raise self._err(kind, exc, meta.name(obj)) from None

    async def get(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        """One object; 404 if absent."""
        return await self._get_raw(kind, namespace, name)

    async def list(self, kind: Kind, namespace: str | None, opts: ListOptions) -> ListPage:
        """A filtered, optionally paged list at one revision.

        ``resourceVersion`` with ``resourceVersionMatch=Exact`` lists the state at that
        revision (410 once compacted); otherwise (NotOlderThan) the current state, and
        504 "Too large resource version" for a revision this store has not reached.
        """
        opts.validate()
        match = opts.filter(kind)
        prefix = kind.prefix(namespace)
        revision: int | None = None
        start_after: str | None = None
        if opts.continue_token:
            if opts.resource_version not in ("", "0"):
                raise E.bad_request("specifying resource version is not allowed when using continue")
            token_rv, start_after = _decode_continue(opts.continue_token)
            revision = token_rv if token_rv > 0 else None
        elif opts.resource_version not in ("", "0"):
            wanted = parse_resource_version(opts.resource_version)
            try:
                current = await self.store.current_revision()
            except S.StoreError as exc:
                raise self._err(kind, exc, "") from None
            if wanted > current:
                raise _too_large(wanted, current)
            if opts.resource_version_match == "Exact":
                revision = wanted
        # Any limit beyond what a store can hold lists everything, as it would upstream.
        limit = min(opts.limit, 1 << 31) if opts.limit and opts.limit > 0 else None
        items: list[Obj] = []
        more = False
        last_key: str | None = None
        try:
            while True:
                if limit is None:
                    page_size = None
                elif match is None:
                    page_size = limit - len(items)
                else:
                    page_size = max(limit, 100)
                res = await self.store.list(prefix, revision=revision, start_after=start_after, limit=page_size)
                revision = res.revision
                for obj in res.items:
                    if limit is not None and len(items) >= limit:
                        more = True
                        break
                    last_key = _key(kind, obj)
                    if match is None or match(obj):
                        items.append(obj)
                if more or not res.more:
                    break
                if limit is not None and len(items) >= limit:
                    more = True
                    break
                start_after = last_key
        except S.Gone:
            if not opts.continue_token:
                raise E.APIError(410, "Expired", "The resourceVersion for the provided list is too old.") from None
            raise E.APIError(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result. "
                "You can start a new list without the continue parameter.",
            ) from None
        except S.StoreError as exc:
            raise self._err(kind, exc, "") from None
        token = ""
        if more and last_key is not None:
            token = _encode_continue(revision or 0, last_key)
        return ListPage(items, revision or 0, token)

    async def update(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        obj: Obj,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        fields: FieldValidation | None = None,
    ) -> Obj:
        """Replace an object (or its status); 409 on a stale resourceVersion."""
        self._check_type(kind, obj)
        self._check_decodes(kind, obj)
        md = obj.get("metadata") or {}
        if md.get("name") and md["name"] != name:
            raise E.bad_request(
                f"the name of the object ({md['name']}) does not match the name on the URL ({name})"
            )
        if kind.namespaced and md.get("namespace") and md["namespace"] != namespace:
            raise E.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        expected = _parse_rv(md.get("resourceVersion"))
        old = await self._get_raw(kind, namespace, name)
        return await self._write(kind, namespace, name, obj, old, expected, subresource, dry_run, fields)

    async def _write(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        obj: Obj,
        old: Obj,
        expected: int | None,
        subresource: str | None,
        dry_run: bool,
        fields: FieldValidation | None = None,
    ) -> Obj:
        new = copy.deepcopy(obj)
        (fields or IGNORE).check(kind, new)
        new["apiVersion"] = storage_of(kind).api_version
        new["kind"] = kind.kind
        nmd = new.setdefault("metadata", {})
        nmd["name"] = name
        if kind.namespaced:
            nmd["namespace"] = namespace
        if subresource != "status":
            defaults.apply_defaults(kind, new)
        meta.prepare_update(kind, new, old, subresource)
        self._validate(kind, new, old, subresource)
        self._check_size(new)
        await self._hooks(kind, "on_update", new, old)
        if dry_run or _finalized(new):
            await self._hooks(kind, "on_update_failed", new, old)
            if dry_run:
                return new
            return await self._remove(kind, namespace, name, _parse_rv(old["metadata"]["resourceVersion"]))
        try:
            stored = await self.store.update(kind.key(namespace, name), new, expected)
        except S.StoreError as exc:
            await self._hooks(kind, "on_update_failed", new, old)
            raise self._err(kind, exc, name) from None
        await self._hooks(kind, "on_updated", new, old)
        return stored

    async def patch(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        content_type: str,
        body: bytes,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        fields: FieldValidation | None = None,
    ) -> Obj:
        """Apply a JSON, merge or strategic-merge patch, retrying on races (a patch without a resourceVersion
        is applied again to the newer object for up to PATCH_RETRY_SECONDS, the request timeout, as upstream's
        GuaranteedUpdate retries until the request times out, not a fixed number of times).

        The patched object must still decode into its kind (else 422 on ``patch``, as
        upstream) and be no larger than a body may be (else 413).
        """
        patch_type(content_type)
        try:
            doc = codec.loads_json(body or b"null")
        except codec.DecodeError as exc:
            raise E.bad_request(f"error decoding patch: {exc}") from None
        names_rv = _patch_names_resource_version(doc)  # a precondition: its conflicts are not retried
        deadline = trio.current_time() + PATCH_RETRY_SECONDS
        while True:
            old = await self._get_raw(kind, namespace, name)
            current = _scale_of(kind, old) if subresource == "scale" else old
            patched = apply_patch(kind, current, content_type, doc)
            _check_patched(kind, patched, SCALE if subresource == "scale" else None)
            if subresource == "scale":
                return await self._write_scale(kind, namespace, name, patched, old, dry_run)
            pmd = patched.get("metadata") or {}
            expected = _parse_rv(pmd.get("resourceVersion")) if names_rv else None
            if expected is not None and pmd.get("resourceVersion") != old["metadata"]["resourceVersion"]:
                raise E.conflict(kind.plural, name, kind.group)
            try:
                return await self._write(
                    kind, namespace, name, patched, old,
                    _parse_rv(old["metadata"]["resourceVersion"]), subresource, dry_run, fields,
                )
            except E.APIError as exc:
                if exc.reason == "Conflict" and expected is None and trio.current_time() < deadline:
                    await trio.lowlevel.checkpoint()
                    continue
                raise

    async def delete(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        *,
        grace_period: int | None = None,
        preconditions: dict[str, str] | None = None,
        dry_run: bool = False,
    ) -> tuple[Obj, bool]:
        """Delete (or start deleting) an object; returns (object, gone_now)."""
        old = await self._get_raw(kind, namespace, name)
        md = old["metadata"]
        pre = preconditions or {}
        if pre.get("uid") and pre["uid"] != md.get("uid"):
            raise E.APIError(
                409, "Conflict",
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {md.get('uid')}",
                kind=kind.plural, name=name, group=kind.group,
            )
        rv = _parse_rv(md.get("resourceVersion"))
        if pre.get("resourceVersion") and pre["resourceVersion"] != md.get("resourceVersion"):
            raise E.conflict(kind.plural, name, kind.group)
        if dry_run:
            return old, False
        if kind.kind == "Namespace":
            return await self._delete_namespace(old), False
        grace = self._grace(kind, old, grace_period)
        finalizers = md.get("finalizers")
        if not grace and not finalizers:
            return await self._remove(kind, namespace, name, rv), True
        if md.get("deletionTimestamp"):
            # Already terminating: only a shorter grace period changes anything.
            cur = md.get("deletionGracePeriodSeconds") or 0
            if not grace or grace >= cur:
                return old, False
        new = copy.deepcopy(old)
        nmd = new["metadata"]
        now = dt.datetime.now(dt.UTC)
        try:
            when = now + dt.timedelta(seconds=grace or 0)
        except OverflowError:  # an int64 grace period beyond the year 9999: as far as a timestamp goes
            when = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
        nmd["deletionTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        nmd["deletionGracePeriodSeconds"] = grace or 0
        try:
            return await self.store.update(kind.key(namespace, name), new, rv), False
        except S.StoreError as exc:
            raise self._err(kind, exc, name) from None

    @staticmethod
    def _grace(kind: Kind, obj: Obj, requested: int | None) -> int | None:
        """Pods bound to a node terminate gracefully; everything else goes at once."""
        if kind.kind != "Pod":
            return None
        spec = obj.get("spec") or {}
        phase = (obj.get("status") or {}).get("phase")
        if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
            return None
        if requested is None:
            requested = spec.get("terminationGracePeriodSeconds", 30)
        elif requested < 0:
            requested = 1  # upstream's BeforeDelete: a negative grace period is 1 s
        grace = int(requested)
        return grace if grace > 0 else None

    async def _remove(self, kind: Kind, namespace: str | None, name: str, rv: int | None) -> Obj:
        try:
            gone = await self.store.delete(kind.key(namespace, name), rv)
        except S.StoreError as exc:
            raise self._err(kind, exc, name) from None
        await self._hooks(kind, "on_delete", gone)
        return gone

    async def delete_collection(
        self, kind: Kind, namespace: str | None, opts: ListOptions, grace_period: int | None = None
    ) -> list[Obj]:
        """Delete every object matching the selectors."""
        page = await self.list(kind, namespace, opts)
        out = []
        for obj in page.items:
            try:
                gone, _ = await self.delete(kind, meta.namespace(obj) or None, meta.name(obj), grace_period=grace_period)
                out.append(gone)
            except E.APIError as exc:
                if exc.code != 404:
                    raise
        return out

    # ------------------------------------------------------------ namespaces

    async def _delete_namespace(self, ns: Obj) -> Obj:
        name = meta.name(ns)
        md = ns["metadata"]
        if not md.get("deletionTimestamp"):
            new = copy.deepcopy(ns)
            new["metadata"]["deletionTimestamp"] = meta.now()
            new.setdefault("status", {})["phase"] = "Terminating"
            kind = kind_named("Namespace")
            try:
                ns = await self.store.update(kind.key(None, name), new, _parse_rv(md.get("resourceVersion")))
            except S.StoreError as exc:
                raise self._err(kind, exc, name) from None
        if self.nursery is not None:
            self.nursery.start_soon(self.finish_namespace, name)
        else:
            await self.finish_namespace(name)
        return ns

    async def finish_namespace(self, name: str) -> None:
        """Remove everything in a terminating namespace, then the namespace itself."""
        ns_kind = kind_named("Namespace")
        for _ in range(100):
            left = 0
            for kind in KINDS:
                if not kind.namespaced or not kind.storage:
                    continue
                res = await self.store.list(kind.prefix(name))
                for obj in res.items:
                    left += 1
                    try:
                        await self.delete(kind, name, meta.name(obj), grace_period=0)
                    except E.APIError as exc:
                        if exc.code != 404:
                            raise
            if not left:
                break
            await trio.sleep(0.2)
        try:
            await self.store.delete(ns_kind.key(None, name))
        except S.NotFound:
            pass

    async def resume_terminating_namespaces(self) -> None:
        """Finish namespace deletions that a restart interrupted."""
        res = await self.store.list(kind_named("Namespace").prefix())
        for ns in res.items:
            if ns["metadata"].get("deletionTimestamp"):
                assert self.nursery is not None
                self.nursery.start_soon(self.finish_namespace, meta.name(ns))

    async def ensure_default_namespaces(self) -> None:
        """Create default, kube-system, kube-public and kube-node-lease if missing."""
        kind = kind_named("Namespace")
        for name in DEFAULT_NAMESPACES:
            try:
                await self.create(kind, None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
            except E.APIError as exc:
                if exc.code != 409:
                    raise

    # --------------------------------------------------------------- binding

    async def bind(self, namespace: str, name: str, binding: Obj) -> Obj:
        """Assign a pod to a node (pods/binding), as the scheduler does; 409 if already bound."""
        kind = kind_named("Pod")
        err = fieldschema.struct_decode_error(BINDING, binding)
        if err is not None:
            raise E.bad_request(f'Binding in version "v1" cannot be handled as a Binding: {err}')
        target = binding.get("target") or {}
        node = target.get("name")
        if not node:
            raise E.invalid_object("Binding", name, "", [E.required("target.name")])
        if (target.get("kind") or "Node") != "Node":
            raise E.invalid_object("Binding", name, "", [E.not_supported("target.kind", target.get("kind"), ["Node"])])
        deadline = trio.current_time() + PATCH_RETRY_SECONDS
        while True:
            old = await self._get_raw(kind, namespace, name)
            uid = (binding.get("metadata") or {}).get("uid")
            if uid and uid != old["metadata"].get("uid"):
                raise E.APIError(409, "Conflict", f'Operation cannot be fulfilled on pods/binding "{name}": UID mismatch')
            if old["metadata"].get("deletionTimestamp"):
                raise E.APIError(409, "Conflict", f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} is being deleted, cannot be assigned to a host')
            spec = old.get("spec") or {}
            if spec.get("nodeName"):
                raise E.APIError(
                    409, "Conflict",
                    f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} is already assigned to node "{spec["nodeName"]}"',
                )
            new = copy.deepcopy(old)
            new["spec"]["nodeName"] = node
            conds = [c for c in (new.get("status") or {}).get("conditions") or [] if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": meta.now()})
            new.setdefault("status", {})["conditions"] = conds
            try:
                await self.store.update(kind.key(namespace, name), new, _parse_rv(old["metadata"]["resourceVersion"]))
            except S.Conflict:
                if trio.current_time() < deadline:
                    continue
                raise E.conflict("pods", name) from None
            except S.StoreError as exc:
                raise self._err(kind, exc, name) from None
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    # ----------------------------------------------------------------- scale

    async def get_scale(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        """The autoscaling/v1 Scale of a Deployment or ReplicaSet."""
        return _scale_of(kind, await self._get_raw(kind, namespace, name))

    async def update_scale(self, kind: Kind, namespace: str | None, name: str, scale: Obj) -> Obj:
        """Set replicas through the scale subresource."""
        err = fieldschema.struct_decode_error(SCALE, scale)
        if err is not None:
            raise E.bad_request(f'Scale in version "v1" cannot be handled as a Scale: {err}')
        old = await self._get_raw(kind, namespace, name)
        rv = (scale.get("metadata") or {}).get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise E.conflict(kind.plural, name, kind.group)
        return await self._write_scale(kind, namespace, name, scale, old, False)

    async def _write_scale(self, kind: Kind, namespace: str | None, name: str, scale: Obj, old: Obj, dry_run: bool) -> Obj:
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise E.invalid_object(
                "Scale", name, "autoscaling",
                [E.invalid("spec.replicas", replicas, "must be greater than or equal to 0")],
            )
        new = copy.deepcopy(old)
        new.setdefault("spec", {})["replicas"] = replicas
        written = await self._write(
            kind, namespace, name, new, old, _parse_rv(old["metadata"]["resourceVersion"]), None, dry_run
        )
        return _scale_of(kind, written)

    # ----------------------------------------------------------------- watch

    async def watch(
        self,
        kind: Kind,
        namespace: str | None,
        opts: ListOptions,
        emit: Callable[[WatchEvent], Awaitable[None]],
        *,
        bookmarks: bool = False,
        bookmark_interval: float = 60.0,
    ) -> None:
        """Send events for matching objects to ``emit``, from resourceVersion (or a fresh list).

        Returns when the store ends the stream; the caller bounds it with a
        cancel scope (timeoutSeconds, client gone).
        """
        opts.validate(watch=True)
        match = opts.filter(kind)
        prefix = kind.prefix(namespace)
        rv = opts.resource_version
        seen: set[str] | None = None
        initial: list[Obj] = []
        try:
            if rv in ("", "0"):
                res = await self.store.list(prefix)
                start = res.revision
                initial = [o for o in res.items if match is None or match(o)]
                if match is not None:
                    seen = {_key(kind, o) for o in initial}
            else:
                start = parse_resource_version(rv)
                current = await self.store.current_revision()
                if start > current:
                    raise _too_large(start, current)
                if match is not None:
                    res = await self.store.list(prefix, revision=start) if start else await self.store.list(prefix)
                    seen = {_key(kind, o) for o in res.items if match(o)}
        except S.Gone:
            await emit(WatchEvent("ERROR", _gone_status(rv)))
            return
        except S.StoreError as exc:
            raise self._err(kind, exc, "") from None
        for obj in initial:
            await emit(WatchEvent("ADDED", obj))
        last = start
        last_sent = trio.current_time()

        async def bookmarker() -> None:
            # A bookmark after every quiet interval, so no cancel scope is needed per event.
            nonlocal last_sent
            while True:
                await trio.sleep_until(last_sent + bookmark_interval)
                if trio.current_time() >= last_sent + bookmark_interval:
                    last_sent = trio.current_time()
                    await emit(WatchEvent("BOOKMARK", _bookmark(kind, last)))

        async with trio.open_nursery() as nursery:
            if bookmarks:
                nursery.start_soon(bookmarker)
            try:
                async with self.store.watch(prefix, start) as events:
                    async for ev in events:
                        last = ev.revision
                        out = _filter_event(kind, ev, match, seen)
                        if out is not None:
                            last_sent = trio.current_time()
                            await emit(out)
            except S.Gone:
                await emit(WatchEvent("ERROR", _gone_status(rv)))
            nursery.cancel_scope.cancel()


_DELETE_OPTION_TYPES: dict[str, tuple[type, str]] = {
    "gracePeriodSeconds": (int, "int64"),
    "preconditions": (dict, "v1.Preconditions"),
    "orphanDependents": (bool, "bool"),
    "propagationPolicy": (str, "v1.DeletionPropagation"),
    "dryRun": (list, "[]string"),
    "kind": (str, "string"),
    "apiVersion": (str, "string"),
}


def check_delete_options(opts: dict[str, Any]) -> None:
    """Refuse DeleteOptions that upstream cannot decode (400) or that its ``ValidateDeleteOptions`` refuses
    (422 on DeleteOptions: a propagationPolicy other than Foreground/Background/Orphan, one together with
    orphanDependents, a dryRun other than All). Nothing is deleted then."""
    for key, value in opts.items():
        want = _DELETE_OPTION_TYPES.get(key)
        if want is None or value is None:
            continue
        typ, go = want
        bad = (isinstance(value, bool) and typ is not bool) or not isinstance(value, typ)
        if typ is int and not bad and not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise E.bad_request(f"json: cannot unmarshal number {value} into Go struct field DeleteOptions.{key} of type int64")
        if typ is dict and not bad:
            bad_pre = [k for k in ("uid", "resourceVersion") if value.get(k) is not None and not isinstance(value[k], str)]
            if bad_pre:
                raise E.bad_request(f"json: cannot unmarshal {fieldschema.json_kind(value[bad_pre[0]])} into Go struct field "
                                    f"Preconditions.preconditions.{bad_pre[0]} of type string")
        if typ is list and not bad and not all(isinstance(v, str) for v in value):
            raise E.bad_request("json: cannot unmarshal number into Go struct field DeleteOptions.dryRun of type string")
        if bad:
            raise E.bad_request(f"json: cannot unmarshal {fieldschema.json_kind(value)} into Go struct field DeleteOptions.{key} of type {go}")
    causes: list[E.Cause] = []
    policy = opts.get("propagationPolicy")
    if opts.get("orphanDependents") is not None and policy is not None:
        causes.append(E.invalid("propagationPolicy", policy, "orphanDependents and deletionPropagation cannot be both set"))
    if policy is not None and policy not in PROPAGATION_POLICIES:
        causes.append(E.not_supported("propagationPolicy", policy, [*PROPAGATION_POLICIES, "nil"]))
    dry = opts.get("dryRun") or []
    if any(v != "All" for v in dry):
        shown = "[]string{" + ", ".join(json.dumps(v) for v in dry) + "}"
        causes.append(E.cause("dryRun", "FieldValueNotSupported", f'Unsupported value: {shown}: supported values: "All"'))
    if causes:
        raise E.invalid_object("DeleteOptions", "", "meta.k8s.io", causes)


def _key(kind: Kind, obj: Obj) -> str:
    return kind.key(meta.namespace(obj) or None, meta.name(obj))


def _filter_event(kind: Kind, ev: S.Event, match: Callable[[Obj], bool] | None, seen: set[str] | None) -> WatchEvent | None:
    if match is None or seen is None:
        return WatchEvent(ev.type, ev.obj)
    key = ev.key
    if ev.type == "DELETED":
        if key in seen:
            seen.discard(key)
            return WatchEvent("DELETED", ev.obj)
        return None
    if match(ev.obj):
        if key in seen:
            return WatchEvent("MODIFIED", ev.obj)
        seen.add(key)
        return WatchEvent("ADDED", ev.obj)
    if key in seen:
        seen.discard(key)
        return WatchEvent("DELETED", ev.obj)
    return None


def _bookmark(kind: Kind, revision: int) -> Obj:
    return {
        "kind": kind.kind,
        "apiVersion": kind.api_version,
        "metadata": {"resourceVersion": str(revision)},
    }


def _gone_status(rv: str) -> Obj:
    return E.APIError(410, "Expired", f"too old resource version: {rv}").status()


INT64_MAX = (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1


def parse_resource_version(value: str) -> int:
    """A list/watch ``resourceVersion`` parameter as upstream's ``ParseResourceVersion`` reads it (a uint64,
    "" and "0" meaning any); 400 with its words otherwise."""
    if value in ("", "0"):
        return 0
    if value.isascii() and value.isdigit():
        number = int(value)
        if number <= UINT64_MAX:
            return number
        why = "value out of range"
    else:
        why = "invalid syntax"
    raise E.bad_request(
        f'invalid resource version: resourceVersion: Invalid value: "{value}": strconv.ParseUint: parsing "{value}": {why}')


def _patch_names_resource_version(doc: Any) -> bool:
    """Whether a patch sets ``metadata.resourceVersion`` (a JSON patch's op on that path, or a merge patch's
    field): then the object must still be at that version, else the patch is applied to the newer one. (The
    patched object always carries a version, the stored one's when the patch did not name one.)"""
    if isinstance(doc, list):
        return any(isinstance(op, dict) and op.get("path") == "/metadata/resourceVersion"
                   and op.get("op") in ("add", "replace", "test") for op in doc)
    md = doc.get("metadata") if isinstance(doc, dict) else None
    return isinstance(md, dict) and md.get("resourceVersion") not in (None, "")


def _parse_rv(value: Any) -> int | None:
    """An object's ``metadata.resourceVersion`` (for a precondition); beyond int64 it can match no revision."""
    if value in (None, ""):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return min(int(value), INT64_MAX)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return min(value, INT64_MAX)
    raise E.bad_request(f"invalid resourceVersion {value!r}")


def _too_large(wanted: int, current: int) -> E.APIError:
    """504 as upstream answers a resourceVersion newer than the store's (clients retry, reflectors relist)."""
    return E.APIError(
        504, "Timeout", f"Too large resource version: {wanted}, current: {current}", retry_after=1,
        causes=[{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
    )


def _finalized(obj: Obj) -> bool:
    md = obj.get("metadata") or {}
    return bool(md.get("deletionTimestamp")) and not md.get("finalizers") and not md.get("deletionGracePeriodSeconds")


def _encode_continue(revision: int, key: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": key}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, str]:
    """(revision, start key) of a continue token, checked as upstream's ``DecodeContinue`` checks it.

    A revision below 0 means "the latest" (upstream's tokens after compaction carry -1).
    Anything else that is not a token kmesh could have made is 400 "invalid continue token".
    """
    def invalid(detail: str) -> E.APIError:
        return E.bad_request(f"invalid continue token: continue key is not valid{detail}")

    try:
        if "=" in token:
            raise ValueError("padding")
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
    except (ValueError, binascii.Error):
        raise invalid(": illegal base64 data") from None
    try:
        data = codec.loads_json(raw)
    except codec.DecodeError as exc:
        raise invalid(f": {exc}") from None
    if not isinstance(data, dict):
        raise invalid(f": json: cannot unmarshal {fieldschema.json_kind(data)} into Go value of type storage.continueToken")
    for field_name, want in (("v", "string"), ("rv", "int64"), ("start", "string")):
        value = data.get(field_name)
        if value is None:
            continue
        if want == "string" and not isinstance(value, str):
            raise invalid(f": json: cannot unmarshal {fieldschema.json_kind(value)} into Go struct field "
                          f"continueToken.{field_name} of type string")
        if want == "int64" and (isinstance(value, bool) or not isinstance(value, int)
                                or not -INT64_MAX - 1 <= value <= INT64_MAX):
            what = f"number {value!r}" if isinstance(value, (int, float)) and not isinstance(value, bool) \
                else fieldschema.json_kind(value)
            raise invalid(f": json: cannot unmarshal {what} into Go struct field continueToken.rv of type int64")
    if data.get("v") != "meta.k8s.io/v1":
        raise invalid(f": server does not recognize this encoded version {data.get('v') or ''}".rstrip())
    rv = data.get("rv") or 0
    if rv == 0:
        raise invalid(": incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    if not data.get("start"):
        raise invalid(": encoded start key empty (version meta.k8s.io/v1)")
    return rv, data["start"]




def _scale_of(kind: Kind, obj: Obj) -> Obj:
    md = obj["metadata"]
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    sel = spec.get("selector") or {}
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for expr in sel.get("matchExpressions") or []:
        op, key, vals = expr.get("operator"), expr.get("key"), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(vals)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(vals)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": md["name"],
            "namespace": md.get("namespace"),
            "uid": md.get("uid"),
            "resourceVersion": md.get("resourceVersion"),
            "creationTimestamp": md.get("creationTimestamp"),
        },
        "spec": {"replicas": spec.get("replicas", 1)},
        "status": {"replicas": status.get("replicas", 0), "selector": ",".join(parts)},
    }


SCALE = "io.k8s.api.autoscaling.v1.Scale"
BINDING = "io.k8s.api.core.v1.Binding"
PATCH_TYPES = (
    "application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json",
)


def patch_type(content_type: str) -> str:
    """The patch type of a Content-Type; 415 for one kube-apiserver does not take (checked before the body)."""
    ct = content_type.split(";")[0].strip().lower()
    if ct == "application/apply-patch+yaml":
        raise E.APIError(
            415, "UnsupportedMediaType",
            "server-side apply is not supported by kmesh; use client-side apply (kubectl apply without --server-side)",
        )
    if ct not in PATCH_TYPES:
        raise E.APIError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted "
                         "media types include: " + ", ".join(PATCH_TYPES))
    return ct


def _check_patched(kind: Kind, patched: Any, struct: str | None = None) -> None:
    """422 as upstream refuses a patched object that no longer decodes into its kind (``patch: Invalid value``)."""
    if not isinstance(patched, dict):
        err = ("couldn't get version/kind; json parse error: json: cannot unmarshal "
               f"{fieldschema.json_kind(patched) if patched is not None else 'null'} into Go value of type struct "
               '{ APIVersion string "json:\\"apiVersion,omitempty\\""; Kind string "json:\\"kind,omitempty\\"" }')
    elif struct is not None:
        err = fieldschema.struct_decode_error(struct, patched)
    else:
        err = fieldschema.decode_error(kind.group, kind.version, kind.kind, patched)
    if err is None:
        return
    shown = json.dumps(patched, separators=(",", ":"))
    if len(shown) > 1024:  # upstream quotes it all; a few MB of it help nobody
        shown = shown[:1024] + "..."
    raise E.invalid_object("", "", "", [E.invalid("patch", shown, err)])


def apply_patch(kind: Kind, current: Obj, content_type: str, doc: Any) -> Any:
    """The object after applying a patch document of the given content type.

    A JSON patch may hold at most ``maxJSONPatchOperations`` operations (413) and its
    ``copy`` operations may add at most 3 MiB (422), as in kube-apiserver. The result
    may be something other than an object (a JSON patch can replace the root).
    """
    ct = patch_type(content_type)
    if ct == "application/json-patch+json":
        if not isinstance(doc, list):
            raise E.bad_request("json patch must be a list of operations")
        if len(doc) > codec.MAX_JSON_PATCH_OPERATIONS:
            raise E.APIError(
                413, "RequestEntityTooLarge",
                f"Request entity too large: The allowed maximum operations in a JSON patch is "
                f"{codec.MAX_JSON_PATCH_OPERATIONS}, got {len(doc)}",
            )
        return patch.json_patch(current, doc, max_copy_bytes=codec.MAX_JSON_PATCH_COPY_BYTES)
    if not isinstance(doc, dict):
        raise E.bad_request("patch must be a JSON object")
    if ct == "application/merge-patch+json":
        return patch.merge_patch(current, doc)
    return patch.strategic_merge_patch(current, doc, kind)
