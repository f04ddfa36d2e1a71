"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's rules (``tools/leaderelection``).

Several control-plane servers run the same controllers; only the holder of
a Lease in ``kube-system`` acts (``kube-controller-manager``,
``kube-scheduler``), so two servers never create the same pods twice. The
rules are client-go's, because they are what make that safe:

- The record lives in the Lease's spec: ``holderIdentity``
  (``<hostname>_<uuid>``), ``leaseDurationSeconds``, ``acquireTime`` and
  ``renewTime`` (MicroTime, informational) and ``leaseTransitions`` (+1
  whenever the holder changes).
- A candidate takes a held lease only after ``leaseDurationSeconds`` have
  passed on its *own* clock (trio's monotonic one) since it last saw the
  record change; the timestamps in the record are never compared with the
  local time, so clock skew between servers does not matter.
- Every write carries the resourceVersion of the Lease last read: of two
  candidates that both see an expired lease, one write wins and the other
  gets 409 Conflict.
- The leader renews every ``retry_period``; when no renewal succeeds within
  ``renew_deadline`` (each request is bounded by it too, as upstream's
  leader-election client timeout) it stops leading — before any candidate
  may take over, as ``renew_deadline < lease_duration``.
- With ``release_on_cancel``, a leader that is cancelled writes an empty
  ``holderIdentity`` once its lead task has finished (trio guarantees that
  order), so the next candidate takes over at once.

Where kmesh differs: ``LeaderElector.run`` campaigns again after losing the
lease (upstream's components exit and their supervisor restarts them), and a
leader that sees another holder in the record stops at once instead of
retrying until its renew deadline.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import random
import socket
import uuid
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable, Protocol

import trio

from kmesh.api import errors as E
from kmesh.api.obj import Obj
from kmesh.client.api import APIUnavailable, Client

__all__ = [
    "CONTROLLER_MANAGER_LEASE", "DEFAULT_NAMESPACE", "SCHEDULER_LEASE", "LeaderElectionConfig",
    "LeaderElectionRecord", "LeaderElector", "LeaseLock", "default_identity", "micro_time",
]

log = logging.getLogger("kmesh.controllers.leaderelection")

DEFAULT_NAMESPACE = "kube-system"  # upstream's --leader-elect-resource-namespace
CONTROLLER_MANAGER_LEASE = "kube-controller-manager"  # upstream's --leader-elect-resource-name of each component
SCHEDULER_LEASE = "kube-scheduler"
JITTER_FACTOR = 1.2  # client-go: a candidate waits retry_period * (1 + rand * 1.2) between tries


def micro_time(when: dt.datetime | None = None) -> str:
    """A Kubernetes MicroTime, RFC 3339 with microseconds: ``2026-11-22T10:00:00.123456Z``."""
    when = when or dt.datetime.now(dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """``<hostname>_<uuid>``, as kube-controller-manager and kube-scheduler name themselves."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True)
class LeaderElectionRecord:
    """client-go's LeaderElectionRecord: what the Lease spec says about the election."""

    holder_identity: str = ""
    lease_duration_seconds: int = 0
    acquire_time: str = ""
    renew_time: str = ""
    leader_transitions: int = 0

    @classmethod
    def from_lease(cls, lease: Obj) -> LeaderElectionRecord:
        """The record in a Lease (missing fields read as empty / 0)."""
        spec = lease.get("spec") or {}
        return cls(str(spec.get("holderIdentity") or ""), _int(spec.get("leaseDurationSeconds")),
                   str(spec.get("acquireTime") or ""), str(spec.get("renewTime") or ""),
                   _int(spec.get("leaseTransitions")))

    def to_spec(self) -> Obj:
        """The Lease spec that holds this record (every field set, as client-go writes it)."""
        spec: Obj = {"holderIdentity": self.holder_identity, "leaseDurationSeconds": self.lease_duration_seconds,
                     "leaseTransitions": self.leader_transitions}
        if self.acquire_time:
            spec["acquireTime"] = self.acquire_time
        if self.renew_time:
            spec["renewTime"] = self.renew_time
        return spec


class LeaseLock:
    """client-go's resourcelock.LeaseLock: the record in one Lease, written with the resourceVersion last read."""

    def __init__(self, client: Client, namespace: str, name: str, identity: str) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease: Obj | None = None  # the Lease as last read or written

    def describe(self) -> str:
        """``namespace/name``, for logs."""
        return f"{self.namespace}/{self.name}"

    async def get(self) -> LeaderElectionRecord:
        """Read the Lease (APIError 404 when there is none)."""
        self.lease = await self.client.get("Lease", self.name, self.namespace)
        return LeaderElectionRecord.from_lease(self.lease)

    async def create(self, record: LeaderElectionRecord) -> None:
        """Create the Lease holding ``record`` (409 when another candidate was first)."""
        self.lease = await self.client.create({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace}, "spec": record.to_spec(),
        })

    async def update(self, record: LeaderElectionRecord) -> None:
        """Replace the Lease's spec with ``record``; 409 when it changed since it was last read."""
        if self.lease is None:
            raise RuntimeError("lease not read yet: get or create it first")
        body = {**self.lease, "spec": record.to_spec()}
        self.lease = await self.client.update(body)


class EventSink(Protocol):
    """Where ``became leader`` / ``stopped leading`` Events go (an ``EventRecorder``)."""

    def event(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        """Record an event about ``obj``."""


@dataclass(frozen=True)
class LeaderElectionConfig:
    """One election: which Lease, who we are, and upstream's timings (15 s / 10 s / 2 s)."""

    name: str  # the Lease's name: kube-controller-manager or kube-scheduler
    identity: str  # spec.holderIdentity while we lead; see default_identity()
    namespace: str = DEFAULT_NAMESPACE
    lease_duration: float = 15.0  # how long candidates wait after the record last changed
    renew_deadline: float = 10.0  # how long the leader retries renewing before it stops leading
    retry_period: float = 2.0  # between tries (candidates: with jitter)
    release_on_cancel: bool = False  # cancelled while leading: clear holderIdentity for an instant takeover

    def __post_init__(self) -> None:
        # client-go's NewLeaderElector checks
        if self.lease_duration <= self.renew_deadline:
            raise ValueError("leaseDuration must be greater than renewDeadline")
        if self.renew_deadline <= JITTER_FACTOR * self.retry_period:
            raise ValueError("renewDeadline must be greater than retryPeriod*JitterFactor")
        if min(self.lease_duration, self.renew_deadline, self.retry_period) <= 0:
            raise ValueError("leaseDuration, renewDeadline and retryPeriod must be greater than zero")
        if not self.identity:
            raise ValueError("Lock identity is empty")

    @property
    def lease_duration_seconds(self) -> int:
        """``spec.leaseDurationSeconds``: whole seconds, rounded up (upstream truncates; never shorter here)."""
        return max(1, math.ceil(self.lease_duration))


class LeaderElector:
    """One candidate for one Lease: ``run(lead)`` runs ``lead`` only while this process holds the lease."""

    def __init__(self, client: Client, config: LeaderElectionConfig, *, lock: LeaseLock | None = None,
                 clock: Callable[[], float] = trio.current_time, events: EventSink | None = None) -> None:
        self.config = config
        self.lock = lock or LeaseLock(client, config.namespace, config.name, config.identity)
        self.clock = clock  # measures lease validity (tests may hand a clock of their own)
        self.events = events
        self.observed_record = LeaderElectionRecord()
        self.observed_time = -math.inf  # self.clock() when the record was last seen to change (or written by us)
        self._observed_read: LeaderElectionRecord | None = None  # the record as last read, to notice a change
        self.leading = False  # True from acquiring until ``lead`` has stopped after losing the lease
        self.reported_leader = ""
        self._changed = trio.Event()

    @property
    def name(self) -> str:
        """The Lease's name (``leader_election_master_status``'s ``name`` label)."""
        return self.config.name

    @property
    def identity(self) -> str:
        """Our holderIdentity."""
        return self.config.identity

    @property
    def leader(self) -> str:
        """The holder last observed ("" when none)."""
        return self.observed_record.holder_identity

    def is_leader(self) -> bool:
        """Whether the record last observed names us (client-go's IsLeader)."""
        return self.observed_record.holder_identity == self.identity

    def lease_valid(self, now: float) -> bool:
        """Whether the observed record has not expired on our own clock."""
        return self.observed_time + self.observed_record.lease_duration_seconds > now

    async def wait_for(self, predicate: Callable[[LeaderElector], bool]) -> None:
        """Return once ``predicate(self)`` holds (checked after every try and every change of ``leading``)."""
        while not predicate(self):
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _observe(self, record: LeaderElectionRecord, when: float) -> None:
        self.observed_record = record
        self.observed_time = when

    # ------------------------------------------------------------------ one try

    async def try_acquire_or_renew(self) -> bool:
        """Acquire the lease if it is free or expired, or renew it if we hold it; True on success."""
        try:
            with trio.fail_after(self.config.renew_deadline):
                return await self._try()
        except E.APIError as exc:  # 409: another candidate wrote first; anything else is worth a look
            (log.debug if exc.code == 409 else log.warning)("%s: %s", self.lock.describe(), exc.message)
            return False
        except (APIUnavailable, trio.TooSlowError) as exc:
            log.debug("%s: %r", self.lock.describe(), exc)
            return False
        finally:
            self._notify()

    async def _try(self) -> bool:
        now = self.clock()
        stamp = micro_time()
        mine = LeaderElectionRecord(self.identity, self.config.lease_duration_seconds, stamp, stamp)
        # 1. fast path: the leader writes over the record it last saw
        if self.is_leader() and self.lease_valid(now):
            old = self.observed_record
            rec = replace(mine, acquire_time=old.acquire_time, leader_transitions=old.leader_transitions)
            try:
                await self.lock.update(rec)
            except (APIUnavailable, E.APIError) as exc:
                log.info("%s: failed to update lock optimistically: %s, falling back to slow path",
                         self.lock.describe(), exc)
            else:
                self._observe(rec, now)
                return True
        # 2. read the record, or create it
        try:
            old = await self.lock.get()
        except E.APIError as exc:
            if exc.code != 404:
                raise
            await self.lock.create(mine)
            self._observe(mine, now)
            return True
        # 3. a changed record restarts the wait, on our clock
        if old != self._observed_read:
            self._observed_read = old
            self._observe(old, self.clock())
        if old.holder_identity and self.lease_valid(now) and not self.is_leader():
            log.debug("%s is held by %s and has not yet expired", self.lock.describe(), old.holder_identity)
            return False
        # 4. take it over (or renew it after a stall); a concurrent writer makes this a 409
        if self.is_leader():
            rec = replace(mine, acquire_time=old.acquire_time, leader_transitions=old.leader_transitions)
        else:
            rec = replace(mine, leader_transitions=old.leader_transitions + 1)
        await self.lock.update(rec)
        self._observe(rec, now)
        return True

    def _report_transition(self) -> None:
        if self.observed_record.holder_identity != self.reported_leader:
            self.reported_leader = self.observed_record.holder_identity
            log.info("%s: new leader elected: %s", self.lock.describe(), self.reported_leader or "(none)")

    # ------------------------------------------------------------------ the loops

    async def acquire(self) -> None:
        """Try every ``retry_period`` (with jitter) until the lease is ours."""
        log.info("attempting to acquire leader lease %s...", self.lock.describe())
        while True:
            ok = await self.try_acquire_or_renew()
            self._report_transition()
            if ok:
                log.info("successfully acquired lease %s", self.lock.describe())
                return
            await trio.sleep(self.config.retry_period * (1 + random.random() * JITTER_FACTOR))

    async def renew(self) -> None:
        """Renew every ``retry_period``; return once the lease is lost: no renewal succeeded within
        ``renew_deadline``, or the record names another holder."""
        while True:
            with trio.move_on_after(self.config.renew_deadline) as deadline:
                while not await self.try_acquire_or_renew():
                    if not self.is_leader():
                        break
                    await trio.sleep(self.config.retry_period)
            self._report_transition()
            if deadline.cancelled_caught or not self.is_leader():
                log.info("failed to renew lease %s: %s", self.lock.describe(),
                         "timed out" if deadline.cancelled_caught else f"held by {self.leader}")
                return
            await trio.sleep(self.config.retry_period)

    async def release(self) -> bool:
        """Give the lease up if we hold it: an empty holderIdentity lets the next candidate take it at once."""
        if not self.is_leader():
            return True
        stamp = micro_time()
        rec = LeaderElectionRecord("", 1, stamp, stamp, self.observed_record.leader_transitions)
        try:
            with trio.fail_after(self.config.renew_deadline):
                await self.lock.update(rec)
        except (APIUnavailable, E.APIError, trio.TooSlowError) as exc:
            log.warning("failed to release lease %s: %s", self.lock.describe(), exc)
            return False
        self._observe(rec, self.clock())
        self._notify()
        log.info("released lease %s", self.lock.describe())
        return True

    async def run(self, lead: Callable[[], Awaitable[object]], *,
                  task_status: trio.TaskStatus[LeaderElector] = trio.TASK_STATUS_IGNORED) -> None:
        """Campaign; run ``lead`` while holding the lease; after losing it, cancel ``lead`` and campaign
        again; until cancelled. ``lead`` returning does not give the lease up."""
        task_status.started(self)
        try:
            while True:
                await self.acquire()
                await self._lead(lead)
        finally:
            if self.config.release_on_cancel:
                with trio.CancelScope(shield=True):
                    await self.release()

    async def _lead(self, lead: Callable[[], Awaitable[object]]) -> None:
        self._set_leading(True)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lead)
                await self.renew()
                nursery.cancel_scope.cancel()
        finally:
            self._set_leading(False)

    def _set_leading(self, value: bool) -> None:
        self.leading = value
        self._notify()
        if self.events is not None and self.lock.lease is not None:
            md = self.lock.lease.get("metadata") or {}
            subject = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                       "metadata": {k: md[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in md}}
            self.events.event(subject, "Normal", "LeaderElection",
                              f"{self.identity} {'became leader' if value else 'stopped leading'}")
