"""ReplicaSets and Deployments: pods from templates, scaling, rolling updates, Recreate, status, kubectl rollout."""

from __future__ import annotations

import copy
import time
from typing import Any

import trio

from kmesh.client.informer import Change, Informer
from kmesh.controllers import deployment_util as U
from kmesh.controllers import podutil
from kmesh.controllers.replicaset import pods_to_delete
from tests.controllers.conftest import Env
from tests.controllers.kubelet import add_node, pod

Obj = dict[str, Any]


def template(app: str, args: list[str] | None = None) -> Obj:
    return {"metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/e2e-test-images/agnhost:2.39",
                                     "args": args or ["serve-hostname"]}]}}


def replicaset(name: str, replicas: int, **spec: Any) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": template(name),
                     **spec}}


def deployment(name: str, replicas: int, strategy: Obj | None = None, **spec: Any) -> Obj:
    body: Obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
                 "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": template(name),
                          **spec}}
    if strategy is not None:
        body["spec"]["strategy"] = strategy
    return body


def live(pods: Informer, app: str) -> list[Obj]:
    return [p for p in pods.list("default") if podutil.labels(p).get("app") == app and podutil.is_active(p)]


async def wait(inf: Informer, pred: Any, timeout: float = 30) -> None:
    with trio.fail_after(timeout):
        await inf.wait_for(pred)


async def wait_any(pred: Any, *informers: Informer, timeout: float = 30) -> None:
    """Until ``pred()`` holds, re-checked whenever any of the informers changes."""
    with trio.fail_after(timeout):
        async with trio.open_nursery() as n:
            for inf in informers:
                async def one(i: Informer = inf) -> None:
                    await i.wait_for(lambda _: pred())
                    n.cancel_scope.cancel()
                n.start_soon(one)


async def nodes(env: Env, n: int = 3) -> None:
    for i in range(n):
        await add_node(env.client, f"node-{i}")


async def test_replicaset_scales_and_reports_status(env: Env) -> None:
    c = env.client
    await nodes(env)
    rs = await c.create(replicaset("rs", 3))
    sets, pods = env.informer("ReplicaSet"), env.informer("Pod")

    def status_is(replicas: int) -> Any:
        def pred(i: Informer) -> bool:
            st = (i.get("rs", "default") or {}).get("status") or {}
            return st.get("replicas") == replicas and st.get("readyReplicas") == replicas and \
                st.get("availableReplicas") == replicas and st.get("fullyLabeledReplicas") == replicas
        return pred

    await wait(sets, status_is(3))
    assert sets.get("rs", "default")["status"]["observedGeneration"] == 1
    mine = live(pods, "rs")
    assert len(mine) == 3
    for p in mine:
        assert p["metadata"]["name"].startswith("rs-") and p["metadata"]["generateName"] == "rs-"
        ref = p["metadata"]["ownerReferences"][0]
        assert ref["uid"] == rs["metadata"]["uid"] and ref["controller"] is True and ref["kind"] == "ReplicaSet"
        assert p["spec"]["nodeName"]

    await c.patch("ReplicaSet", "rs", {"spec": {"replicas": 5}}, "default")
    await wait(sets, status_is(5))
    assert sets.get("rs", "default")["status"]["observedGeneration"] == 2

    # Scale down prefers a pod that is not ready.
    victim = live(pods, "rs")[2]["metadata"]["name"]
    await env.kubelet.set_ready(victim, False)
    await wait(sets, lambda i: i.get("rs", "default")["status"].get("readyReplicas") == 4)
    await c.patch("ReplicaSet", "rs", {"spec": {"replicas": 4}}, "default")
    await wait(sets, status_is(4))
    assert victim not in {p["metadata"]["name"] for p in live(pods, "rs")}

    # A pod deleted by a user is replaced.
    gone = live(pods, "rs")[0]["metadata"]["name"]
    await c.delete("Pod", gone, "default")
    await wait(pods, lambda i: len(live(i, "rs")) == 4 and gone not in {p["metadata"]["name"] for p in live(i, "rs")})

    # An orphan that matches is adopted: no extra pod, one fewer created. The orphan exists (and the
    # controllers have seen it) before its ReplicaSet does, so adoption cannot race a scale-up.
    await c.create(pod("adoptee", {"app": "adopter"}, node="node-0"))
    await wait(pods, lambda i: i.get("adoptee", "default") is not None)
    adopter = await c.create(replicaset("adopter", 2))
    await wait(sets, lambda i: ((i.get("adopter", "default") or {}).get("status") or {}).get("readyReplicas") == 2)
    owners = pods.get("adoptee", "default")["metadata"].get("ownerReferences") or []
    assert [r["uid"] for r in owners] == [adopter["metadata"]["uid"]]
    assert len(live(pods, "adopter")) == 2


def _pod(name: str, node: str | None, phase: str, ready: bool, created: str, ready_at: str | None = None) -> Obj:
    conds = [{"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": ready_at or created}]
    return {"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"nodeName": node} if node else {}, "status": {"phase": phase, "conditions": conds}}


def test_deletion_preference_is_upstreams() -> None:
    pods = [
        _pod("running-ready-old", "n1", "Running", True, "2024-01-01T00:00:00Z", "2024-01-01T00:00:10Z"),
        _pod("running-ready-new", "n2", "Running", True, "2024-01-01T00:01:00Z", "2024-01-01T00:01:10Z"),
        _pod("running-notready", "n3", "Running", False, "2024-01-01T00:00:00Z"),
        _pod("pending", "n4", "Pending", False, "2024-01-01T00:00:00Z"),
        _pod("unscheduled", None, "Pending", False, "2024-01-01T00:00:00Z"),
    ]
    order = [p["metadata"]["name"] for p in pods_to_delete(pods, 5)]
    assert order == ["unscheduled", "pending", "running-notready", "running-ready-new", "running-ready-old"]
    doubled = [_pod("a", "n1", "Running", True, "2024-01-01T00:00:00Z"), _pod("b", "n1", "Running", True, "2024-01-01T00:00:00Z"),
               _pod("c", "n2", "Running", True, "2024-01-01T00:00:00Z")]
    assert pods_to_delete(doubled, 1)[0]["metadata"]["name"] in ("a", "b")


def test_fenceposts_round_like_upstream() -> None:
    d = deployment("d", 5, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "30%", "maxUnavailable": "30%"}})
    assert U.fenceposts(d) == (2, 1)  # surge rounds up, unavailable down
    d = deployment("d", 3, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "10%", "maxUnavailable": "10%"}})
    assert U.fenceposts(d) == (1, 0)
    d = deployment("d", 3, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "10%"}})
    assert U.fenceposts(d) == (0, 1)  # both zero: one may be unavailable
    assert U.max_unavailable(deployment("d", 2, {"type": "RollingUpdate",
                                                 "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 5}})) == 2
    t = template("x")
    assert U.template_hash(t) == U.template_hash(copy.deepcopy(t)) != U.template_hash(template("x", ["netexec"]))
    assert U.template_hash(t, 1) != U.template_hash(t)
    assert set(U.template_hash(t)) <= set("bcdfghjklmnpqrstvwxz2456789")


async def test_rolling_update_does_not_trust_status_of_a_replicaset_scaling_down() -> None:
    """Right after a scale-down 5 -> 4 the old ReplicaSet's status still counts the pod being deleted
    (observedGeneration current, availableReplicas 5): the next old-RS scale-down must count 4."""
    from kmesh.controllers.deployment import DeploymentController

    class Writes:
        def __init__(self) -> None:
            self.scaled: dict[str, int] = {}

        async def update(self, obj: Obj) -> Obj:
            self.scaled[obj["metadata"]["name"]] = obj["spec"]["replicas"]
            return obj

    def rs(name: str, created: str, spec: int, available: int) -> Obj:
        return {"metadata": {"name": name, "creationTimestamp": created, "generation": 2, "annotations": {}},
                "spec": {"replicas": spec},
                "status": {"observedGeneration": 2, "replicas": available, "availableReplicas": available}}

    d = deployment("web", 5, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "30%", "maxUnavailable": "30%"}})
    old, new = rs("web-old", "2024-01-01T00:00:00Z", 4, 5), rs("web-new", "2024-01-01T00:01:00Z", 3, 1)
    dc = DeploymentController.__new__(DeploymentController)
    dc.client, dc.events = Writes(), None
    scaled, _ = await dc._reconcile_old([old, new], [old], new, d)
    # 4 old pods + 1 new available, minAvailable 4: one old pod may go, not two (which left 3 available).
    assert scaled and dc.client.scaled == {"web-old": 3}


class Invariants:
    """Checks a rollout's bounds on every change the controllers' informers see."""

    def __init__(self, env: Env, app: str, replicas: int, surge: int, unavailable: int) -> None:
        self.app, self.replicas, self.surge, self.unavailable = app, replicas, surge, unavailable
        self.sets = env.informer("ReplicaSet")
        self.pods = env.informer("Pod")
        self.armed = False
        self.steps = 0
        self.max_total = 0
        self.min_available = replicas
        self.errors: list[str] = []
        self.sets.add_handler(self._check)
        self.pods.add_handler(self._check)

    def _check(self, ch: Change) -> None:
        if not self.armed:
            return
        self.steps += 1
        total = sum(U.spec_replicas(rs) for rs in self.sets.list("default")
                    if podutil.labels(rs).get("app") == self.app)
        available = sum(1 for p in live(self.pods, self.app) if podutil.is_ready(p))
        self.max_total = max(self.max_total, total)
        self.min_available = min(self.min_available, available)
        if total > self.replicas + self.surge:
            self.errors.append(f"{total} replicas wanted > {self.replicas} + maxSurge {self.surge}")
        if available < self.replicas - self.unavailable:
            self.errors.append(f"{available} available < {self.replicas} - maxUnavailable {self.unavailable}")


def rollout_done(d_inf: Informer, name: str, replicas: int) -> Any:
    def pred(i: Informer) -> bool:
        d = i.get(name, "default")
        if d is None:
            return False
        st = d.get("status") or {}
        return (st.get("observedGeneration", 0) >= d["metadata"]["generation"] and st.get("updatedReplicas") == replicas
                and st.get("replicas") == replicas and st.get("availableReplicas") == replicas)
    return pred


async def test_deployment_rolling_update_respects_surge_and_unavailable(env: Env) -> None:
    c = env.client
    await nodes(env)
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "30%", "maxUnavailable": "30%"}}
    await c.create(deployment("web", 5, strategy))
    deps, sets, pods = env.informer("Deployment"), env.informer("ReplicaSet"), env.informer("Pod")
    await wait(deps, rollout_done(deps, "web", 5))
    d = deps.get("web", "default")
    assert d["metadata"]["annotations"][U.REVISION] == "1"
    conds = {x["type"]: x for x in d["status"]["conditions"]}
    assert conds["Available"]["status"] == "True" and conds["Available"]["reason"] == "MinimumReplicasAvailable"
    assert conds["Progressing"]["reason"] == "NewReplicaSetAvailable"
    assert d["status"]["unavailableReplicas"] == 0 and d["status"]["readyReplicas"] == 5
    [rs1] = [rs for rs in sets.list("default") if podutil.labels(rs).get("app") == "web"]
    h1 = rs1["metadata"]["labels"][U.HASH_LABEL]
    assert rs1["metadata"]["name"] == f"web-{h1}" and h1 == U.template_hash(d["spec"]["template"])
    assert rs1["metadata"]["annotations"][U.REVISION] == "1"
    assert rs1["metadata"]["ownerReferences"][0]["uid"] == d["metadata"]["uid"]
    assert all(p["metadata"]["labels"][U.HASH_LABEL] == h1 for p in live(pods, "web"))

    # Roll out a new template; new pods become Ready only when the test says so, one at a time.
    env.kubelet.auto_ready = False
    inv = Invariants(env, "web", 5, surge=2, unavailable=1)
    inv.armed = True
    await c.patch("Deployment", "web", {"spec": {"template": {"spec": {"containers": [
        {"name": "c", "args": ["netexec"]}]}}}}, "default", patch_type="strategic")
    rolled = 0
    while True:
        def next_step() -> bool:
            return rollout_done(deps, "web", 5)(deps) or any(
                not podutil.is_ready(p) and p["status"].get("podIP") for p in live(pods, "web"))
        await wait_any(next_step, pods, deps)
        if rollout_done(deps, "web", 5)(deps):
            break
        waiting = [p for p in live(pods, "web") if not podutil.is_ready(p) and p["status"].get("podIP")]
        await env.kubelet.set_ready(waiting[0]["metadata"]["name"], True)
        rolled += 1
    inv.armed = False
    assert not inv.errors, inv.errors[:5]
    assert rolled == 5 and inv.steps > 10
    assert inv.max_total == 7  # maxSurge was used
    assert inv.min_available >= 4  # never below replicas - maxUnavailable (also checked at every step)
    d = deps.get("web", "default")
    assert d["metadata"]["annotations"][U.REVISION] == "2"
    web_sets = {rs["metadata"]["name"]: rs for rs in sets.list("default") if podutil.labels(rs).get("app") == "web"}
    assert len(web_sets) == 2 and U.spec_replicas(web_sets[rs1["metadata"]["name"]]) == 0
    await wait(deps, lambda i: U.condition(i.get("web", "default")["status"], "Progressing")["reason"]
               == "NewReplicaSetAvailable")

    env.kubelet.auto_ready = True
    out = await env.cluster.kubectl("rollout", "status", "deployment/web", "--timeout=30s")
    assert 'deployment "web" successfully rolled out' in out.stdout

    # Rolling back to the first template reuses its ReplicaSet with a new revision.
    await env.cluster.kubectl("rollout", "undo", "deployment/web")
    await wait(deps, lambda i: (i.get("web", "default") or {}).get("metadata", {}).get("annotations", {})
               .get(U.REVISION) == "3")
    await wait(deps, rollout_done(deps, "web", 5))
    rs1_now = sets.get(rs1["metadata"]["name"], "default")
    assert U.spec_replicas(rs1_now) == 5 and rs1_now["metadata"]["annotations"][U.REVISION] == "3"
    assert rs1_now["metadata"]["annotations"][U.REVISION_HISTORY] == "1"


async def test_deployment_scale_and_kubectl_rollout_status(env: Env) -> None:
    await nodes(env)
    manifest = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: app, namespace: default}
spec:
  replicas: 2
  minReadySeconds: 2
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers:
      - {name: c, image: "registry.k8s.io/e2e-test-images/agnhost:2.39", args: [serve-hostname]}
"""
    cl = env.cluster
    started = time.time()
    await cl.kubectl("apply", "-f", "-", stdin=manifest)
    out = await cl.kubectl("rollout", "status", "deployment/app", "--timeout=60s")
    assert "successfully rolled out" in out.stdout
    assert time.time() - started >= 1.0  # minReadySeconds (2 s, timestamps in whole seconds) held it back
    deps = env.informer("Deployment")
    await cl.kubectl("scale", "deployment/app", "--replicas=4")
    await wait(deps, rollout_done(deps, "app", 4))
    await cl.kubectl("scale", "deployment/app", "--replicas=1")
    await wait(deps, rollout_done(deps, "app", 1))
    await wait(env.informer("Pod"), lambda i: len(live(i, "app")) == 1)
    await cl.kubectl("set", "image", "deployment/app", "c=registry.k8s.io/e2e-test-images/agnhost:2.40")
    out = await cl.kubectl("rollout", "status", "deployment/app", "--timeout=60s")
    assert "successfully rolled out" in out.stdout
    table = await cl.kubectl("get", "deployment", "app")
    assert "1/1" in table.stdout


async def test_recreate_never_runs_old_and_new_together(env: Env) -> None:
    c = env.client
    await nodes(env, 2)
    await c.create(deployment("rec", 3, {"type": "Recreate"}))
    deps, pods = env.informer("Deployment"), env.informer("Pod")
    await wait(deps, rollout_done(deps, "rec", 3))
    old_hash = live(pods, "rec")[0]["metadata"]["labels"][U.HASH_LABEL]
    overlaps: list[str] = []

    def check(ch: Change) -> None:
        hashes = {p["metadata"]["labels"].get(U.HASH_LABEL) for p in pods.list("default")
                  if podutil.labels(p).get("app") == "rec" and not podutil.is_terminal(p)}
        if old_hash in hashes and len(hashes) > 1:
            overlaps.append(str(hashes))

    pods.add_handler(check)
    await c.patch("Deployment", "rec", {"spec": {"template": {"metadata": {"labels": {"v": "2"}}}}}, "default")
    await wait(deps, lambda i: (i.get("rec", "default") or {}).get("metadata", {}).get("annotations", {})
               .get(U.REVISION) == "2")
    await wait(deps, rollout_done(deps, "rec", 3))
    assert not overlaps
    assert {p["metadata"]["labels"][U.HASH_LABEL] for p in live(pods, "rec")} != {old_hash}


async def test_progress_deadline_exceeded(env: Env) -> None:
    c = env.client
    # No nodes: pods are never scheduled, the rollout cannot progress.
    await c.create(deployment("stuck", 1, progressDeadlineSeconds=2))
    deps = env.informer("Deployment")
    await wait(deps, lambda i: (U.condition((i.get("stuck", "default") or {}).get("status") or {}, "Progressing")
                                or {}).get("reason") == U.TIMED_OUT, timeout=20)
    cond = U.condition(deps.get("stuck", "default")["status"], "Progressing")
    assert cond["status"] == "False" and "has timed out progressing" in cond["message"]
    avail = U.condition(deps.get("stuck", "default")["status"], "Available")
    assert avail["status"] == "False" and avail["reason"] == "MinimumReplicasUnavailable"
