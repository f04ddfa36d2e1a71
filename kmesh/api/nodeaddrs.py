"""The addresses a Node announces to the rest of the cluster (its InternalIPs and flannel's public-ip).

Shared by the API server's admission (one address, one node) and by a machine that checks, before it
joins, whether another Node has its address already.
"""

from __future__ import annotations

from kmesh.api.obj import Obj

PUBLIC_IP = "flannel.alpha.coreos.com/public-ip"


def announced(node: Obj) -> list[tuple[str, str]]:
    """(field path, address) of every address ``node`` announces: InternalIPs and flannel's public-ip."""
    out = [(f"status.addresses[{i}].address", str(a.get("address")))
           for i, a in enumerate((node.get("status") or {}).get("addresses") or [])
           if isinstance(a, dict) and a.get("type") == "InternalIP" and a.get("address")]
    ip = ((node.get("metadata") or {}).get("annotations") or {}).get(PUBLIC_IP)
    if ip:
        out.append((f"metadata.annotations[{PUBLIC_IP}]", str(ip)))
    return out
