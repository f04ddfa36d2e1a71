"""The runtime side of CNI: run a conflist's plugins for a pod, as kubelet/containerd (libcni) do.

``CNIChain`` executes real plugin processes with the spec's environment and
config on stdin: ADD in order with each plugin's result as the next one's
``prevResult``, CHECK and DEL with the cached ADD result, DEL in reverse.
Results are cached per network+container+interface (like libcni's
``/var/lib/cni/results``) so DEL and CHECK work after a restart. With
``netns_for_plugins`` every plugin runs inside that network namespace (a lab
node), so the bridge, its routes and the portmap rules land there and never
in the namespace the caller runs in.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from kmesh.cni.spec import (
    CODE_INTERNAL,
    CODE_INVALID_CONFIG,
    CODE_IO,
    CNIError,
    check_version,
    find_executable,
    version_at_least,
)
from kmesh.net import netns as _netns

CONFLIST_NAME = "10-kmesh.conflist"
DEFAULT_TIMEOUT = 60.0


def pod_args(
    namespace: str, name: str, uid: str = "", infra_container_id: str = ""
) -> dict[str, str]:
    """The CNI_ARGS kubelet passes for a pod, as a dict for ``CNIChain.add(args=...)``."""
    args = {"K8S_POD_NAMESPACE": namespace, "K8S_POD_NAME": name}
    if infra_container_id:
        args["K8S_POD_INFRA_CONTAINER_ID"] = infra_container_id
    if uid:
        args["K8S_POD_UID"] = uid
    return args


def cni_args_string(args: Mapping[str, str] | None) -> str:
    """``K=V;K=V`` for CNI_ARGS, led by ``IgnoreUnknown=1`` so plugins accept the K8S_* keys."""
    pairs = dict(args or {})
    if not pairs:
        return ""
    for k, v in pairs.items():
        if not k or any(c in k + str(v) for c in ";="):
            raise CNIError(
                CODE_INVALID_CONFIG,
                f"CNI_ARGS entry {k!r}={v!r} may not contain ';' or '='",
            )
    head = {} if "IgnoreUnknown" in pairs else {"IgnoreUnknown": "1"}
    return ";".join(f"{k}={v}" for k, v in {**head, **pairs}.items())


def pod_ip(result: Mapping[str, Any]) -> str:
    """The pod's IPv4 address (no prefix length) from an ADD result; prefers sandbox interfaces."""
    interfaces = result.get("interfaces") or []
    ips = result.get("ips") or []
    candidates: list[str] = []
    for entry in ips:
        addr = str(entry.get("address", "")).split("/")[0]
        if not addr or ":" in addr:
            continue
        idx = entry.get("interface")
        in_sandbox = (
            isinstance(idx, int)
            and 0 <= idx < len(interfaces)
            and bool(interfaces[idx].get("sandbox"))
        )
        if in_sandbox:
            return addr
        candidates.append(addr)
    legacy = (result.get("ip4") or {}).get("ip")  # 0.2.0 results
    if legacy:
        candidates.append(str(legacy).split("/")[0])
    if not candidates:
        raise ValueError(
            f"no IPv4 address in CNI result: {json.dumps(dict(result))[:200]}"
        )
    return candidates[0]


def load_conflist(
    conflist: Mapping[str, Any] | str | os.PathLike[str],
) -> dict[str, Any]:
    """A validated conflist dict from a dict or a file; errors (code 7) name the bad field."""
    if isinstance(conflist, Mapping):
        data: Any = json.loads(json.dumps(conflist))
        where = "conflist"
    else:
        where = str(conflist)
        try:
            data = json.loads(Path(conflist).read_text())
        except OSError as e:
            raise CNIError(
                CODE_IO, f"cannot read conflist {where}: {e.strerror}"
            ) from e
        except ValueError as e:
            raise CNIError(
                CODE_INVALID_CONFIG, f"conflist {where} is not valid JSON: {e}"
            ) from e
    if not isinstance(data, dict):
        raise CNIError(
            CODE_INVALID_CONFIG, f"{where}: a conflist must be a JSON object"
        )
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise CNIError(
            CODE_INVALID_CONFIG, f"{where}: field 'name' must be a non-empty string"
        )
    try:
        check_version(data.get("cniVersion"))
    except CNIError as e:
        raise CNIError(
            e.code, f"{where}: field 'cniVersion': {e.msg}", e.details
        ) from None
    plugins = data.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise CNIError(
            CODE_INVALID_CONFIG, f"{where}: field 'plugins' must be a non-empty list"
        )
    for i, p in enumerate(plugins):
        if not isinstance(p, dict):
            raise CNIError(
                CODE_INVALID_CONFIG, f"{where}: field 'plugins[{i}]' must be an object"
            )
        t = p.get("type")
        if not isinstance(t, str) or not t or "/" in t:
            raise CNIError(
                CODE_INVALID_CONFIG,
                f"{where}: field 'plugins[{i}].type' must be a plugin name",
            )
        caps = p.get("capabilities", {})
        if not isinstance(caps, dict):
            raise CNIError(
                CODE_INVALID_CONFIG,
                f"{where}: field 'plugins[{i}].capabilities' must be an object",
            )
    return data


PLUGIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")  # Debian's (containernetworking-plugins) and upstream's


def plugin_dirs() -> list[str]:
    """Where the reference plugins are looked for: ``$CNI_PATH`` when set (as ``cnitool`` reads it), else
    ``PLUGIN_DIRS``."""
    return [d for d in os.environ.get("CNI_PATH", "").split(os.pathsep) if d] or list(PLUGIN_DIRS)


def plugin_search_dirs() -> list[str]:
    """Where plugins are looked up: this Python's bin dir (kmesh-cni), then ``plugin_dirs()``."""
    return [os.path.dirname(sys.executable), *plugin_dirs()]


def default_cni_path() -> list[str]:
    """The dirs of ``plugin_search_dirs()`` that exist (the CNI chain's path)."""
    return [d for d in plugin_search_dirs() if os.path.isdir(d)]


PLUGIN_NAME = "kmesh-cni"
_LAUNCHER = """#!{python} -IS
# kmesh-cni for this node, written by its agent: the same plugin as {console_script},
# started without site-packages (-S: no editable-install finder, no .pth files) and
# isolated from PYTHON* variables (-I); it runs once per pod start, so its start-up counts.
import gc
import sys
gc.disable()  # a short-lived process: collecting the import garbage is wasted work
sys.path.insert(0, {root!r})
from kmesh.cni.plugin import main
main()
"""


def install_launcher(bin_dir: str | os.PathLike[str]) -> Path | None:
    """Write a fast-starting ``kmesh-cni`` into ``bin_dir`` (put it first in the chain's ``cni_path``).

    The console script pip generates imports ``site`` (and the editable-install finder), which is
    most of what a plugin run costs; this one runs the same ``kmesh.cni.plugin.main`` with
    ``python -IS`` and kmesh's own directory on ``sys.path`` (the plugin imports only the standard
    library and ``kmesh.cni``). None when it cannot be written (a shebang with spaces or too
    long for the kernel): then the console script on the default path is used."""
    import kmesh

    python = sys.executable
    root = str(Path(kmesh.__file__).resolve().parent.parent)
    if not python or any(c.isspace() for c in python) or len(python) > 200:
        return None
    d = Path(bin_dir)
    path = d / PLUGIN_NAME
    text = _LAUNCHER.format(python=python, root=root, console_script=os.path.join(os.path.dirname(python), PLUGIN_NAME))
    try:
        d.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{PLUGIN_NAME}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o700)  # like the rest of the data dir: nobody else reads what the agent runs
        os.replace(tmp, path)
    except OSError:
        return None
    return path


def find_conflist(conf_dir: str | os.PathLike[str]) -> Path | None:
    """The network config a runtime would use: the first ``*.conflist`` / ``*.conf`` / ``*.json`` by name."""
    d = Path(conf_dir)
    if not d.is_dir():
        return None
    files = sorted(
        p
        for p in d.iterdir()
        if p.suffix in (".conflist", ".conf", ".json") and p.is_file()
    )
    return files[0] if files else None


def write_conflist(
    path: str | os.PathLike[str],
    *,
    name: str = "cbr0",
    subnet_file: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    mtu: int | None = None,
    cni_version: str = "1.0.0",
    ipam_data_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the flannel-style conflist the node agent installs (kmesh-cni + portmap); returns its path.

    ``path`` may be a directory, in which case the file is ``10-kmesh.conflist`` in it.
    ``ipam_data_dir`` keeps host-local's state out of /var/lib/cni (one dir per lab node)."""
    p = Path(path)
    if p.is_dir():
        p = p / CONFLIST_NAME
    delegate: dict[str, Any] = {"hairpinMode": True, "isDefaultGateway": True}
    if mtu is not None:
        delegate["mtu"] = int(mtu)
    plugin: dict[str, Any] = {
        "type": "kmesh-cni",
        "subnetFile": str(subnet_file),
        "dataDir": str(data_dir),
    }
    if ipam_data_dir is not None:
        plugin["ipam"] = {"dataDir": str(ipam_data_dir)}
    plugin["delegate"] = delegate
    conf = {
        "name": name,
        "cniVersion": cni_version,
        "plugins": [
            plugin,
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(conf, indent=2) + "\n")
    os.replace(tmp, p)
    return p


def _caps(capability_args: Mapping[str, Any] | None, cached: Mapping[str, Any]) -> dict[str, Any]:
    """The capability args of a CHECK or DEL: the caller's when given, else those cached at ADD."""
    if capability_args is not None:
        return dict(capability_args)
    return dict(cached.get("capabilityArgs") or {})


class CNIChain:
    """One network (a conflist) and how to run its plugins: lookup path, result cache, namespace."""

    def __init__(
        self,
        conflist: Mapping[str, Any] | str | os.PathLike[str],
        *,
        cni_path: Sequence[str | os.PathLike[str]],
        cache_dir: str | os.PathLike[str],
        netns_for_plugins: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.conf = load_conflist(conflist)
        self.name: str = self.conf["name"]
        self.cni_version: str = self.conf["cniVersion"]
        self.plugins: list[dict[str, Any]] = self.conf["plugins"]
        self.cni_path = [str(p) for p in cni_path]
        self.cache_dir = Path(cache_dir)
        self.netns_for_plugins = netns_for_plugins
        self.timeout = timeout

    # -- public API ---------------------------------------------------------

    async def add(
        self,
        container_id: str,
        netns_path: str,
        ifname: str = "eth0",
        *,
        args: Mapping[str, str] | None = None,
        capability_args: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Attach the container: ADD each plugin in order; on failure DEL what ran and raise ``CNIError``."""
        self._check_ids(container_id, ifname)
        caps = dict(capability_args or {})
        result: dict[str, Any] | None = None
        for i, plugin in enumerate(self.plugins):
            try:
                out = await self._exec(
                    plugin, "ADD", container_id, netns_path, ifname, args, caps, result
                )
            except (CNIError, trio.Cancelled):
                # Undo the partial attachment even when our caller gave up on us.
                with trio.CancelScope(shield=True):
                    await self._teardown(
                        self.plugins[: i + 1],
                        container_id,
                        netns_path,
                        ifname,
                        args,
                        caps,
                        result,
                    )
                raise
            if out is not None:
                result = out
        final = result or {"cniVersion": self.cni_version}
        self._save_cache(container_id, ifname, args, caps, final)
        return final

    async def check(
        self,
        container_id: str,
        netns_path: str,
        ifname: str = "eth0",
        *,
        args: Mapping[str, str] | None = None,
        capability_args: Mapping[str, Any] | None = None,
    ) -> None:
        """Verify the container is still wired as ADD left it; raise ``CNIError`` if not."""
        self._check_ids(container_id, ifname)
        if not version_at_least(self.cni_version, "0.4.0"):
            raise CNIError(
                CODE_INVALID_CONFIG,
                f"CHECK needs cniVersion 0.4.0 or later, network {self.name!r} is {self.cni_version}",
            )
        if self.conf.get("disableCheck"):
            return
        cached = self._load_cache(container_id, ifname)
        if cached is None:
            raise CNIError(
                CODE_INTERNAL,
                f"no cached ADD result for container {container_id} {ifname} in network {self.name!r}",
            )
        caps = _caps(capability_args, cached)
        for plugin in self.plugins:
            await self._exec(
                plugin,
                "CHECK",
                container_id,
                netns_path,
                ifname,
                args,
                caps,
                cached.get("result"),
            )

    async def delete(
        self,
        container_id: str,
        netns_path: str,
        ifname: str = "eth0",
        *,
        args: Mapping[str, str] | None = None,
        capability_args: Mapping[str, Any] | None = None,
    ) -> None:
        """Detach the container: DEL each plugin in reverse; fine when already gone or the netns vanished."""
        self._check_ids(container_id, ifname)
        cached = self._load_cache(container_id, ifname) or {}
        caps = _caps(capability_args, cached)
        prev = (
            cached.get("result")
            if version_at_least(self.cni_version, "0.4.0")
            else None
        )
        # A netns that is gone is reported as empty, as kubelet does for a dead sandbox.
        path = netns_path if netns_path and os.path.exists(netns_path) else ""
        for plugin in reversed(self.plugins):
            await self._exec(
                plugin, "DEL", container_id, path, ifname, args, caps, prev
            )
        self._cache_file(container_id, ifname).unlink(missing_ok=True)

    async def status(self) -> None:
        """STATUS (1.1): raise ``CNIError`` (code 50 and up) when a plugin cannot serve ADDs now."""
        if not version_at_least(self.cni_version, "1.1.0"):
            return
        for plugin in self.plugins:
            if await self._speaks_1_1(plugin["type"]):
                await self._run(
                    plugin["type"],
                    self._plugin_conf(plugin, {}, None),
                    {"CNI_COMMAND": "STATUS"},
                )

    async def gc(self, valid_attachments: Iterable[tuple[str, str]]) -> None:
        """GC (1.1): plugins free what belongs to attachments not in ``(container_id, ifname)`` pairs.

        Cached results of the other attachments are dropped too, as libcni does."""
        valid = sorted(set(valid_attachments))
        if version_at_least(self.cni_version, "1.1.0"):
            listed = [{"containerID": c, "ifname": i} for c, i in valid]
            for plugin in self.plugins:
                if await self._speaks_1_1(plugin["type"]):
                    conf = self._plugin_conf(plugin, {}, None)
                    conf["cni.dev/valid-attachments"] = listed
                    await self._run(plugin["type"], conf, {"CNI_COMMAND": "GC"})
        keep = {f"{self.name}-{c}-{i}" for c, i in valid}
        if self.cache_dir.is_dir():
            for path in self.cache_dir.iterdir():
                if path.name.startswith(f"{self.name}-") and path.name not in keep:
                    cached = self._load_cache_file(path)
                    if cached is None or cached.get("networkName") == self.name:
                        path.unlink(missing_ok=True)

    async def _speaks_1_1(self, plugin_type: str) -> bool:
        return "1.1.0" in (await self.version(plugin_type)).get("supportedVersions", [])

    async def version(self, plugin_type: str) -> dict[str, Any]:
        """The plugin's VERSION answer (``supportedVersions``)."""
        out = await self._run(
            plugin_type, {"cniVersion": self.cni_version}, {"CNI_COMMAND": "VERSION"}
        )
        return out or {}

    def cached_result(
        self, container_id: str, ifname: str = "eth0"
    ) -> dict[str, Any] | None:
        """The ADD result cached for this container and interface, if any."""
        cached = self._load_cache(container_id, ifname)
        return None if cached is None else cached.get("result")

    def find_plugin(self, plugin_type: str) -> str:
        """The executable for ``plugin_type`` in ``cni_path``; code 999 error naming the path when absent."""
        found = find_executable(plugin_type, self.cni_path)
        if found is not None:
            return found
        raise CNIError(
            CODE_INTERNAL,
            f"failed to find plugin {plugin_type!r} in path {self.cni_path}",
        )

    # -- internals ------------------------------------------------------------

    def _check_ids(self, container_id: str, ifname: str) -> None:
        if not container_id or "/" in container_id:
            raise CNIError(
                CODE_INVALID_CONFIG, f"invalid container id {container_id!r}"
            )
        if not ifname or "/" in ifname or len(ifname) > 15:
            raise CNIError(CODE_INVALID_CONFIG, f"invalid interface name {ifname!r}")

    def _plugin_conf(
        self,
        plugin: Mapping[str, Any],
        caps: Mapping[str, Any],
        prev: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """A plugin's stdin config: its entry plus name, cniVersion, prevResult and runtimeConfig."""
        conf = json.loads(json.dumps(plugin))
        conf["name"] = self.name
        conf["cniVersion"] = self.cni_version
        if prev is not None:
            conf["prevResult"] = prev
        else:
            conf.pop("prevResult", None)
        declared = [k for k, on in (plugin.get("capabilities") or {}).items() if on]
        runtime = {k: caps[k] for k in declared if k in caps}
        if runtime:
            conf["runtimeConfig"] = {**(conf.get("runtimeConfig") or {}), **runtime}
        return conf

    async def _exec(
        self,
        plugin: Mapping[str, Any],
        command: str,
        container_id: str,
        netns_path: str,
        ifname: str,
        args: Mapping[str, str] | None,
        caps: Mapping[str, Any],
        prev: dict[str, Any] | None,
    ) -> dict[str, Any] | None:
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns_path,
            "CNI_IFNAME": ifname,
            "CNI_ARGS": cni_args_string(args),
        }
        return await self._run(
            plugin["type"], self._plugin_conf(plugin, caps, prev), env
        )

    async def _run(
        self, plugin_type: str, conf: Mapping[str, Any], cni_env: Mapping[str, str]
    ) -> dict[str, Any] | None:
        """Run one plugin process; its parsed stdout, or ``CNIError`` from its error JSON."""
        exe = self.find_plugin(plugin_type)
        if self.netns_for_plugins is not None and not _netns.exists(
            self.netns_for_plugins
        ):
            raise CNIError(
                CODE_INTERNAL,
                f"network namespace {self.netns_for_plugins!r} for the plugins does not exist",
            )
        argv = (
            [exe]
            if self.netns_for_plugins is None
            else _netns.nsenter_argv(self.netns_for_plugins, [exe])
        )
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            **cni_env,
            "CNI_PATH": os.pathsep.join(self.cni_path),
        }
        command = cni_env["CNI_COMMAND"]
        try:
            with trio.fail_after(self.timeout):
                proc = await trio.run_process(
                    argv,
                    stdin=json.dumps(conf).encode(),
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                    env=env,
                )
        except trio.TooSlowError:
            raise CNIError(
                CODE_INTERNAL,
                f"plugin {plugin_type} {command} timed out after {self.timeout:g}s",
            ) from None
        except OSError as e:
            raise CNIError(
                CODE_INTERNAL, f"cannot run plugin {plugin_type}: {e}"
            ) from e
        stdout = proc.stdout.decode(errors="replace").strip()
        stderr = proc.stderr.decode(errors="replace").strip()
        if proc.returncode != 0:
            err = CNIError.from_output(
                stdout, stderr or stdout or f"exit status {proc.returncode}"
            )
            raise CNIError(
                err.code, f"plugin {plugin_type} {command}: {err.msg}", err.details
            )
        if not stdout:
            return None
        try:
            out = json.loads(stdout)
        except ValueError as e:
            raise CNIError(
                CODE_INTERNAL,
                f"plugin {plugin_type} {command} printed invalid JSON",
                stdout[:500],
            ) from e
        return out if isinstance(out, dict) else None

    async def _teardown(
        self,
        plugins: Sequence[Mapping[str, Any]],
        container_id: str,
        netns_path: str,
        ifname: str,
        args: Mapping[str, str] | None,
        caps: Mapping[str, Any],
        prev: dict[str, Any] | None,
    ) -> None:
        """Best-effort DEL after a failed ADD, newest plugin first; its own errors are dropped."""
        for plugin in reversed(plugins):
            try:
                await self._exec(
                    plugin, "DEL", container_id, netns_path, ifname, args, caps, prev
                )
            except CNIError:
                pass
        self._cache_file(container_id, ifname).unlink(missing_ok=True)

    def _cache_file(self, container_id: str, ifname: str) -> Path:
        return self.cache_dir / f"{self.name}-{container_id}-{ifname}"

    def _save_cache(
        self,
        container_id: str,
        ifname: str,
        args: Mapping[str, str] | None,
        caps: Mapping[str, Any],
        result: dict[str, Any],
    ) -> None:
        record = {
            "kind": "cniCacheV1",
            "containerId": container_id,
            "ifName": ifname,
            "networkName": self.name,
            "cniArgs": dict(args or {}),
            "capabilityArgs": dict(caps),
            "result": result,
        }
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        path = self._cache_file(container_id, ifname)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)

    def _load_cache(self, container_id: str, ifname: str) -> dict[str, Any] | None:
        return self._load_cache_file(self._cache_file(container_id, ifname))

    @staticmethod
    def _load_cache_file(path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None


__all__ = [
    "CONFLIST_NAME",
    "CNIChain",
    "CNIError",
    "cni_args_string",
    "default_cni_path",
    "find_conflist",
    "install_launcher",
    "load_conflist",
    "plugin_search_dirs",
    "pod_args",
    "pod_ip",
    "write_conflist",
]
