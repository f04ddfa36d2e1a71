"""Pod status writes: only when something changed, coalesced per pod, retried while the API is away.

Pod workers hand in the kubelet-owned part of a pod's status as often as
they like; one write per pod is in flight at a time and the newest status
wins (the work queue dedupes keys). A pod whose worker has finished
terminating is deleted here, after its final status was written, with grace
period 0 and a UID precondition, as the kubelet's status manager does.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import trio

from kmesh.api import errors as E
from kmesh.api.obj import Obj
from kmesh.client.api import APIUnavailable, Client
from kmesh.client.informer import Informer
from kmesh.client.workqueue import WorkQueue
from kmesh.node.status import merge_status

log = logging.getLogger("kmesh.node.status")


@dataclass
class _Desired:
    namespace: str
    name: str
    status: Obj
    delete: bool = False


class StatusManager:
    """Writes the status the pod workers want; deletes pods that finished terminating."""

    def __init__(self, client: Client, pods: Informer) -> None:
        self.client = client
        self.pods = pods
        self.queue: WorkQueue[str] = WorkQueue(base_delay=0.05, max_delay=2.0)
        self._desired: dict[str, _Desired] = {}
        self.writes = 0
        self.deleted: dict[str, trio.Event] = {}

    def set(self, namespace: str, name: str, uid: str, status: Obj) -> None:
        """Ask for ``status`` (kubelet-owned fields) on pod ``uid``."""
        d = self._desired.get(uid)
        if d is not None and d.status == status and not d.delete:
            return
        delete = d.delete if d is not None else False
        self._desired[uid] = _Desired(namespace, name, copy.deepcopy(status), delete)
        self.queue.add(uid)

    def finish(self, namespace: str, name: str, uid: str) -> trio.Event:
        """Delete pod ``uid`` (grace 0, UID precondition) once its last status is written; set when done."""
        d = self._desired.get(uid)
        if d is None:
            d = self._desired[uid] = _Desired(namespace, name, {}, True)
        d.delete = True
        ev = self.deleted.setdefault(uid, trio.Event())
        self.queue.add(uid)
        return ev

    def forget(self, uid: str) -> None:
        """Stop writing for pod ``uid`` (its worker is gone)."""
        self._desired.pop(uid, None)

    async def run(self) -> None:
        """Write statuses until cancelled."""
        await self.queue.run(self._sync, workers=4)

    def _current(self, d: _Desired, uid: str) -> Obj | None:
        pod = self.pods.get(d.name, d.namespace)
        if pod is not None and pod["metadata"].get("uid") != uid:
            return None
        return pod

    async def _sync(self, uid: str) -> None:
        d = self._desired.get(uid)
        if d is None:
            return
        try:
            await self._write(uid, d)
            if d.delete:
                await self._delete(uid, d)
        except APIUnavailable:
            raise  # retried with backoff by the queue
        except E.APIError as exc:
            if exc.code == 404:
                self._gone(uid)
                return
            raise

    async def _write(self, uid: str, d: _Desired) -> None:
        if not d.status:
            return
        pod = self._current(d, uid)
        if pod is None:
            if self.pods.synced.is_set() and not d.delete:
                return  # not (or no longer) ours in the cache: nothing to write to
            pod = await self.client.get("Pod", d.name, d.namespace)
            if pod["metadata"].get("uid") != uid:
                return
        for attempt in range(3):
            status = pod.get("status") or {}
            want = merge_status(status, d.status)
            if want == status:
                return
            body = dict(pod)
            body["status"] = want
            self.writes += 1  # counted when sent: requests are what "write only on change" saves
            try:
                await self.client.update_status(body)
                return
            except E.APIError as exc:
                if exc.code != 409 or attempt == 2:
                    raise
                pod = await self.client.get("Pod", d.name, d.namespace)
                if pod["metadata"].get("uid") != uid:
                    return

    async def _delete(self, uid: str, d: _Desired) -> None:
        try:
            await self.client.delete("Pod", d.name, d.namespace, grace_period=0, uid=uid)
        except E.APIError as exc:
            if exc.code not in (404, 409):
                raise
        self._gone(uid)

    def _gone(self, uid: str) -> None:
        self._desired.pop(uid, None)
        ev = self.deleted.pop(uid, None)
        if ev is not None:
            ev.set()
