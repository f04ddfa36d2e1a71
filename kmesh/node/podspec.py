"""Reading a pod spec the way a kubelet does: hostname, env, $(VAR) expansion, named ports, log paths."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from kmesh.api.obj import Obj
from kmesh.api.podlogpaths import container_log_file

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_FIELD_RE = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")
_ENV_NAME_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_VAR_RE = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


def pod_key(pod: Obj) -> str:
    """``namespace/name`` of a pod."""
    md = pod.get("metadata") or {}
    return f"{md.get('namespace', '')}/{md.get('name', '')}"


def pod_uid(pod: Obj) -> str:
    """The pod's UID."""
    return (pod.get("metadata") or {}).get("uid", "")


def pod_hostname(pod: Obj) -> str:
    """The hostname a container of the pod sees: ``spec.hostname`` or the pod name, at most 63 chars."""
    name = (pod.get("spec") or {}).get("hostname") or (pod.get("metadata") or {}).get("name", "")
    return name[:63].rstrip("-.")


def field_value(pod: Obj, path: str, pod_ip: str, host_ip: str) -> str:
    """The value of a downward-API ``fieldRef.fieldPath``."""
    md = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": md.get("name", ""),
        "metadata.namespace": md.get("namespace", ""),
        "metadata.uid": md.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return str(simple[path])
    m = _FIELD_RE.match(path)
    if m:
        return str((md.get(m.group(1)) or {}).get(m.group(2), ""))
    return ""


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known vars replaced, unknown left as is, ``$$`` → ``$``."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_RE.sub(sub, text)


class EnvError(Exception):
    """A container's env names a Secret/ConfigMap (or key) that is not there: upstream's message."""


EnvObjects = Mapping[tuple[str, str], Obj | None]
"""The Secrets and ConfigMaps a pod's env reads, by (kind, name); None: not found."""


def env_references(container: Obj) -> set[tuple[str, str]]:
    """The (kind, name) of every Secret and ConfigMap ``container``'s ``env``/``envFrom`` reads."""
    out = set()
    for src in container.get("envFrom") or []:
        for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            if src.get(field, {}).get("name"):
                out.add((kind, src[field]["name"]))
    for var in container.get("env") or []:
        vf = var.get("valueFrom") or {}
        for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            if (vf.get(field) or {}).get("name"):
                out.add((kind, vf[field]["name"]))
    return out


def _decoded(kind: str, obj: Obj) -> dict[str, str]:
    """A Secret's or ConfigMap's keys as strings (Secret data is base64 on the wire)."""
    if kind == "Secret":
        return {k: base64.b64decode(v or "").decode("utf-8", "replace") for k, v in (obj.get("data") or {}).items()}
    return {k: str(v) for k, v in (obj.get("data") or {}).items()}


def _ref_value(kind: str, ref: Obj, namespace: str, objects: EnvObjects) -> str | None:
    """One ``configMapKeyRef``/``secretKeyRef``: its value, None when optional and missing; EnvError otherwise."""
    name, key = ref.get("name", ""), ref.get("key", "")
    obj = objects.get((kind, name))
    if obj is None:
        if ref.get("optional"):
            return None
        raise EnvError(f'{"secret" if kind == "Secret" else "configmap"} "{name}" not found')
    data = _decoded(kind, obj)
    if key not in data:
        if ref.get("optional"):
            return None
        raise EnvError(f"couldn't find key {key} in {kind} {namespace}/{name}")
    return data[key]


def container_env(
    pod: Obj, container: Obj, pod_ip: str, host_ip: str, objects: EnvObjects | None = None,
) -> dict[str, str]:
    """The environment of a container process: PATH, HOSTNAME, HOME, then ``envFrom``, then ``env``.

    Literal values and ``fieldRef`` are resolved; ``configMapKeyRef``/``secretKeyRef`` and ``envFrom`` read
    ``objects`` (the kubelet fetches them; ``EnvError`` for a missing non-optional one). Without ``objects``
    they resolve to "" (and ``envFrom`` adds nothing); resource references always do.
    """
    env: dict[str, str] = {
        "PATH": os.environ.get("PATH", DEFAULT_PATH),
        "HOSTNAME": pod_hostname(pod),
        "HOME": os.environ.get("HOME", "/root"),
    }
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    if objects is not None:
        for src in container.get("envFrom") or []:
            for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                ref = src.get(field)
                if not ref:
                    continue
                obj = objects.get((kind, ref.get("name", "")))
                if obj is None:
                    if ref.get("optional"):
                        continue
                    raise EnvError(f'{"secret" if kind == "Secret" else "configmap"} "{ref.get("name")}" not found')
                for k, v in _decoded(kind, obj).items():
                    name = (src.get("prefix") or "") + k
                    if _ENV_NAME_RE.match(name):
                        env[name] = v
    for var in container.get("env") or []:
        name = var.get("name")
        if not name:
            continue
        if "value" in var:
            env[name] = expand(str(var.get("value") or ""), env)
            continue
        vf = var.get("valueFrom") or {}
        if vf.get("fieldRef"):
            env[name] = field_value(pod, vf["fieldRef"].get("fieldPath", ""), pod_ip, host_ip)
            continue
        value: str | None = ""
        for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            if vf.get(field) and objects is not None:
                value = _ref_value(kind, vf[field], namespace, objects)
        if value is not None:
            env[name] = value
    return env


def container_argv(container: Obj, env: dict[str, str]) -> list[str]:
    """``command`` + ``args`` with ``$(VAR)`` expanded."""
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    return [expand(str(a), env) for a in argv]


def resolve_port(container: Obj, port: Any) -> int:
    """A probe/hook port: an int, a numeric string, or a named ``containerPort``; ValueError otherwise."""
    if isinstance(port, int):
        return port
    text = str(port)
    if text.isdigit():
        return int(text)
    for p in container.get("ports") or []:
        if p.get("name") == text:
            return int(p["containerPort"])
    raise ValueError(f"port {text!r} not found in container {container.get('name')!r}")


def log_path(data_dir: Path, pod: Obj, container: str, restart: int) -> Path:
    """Where a container's output goes: ``pods/<ns>_<name>_<uid>/<container>/<restart>.log`` (as upstream);
    its directories are made 0700."""
    path = container_log_file(data_dir, pod, container, restart)
    for d in (path.parent.parent, path.parent):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def open_log(path: Path, text: bool = False) -> IO[Any]:
    """Open a container log to append to it, created 0600: pod output is cluster data, its node's owner's alone."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "a", buffering=1) if text else os.fdopen(fd, "ab")
