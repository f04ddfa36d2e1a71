"""etcd watch streams for the etcd store: the shared feed and history readers.

Both read the store's WHOLE prefix: a message's last event revision then
says that nothing older is still to come, which is what lets a history
reader hand its watcher over to the shared window at a revision both cover.
Both survive dropped streams by reopening from the revision after the last
one they returned.
"""

from __future__ import annotations

import logging

import trio

from kmesh.store.base import Event, EventType, Gone, RevisionTooLarge, Unavailable
from kmesh.store.broadcast import Broadcaster
from kmesh.store.codec import decode
from kmesh.store.etcd_api import EtcdClient, Json, WatchStream, b64, range_end, unb64

log = logging.getLogger(__name__)

_BACKOFF_MIN = 0.05
_BACKOFF_MAX = 2.0


def events_from(result: Json, strip: int) -> list[Event]:
    """The store events in one watch message (keys lose their first ``strip`` bytes)."""
    out: list[Event] = []
    for raw in result.get("events", ()):
        kv = raw["kv"]
        key = unb64(kv["key"])[strip:].decode()
        rev = int(kv["mod_revision"])
        type: EventType
        if raw.get("type") == "DELETE":
            type, value = "DELETED", (raw.get("prev_kv") or {}).get("value")
        else:
            type = "ADDED" if kv.get("create_revision") == kv.get("mod_revision") else "MODIFIED"
            value = kv.get("value")
        try:
            obj = decode(unb64(value or ""), rev)
        except ValueError:  # not one of ours (or prev_kv compacted away): keep the event
            log.warning("etcd key %r at revision %d holds no JSON object", key, rev)
            obj = decode(b"{}", rev)
        out.append(Event(type, key, obj, rev))
    return out


class ResumableWatch:
    """An etcd watch on [key, end) that reconnects after dropped streams.

    ``after`` is the revision up to which every event has been returned;
    a new stream starts right after it. Gone (compaction) is not retried.
    """

    def __init__(self, client: EtcdClient, key: bytes, after: int, strip: int) -> None:
        self._client = client
        self._key = key
        self._strip = strip
        self.after = after
        self._stream: WatchStream | None = None

    async def open(self) -> None:
        """Connect now (else ``next`` does); Unavailable if etcd cannot be reached."""
        request = {
            "key": b64(self._key or b"\0"),
            "range_end": b64(range_end(self._key)),
            "start_revision": self.after + 1,
            "prev_kv": True,
            "progress_notify": True,
        }
        stream = WatchStream(self._client, request)
        await stream.open()
        self._stream = stream

    async def next(self) -> tuple[list[Event], int]:
        """The next message's events and the revision now covered."""
        backoff = _BACKOFF_MIN
        while True:
            try:
                if self._stream is None:
                    await self.open()
                assert self._stream is not None
                result = await self._stream.__anext__()
                break
            except Unavailable as e:
                await self._drop()
                if self._client.closed:
                    raise
                log.info("etcd watch from %d interrupted (%s); retrying in %.2fs", self.after + 1, e, backoff)
                await trio.sleep(backoff)  # a retry delay: there is no event to wait for
                backoff = min(backoff * 2, _BACKOFF_MAX)
        events = events_from(result, self._strip)
        if events:
            self.after = max(self.after, events[-1].revision)
        elif not result.get("created") and "revision" in result.get("header", {}):
            # A progress notification: everything up to it has been sent.
            self.after = max(self.after, int(result["header"]["revision"]))
        return events, self.after

    async def _drop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(5):
                    await stream.aclose()

    async def aclose(self) -> None:
        """Close the stream (safe under cancellation)."""
        await self._drop()


class EtcdHistory:
    """Serves watchers behind the window from dedicated etcd watches."""

    def __init__(self, client: EtcdClient, prefix: str) -> None:
        self._client = client
        self._key = prefix.encode()

    async def check(self, revision: int) -> None:
        """Gone iff ``revision`` < etcd's compacted revision (a range at it fails exactly then)."""
        body = {"key": b64(self._key or b"\0"), "count_only": True, "revision": max(revision, 1)}
        try:
            await self._client.call("/v3/kv/range", body)
        except RevisionTooLarge:
            pass  # watching from the future is fine

    def reader(self, prefix: str, after: int) -> EtcdHistoryReader:
        return EtcdHistoryReader(ResumableWatch(self._client, self._key, after, len(self._key)), prefix)


class EtcdHistoryReader:
    """One watcher's own etcd watch (whole store prefix), filtered to its prefix."""

    def __init__(self, watch: ResumableWatch, prefix: str) -> None:
        self._watch = watch
        self._prefix = prefix

    async def next_batch(self) -> tuple[list[Event], int]:
        events, through = await self._watch.next()
        return [ev for ev in events if ev.key.startswith(self._prefix)], through

    async def aclose(self) -> None:
        await self._watch.aclose()


async def run_feed(
    client: EtcdClient, prefix: str, bc: Broadcaster, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Publish every change under ``prefix`` after ``bc.floor`` into ``bc``, forever.

    Reports started once the first stream is open (raising Unavailable
    instead if etcd cannot be reached). If etcd compacted past the feed
    while it was disconnected, the window restarts from the current
    revision and watchers behind it get Gone from their history readers.
    """
    key = prefix.encode()
    watch = ResumableWatch(client, key, bc.floor, len(key))
    try:
        await watch.open()
        task_status.started()
        while True:
            try:
                events, _ = await watch.next()
            except Gone:
                await watch.aclose()
                now = await _current_revision(client, key)
                log.warning("etcd compacted past the watch feed; restarting it at %d", now)
                bc.reset(now)
                watch = ResumableWatch(client, key, now, len(key))
                continue
            if events:
                bc.publish(events)
    finally:
        await watch.aclose()


async def _current_revision(client: EtcdClient, key: bytes) -> int:
    backoff = _BACKOFF_MIN
    while True:
        try:
            resp = await client.call("/v3/kv/range", {"key": b64(key or b"\0"), "count_only": True})
            return int(resp["header"]["revision"])
        except Unavailable:
            await trio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

