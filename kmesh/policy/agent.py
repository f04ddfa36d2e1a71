"""The NetworkPolicy agent of one node: keeps the node's nftables rules equal to what the policies say.

It watches Pods, Namespaces and NetworkPolicies (all of them: selectors reach
across namespaces), and after each burst of changes renders the rules for the
pods of its node (``kmesh.policy.nftrules``) and, when they differ from what
is installed, replaces the table in one ``nft -f`` transaction. A pod is
policed once it has an address and until it ends (Succeeded and Failed pods
give their address up). When the API server is away the informers keep their
caches and the installed rules stay; the agent catches up when it is back.
On exit the table is removed.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

import trio

from kmesh.client.api import Client
from kmesh.client.watchset import WatchSet
from kmesh.net import netns
from kmesh.policy.counters import list_table
from kmesh.policy.model import PodInfo, PolicyWorld
from kmesh.policy.nftrules import FAMILY, TABLE, render

log = logging.getLogger("kmesh.policy")

KINDS = ("Pod", "Namespace", "NetworkPolicy")
ENDED = ("Succeeded", "Failed")


@dataclass(frozen=True)
class SyncTiming:
    """One sync, for benchmarks: when it began (``time.monotonic()``), seconds building the model and rendering,
    seconds in ``nft`` (0 when the rules were unchanged), and the rule count after it."""

    started: float
    render: float
    apply: float
    rules: int


class PolicyError(Exception):
    """``nft`` refused the rules; the message carries its stderr."""


@dataclass
class PolicyAgent:
    """Enforces NetworkPolicies for the pods of ``node`` in namespace ``netns`` (None: this process's own)."""

    client: Client
    node: str
    netns: str | None = None
    coalesce: float = 0.02
    installed: str = ""
    """The transaction last applied ("" before the first)."""
    rules: int = 0
    watch: WatchSet | None = None
    timings: deque[SyncTiming] = field(default_factory=lambda: deque(maxlen=1000))
    """The last syncs' timings, oldest first."""

    def world(self) -> PolicyWorld:
        """The policy model of what the informers hold now."""
        assert self.watch is not None
        inf = self.watch.informers
        pods = [p for p in inf["Pod"].list() if (p.get("status") or {}).get("phase") not in ENDED]
        return PolicyWorld(pods, inf["Namespace"].list(), inf["NetworkPolicy"].list())

    async def sync(self) -> None:
        """Render the node's rules and install them if they changed."""
        started, t0 = time.monotonic(), time.perf_counter()
        world = self.world()
        text, count = render(world, local_pods(world, self.node))
        t1 = time.perf_counter()
        if text != self.installed:
            proc = await netns.run(self.netns, ["nft", "-f", "-"], input=text.encode(), check=False)
            if proc.returncode != 0:
                raise PolicyError(proc.stderr.decode(errors="replace").strip() or f"nft exited {proc.returncode}")
            self.installed = text
            self.rules = count
        self.timings.append(SyncTiming(started, t1 - t0, time.perf_counter() - t1, self.rules))

    async def run(self, *, task_status: trio.TaskStatus[PolicyAgent] = trio.TASK_STATUS_IGNORED) -> None:
        """Enforce until cancelled; started once the first rules are in."""
        self.watch = WatchSet(self.client, KINDS, self.coalesce)
        try:
            async with trio.open_nursery() as n:
                await self.watch.start(n)
                await self.sync()
                task_status.started(self)
                while True:
                    await self.watch.changes()
                    try:
                        await self.sync()
                    except PolicyError as exc:  # a bug in the rules: keep what is installed, say so, retry later
                        log.error("%s: network policy rules refused: %s", self.node, exc)
                        await trio.sleep(1)
                        self.watch.again()
        finally:
            with trio.CancelScope(shield=True):
                await self.cleanup()

    async def cleanup(self) -> None:
        """Remove the table (nothing is policed any more)."""
        await netns.run(self.netns, ["nft", "delete", "table", FAMILY, TABLE], check=False)

    async def listing(self) -> str:
        """The installed table as ``nft list table`` prints it, with counters ("" when absent)."""
        proc = await list_table(self.netns)
        return proc.stdout.decode() if proc.returncode == 0 else ""


def local_pods(world: PolicyWorld, node: str) -> list[PodInfo]:
    """The pods of ``node`` in ``world``."""
    return [p for p in world.pods if p.node == node]
