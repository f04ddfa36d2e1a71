"""The server side of joining (see ``kmesh.client.bootstrap``): ``/cacerts`` and the two token-checked paths.

k3s serves the same three things on its supervisor port: the CA bundle to
anyone (it is public; the token's hash makes it trustworthy), a kubelet
client certificate to a holder of the agent token, and the cluster's
bootstrap data to a holder of the server token. kmesh serves them on the
API port, under ``/v1-kmesh/``; the bearer secrets are checked here only and
are never users of the Kubernetes API.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from pathlib import Path

from kmesh.api import errors as E
from kmesh.api.formats import is_dns1123_subdomain
from kmesh.apiserver.pki import PKI, ensure_join_secrets, sign_node_csr
from kmesh.client.bootstrap import CACERTS_PATH, NODE_CREDENTIALS_PATH, SERVER_BOOTSTRAP_PATH

PATHS = (CACERTS_PATH, NODE_CREDENTIALS_PATH, SERVER_BOOTSTRAP_PATH)


@dataclass(frozen=True)
class NodeBootstrap:
    """Answers the join paths from the cluster's PKI and join secrets in the data dir."""

    pki: PKI
    data_dir: Path

    def handles(self, path: str) -> bool:
        """Whether ``path`` is one of the join paths (they do their own authentication)."""
        return path in PATHS

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, str]:
        """(status, body, content type) for a request to a join path; ``APIError`` for a refusal."""
        if path == CACERTS_PATH:
            if method not in ("GET", "HEAD"):
                raise E.APIError(405, "MethodNotAllowed", f"the server does not allow {method} on {path}")
            return 200, self.pki.ca_pem(), "application/x-pem-file"
        if method != "POST":
            raise E.APIError(405, "MethodNotAllowed", f"the server does not allow {method} on {path}")
        secrets = ensure_join_secrets(self.data_dir)
        given = headers.get("authorization", "")[7:].strip() if headers.get("authorization", "")[:7].lower() == "bearer " else ""
        server_ok = bool(given) and hmac.compare_digest(given.encode(), secrets.server_token.encode())
        agent_ok = bool(given) and hmac.compare_digest(given.encode(), secrets.join_token.encode())
        if path == SERVER_BOOTSTRAP_PATH:
            if not server_ok:
                raise E.APIError(401, "Unauthorized", "Unauthorized")
            files = {name: (self.pki.ca_cert.parent / name).read_text()
                     for name in ("ca.crt", "ca.key", "token", "join.token", "server.token")}
            return 200, json.dumps(files).encode(), "application/json"
        if not (agent_ok or server_ok):
            raise E.APIError(401, "Unauthorized", "Unauthorized")
        try:
            doc = json.loads(body or b"{}")
        except ValueError:
            raise E.bad_request("the body is not JSON") from None
        name = doc.get("nodeName") if isinstance(doc, dict) else None
        csr = doc.get("csr") if isinstance(doc, dict) else None
        if not isinstance(name, str) or not name:
            raise E.bad_request("nodeName: Required value")
        problems = is_dns1123_subdomain(name)
        if problems:
            raise E.bad_request(f"nodeName: Invalid value: {name!r}: {'; '.join(problems)}")
        if not isinstance(csr, str) or "CERTIFICATE REQUEST" not in csr:
            raise E.bad_request("csr: Required value: a PEM certificate signing request")
        try:
            cert = sign_node_csr(self.pki, csr.encode(), name)
        except ValueError as exc:
            raise E.bad_request(f"csr: Invalid value: {exc}") from None
        return 200, json.dumps({"certificate": cert.decode(), "ca": self.pki.ca_pem().decode()}).encode(), \
            "application/json"
