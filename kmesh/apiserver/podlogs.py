"""``GET /api/v1/namespaces/<ns>/pods/<name>/log``: what ``kubectl logs`` reads.

Upstream's API server asks the pod's kubelet. In a kmesh lab every node
agent writes its containers' output under the lab's data directory
(``nodes/<node>/pods/<ns>_<name>_<uid>/<container>/<restart>.log``), so the
API server reads those files itself; a node whose directory is not on this
machine (a Vagrant lab) gets a clear error. The options follow upstream:
``container``, ``previous``, ``tailLines``, ``limitBytes`` and ``follow``
(which ends when the pod goes, its container restarts, or the client leaves).
Timestamps are not recorded, so ``timestamps``/``sinceSeconds``/``sinceTime``
are refused rather than silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

import trio

from kmesh.api import errors as E
from kmesh.api.obj import Obj
from kmesh.api.podlogpaths import pod_log_dir

FOLLOW_POLL = 0.2
"""Seconds between looks at a followed log file (kubelet watches the file; the lab polls it)."""
CHUNK = 64 * 1024


@dataclass
class LogOptions:
    """The query parameters of one log request."""

    container: str = ""
    previous: bool = False
    follow: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None

    @classmethod
    def parse(cls, query: dict[str, str]) -> "LogOptions":
        """From the query string; 400 naming the parameter for a bad value."""
        for unsupported in ("timestamps", "sinceSeconds", "sinceTime"):
            if query.get(unsupported) not in (None, "", "false"):
                raise E.bad_request(f"{unsupported}: kmesh does not record when log lines were written")

        def number(name: str) -> int | None:
            raw = query.get(name)
            if raw in (None, ""):
                return None
            try:
                value = int(raw)
            except ValueError:
                raise E.bad_request(f"{name}: invalid value {raw!r}: must be an integer") from None
            if value < 0 or (name == "limitBytes" and value == 0):
                raise E.bad_request(f"{name}: Invalid value: {value}: must be greater than {'0' if name == 'limitBytes' else 'or equal to 0'}")
            return value

        return cls(query.get("container", ""), query.get("previous") == "true", query.get("follow") == "true",
                   number("tailLines"), number("limitBytes"))


def _container(pod: Obj, wanted: str) -> str:
    md, spec = pod["metadata"], pod.get("spec") or {}
    names = [c.get("name") for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])]
    if not wanted:
        main = [c.get("name") for c in spec.get("containers") or []]
        if len(main) == 1:
            return main[0]
        raise E.bad_request(f"a container name must be specified for pod {md['name']}, choose one of: [{' '.join(main)}]")
    if wanted not in names:
        raise E.bad_request(f"container {wanted} is not valid for pod {md['name']}")
    return wanted


def _restarts(directory: Path) -> list[Path]:
    """The container's log files, oldest restart first."""
    files = [p for p in directory.glob("*.log") if re.fullmatch(r"\d+\.log", p.name)] if directory.is_dir() else []
    return sorted(files, key=lambda p: int(p.stem))


def log_file(nodes_dir: Path, pod: Obj, opts: LogOptions) -> Path:
    """The file holding the requested log; 400 with upstream's texts if there is none."""
    md = pod["metadata"]
    container = _container(pod, opts.container)
    waiting = E.bad_request(f'container "{container}" in pod "{md["name"]}" is waiting to start: ContainerCreating')
    node = (pod.get("spec") or {}).get("nodeName")
    if not node:
        raise waiting
    node_dir = nodes_dir / node
    if not node_dir.is_dir():
        raise E.bad_request(f'the logs of node "{node}" are not on this machine: kmesh serves the logs of the nodes '
                            f"in its data directory ({nodes_dir})")
    files = _restarts(pod_log_dir(node_dir, pod) / container)
    if opts.previous:
        if len(files) < 2:
            raise E.bad_request(f'previous terminated container "{container}" in pod "{md["name"]}" not found')
        return files[-2]
    if not files:
        raise waiting
    return files[-1]


def _tail(data: bytes, lines: int) -> bytes:
    if lines == 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


async def stream_log(path: Path, opts: LogOptions, write: Callable[[bytes], Awaitable[None]],
                     still_current: Callable[[], Awaitable[bool]]) -> None:
    """Write the log (tail/limit applied); with ``follow``, go on writing what is appended while ``still_current()``."""
    budget = opts.limit_bytes

    async def out(data: bytes) -> bool:
        nonlocal budget
        if budget is not None:
            data = data[:budget]
            budget -= len(data)
        if data:
            await write(data)
        return budget is None or budget > 0

    with path.open("rb") as f:  # noqa: ASYNC230 - a local log file
        data = f.read()
        if opts.tail_lines is not None:
            data = _tail(data, opts.tail_lines)
        if not await out(data) or not opts.follow:
            return
        while True:
            more = f.read(CHUNK)
            if more:
                if not await out(more):
                    return
                continue
            if not await still_current():
                rest = f.read()
                if rest:
                    await out(rest)
                return
            await trio.sleep(FOLLOW_POLL)
