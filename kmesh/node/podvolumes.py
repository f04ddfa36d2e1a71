"""One pod's volumes on its node: set up before the pod starts, kept current while it runs, removed with it.

Each volume gets a directory ``<node dir>/volumes/<pod uid>/<plugin>/<volume>``
(upstream's ``kubernetes.io~secret``, ``kubernetes.io~configmap``,
``kubernetes.io~empty-dir``, ``kubernetes.io~downward-api``,
``kubernetes.io~projected``); a ``hostPath`` volume is the machine's path
itself (nothing is created there). Volume types a node cannot provide here
(PVCs, ephemeral, CSI...) get an empty directory and a log line, so such
pods still start. A missing non-optional Secret or ConfigMap raises
``MountError`` naming the volume; the pod worker reports ``FailedMount``
and retries when the object appears.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import trio

from kmesh.api.obj import Obj
from kmesh.node.volumefiles import DEFAULT_MODE, Files, MountError, downward_files, keyed_files, write_atomic
from kmesh.node.volumesources import SourceWatch, VolumeSources

log = logging.getLogger("kmesh.node.volumes")

PLUGINS = {
    "secret": "kubernetes.io~secret", "configMap": "kubernetes.io~configmap", "emptyDir": "kubernetes.io~empty-dir",
    "downwardAPI": "kubernetes.io~downward-api", "projected": "kubernetes.io~projected",
}


class VolumeMountError(MountError):
    """A volume of the pod that cannot be set up: ``volume`` is its name, the message upstream's reason."""

    def __init__(self, volume: str, message: str) -> None:
        super().__init__(message)
        self.volume = volume
        self.message = message


def pod_volumes_dir(node_dir: Path, uid: str) -> Path:
    """Where one pod's volumes live on its node."""
    return Path(node_dir) / "volumes" / uid


def _mode(value: object) -> int:
    return int(value) if value is not None else DEFAULT_MODE  # type: ignore[call-overload]


class PodVolumes:
    """The volumes of one pod (see the module docstring)."""

    def __init__(self, pod: Obj, node_dir: Path, sources: VolumeSources | None) -> None:
        self.pod = pod
        self.root = pod_volumes_dir(node_dir, (pod.get("metadata") or {}).get("uid", ""))
        self.sources = sources
        self.namespace = (pod.get("metadata") or {}).get("namespace", "")
        self.dirs: dict[str, Path] = {}
        self._watches: dict[tuple[str, str], SourceWatch] = {}
        # Per use ("volume", "env") and object: the event of the object's first change after our last read.
        self._seen: dict[str, dict[tuple[str, str], trio.Event]] = {"volume": {}, "env": {}}

    def specs(self) -> list[Obj]:
        """The pod's ``spec.volumes``."""
        return list((self.pod.get("spec") or {}).get("volumes") or [])

    def _watch(self, kind: str, name: str) -> SourceWatch | None:
        if self.sources is None or not name:
            return None
        w = self._watches.get((kind, name))
        if w is None:
            w = self._watches[(kind, name)] = self.sources.acquire(kind, self.namespace, name)
        return w

    async def lookup(self, kind: str, name: str) -> Obj | None:
        """A Secret/ConfigMap of the pod's namespace as the node sees it now (watched from now on, so
        ``wait_change`` wakes at its changes); None when it is not there."""
        return await self._object(kind, name, "env")

    async def _object(self, kind: str, name: str, use: str = "volume") -> Obj | None:
        w = self._watch(kind, name)
        if w is None:
            return None
        await w.wait_synced()
        self._seen[use][(kind, name)] = w.changed()  # with no checkpoint before the read: no change goes unseen
        return w.get()

    async def _files(self, vol: Obj) -> Files | None:
        """The files of a volume with files, None for a plain directory."""
        if "secret" in vol:
            src = vol["secret"] or {}
            return keyed_files("Secret", src, await self._object("Secret", src.get("secretName", "")),
                               _mode(src.get("defaultMode")))
        if "configMap" in vol:
            src = vol["configMap"] or {}
            return keyed_files("ConfigMap", src, await self._object("ConfigMap", src.get("name", "")),
                               _mode(src.get("defaultMode")))
        if "downwardAPI" in vol:
            src = vol["downwardAPI"] or {}
            return downward_files(src, self.pod, _mode(src.get("defaultMode")))
        if "projected" in vol:
            proj = vol["projected"] or {}
            mode = _mode(proj.get("defaultMode"))
            files: Files = {}
            failed: MountError | None = None
            for s in proj.get("sources") or []:
                try:
                    if "secret" in s:
                        files.update(keyed_files("Secret", {"secretName": s["secret"].get("name"), **s["secret"]},
                                                 await self._object("Secret", s["secret"].get("name", "")), mode))
                    elif "configMap" in s:
                        files.update(keyed_files("ConfigMap", s["configMap"],
                                                 await self._object("ConfigMap", s["configMap"].get("name", "")), mode))
                    elif "downwardAPI" in s:
                        files.update(downward_files(s["downwardAPI"], self.pod, mode))
                except MountError as exc:  # read every source anyway (see mount)
                    failed = failed or exc
            if failed is not None:
                raise failed
            return files
        return None

    async def mount(self) -> None:
        """Set up (or refresh) every volume; then ``VolumeMountError`` for the first that could not be (every
        source is read each time, so ``wait_change`` waits for news)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        failed: VolumeMountError | None = None
        for vol in self.specs():
            name = vol.get("name", "")
            if "hostPath" in vol:
                self.dirs[name] = Path((vol["hostPath"] or {}).get("path") or "/")
                continue
            kind = next((k for k in PLUGINS if k in vol), "")
            directory = self.root / PLUGINS.get(kind, "kubernetes.io~unsupported") / name
            try:
                files = await self._files(vol)
            except MountError as exc:
                failed = failed or VolumeMountError(name, str(exc))
                continue
            if files is None:
                if not kind:
                    log.info("%s/%s: volume %s: type not provided by kmesh, an empty directory instead",
                             self.namespace, (self.pod.get("metadata") or {}).get("name"), name)
                directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            else:
                await trio.to_thread.run_sync(write_atomic, directory, files)
            self.dirs[name] = directory
        if failed is not None:
            raise failed

    async def wait_change(self, use: str = "volume") -> None:
        """Return once any object the volumes (``use="env"``: the containers' env) read has changed since it
        was last read for that use."""
        events = list(self._seen[use].values())
        if any(ev.is_set() for ev in events):
            return
        if not events:
            await trio.sleep_forever()
        async with trio.open_nursery() as n:
            for ev in events:

                async def one(ev: trio.Event = ev) -> None:
                    await ev.wait()
                    n.cancel_scope.cancel()

                n.start_soon(one)

    async def keep_current(self) -> None:
        """While the pod runs: rewrite a volume whenever its Secret/ConfigMap changes (a volume whose source
        went missing keeps its files)."""
        while True:
            await self.wait_change()
            try:
                await self.mount()
            except VolumeMountError as exc:
                log.info("%s: volume %s not updated: %s", self.namespace, exc.volume, exc.message)

    def remove(self) -> None:
        """Let go of the watches and delete the pod's volume directories."""
        for w in self._watches.values():
            if self.sources is not None:
                self.sources.release(w)
        self._watches.clear()
        self._seen = {"volume": {}, "env": {}}
        shutil.rmtree(self.root, ignore_errors=True)
        self.dirs.clear()


def remove_orphan_volumes(node_dir: Path, live_uids: set[str]) -> list[str]:
    """Delete the volume directories of pods that no longer exist (left by an agent that stopped); their UIDs."""
    root = Path(node_dir) / "volumes"
    gone = [d.name for d in root.iterdir() if d.is_dir() and d.name not in live_uids] if root.is_dir() else []
    for uid in gone:
        shutil.rmtree(root / uid, ignore_errors=True)
    return gone
