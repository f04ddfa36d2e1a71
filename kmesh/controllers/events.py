"""Events the controllers record (``kubectl describe`` and ``kubectl get events`` show them).

Recording never blocks a controller: events go through a bounded channel to
one sender task and are dropped when it falls behind, as client-go's
broadcaster drops them.
"""

from __future__ import annotations

import logging
import secrets

import trio

from kmesh.api import errors as E
from kmesh.api.obj import Obj
from kmesh.client.api import APIUnavailable, Client
from kmesh.controllers import podutil

log = logging.getLogger("kmesh.controllers.events")


class EventRecorder:
    """Sends core/v1 Events about objects on behalf of one component."""

    def __init__(self, client: Client, component: str, *, enabled: bool = True, buffer: int = 1000) -> None:
        self.client = client
        self.component = component
        self.enabled = enabled
        self._send, self._recv = trio.open_memory_channel[Obj](buffer)

    def event(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        """Record an event about ``obj`` (``type_`` Normal or Warning)."""
        if not self.enabled:
            return
        m = podutil.md(obj)
        ns = m.get("namespace") or "default"
        now = podutil.format_time()
        ev = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{m.get('name', 'unknown')}.{secrets.token_hex(8)}", "namespace": ns},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind", ""), "name": m.get("name", ""),
                "namespace": m.get("namespace", ""), "uid": m.get("uid", ""),
                "resourceVersion": m.get("resourceVersion", ""),
            },
            "reason": reason, "message": message, "type": type_,
            "source": {"component": self.component},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "reportingComponent": self.component, "reportingInstance": "",
        }
        try:
            self._send.send_nowait(ev)
        except trio.WouldBlock:
            log.debug("event dropped: %s %s", reason, message)

    async def run(self) -> None:
        """Send recorded events until cancelled."""
        async for ev in self._recv:
            try:
                await self.client.create(ev)
            except (E.APIError, APIUnavailable) as exc:
                log.debug("event not recorded: %s", exc)
