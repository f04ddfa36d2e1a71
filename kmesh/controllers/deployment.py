"""The Deployment controller: ReplicaSets per template, rolling updates and Recreate, status and conditions.

Follows upstream's pkg/controller/deployment step for step: a new
ReplicaSet ``<deployment>-<pod-template-hash>`` per template (revisions in
``deployment.kubernetes.io/revision``), scaling events distributed
proportionally over active ReplicaSets, RollingUpdate bounded by maxSurge
(above the replicas, counted on ReplicaSet specs) and maxUnavailable (below
them, counted on available replicas), Recreate scaling everything old to
zero and waiting for its pods to be gone, history cleaned to
revisionHistoryLimit, and the Available / Progressing conditions that
``kubectl rollout status`` reads.
"""

from __future__ import annotations

import copy
import logging
import time

from kmesh.api import errors as E
from kmesh.api.obj import Obj
from kmesh.client.api import Client
from kmesh.client.informer import Change, key_of
from kmesh.controllers import deployment_util as U
from kmesh.controllers import podutil
from kmesh.controllers.base import Controller, Retry
from kmesh.controllers.events import EventRecorder
from kmesh.controllers.informers import InformerFactory, LabelQuery, SelectorIndex, by_controller_uid, workload_selector
from kmesh.controllers.refmanager import claim

log = logging.getLogger("kmesh.controllers.deployment")
Key = tuple[str, str]


class DeploymentController(Controller[Key]):
    """Rolls Deployments out through ReplicaSets."""

    name = "deployment"

    def __init__(self, client: Client, factory: InformerFactory, *, workers: int = 5,
                 events: EventRecorder | None = None) -> None:
        super().__init__(workers)
        self.client = client
        self.events = events
        self.deploys = factory.informer("Deployment")
        self.deploys_by_uid = factory.index("Deployment", "uid", lambda o: [podutil.uid(o)])
        self.selecting = SelectorIndex(factory, "Deployment", workload_selector)
        self.sets = LabelQuery(factory, "ReplicaSet")
        self.sets_by_controller = factory.index("ReplicaSet", "controller", by_controller_uid)
        self.sets_by_uid = factory.index("ReplicaSet", "uid", lambda o: [podutil.uid(o)])
        self.pods_by_controller = factory.index("Pod", "controller", by_controller_uid)
        self.deploys.add_handler(lambda ch: self.queue.add(key_of(ch.obj)))
        self.sets.informer.add_handler(self._on_set)
        factory.informer("Pod").add_handler(self._on_pod)

    # ------------------------------------------------------------ handlers

    def _owner(self, rs: Obj) -> Obj | None:
        ref = podutil.controller_ref(rs)
        if ref is None or ref.get("kind") != "Deployment":
            return None
        return podutil.first(self.deploys_by_uid.objects(ref.get("uid")))

    def _on_set(self, ch: Change) -> None:
        owners = [self._owner(o) for o in (ch.old, ch.new) if o is not None]
        found = [o for o in owners if o is not None]
        for d in found:
            self.queue.add(key_of(d))
        if not found and ch.new is not None and podutil.controller_ref(ch.new) is None:
            ns = podutil.md(ch.new).get("namespace") or ""
            for d in self.selecting.selecting(ns, podutil.labels(ch.new)):
                self.queue.add(key_of(d))

    def _on_pod(self, ch: Change) -> None:
        if ch.new is not None:
            return
        ref = podutil.controller_ref(ch.old or {})
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        rs = podutil.first(self.sets_by_uid.objects(ref.get("uid")))
        d = self._owner(rs) if rs is not None else None
        if d is not None and ((d.get("spec") or {}).get("strategy") or {}).get("type") == "Recreate":
            self.queue.add(key_of(d))

    # ----------------------------------------------------------------- sync

    async def sync(self, key: Key) -> None:
        """Reconcile one Deployment."""
        cached = self.deploys.get(key[1], key[0])
        if cached is None:
            return
        d = copy.deepcopy(cached)
        sel = (d.get("spec") or {}).get("selector")
        candidates = self.sets.matching(key[0], sel) + self.sets_by_controller.objects(podutil.uid(d))
        rs_list = await claim(self.client, d, candidates)
        if podutil.is_terminating(d):
            d, new_rs, old = await self._get_all(d, rs_list, create=False)
            await self._sync_status(d, self._all(old, new_rs), new_rs)
            return
        d = await self._check_paused(d)
        if (d.get("spec") or {}).get("paused"):
            await self._scale_sync(d, rs_list)
            return
        if self._is_scaling_event(d, rs_list):
            await self._scale_sync(d, rs_list)
            return
        if ((d.get("spec") or {}).get("strategy") or {}).get("type") == "Recreate":
            await self._rollout_recreate(d, rs_list)
        else:
            await self._rollout_rolling(d, rs_list)

    @staticmethod
    def _all(old: list[Obj], new_rs: Obj | None) -> list[Obj]:
        return [*old, new_rs] if new_rs is not None else list(old)

    # ------------------------------------------------------ ReplicaSets

    @staticmethod
    def _split(d: Obj, rs_list: list[Obj]) -> tuple[Obj | None, list[Obj]]:
        """(the ReplicaSet of the current template -- the oldest if several -- or None, the others)."""
        tmpl = (d.get("spec") or {}).get("template") or {}
        matching = sorted((rs for rs in rs_list if U.equal_ignore_hash(rs["spec"].get("template") or {}, tmpl)),
                          key=U.created)
        new_rs = matching[0] if matching else None
        return new_rs, [rs for rs in rs_list if rs is not new_rs]

    async def _get_all(self, d: Obj, rs_list: list[Obj], *, create: bool) -> tuple[Obj, Obj | None, list[Obj]]:
        """(deployment, new ReplicaSet or None, old ReplicaSets), syncing revisions; creates the new one if asked."""
        new_rs, old = self._split(d, rs_list)
        new_revision = max((U.revision(rs) for rs in old), default=0) + 1
        if new_rs is not None:
            new_rs = await self._sync_new_rs(d, new_rs, new_revision)
            d = await self._note_new_rs(d, new_rs, U.FOUND_NEW_RS, f'Found new replica set "{new_rs["metadata"]["name"]}"',
                                        only_if_missing=True)
            return d, new_rs, old
        if not create:
            return d, None, old
        d, new_rs = await self._create_new_rs(d, old, new_revision)
        return d, new_rs, old

    async def _sync_new_rs(self, d: Obj, rs: Obj, new_revision: int) -> Obj:
        ann = podutil.md(rs).get("annotations") or {}
        want_ann = U.rs_annotations_for(d, ann, new_revision, creating=False)
        mrs = (d.get("spec") or {}).get("minReadySeconds") or 0
        if want_ann == ann and (rs["spec"].get("minReadySeconds") or 0) == mrs:
            return rs
        new = copy.deepcopy(rs)
        new["metadata"]["annotations"] = want_ann
        new["spec"]["minReadySeconds"] = mrs
        return await self.client.update(new)

    async def _note_new_rs(self, d: Obj, rs: Obj, reason: str, message: str, *, only_if_missing: bool) -> Obj:
        """Set the Deployment's revision annotation (and a Progressing condition) after finding/creating ``rs``."""
        new = copy.deepcopy(d)
        ann = new["metadata"].setdefault("annotations", {})
        rev = (podutil.md(rs).get("annotations") or {}).get(U.REVISION)
        changed = False
        if rev and ann.get(U.REVISION) != rev and U.revision(new) < int(rev):
            ann[U.REVISION] = rev
            changed = True
        status = new.setdefault("status", {})
        if U.has_deadline(new) and (not only_if_missing or U.condition(status, "Progressing") is None):
            before = copy.deepcopy(status.get("conditions"))
            U.set_condition(status, U.new_condition("Progressing", "True", reason, message))
            changed = changed or before != status.get("conditions")
        if not changed:
            return d
        return await self.client.update_status(new)

    async def _create_new_rs(self, d: Obj, old: list[Obj], new_revision: int) -> tuple[Obj, Obj]:
        spec = d["spec"]
        cc = (d.get("status") or {}).get("collisionCount")
        h = U.template_hash(spec["template"], cc)
        tmpl = copy.deepcopy(spec["template"])
        tmpl.setdefault("metadata", {}).setdefault("labels", {})[U.HASH_LABEL] = h
        sel = copy.deepcopy(spec["selector"])
        sel.setdefault("matchLabels", {})[U.HASH_LABEL] = h
        m = podutil.md(d)
        rs: Obj = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"{m['name']}-{h}", "namespace": m.get("namespace"),
                         "labels": dict(tmpl["metadata"]["labels"]),
                         "annotations": U.rs_annotations_for(d, {}, new_revision, creating=True),
                         "ownerReferences": [podutil.owner_reference(d)]},
            "spec": {"replicas": 0, "minReadySeconds": spec.get("minReadySeconds") or 0, "selector": sel,
                     "template": tmpl},
        }
        rs["spec"]["replicas"] = U.new_rs_replicas(d, [*old, rs], rs)
        already = False
        try:
            created = await self.client.create(rs)
        except E.APIError as exc:
            if exc.code != 409:
                raise
            existing = await self.client.get("ReplicaSet", rs["metadata"]["name"], m.get("namespace"))
            ref = podutil.controller_ref(existing)
            if ref is not None and ref.get("uid") == podutil.uid(d) and \
                    U.equal_ignore_hash(existing["spec"].get("template") or {}, spec["template"]):
                created, already = existing, True
            else:
                new = copy.deepcopy(d)
                new.setdefault("status", {})["collisionCount"] = int(cc or 0) + 1
                await self.client.update_status(new)
                raise Retry(f"hash collision for ReplicaSet {rs['metadata']['name']}") from None
        n = U.spec_replicas(created)
        if not already and self.events and n > 0:
            self.events.event(d, "Normal", "ScalingReplicaSet",
                              f"Scaled up replica set {created['metadata']['name']} from 0 to {n}")
        reason, msg = (U.FOUND_NEW_RS, f'Found new replica set "{created["metadata"]["name"]}"') if already else \
            (U.NEW_RS_CREATED, f'Created new replica set "{created["metadata"]["name"]}"')
        d = await self._note_new_rs(d, created, reason, msg, only_if_missing=already)
        return d, created

    async def _scale(self, rs: Obj, n: int, d: Obj) -> tuple[bool, Obj]:
        """Set a ReplicaSet's replicas (and desired/max annotations); (size changed, new object)."""
        ann = podutil.md(rs).get("annotations") or {}
        want_ann = {**ann, U.DESIRED_REPLICAS: str(U.replicas(d)), U.MAX_REPLICAS: str(U.replicas(d) + U.max_surge(d))}
        cur = U.spec_replicas(rs)
        if cur == n and want_ann == ann:
            return False, rs
        new = copy.deepcopy(rs)
        new["spec"]["replicas"] = n
        new["metadata"]["annotations"] = want_ann
        out = await self.client.update(new)
        if cur != n and self.events:
            verb = "up" if n > cur else "down"
            self.events.event(d, "Normal", "ScalingReplicaSet",
                              f"Scaled {verb} replica set {rs['metadata']['name']} from {cur} to {n}")
        return cur != n, out

    # ------------------------------------------------------------- strategies

    async def _rollout_rolling(self, d: Obj, rs_list: list[Obj]) -> None:
        d, new_rs, old = await self._get_all(d, rs_list, create=True)
        assert new_rs is not None
        all_sets = self._all(old, new_rs)
        scaled, new_rs = await self._reconcile_new(all_sets, new_rs, d)
        all_sets = self._all(old, new_rs)
        if scaled:
            await self._sync_rollout_status(d, all_sets, new_rs)
            return
        scaled, old = await self._reconcile_old(all_sets, old, new_rs, d)
        all_sets = self._all(old, new_rs)
        if scaled:
            await self._sync_rollout_status(d, all_sets, new_rs)
            return
        if U.complete(d, d.get("status") or {}):
            await self._cleanup(old, d)
        await self._sync_rollout_status(d, all_sets, new_rs)

    async def _reconcile_new(self, all_sets: list[Obj], new_rs: Obj, d: Obj) -> tuple[bool, Obj]:
        want = U.replicas(d)
        have = U.spec_replicas(new_rs)
        if have == want:
            return False, new_rs
        if have > want:
            return await self._scale(new_rs, want, d)
        return await self._scale(new_rs, U.new_rs_replicas(d, all_sets, new_rs), d)

    async def _reconcile_old(self, all_sets: list[Obj], old: list[Obj], new_rs: Obj, d: Obj) -> tuple[bool, list[Obj]]:
        if sum(U.spec_replicas(rs) for rs in U.active(old)) == 0:
            return False, old
        # Availability is read through U.available_replicas (status capped at spec): a ReplicaSet's status
        # lags its own scale-down, and counting the pods it is deleting as available would let one
        # more scale-down cut below minAvailable.
        all_pods = sum(U.spec_replicas(rs) for rs in all_sets)
        min_available = U.replicas(d) - U.max_unavailable(d)
        new_unavailable = U.spec_replicas(new_rs) - U.available_replicas(new_rs)
        max_scaled_down = all_pods - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False, old
        by_name = {rs["metadata"]["name"]: rs for rs in old}
        # First the old replicas that are not available: scaling them down costs no availability.
        cleaned = 0
        for rs in sorted(U.active(old), key=U.created):
            if cleaned >= max_scaled_down:
                break
            have, avail = U.spec_replicas(by_name[rs["metadata"]["name"]]), U.available_replicas(rs)
            if have == 0 or have <= avail:
                continue
            down = min(max_scaled_down - cleaned, have - avail)
            _, by_name[rs["metadata"]["name"]] = await self._scale(by_name[rs["metadata"]["name"]], have - down, d)
            cleaned += down
        old = list(by_name.values())
        # Then available ones, as far as maxUnavailable allows.
        available = sum(U.available_replicas(rs) for rs in self._all(old, new_rs))
        scaled = 0
        if available > min_available:
            total = available - min_available
            for rs in sorted(old, key=U.created):
                if scaled >= total:
                    break
                have = U.spec_replicas(by_name[rs["metadata"]["name"]])
                if have == 0:
                    continue
                down = min(have, total - scaled)
                _, by_name[rs["metadata"]["name"]] = await self._scale(by_name[rs["metadata"]["name"]], have - down, d)
                scaled += down
        return cleaned + scaled > 0, list(by_name.values())

    async def _rollout_recreate(self, d: Obj, rs_list: list[Obj]) -> None:
        d, new_rs, old = await self._get_all(d, rs_list, create=False)
        scaled = False
        out = []
        for rs in old:
            if U.spec_replicas(rs) > 0:
                _, rs = await self._scale(rs, 0, d)
                scaled = True
            out.append(rs)
        old = out
        if scaled:
            await self._sync_rollout_status(d, self._all(old, new_rs), new_rs)
            return
        if self._old_pods_running(new_rs, old, rs_list):
            await self._sync_rollout_status(d, self._all(old, new_rs), new_rs)
            return
        if new_rs is None:
            d, new_rs, old = await self._get_all(d, rs_list, create=True)
        assert new_rs is not None
        if U.spec_replicas(new_rs) != U.replicas(d):
            _, new_rs = await self._scale(new_rs, U.replicas(d), d)
            await self._sync_rollout_status(d, self._all(old, new_rs), new_rs)
            return
        if U.complete(d, d.get("status") or {}):
            await self._cleanup(old, d)
        await self._sync_rollout_status(d, self._all(old, new_rs), new_rs)

    def _old_pods_running(self, new_rs: Obj | None, old: list[Obj], rs_list: list[Obj]) -> bool:
        if sum(U.status_of(rs, "replicas") for rs in old) > 0:
            return True
        new_uid = podutil.uid(new_rs) if new_rs is not None else None
        for rs in rs_list:
            if podutil.uid(rs) == new_uid:
                continue
            for pod in self.pods_by_controller.objects(podutil.uid(rs)):
                if not podutil.is_terminal(pod):
                    return True
        return False

    # ---------------------------------------------------------- scaling events

    def _is_scaling_event(self, d: Obj, rs_list: list[Obj]) -> bool:
        new_rs, old = self._split(d, rs_list)
        for rs in U.active(self._all(old, new_rs)):
            desired = (podutil.md(rs).get("annotations") or {}).get(U.DESIRED_REPLICAS)
            if desired is not None and desired.isdigit() and int(desired) != U.replicas(d):
                return True
        return False

    async def _scale_sync(self, d: Obj, rs_list: list[Obj]) -> None:
        d, new_rs, old = await self._get_all(d, rs_list, create=False)
        new_rs, old = await self._scale_proportionally(d, new_rs, old)
        if (d.get("spec") or {}).get("paused"):
            await self._cleanup(old, d)
        await self._sync_status(d, self._all(old, new_rs), new_rs)

    async def _scale_proportionally(self, d: Obj, new_rs: Obj | None, old: list[Obj]) -> tuple[Obj | None, list[Obj]]:
        want = U.replicas(d)
        act = U.active(self._all(old, new_rs))
        if len(act) <= 1:
            target = act[0] if act else (new_rs if new_rs is not None else max(old, key=U.created, default=None))
            if target is None or U.spec_replicas(target) == want:
                return new_rs, old
            _, scaled = await self._scale(target, want, d)
            return self._replace(new_rs, old, scaled)
        if new_rs is not None and _saturated(d, new_rs):
            for rs in U.active(old):
                _, scaled = await self._scale(rs, 0, d)
                new_rs, old = self._replace(new_rs, old, scaled)
            return new_rs, old
        if ((d.get("spec") or {}).get("strategy") or {}).get("type", "RollingUpdate") != "RollingUpdate":
            return new_rs, old
        allowed = want + U.max_surge(d) if want > 0 else 0
        to_add = allowed - sum(U.spec_replicas(rs) for rs in act)
        if to_add > 0:  # larger first, newer first among equals
            order = sorted(act, key=lambda rs: (-U.spec_replicas(rs), -U.created(rs)[0]))
        else:  # larger first, older first among equals
            order = sorted(act, key=lambda rs: (-U.spec_replicas(rs), U.created(rs)[0]))
        sizes: dict[str, int] = {}
        added = 0
        for rs in order:
            p = U.proportion(rs, d, to_add, added)
            sizes[rs["metadata"]["name"]] = U.spec_replicas(rs) + p
            added += p
        if added != to_add and order:
            first = order[0]["metadata"]["name"]
            sizes[first] += to_add - added
        for rs in order:
            _, scaled = await self._scale(rs, max(0, sizes[rs["metadata"]["name"]]), d)
            new_rs, old = self._replace(new_rs, old, scaled)
        return new_rs, old

    @staticmethod
    def _replace(new_rs: Obj | None, old: list[Obj], rs: Obj) -> tuple[Obj | None, list[Obj]]:
        name = rs["metadata"]["name"]
        if new_rs is not None and new_rs["metadata"]["name"] == name:
            return rs, old
        return new_rs, [rs if o["metadata"]["name"] == name else o for o in old]

    # ------------------------------------------------------------- history

    async def _cleanup(self, old: list[Obj], d: Obj) -> None:
        limit = (d.get("spec") or {}).get("revisionHistoryLimit")
        if limit is None or int(limit) == 2147483647:
            return
        cleanable = [rs for rs in old if not podutil.is_terminating(rs) and U.status_of(rs, "replicas") == 0
                     and U.spec_replicas(rs) == 0
                     and int(podutil.md(rs).get("generation") or 0) <= U.status_of(rs, "observedGeneration")]
        extra = len(cleanable) - int(limit)
        for rs in sorted(cleanable, key=lambda r: (U.revision(r), U.created(r)))[: max(0, extra)]:
            try:
                await self.client.delete("ReplicaSet", rs["metadata"]["name"], rs["metadata"].get("namespace"),
                                         uid=podutil.uid(rs))
            except E.APIError as exc:
                if exc.code != 404:
                    raise

    # --------------------------------------------------------------- status

    async def _check_paused(self, d: Obj) -> Obj:
        if not U.has_deadline(d):
            return d
        status = copy.deepcopy(d.get("status") or {})
        cond = U.condition(status, "Progressing")
        if cond is not None and cond.get("reason") == U.TIMED_OUT:
            return d
        paused = bool((d.get("spec") or {}).get("paused"))
        has_paused = cond is not None and cond.get("reason") == U.PAUSED
        if paused and not has_paused:
            U.set_condition(status, U.new_condition("Progressing", "Unknown", U.PAUSED, "Deployment is paused"))
        elif not paused and has_paused:
            U.set_condition(status, U.new_condition("Progressing", "Unknown", U.RESUMED, "Deployment is resumed"))
        else:
            return d
        new = copy.deepcopy(d)
        new["status"] = status
        return await self.client.update_status(new)

    async def _sync_status(self, d: Obj, all_sets: list[Obj], new_rs: Obj | None) -> None:
        status = U.calculate_status(d, all_sets, new_rs)
        if status != (d.get("status") or {}):
            new = copy.deepcopy(d)
            new["status"] = status
            await self.client.update_status(new)

    async def _sync_rollout_status(self, d: Obj, all_sets: list[Obj], new_rs: Obj | None) -> None:
        status = U.calculate_status(d, all_sets, new_rs)
        name = new_rs["metadata"]["name"] if new_rs is not None else ""
        if not U.has_deadline(d):
            U.remove_condition(status, "Progressing")
        cond = U.condition(d.get("status") or {}, "Progressing")
        done = status["replicas"] == status["updatedReplicas"] and cond is not None \
            and cond.get("reason") == U.NEW_RS_AVAILABLE
        if U.has_deadline(d) and not done:
            if U.complete(d, status):
                msg = f'ReplicaSet "{name}" has successfully progressed.' if name else "Deployment has successfully progressed."
                U.set_condition(status, U.new_condition("Progressing", "True", U.NEW_RS_AVAILABLE, msg))
            elif U.progressing(d, status):
                msg = f'ReplicaSet "{name}" is progressing.' if name else "Deployment is progressing."
                c = U.new_condition("Progressing", "True", U.RS_UPDATED, msg)
                if cond is not None and cond.get("status") == "True":
                    c["lastTransitionTime"] = cond.get("lastTransitionTime")
                U.remove_condition(status, "Progressing")
                U.set_condition(status, c)
            elif U.timed_out(d, status, time.time()):
                msg = f'ReplicaSet "{name}" has timed out progressing.' if name else "Deployment has timed out progressing."
                U.set_condition(status, U.new_condition("Progressing", "False", U.TIMED_OUT, msg))
        failure = next((c for rs in all_sets for c in (rs.get("status") or {}).get("conditions") or []
                        if c.get("type") == "ReplicaFailure" and c.get("status") == "True"), None)
        if failure is not None:
            U.set_condition(status, {"type": "ReplicaFailure", "status": "True",
                                     "lastUpdateTime": failure.get("lastTransitionTime"),
                                     "lastTransitionTime": failure.get("lastTransitionTime"),
                                     "reason": failure.get("reason"), "message": failure.get("message")})
        else:
            U.remove_condition(status, "ReplicaFailure")
        if status == (d.get("status") or {}):
            self._requeue_stuck(d, status)
            return
        new = copy.deepcopy(d)
        new["status"] = status
        await self.client.update_status(new)

    def _requeue_stuck(self, d: Obj, status: Obj) -> None:
        cond = U.condition(d.get("status") or {}, "Progressing")
        if not U.has_deadline(d) or cond is None or U.complete(d, status) or cond.get("reason") == U.TIMED_OUT:
            return
        since = podutil.parse_time(cond.get("lastUpdateTime"))
        if since is None:
            return
        after = since + int(d["spec"]["progressDeadlineSeconds"]) - time.time()
        self.queue.add_after(key_of(d), max(after, 0) + 1.0)


def _saturated(d: Obj, rs: Obj) -> bool:
    desired = (podutil.md(rs).get("annotations") or {}).get(U.DESIRED_REPLICAS)
    want = U.replicas(d)
    return desired == str(want) and U.spec_replicas(rs) == want and U.status_of(rs, "availableReplicas") == want
