"""core/v1 Secrets and ServiceAccounts, with kube-apiserver 1.32's rules and messages.

A Secret's ``type`` picks the data keys it must carry (``kubernetes.io/tls``
needs ``tls.crt`` and ``tls.key``, ...); keys are config-map keys; the data
decoded is at most 1 MiB; ``type`` never changes and ``immutable: true``
freezes ``data``. ``stringData`` never reaches validation: decoding merges it
into ``data`` (``kmesh.api.defaults``).
"""

from __future__ import annotations

import base64
import binascii
import json

from kmesh.api.errors import Cause
from kmesh.api.formats import is_config_map_key
from kmesh.api.obj import Obj
from kmesh.api.validation.common import Opts, _d, _s, forbidden, immutable, invalid, required, too_long
from kmesh.api.validation.meta import name_is_dns_subdomain, validate_object_meta, validate_object_meta_update

MAX_SECRET_SIZE = 1 << 20

TYPE_OPAQUE = "Opaque"
TYPE_SERVICE_ACCOUNT_TOKEN = "kubernetes.io/service-account-token"
TYPE_DOCKERCFG = "kubernetes.io/dockercfg"
TYPE_DOCKER_CONFIG_JSON = "kubernetes.io/dockerconfigjson"
TYPE_BASIC_AUTH = "kubernetes.io/basic-auth"
TYPE_SSH_AUTH = "kubernetes.io/ssh-auth"
TYPE_TLS = "kubernetes.io/tls"
SERVICE_ACCOUNT_NAME_KEY = "kubernetes.io/service-account.name"
REDACTED = "<secret contents redacted>"


def _decoded(value: object) -> bytes:
    try:
        return base64.b64decode(_s(value), validate=False)
    except (binascii.Error, ValueError):
        return b""


def _json_error(raw: bytes) -> str | None:
    try:
        json.loads(raw)
    except ValueError as exc:
        return str(exc)
    return None


def validate_secret(obj: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a new Secret from being created."""
    errs = validate_object_meta(obj.get("metadata"), True, name_is_dns_subdomain)
    data = _d(obj.get("data"))
    total = 0
    for key, value in data.items():
        key = _s(key)
        errs += [invalid(f"data[{key}]", key, m) for m in is_config_map_key(key)]
        total += len(_decoded(value))
    if total > MAX_SECRET_SIZE:
        errs.append(too_long("data", MAX_SECRET_SIZE))
    stype = _s(obj.get("type"))
    if stype == TYPE_SERVICE_ACCOUNT_TOKEN:
        annotations = _d(_d(obj.get("metadata")).get("annotations"))
        if not _s(annotations.get(SERVICE_ACCOUNT_NAME_KEY)):
            errs.append(required(f"metadata.annotations[{SERVICE_ACCOUNT_NAME_KEY}]"))
    elif stype in (TYPE_DOCKERCFG, TYPE_DOCKER_CONFIG_JSON):
        key = ".dockercfg" if stype == TYPE_DOCKERCFG else ".dockerconfigjson"
        if key not in data:
            errs.append(required(f"data[{key}]"))
        else:
            problem = _json_error(_decoded(data[key]))
            if problem is not None:
                errs.append(invalid(f"data[{key}]", REDACTED, problem))
    elif stype == TYPE_BASIC_AUTH:
        if "username" not in data and "password" not in data:
            errs.append(required("data[username]"))
            errs.append(required("data[password]"))
    elif stype == TYPE_SSH_AUTH:
        if "ssh-privatekey" not in data:
            errs.append(required("data[ssh-privatekey]"))
    elif stype == TYPE_TLS:
        for key in ("tls.crt", "tls.key"):
            if key not in data:
                errs.append(required(f"data[{key}]"))
    return errs


def validate_secret_update(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop an update of a Secret: ``type`` never changes, ``immutable`` freezes data."""
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    errs += immutable("type", _s(new.get("type")), _s(old.get("type")))
    if old.get("immutable") is True:
        if new.get("immutable") is not True:
            errs.append(forbidden("immutable", "field is immutable when `immutable` is set"))
        if _d(new.get("data")) != _d(old.get("data")):
            errs.append(forbidden("data", "field is immutable when `immutable` is set"))
    return errs + validate_secret(new, opts)


def validate_service_account(obj: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a new ServiceAccount from being created (its metadata; names are DNS subdomains)."""
    return validate_object_meta(obj.get("metadata"), True, name_is_dns_subdomain)
