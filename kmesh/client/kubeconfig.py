"""Write and read the kubeconfig that both kubectl and kmesh's own client use."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Credentials:
    """Where the API is and how to trust and authenticate to it."""

    server: str
    ca_pem: bytes
    token: str


def write_kubeconfig(path: Path, name: str, creds: Credentials) -> None:
    """Write a kubeconfig (mode 0600) with one cluster, user and current context."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": creds.server,
                    "certificate-authority-data": base64.b64encode(creds.ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": f"{name}-admin", "user": {"token": creds.token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin", "namespace": "default"}}],
        "current-context": name,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    os.replace(tmp, path)


def load_kubeconfig(path: Path, context: str | None = None) -> Credentials:
    """The credentials of the current (or named) context of a kubeconfig."""
    doc = yaml.safe_load(Path(path).read_text()) or {}
    ctx_name = context or doc.get("current-context")
    ctx = next((c["context"] for c in doc.get("contexts", []) if c["name"] == ctx_name), None)
    if ctx is None:
        raise ValueError(f"{path}: context {ctx_name!r} not found")
    cluster = next((c["cluster"] for c in doc.get("clusters", []) if c["name"] == ctx["cluster"]), None)
    user = next((u["user"] for u in doc.get("users", []) if u["name"] == ctx["user"]), None)
    if cluster is None or user is None:
        raise ValueError(f"{path}: cluster or user of context {ctx_name!r} not found")
    if "certificate-authority-data" in cluster:
        ca = base64.b64decode(cluster["certificate-authority-data"])
    else:
        ca = Path(cluster["certificate-authority"]).read_bytes()
    token = user.get("token") or ""
    if not token and user.get("tokenFile"):
        token = Path(user["tokenFile"]).read_text().strip()
    return Credentials(cluster["server"], ca, token)
