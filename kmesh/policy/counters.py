"""The packet counters of a node's policy rules, read from the kernel (``nft -j list table``).

Every rule the agent writes carries a counter and a comment: allow rules name
their policy and rule (``x/allow ingress rule 0``), a pod chain's last rule
names the pod and direction it drops for (``x/a ingress: no policy allows
it``). Comparing two readings says which rules a packet went through.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from dataclasses import dataclass, field

from kmesh.net import netns
from kmesh.policy.nftrules import FAMILY, TABLE

DROP_SUFFIX = ": no policy allows it"


@dataclass
class Reading:
    """Packets per (chain, comment) and which pod and direction each pod chain is for."""

    packets: Counter[tuple[str, str]] = field(default_factory=Counter)
    owners: dict[str, tuple[str, str]] = field(default_factory=dict)
    """chain → (namespace/pod, "ingress"|"egress")."""

    def since(self, before: Reading) -> Counter[tuple[str, str]]:
        """The packets counted after ``before`` was read (rules whose count grew)."""
        out: Counter[tuple[str, str]] = Counter()
        for key, n in self.packets.items():
            if n > before.packets.get(key, 0):
                out[key] = n - before.packets.get(key, 0)
        return out


def parse(listing: str) -> Reading:
    """A reading from ``nft -j list table`` output ("" when there is no table: nothing counted)."""
    reading = Reading()
    if not listing.strip():
        return reading
    for item in json.loads(listing).get("nftables") or []:
        rule = item.get("rule")
        if not rule or not rule.get("comment"):
            continue
        packets = next((e["counter"]["packets"] for e in rule.get("expr") or [] if "counter" in e), 0)
        comment, chain = rule["comment"], rule.get("chain") or ""
        reading.packets[(chain, comment)] += packets
        if comment.endswith(DROP_SUFFIX):
            pod, _, direction = comment[: -len(DROP_SUFFIX)].rpartition(" ")
            reading.owners[chain] = (pod, direction)
    return reading


async def list_table(ns: str | None, *flags: str) -> subprocess.CompletedProcess[bytes]:
    """``nft [flags] list table inet kmesh-netpol`` in namespace ``ns`` (None: this one); fails when absent."""
    return await netns.run(ns, ["nft", *flags, "list", "table", FAMILY, TABLE], check=False)


async def read(ns: str | None) -> Reading:
    """The counters of the policy table in namespace ``ns`` (None: this one)."""
    proc = await list_table(ns, "-j")
    return parse(proc.stdout.decode() if proc.returncode == 0 else "")
