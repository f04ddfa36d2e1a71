"""Leader election: one leader per Lease, takeover only after the lease expired (or at once after a
release), a leader that cannot renew stops, conflicting takeovers have one winner, and two controller
managers against one API server act as one.

Real parts: an API server on the memory store, the real LeaseLock writes
(optimistic concurrency on resourceVersion), a TCP relay the test can freeze
so the API "stops answering", the real controllers. Durations are short
(seconds); the tests await the elector's own state changes and check the
order of its own clock readings (a takeover is never earlier than a lease
duration after the last renewal), never how fast anything was.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Awaitable, Callable

import trio
from click.testing import CliRunner

from kmesh.client.api import Client
from kmesh.client.informer import Change, Informer
from kmesh.controllers import podutil
from kmesh.controllers.leaderelection import (
    CONTROLLER_MANAGER_LEASE, SCHEDULER_LEASE, LeaderElectionConfig, LeaderElector, LeaseLock,
)
from kmesh.controllers.manager import ControllerConfig, ControllerManager, run_controllers
from kmesh.controllers.metrics import CONTROLLER_MANAGER, SCHEDULER
from tests.controllers.kubelet import add_node
from tests.support.cluster import Cluster, Stoppable

Obj = dict[str, Any]
LEASE = "test-election"
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def election(identity: str, *, lease: float = 2.0, renew: float = 1.0, retry: float = 0.2,
             release: bool = False) -> LeaderElectionConfig:
    return LeaderElectionConfig(LEASE, identity, lease_duration=lease, renew_deadline=renew, retry_period=retry,
                                release_on_cancel=release)


class Leads:
    """What the lead tasks themselves saw: who leads now, when each term started and stopped, and overlaps."""

    def __init__(self) -> None:
        self.now: set[str] = set()
        self.overlaps: list[str] = []
        self.started: dict[str, float] = {}
        self.stopped: dict[str, float] = {}
        self._changed = trio.Event()

    async def wait_started(self, identity: str) -> None:
        """Until the lead task of ``identity`` runs."""
        while identity not in self.now:
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def lead(self, identity: str) -> Callable[[], Awaitable[None]]:
        async def lead() -> None:
            if self.now:
                self.overlaps.append(f"{identity} started while {self.now} led")
            self.now.add(identity)
            self.started[identity] = trio.current_time()
            self._notify()
            try:
                await trio.sleep_forever()
            finally:
                self.now.discard(identity)
                self.stopped[identity] = trio.current_time()
                self._notify()
        return lead


async def start_elector(nursery: trio.Nursery, elector: LeaderElector, lead: Callable[[], Awaitable[None]],
                        client: Client) -> Stoppable:
    """Run ``elector`` under a cancel scope of its own (the handle stops it and awaits its release)."""
    handle = Stoppable()

    async def run() -> None:
        try:
            with handle.scope:
                await elector.run(lead)
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()
            handle.stopped.set()

    nursery.start_soon(run)
    return handle


async def first_leader(*electors: LeaderElector, timeout: float = 20) -> LeaderElector:
    """The first of ``electors`` seen leading."""
    winner: list[LeaderElector] = []
    with trio.fail_after(timeout):
        async with trio.open_nursery() as n:
            for e in electors:
                async def one(e: LeaderElector = e) -> None:
                    await e.wait_for(lambda x: x.leading)
                    winner.append(e)
                    n.cancel_scope.cancel()
                n.start_soon(one)
    return winner[0]


async def lease_spec(cluster: Cluster, name: str = LEASE) -> Obj:
    return (await cluster.client.get("Lease", name, "kube-system"))["spec"]


async def test_one_leader_and_takeover_only_after_the_lease_duration(cluster: Cluster, nursery: trio.Nursery) -> None:
    leads = Leads()
    creds = cluster.client.creds
    a, b = (LeaderElector(client, election(name)) for client, name in ((Client(creds), "a"), (Client(creds), "b")))
    handles = {e.identity: await start_elector(nursery, e, leads.lead(e.identity), e.lock.client) for e in (a, b)}
    leader = await first_leader(a, b)
    other = b if leader is a else a
    with trio.fail_after(20):
        await leads.wait_started(leader.identity)
    with trio.fail_after(20):  # the other has read the leader's record, and stays a candidate
        await other.wait_for(lambda e: e.leader == leader.identity)
        renewals = 0
        while renewals < 3:  # several renewals later, still one leader
            t = leader.observed_time
            await leader.wait_for(lambda e: e.observed_time != t)
            renewals += 1
    assert not other.leading and leads.now == {leader.identity}
    spec = await lease_spec(cluster)
    assert spec["holderIdentity"] == leader.identity
    assert spec["leaseDurationSeconds"] == 2
    assert MICRO_TIME.match(spec["renewTime"]) and MICRO_TIME.match(spec["acquireTime"])
    transitions = spec["leaseTransitions"]

    # stop the leader right after a renewal, without releasing: the lease is left to expire
    t = leader.observed_time
    with trio.fail_after(20):
        await leader.wait_for(lambda e: e.observed_time != t)
    last_renewal = leader.observed_time
    handles[leader.identity].scope.cancel()
    await handles[leader.identity].stopped.wait()
    assert (await lease_spec(cluster))["holderIdentity"] == leader.identity  # not released

    with trio.fail_after(20):
        await leads.wait_started(other.identity)
    # the takeover was decided on the other's own clock, a lease duration after the last renewal it saw
    assert other.observed_time - last_renewal >= 2.0
    assert leads.started[other.identity] >= last_renewal + 2.0
    spec = await lease_spec(cluster)
    assert spec["holderIdentity"] == other.identity
    assert spec["leaseTransitions"] == transitions + 1
    assert leads.overlaps == [] and leads.now == {other.identity}
    handles[other.identity].scope.cancel()


async def test_release_on_cancel_hands_over_at_once(cluster: Cluster, nursery: trio.Nursery) -> None:
    leads = Leads()
    creds = cluster.client.creds
    # a lease of 60 s: a takeover within the 25 s below can only come from the release
    a, b = (LeaderElector(Client(creds), election(name, lease=60, renew=40, release=True)) for name in ("a", "b"))
    handles = {e.identity: await start_elector(nursery, e, leads.lead(e.identity), e.lock.client) for e in (a, b)}
    leader = await first_leader(a, b)
    other = b if leader is a else a
    with trio.fail_after(20):
        await other.wait_for(lambda e: e.leader == leader.identity)
    transitions = (await lease_spec(cluster))["leaseTransitions"]

    await handles[leader.identity].stop()  # returns after the release was written
    spec = await lease_spec(cluster)
    assert spec["holderIdentity"] in ("", other.identity)
    assert leader.identity not in leads.now
    with trio.fail_after(25):
        await leads.wait_started(other.identity)
    spec = await lease_spec(cluster)
    assert spec["holderIdentity"] == other.identity
    assert spec["leaseTransitions"] == transitions + 1
    assert leads.overlaps == []
    handles[other.identity].scope.cancel()


class FreezingRelay:
    """A TCP relay to the API server that can stop answering: connections stay open, no byte moves."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.frozen = False
        self._thawed = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, listeners)

    def freeze(self) -> None:
        self.frozen = True
        self._thawed = trio.Event()

    def thaw(self) -> None:
        self.frozen = False
        self._thawed.set()

    async def _handle(self, down: trio.SocketStream) -> None:
        async with down:
            try:
                up = await trio.open_tcp_stream("127.0.0.1", self.port)
            except OSError:
                return
            async with up, trio.open_nursery() as n:
                n.start_soon(self._copy, down, up, n.cancel_scope)
                n.start_soon(self._copy, up, down, n.cancel_scope)

    async def _copy(self, src: trio.SocketStream, dst: trio.SocketStream, scope: trio.CancelScope) -> None:
        try:
            while data := await src.receive_some(65536):
                while self.frozen:
                    await self._thawed.wait()
                await dst.send_all(data)
        except trio.BrokenResourceError:
            pass
        scope.cancel()


async def test_leader_whose_api_stops_answering_stops_after_renew_deadline(
        cluster: Cluster, nursery: trio.Nursery) -> None:
    leads = Leads()
    creds = cluster.client.creds
    port = int(creds.server.rsplit(":", 1)[1])
    relay = FreezingRelay(port)
    relay_port = await nursery.start(relay.serve)
    via_relay = Client(dataclasses.replace(creds, server=f"https://127.0.0.1:{relay_port}"))
    a = LeaderElector(via_relay, election("a", lease=3, renew=1))
    b = LeaderElector(Client(creds), election("b", lease=3, renew=1))
    handles = [await start_elector(nursery, a, leads.lead("a"), via_relay)]
    assert await first_leader(a) is a
    handles.append(await start_elector(nursery, b, leads.lead("b"), b.lock.client))
    with trio.fail_after(20):
        await b.wait_for(lambda e: e.leader == "a")

    relay.freeze()  # requests now hang (the client's own timeout is 30 s)
    with trio.fail_after(15):
        await a.wait_for(lambda e: not e.leading)
    last_renewal = a.observed_time
    assert leads.stopped["a"] - last_renewal >= 1.0  # it retried for the renew deadline before giving up
    with trio.fail_after(20):
        await leads.wait_started("b")
    assert leads.overlaps == []  # a had stopped before b could take over
    assert (await lease_spec(cluster))["holderIdentity"] == "b"

    relay.thaw()  # a campaigns again (upstream would exit): it sees b and stays a candidate
    with trio.fail_after(20):
        await a.wait_for(lambda e: e.leader == "b")
    assert not a.leading and not handles[0].stopped.is_set()
    for h in handles:
        h.scope.cancel()


class Barrier:
    """Releases its waiters once ``n`` have arrived."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.arrived = 0
        self.all_in = trio.Event()

    async def wait(self) -> None:
        self.arrived += 1
        if self.arrived >= self.n:
            self.all_in.set()
        await self.all_in.wait()


class ReadTogetherLock(LeaseLock):
    """A real LeaseLock whose reads, once armed, wait until every candidate has read: each then writes
    over the same resourceVersion."""

    def __init__(self, client: Client, identity: str, barrier: Barrier) -> None:
        super().__init__(client, "kube-system", LEASE, identity)
        self.barrier = barrier
        self.armed = False

    async def get(self) -> Any:
        record = await super().get()
        if self.armed:
            await self.barrier.wait()
        return record


async def test_two_candidates_seeing_an_expired_lease_one_wins(cluster: Cluster) -> None:
    await cluster.client.create({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LEASE, "namespace": "kube-system"},
        # timestamps from long ago: only the candidates' own clocks may say it expired
        "spec": {"holderIdentity": "ghost_1", "leaseDurationSeconds": 5, "leaseTransitions": 3,
                 "acquireTime": "2000-01-01T00:00:00.000000Z", "renewTime": "2000-01-01T00:00:00.000000Z"},
    })
    now = [100.0]
    barrier = Barrier(2)
    candidates = [LeaderElector(cluster.client, election(name), clock=lambda: now[0],
                                lock=ReadTogetherLock(cluster.client, name, barrier)) for name in ("a", "b")]
    for c in candidates:  # first sight of the record starts the wait
        assert not await c.try_acquire_or_renew()
        assert c.leader == "ghost_1"
    now[0] = 104.9
    for c in candidates:
        assert not await c.try_acquire_or_renew()

    now[0] = 105.0  # expired on both clocks; both read the same record, then both write
    results: dict[str, bool] = {}
    for c in candidates:
        assert isinstance(c.lock, ReadTogetherLock)
        c.lock.armed = True
    async with trio.open_nursery() as n:
        for c in candidates:
            async def attempt(c: LeaderElector = c) -> None:
                results[c.identity] = await c.try_acquire_or_renew()
            n.start_soon(attempt)
    assert barrier.arrived == 2
    assert sorted(results.values()) == [False, True], results
    winner = next(c for c in candidates if results[c.identity])
    loser = next(c for c in candidates if not results[c.identity])
    spec = await lease_spec(cluster)
    assert spec["holderIdentity"] == winner.identity
    assert spec["leaseTransitions"] == 4  # one takeover, counted once
    assert winner.is_leader() and not loser.is_leader()
    assert isinstance(loser.lock, ReadTogetherLock)
    loser.lock.armed = False
    assert not await loser.try_acquire_or_renew()  # it now sees the winner's fresh record
    assert loser.leader == winner.identity


def test_upstream_config_checks() -> None:
    for kw, message in (({"lease_duration": 10, "renew_deadline": 10}, "leaseDuration must be greater"),
                        ({"renew_deadline": 2, "retry_period": 2}, "renewDeadline must be greater"),
                        ({"identity": ""}, "identity is empty")):
        try:
            LeaderElectionConfig(**{"name": LEASE, "identity": "a", **kw})
        except ValueError as exc:
            assert message in str(exc)
        else:
            raise AssertionError(f"{kw} accepted")


def test_cli_flags(tmp_path: Path) -> None:
    from kmesh.cli import main

    kc = tmp_path / "kubeconfig"
    kc.write_text("apiVersion: v1\nkind: Config\n")
    out = CliRunner().invoke(main, ["controllers", "--help"])
    for flag in ("--leader-elect / --no-leader-elect", "--leader-elect-lease-duration",
                 "--leader-elect-renew-deadline", "--leader-elect-retry-period"):
        assert flag in out.output
    bad = CliRunner().invoke(main, ["controllers", "--kubeconfig", str(kc), "--leader-elect",
                                    "--leader-elect-lease-duration", "5", "--leader-elect-renew-deadline", "10"])
    assert bad.exit_code == 2 and "leaseDuration must be greater than renewDeadline" in bad.output


# ---------------------------------------------------------------------- two controller managers


CM_CONTROLLERS = {"endpointslice", "endpoint", "replicaset", "deployment", "garbagecollector", "nodeipam",
                  "nodelifecycle"}


async def start_manager(nursery: trio.Nursery, cluster: Cluster, **config: Any) -> tuple[ControllerManager, Stoppable]:
    """run_controllers with leader election, with a client of its own, under a cancel scope of its own."""
    handle = Stoppable()
    cfg = ControllerConfig(leader_elect=True, leader_elect_lease_duration=2, leader_elect_renew_deadline=1,
                           leader_elect_retry_period=0.2, **config)

    async def run(*, task_status: trio.TaskStatus[ControllerManager]) -> None:
        client = Client(cluster.client.creds)
        try:
            with handle.scope:
                await run_controllers(client, cfg, task_status=task_status)
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()
            handle.stopped.set()

    return await nursery.start(run), handle


def deployment(replicas: int) -> Obj:
    labels = {"app": "web"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                         {"name": "c", "image": "registry.k8s.io/e2e-test-images/agnhost:2.39",
                          "args": ["serve-hostname"]}]}}}}


def master_status(registry: Any, name: str) -> float | None:
    return registry.get_sample_value("leader_election_master_status", {"name": name})


async def test_two_controller_managers_act_as_one(cluster: Cluster, nursery: trio.Nursery) -> None:
    c = cluster.client
    mgr_a, handle_a = await start_manager(nursery, cluster, leader_elect_release_on_cancel=False)
    # the second starts (task_status fires) while the first may already lead: a standby starts too
    mgr_b, handle_b = await start_manager(nursery, cluster, leader_elect_release_on_cancel=False)
    for m in (mgr_a, mgr_b):
        assert set(m.electors) == {CONTROLLER_MANAGER_LEASE, SCHEDULER_LEASE}
        ident = m.electors[CONTROLLER_MANAGER_LEASE].identity
        host, _, rest = ident.rpartition("_")
        assert host == socket.gethostname() and uuid.UUID(rest)
    cms = [m.electors[CONTROLLER_MANAGER_LEASE] for m in (mgr_a, mgr_b)]
    leader_cm = await first_leader(*cms)
    leader, standby = (mgr_a, mgr_b) if leader_cm is cms[0] else (mgr_b, mgr_a)
    leader_handle = handle_a if leader is mgr_a else handle_b
    await first_leader(*(m.electors[SCHEDULER_LEASE] for m in (mgr_a, mgr_b)))
    assert CM_CONTROLLERS <= set(leader.controllers)
    assert not CM_CONTROLLERS & set(standby.controllers)  # the standby builds none
    assert (await lease_spec(cluster, CONTROLLER_MANAGER_LEASE))["holderIdentity"] == leader_cm.identity
    assert master_status(CONTROLLER_MANAGER.registry, CONTROLLER_MANAGER_LEASE) == 1.0
    assert master_status(SCHEDULER.registry, SCHEDULER_LEASE) == 1.0

    # what the cluster sees, counted from the test's own informers
    created: Counter[str] = Counter()
    pods, sets = Informer(c, "Pod", namespace="default"), Informer(c, "ReplicaSet", namespace="default")

    def count(ch: Change) -> None:
        if ch.type == "ADDED" and podutil.labels(ch.obj).get("app") == "web":
            created[ch.kind.kind] += 1

    for inf in (pods, sets):
        inf.add_handler(count)
        await nursery.start(inf.run)
    for i in range(2):
        await add_node(c, f"le-node-{i}")

    def settled(replicas: int) -> Callable[[Informer], bool]:
        def pred(_: Informer) -> bool:
            live = [p for p in pods.list() if podutil.labels(p).get("app") == "web" and podutil.is_active(p)]
            return len(live) == replicas and all((p.get("spec") or {}).get("nodeName") for p in live) and \
                len(sets.list()) == 1
        return pred

    await c.create(deployment(3))
    with trio.fail_after(30):
        await pods.wait_for(settled(3))
        await sets.wait_for(settled(3))
    assert created == {"ReplicaSet": 1, "Pod": 3}, created  # no duplicates from the standby

    # the leader goes away without releasing; the standby takes over once the leases expired
    await leader_handle.stop()
    await c.patch("Deployment", "web", {"spec": {"replicas": 5}}, "default")
    with trio.fail_after(30):
        await standby.electors[CONTROLLER_MANAGER_LEASE].wait_for(lambda e: e.leading)
        await pods.wait_for(settled(5))
    assert created == {"ReplicaSet": 1, "Pod": 5}, created
    assert CM_CONTROLLERS <= set(standby.controllers)
    assert (await lease_spec(cluster, CONTROLLER_MANAGER_LEASE))["holderIdentity"] == \
        standby.electors[CONTROLLER_MANAGER_LEASE].identity
    assert master_status(CONTROLLER_MANAGER.registry, CONTROLLER_MANAGER_LEASE) == 1.0

    # each change of leader is an Event on its Lease, as upstream's (kubectl get events -n kube-system)
    events = Informer(c, "Event", namespace="kube-system")
    await nursery.start(events.run)
    wanted = {f"{m.electors[CONTROLLER_MANAGER_LEASE].identity} became leader" for m in (leader, standby)}

    def recorded(i: Informer) -> bool:
        return wanted <= {e.get("message") for e in i.list() if e.get("reason") == "LeaderElection"
                          and (e.get("involvedObject") or {}).get("name") == CONTROLLER_MANAGER_LEASE}

    with trio.fail_after(20):
        await events.wait_for(recorded)
    (handle_b if standby is mgr_b else handle_a).scope.cancel()
