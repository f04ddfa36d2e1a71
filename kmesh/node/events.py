"""Kubernetes Events about pods (Started, Killing, Unhealthy, BackOff...), as ``kubectl describe`` shows them.

Best effort: events go through a bounded queue and are dropped when the API
is away or the queue is full; a repeat of the same event bumps its count.
"""

from __future__ import annotations

import logging
import secrets

import trio

from kmesh.api import errors as E
from kmesh.api.meta import now
from kmesh.api.obj import Obj
from kmesh.client.api import APIUnavailable, Client

log = logging.getLogger("kmesh.node.events")


class EventRecorder:
    """Records Events with source ``kubelet`` on this node."""

    def __init__(self, client: Client, node: str, *, capacity: int = 1000) -> None:
        self.client = client
        self.node = node
        self._send, self._recv = trio.open_memory_channel[Obj](capacity)
        self._seen: dict[tuple[str, str, str, str], Obj] = {}

    def record(self, pod: Obj, type_: str, reason: str, message: str) -> None:
        """Queue an event about ``pod`` (never blocks, never raises)."""
        md = pod.get("metadata") or {}
        ev = {
            "involvedObject": {
                "kind": "Pod", "namespace": md.get("namespace"), "name": md.get("name"),
                "uid": md.get("uid"), "apiVersion": "v1", "resourceVersion": md.get("resourceVersion", ""),
            },
            "type": type_, "reason": reason, "message": message,
        }
        try:
            self._send.send_nowait(ev)
        except trio.WouldBlock:
            pass

    async def run(self) -> None:
        """Post queued events until cancelled."""
        async for ev in self._recv:
            try:
                await self._post(ev)
            except (APIUnavailable, E.APIError) as exc:
                log.debug("event dropped: %s", exc)

    async def _post(self, ev: Obj) -> None:
        io = ev["involvedObject"]
        key = (io["uid"] or "", ev["type"], ev["reason"], ev["message"])
        ts = now()
        prev = self._seen.get(key)
        if prev is not None:
            try:
                prev = await self.client.patch(
                    "Event", prev["metadata"]["name"],
                    {"count": int(prev.get("count") or 1) + 1, "lastTimestamp": ts}, io["namespace"],
                )
                self._seen[key] = prev
                return
            except E.APIError as exc:
                if exc.code != 404:
                    raise
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{io['name']}.{secrets.token_hex(8)}", "namespace": io["namespace"]},
            **ev,
            "source": {"component": "kubelet", "host": self.node},
            "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
            "reportingComponent": "kubelet", "reportingInstance": self.node,
        }
        created = await self.client.create(body, io["namespace"])
        if len(self._seen) > 5000:
            self._seen.clear()
        self._seen[key] = created
