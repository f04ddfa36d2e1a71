"""What every subnet manager offers: acquire this node's lease, keep it, watch the peers' leases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import trio

from kmesh.cni.lease import Lease

EventKind = Literal["added", "changed", "removed"]


@dataclass(frozen=True)
class PeerEvent:
    """A peer's lease appeared, changed (``old`` is the previous one) or went away."""

    kind: EventKind
    lease: Lease
    old: Lease | None = None


PeerHandler = Callable[[PeerEvent], Awaitable[None]]


class SubnetError(Exception):
    """The subnet manager cannot give this node a lease (the message says why)."""


class SubnetsExhausted(SubnetError):
    """Every subnet between SubnetMin and SubnetMax is leased."""


class DuplicatePublicIP(SubnetError):
    """Another node already holds a lease for this node's public IP (e.g. VirtualBox's 10.0.2.15)."""


class LeaseLost(SubnetError):
    """The lease was taken over by another node while this one could not renew it."""


class SubnetManager(Protocol):
    """One node's view of the cluster's subnet leases (kube or etcd)."""

    node: str
    public_ip: str

    async def acquire(self, backend_type: str, backend_data: dict[str, Any]) -> Lease:
        """Get (or reuse) this node's lease and publish its backend data; waits out outages."""
        ...

    async def watch_peers(self, on_event: PeerHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hand every other node's lease to ``on_event`` (the current ones as "added", then
        changes) until cancelled; ``task_status`` fires after the initial snapshot."""
        ...

    async def keep_lease(self) -> None:
        """Keep the acquired lease alive (renew it before it expires) until cancelled."""
        ...

    async def release(self) -> None:
        """Give the lease up (the subnet becomes free for other nodes)."""
        ...
