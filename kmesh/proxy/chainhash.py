"""The hash upstream puts in its rule-object names, shared by the iptables and nftables renderers.

iptables chains end in 16 characters of it (``KUBE-SVC-<h>``), nftables
chains start with 8 (``service-<h>-ns/svc/proto/port``).
"""

from __future__ import annotations

import hashlib

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def hash16(text: str) -> str:
    """base32(sha256(text))[:16]; the 16 characters are exactly the first 10 bytes of the digest."""
    n = int.from_bytes(hashlib.sha256(text.encode()).digest()[:10], "big")
    return "".join(_B32[(n >> shift) & 31] for shift in range(75, -1, -5))
