"""Write and read kubeconfigs the way kubectl does, for kmesh's own client.

Reading follows client-go's ``clientcmd`` rules:

- which files: an explicit path, else every file listed in ``$KUBECONFIG``
  (``:``-separated; missing ones are skipped), else ``~/.kube/config``;
- merging: for clusters, users and contexts the first file that names an entry
  wins, and ``current-context`` comes from the first file that sets it;
- file references (``certificate-authority``, ``client-certificate``,
  ``client-key``, ``tokenFile``) are relative to the file that holds them;
- ``-data`` and path forms of the same field together are an error, as
  ``insecure-skip-tls-verify`` with a CA is; ``tokenFile`` wins over ``token``
  (client-go re-reads the file and prefers it).
"""

from __future__ import annotations

import base64
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KubeconfigSpec = str | Path | Sequence[str | Path] | None
"""Where to read from: a path, a ``$KUBECONFIG``-style ``a:b`` string or a list, or None for kubectl's default."""


@dataclass(frozen=True)
class Credentials:
    """Where the API is and how to trust and authenticate to it.

    ``ca_pem`` empty means the system's trust store; the client certificate
    and key are PEM and go together."""

    server: str
    ca_pem: bytes = b""
    token: str = ""
    client_cert_pem: bytes = b""
    client_key_pem: bytes = b""
    insecure: bool = False
    namespace: str = "default"

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS client context: the CA (or none to check with insecure-skip-tls-verify) and the client cert."""
        if self.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_pem:
            ctx = ssl.create_default_context(cadata=self.ca_pem.decode())
        else:
            ctx = ssl.create_default_context()
        if self.client_cert_pem:
            _load_cert_chain(ctx, self.client_cert_pem, self.client_key_pem)
        return ctx


def _load_cert_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """Load a PEM certificate and key held in memory (ssl only reads files: use a memfd, never a disk file)."""
    fd = os.memfd_create("kmesh-client-cert", os.MFD_CLOEXEC)
    try:
        data = cert_pem.rstrip(b"\n") + b"\n" + key_pem
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        try:
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        except ssl.SSLError as exc:
            raise ValueError(f"client certificate and key do not load: {exc}") from None
    finally:
        os.close(fd)


def write_kubeconfig(
    path: Path, name: str, creds: Credentials, *, mode: int = 0o600, owner: tuple[int, int] | None = None
) -> None:
    """Write a kubeconfig with one cluster, user and current context, atomically (``write_private``).

    The file gets ``mode`` (default 0600) and, when given, the ``(uid, gid)``
    ``owner`` before it replaces the old one, so it is never readable by
    anyone else even for a moment."""
    user: dict[str, Any] = {}
    if creds.token:
        user["token"] = creds.token
    if creds.client_cert_pem:
        user["client-certificate-data"] = base64.b64encode(creds.client_cert_pem).decode()
        user["client-key-data"] = base64.b64encode(creds.client_key_pem).decode()
    cluster: dict[str, Any] = {"server": creds.server}
    if creds.insecure:
        cluster["insecure-skip-tls-verify"] = True
    elif creds.ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(creds.ca_pem).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": f"{name}-admin", "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin",
                                                "namespace": creds.namespace}}],
        "current-context": name,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, yaml.safe_dump(doc, sort_keys=False), mode=mode, owner=owner)


def write_private(path: Path, data: str | bytes, *, mode: int = 0o600, owner: tuple[int, int] | None = None) -> None:
    """Write a file atomically (a temporary file beside it, then rename) that no one else can read meanwhile.

    The temporary file is made 0600, then gets ``mode`` (whatever the umask)
    and, when given, the ``(uid, gid)`` ``owner`` before it replaces
    ``path``. Kubeconfigs and the lab's other private files
    (``kmesh.lab.access``) are written this way."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            if owner is not None:
                os.fchown(f.fileno(), *owner)
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def kubeconfig_files(spec: KubeconfigSpec = None) -> list[Path]:
    """The files kubectl would read for ``spec`` (see ``KubeconfigSpec``), in precedence order."""
    if spec is None:
        env = os.environ.get("KUBECONFIG", "")
        if env:
            spec = env
        else:
            return [Path.home() / ".kube" / "config"]
    if isinstance(spec, Path):
        return [spec]
    if isinstance(spec, str):
        return [Path(p) for p in spec.split(os.pathsep) if p]
    return [Path(p) for p in spec]


@dataclass
class _Merged:
    """The merged view of several kubeconfig files; each entry remembers the directory of its file."""

    clusters: dict[str, tuple[dict[str, Any], Path]]
    users: dict[str, tuple[dict[str, Any], Path]]
    contexts: dict[str, dict[str, Any]]
    current_context: str


def _merge(files: list[Path]) -> _Merged:
    merged = _Merged({}, {}, {}, "")
    read_any = False
    for path in files:
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        read_any = True
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: not a kubeconfig (expected a mapping)")
        base = path.absolute().parent
        for key, into, field in (("clusters", merged.clusters, "cluster"), ("users", merged.users, "user")):
            for entry in doc.get(key) or []:
                if isinstance(entry, dict) and entry.get("name") and entry["name"] not in into:
                    into[entry["name"]] = (entry.get(field) or {}, base)
        for entry in doc.get("contexts") or []:
            if isinstance(entry, dict) and entry.get("name") and entry["name"] not in merged.contexts:
                merged.contexts[entry["name"]] = entry.get("context") or {}
        if not merged.current_context and doc.get("current-context"):
            merged.current_context = str(doc["current-context"])
    if not read_any:
        raise FileNotFoundError(f"no kubeconfig: none of {', '.join(map(str, files))} exists")
    return merged


def _file_or_data(entry: dict[str, Any], base: Path, field: str, what: str, owner: str) -> bytes:
    """``field-data`` (base64) or the file ``field`` names (relative to ``base``); b"" when neither is set."""
    data, path = entry.get(f"{field}-data"), entry.get(field)
    if data and path:
        raise ValueError(f"{field}-data and {field} are both specified for {owner}")
    if data:
        try:
            return base64.b64decode(data, validate=True)
        except ValueError:
            raise ValueError(f"{field}-data of {owner} is not valid base64") from None
    if path:
        try:
            return (base / Path(path)).read_bytes()
        except OSError as exc:
            raise ValueError(f"unable to read {what} {base / Path(path)} for {owner}: {exc.strerror}") from None
    return b""


def load_kubeconfig(spec: KubeconfigSpec = None, context: str | None = None) -> Credentials:
    """The credentials of the current (or named) context, from the files ``spec`` names as kubectl reads them."""
    files = kubeconfig_files(spec)
    merged = _merge(files)
    where = ", ".join(map(str, files))
    ctx_name = context or merged.current_context
    if not ctx_name:
        raise ValueError(f"{where}: no current-context is set (and no context was named)")
    ctx = merged.contexts.get(ctx_name)
    if ctx is None:
        raise ValueError(f"{where}: context {ctx_name!r} not found")
    if ctx.get("cluster") not in merged.clusters:
        raise ValueError(f"{where}: cluster {ctx.get('cluster')!r} of context {ctx_name!r} not found")
    cluster, cluster_base = merged.clusters[ctx["cluster"]]
    if not cluster.get("server"):
        raise ValueError(f"{where}: cluster {ctx['cluster']!r} has no server")
    user_name = str(ctx.get("user") or "")
    if user_name and user_name not in merged.users:
        raise ValueError(f"{where}: user {user_name!r} of context {ctx_name!r} not found")
    user, user_base = merged.users.get(user_name, ({}, Path(".")))  # no user: anonymous, as kubectl allows
    for unsupported in ("exec", "auth-provider"):
        if user.get(unsupported):
            raise ValueError(f"{where}: user {user_name!r} uses {unsupported}, which kmesh's client does not support")
    ca = _file_or_data(cluster, cluster_base, "certificate-authority", "certificate-authority", ctx["cluster"])
    insecure = bool(cluster.get("insecure-skip-tls-verify"))
    if insecure and ca:
        raise ValueError(f"cluster {ctx['cluster']!r}: a certificate authority with insecure-skip-tls-verify "
                         "is not allowed")
    cert = _file_or_data(user, user_base, "client-certificate", "client-cert", user_name)
    key = _file_or_data(user, user_base, "client-key", "client-key", user_name)
    if bool(cert) != bool(key):
        raise ValueError(f"user {user_name!r}: client certificate and client key go together")
    token = str(user.get("token") or "")
    if user.get("tokenFile"):
        token_path = user_base / Path(user["tokenFile"])
        try:
            token = token_path.read_text().strip()
        except OSError as exc:
            raise ValueError(f"unable to read tokenFile {token_path} for {user_name}: {exc.strerror}") from None
    return Credentials(
        server=str(cluster["server"]), ca_pem=ca, token=token, client_cert_pem=cert, client_key_pem=key,
        insecure=insecure, namespace=str(ctx.get("namespace") or "default"),
    )
