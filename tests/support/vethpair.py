"""Two network namespaces joined by one veth, each end with an address: the smallest link to test on."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from kmesh.net import netns


@contextmanager
def veth_pair(prefix: str, a_ip: str, b_ip: str, *, a_dev: str = "veth0",
              b_dev: str = "veth0") -> Iterator[tuple[str, str]]:
    """Namespaces ``<prefix><tag>-a`` and ``-b`` joined by a veth (``a_dev`` in a with ``a_ip``, ``b_dev``
    in b with ``b_ip``, both CIDR), yielded as (a, b) and removed however the block ends."""
    tag = secrets.token_hex(3)
    a, b = f"{prefix}{tag}-a", f"{prefix}{tag}-b"
    try:
        netns.add(a)
        netns.add(b)
        netns.add_veth(a, a_dev, b, b_dev)
        netns.ip(a, "addr", "add", a_ip, "dev", a_dev)
        netns.ip(b, "addr", "add", b_ip, "dev", b_dev)
        yield a, b
    finally:
        for ns in (a, b):
            netns.delete(ns)
