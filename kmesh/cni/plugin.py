"""``kmesh-cni``: the CNI plugin a node's runtime calls for every pod, modelled on flannel's.

It reads the node's ``subnet.env`` (written by the kmesh agent like flanneld
does), renders a delegate config for the reference ``bridge`` plugin with
``host-local`` IPAM, saves it under ``dataDir/<container id>`` and runs the
delegate with the same environment. DEL and CHECK use the saved config, so
tearing a pod down works even after subnet.env changed or vanished.

Conf keys (besides the spec's): ``subnetFile`` (default
/run/flannel/subnet.env), ``dataDir`` (default /var/lib/cni/flannel),
``delegate`` (merged into the delegate config; may not set ``name`` or
``ipam``), ``ipam`` (base of the delegate's IPAM section, e.g. ``dataDir``).

Runs once per pod start, so it imports only the standard library.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys

TYPE_CHECKING = False  # not typing's: importing typing (or pathlib) costs a few ms on every pod start
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, TextIO

from kmesh.cni.spec import (
    CODE_DECODE,
    CODE_INTERNAL,
    CODE_INVALID_CONFIG,
    CODE_INVALID_ENV,
    CODE_IO,
    CODE_TRY_AGAIN_LATER,
    CODE_UNKNOWN_CONTAINER,
    DEFAULT_VERSION,
    CNIError,
    check_version,
    find_executable,
    version_result,
)

DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env"
DEFAULT_DATA_DIR = "/var/lib/cni/flannel"
CODE_NOT_AVAILABLE = 50  # spec 1.1 STATUS: the plugin cannot serve ADDs now
REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": (),
}


class SubnetEnv:
    """The node's share of the flannel network, as subnet.env states it."""

    def __init__(
        self,
        network: ipaddress.IPv4Network,
        subnet: ipaddress.IPv4Interface,
        mtu: int,
        ipmasq: bool,
    ) -> None:
        self.network = network
        self.subnet = subnet
        self.mtu = mtu
        self.ipmasq = ipmasq


def read_subnet_env(path: str) -> SubnetEnv:
    """Parse subnet.env; absent file or keys → code 11 (the agent has not written it yet)."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        raise CNIError(
            CODE_TRY_AGAIN_LATER,
            f"subnet file {path} does not exist yet; is the kmesh agent running on this node?",
        ) from None
    except OSError as e:
        raise CNIError(
            CODE_IO, f"cannot read subnet file {path}: {e.strerror}"
        ) from None
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep:
            values[key.strip()] = value.strip()
    missing = [
        k
        for k in ("FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ")
        if k not in values
    ]
    if missing:
        raise CNIError(
            CODE_TRY_AGAIN_LATER, f"subnet file {path} is missing {', '.join(missing)}"
        )
    try:
        return SubnetEnv(
            ipaddress.IPv4Network(values["FLANNEL_NETWORK"], strict=False),
            ipaddress.IPv4Interface(values["FLANNEL_SUBNET"]),
            int(values["FLANNEL_MTU"]),
            values["FLANNEL_IPMASQ"] == "true",
        )
    except ValueError as e:
        raise CNIError(CODE_IO, f"subnet file {path} has a bad value: {e}") from None


def _field_error(field: str, why: str) -> CNIError:
    return CNIError(CODE_INVALID_CONFIG, f"invalid config field {field!r}: {why}")


def parse_conf(data: bytes) -> dict[str, Any]:
    """The plugin's config from stdin, validated; code 6 for bad JSON, 7 naming a bad field."""
    try:
        conf = json.loads(data)
    except ValueError as e:
        raise CNIError(
            CODE_DECODE, f"failed to decode network config on stdin: {e}"
        ) from None
    if not isinstance(conf, dict):
        raise CNIError(CODE_DECODE, "network config on stdin must be a JSON object")
    check_version(conf.get("cniVersion"))
    if not isinstance(conf.get("name"), str) or not conf["name"]:
        raise _field_error("name", "must be a non-empty string")
    for key in ("subnetFile", "dataDir"):
        if key in conf and (not isinstance(conf[key], str) or not conf[key]):
            raise _field_error(key, "must be a non-empty string (a path)")
    for key in ("delegate", "ipam", "runtimeConfig", "prevResult"):
        if key in conf and conf[key] is not None and not isinstance(conf[key], dict):
            raise _field_error(key, "must be an object")
    delegate = conf.get("delegate") or {}
    if "type" in delegate and (
        not isinstance(delegate["type"], str)
        or not delegate["type"]
        or "/" in delegate["type"]
    ):
        raise _field_error("delegate.type", "must be a plugin name")
    for key in ("name", "ipam"):
        if key in delegate:
            raise _field_error(
                f"delegate.{key}", "is set by kmesh-cni from the network and subnet.env"
            )
    routes = (conf.get("ipam") or {}).get("routes", [])
    if not isinstance(routes, list) or not all(
        isinstance(r, dict) and isinstance(r.get("dst"), str) for r in routes
    ):
        raise _field_error("ipam.routes", 'must be a list of {"dst": CIDR} objects')
    return conf


def build_delegate(conf: Mapping[str, Any], env: SubnetEnv) -> dict[str, Any]:
    """The delegate config flannel would render: bridge + host-local over the node subnet.

    One difference: with a gateway bridge the route to the cluster network names
    the gateway, so the bridge plugin's CHECK can match the route it installed."""
    d: dict[str, Any] = json.loads(json.dumps(conf.get("delegate") or {}))
    d["name"] = conf["name"]
    d.setdefault("type", "bridge")
    d.setdefault(
        "ipMasq", not env.ipmasq
    )  # if flannel does not masquerade, the bridge should
    d.setdefault("mtu", env.mtu)
    if d["type"] == "bridge":
        d.setdefault("isGateway", True)
    d["cniVersion"] = conf["cniVersion"]
    if conf.get("runtimeConfig"):
        d["runtimeConfig"] = conf["runtimeConfig"]
    ipam: dict[str, Any] = json.loads(json.dumps(conf.get("ipam") or {}))
    ipam.setdefault("type", "host-local")
    ipam["ranges"] = [[{"subnet": str(env.subnet.network)}]]
    route: dict[str, Any] = {"dst": str(env.network)}
    if d["type"] == "bridge" and d.get("isGateway"):
        route["gw"] = str(env.subnet.ip)
    ipam["routes"] = [*ipam.get("routes", []), route]
    d["ipam"] = ipam
    return d


def _require_env(env: Mapping[str, str], command: str) -> None:
    for key in REQUIRED_ENV.get(command, ()):
        if not env.get(key):
            raise CNIError(
                CODE_INVALID_ENV,
                f"required environment variable {key} is not set (CNI_COMMAND={command})",
            )
    cid = env.get("CNI_CONTAINERID", "")
    if cid and ("/" in cid or cid in (".", "..")):
        raise CNIError(
            CODE_INVALID_ENV, f"CNI_CONTAINERID {cid!r} is not a valid container id"
        )


def find_plugin(plugin_type: str, cni_path: str) -> str:
    """The delegate executable in CNI_PATH."""
    dirs = [d for d in cni_path.split(os.pathsep) if d]
    found = find_executable(plugin_type, dirs)
    if found is not None:
        return found
    raise CNIError(
        CODE_INTERNAL,
        f"failed to find delegate plugin {plugin_type!r} in CNI_PATH {dirs}",
    )


def _run_exe(exe: str, stdin: bytes, env: Mapping[str, str]) -> tuple[int, bytes]:
    """Run ``exe`` with ``stdin`` and ``env`` (stderr inherited): its exit status and stdout.

    ``os.posix_spawn`` and two pipes instead of ``subprocess``, whose import (selectors,
    threading, signal, locale...) is a good part of a plugin run's start-up. A child killed
    by signal N reports -N, as ``subprocess`` does."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        pid = os.posix_spawn(
            exe, [exe], {k: str(v) for k, v in env.items()},
            file_actions=[
                (os.POSIX_SPAWN_DUP2, in_r, 0),
                (os.POSIX_SPAWN_DUP2, out_w, 1),
                (os.POSIX_SPAWN_CLOSE, in_w),
                (os.POSIX_SPAWN_CLOSE, out_r),
            ],
        )
    except OSError:
        for fd in (in_r, in_w, out_r, out_w):
            os.close(fd)
        raise
    os.close(in_r)
    os.close(out_w)
    chunks: list[bytes] = []
    try:
        # Plugins read all of stdin before they answer; a config is far below a pipe's buffer,
        # but write it in a loop and stop early if the child closed its end.
        view = memoryview(stdin)
        while view:
            try:
                n = os.write(in_w, view)
            except BrokenPipeError:
                break
            view = view[n:]
        os.close(in_w)
        in_w = -1
        while chunk := os.read(out_r, 65536):
            chunks.append(chunk)
    finally:
        if in_w >= 0:
            os.close(in_w)
        os.close(out_r)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks)


def run_delegate(conf: Mapping[str, Any], env: Mapping[str, str], command: str) -> str:
    """Run the delegate with our environment and ``conf`` on stdin; its stdout, or its error re-raised."""
    plugin_type = str(conf["type"])
    exe = find_plugin(plugin_type, env.get("CNI_PATH", ""))
    child_env = {**env, "CNI_COMMAND": command}
    try:
        returncode, stdout = _run_exe(exe, json.dumps(conf).encode(), child_env)
    except OSError as e:
        raise CNIError(
            CODE_INTERNAL, f"cannot run delegate plugin {plugin_type}: {e}"
        ) from None
    out = stdout.decode(errors="replace").strip()
    if returncode != 0:
        err = CNIError.from_output(out, out or f"exit status {returncode}")
        raise CNIError(
            err.code, f"delegate {plugin_type} {command}: {err.msg}", err.details
        )
    return out


_SAME_RESULT_FORMAT = ("1.0.0", "1.1.0")  # 1.1 added no result fields


def _same_format(a: str, b: str) -> bool:
    return a in _SAME_RESULT_FORMAT and b in _SAME_RESULT_FORMAT


def _relabel(result: Any, version: str) -> Any:
    """A 1.0/1.1 result relabelled to the other version (their format is the same)."""
    if isinstance(result, dict) and _same_format(
        str(result.get("cniVersion", "")), version
    ):
        return {**result, "cniVersion": version}
    return result


def delegate_version(delegate: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """The cniVersion to speak to the delegate: 1.0.0 when the config says 1.1.0 and the delegate stops at 1.0."""
    want = str(delegate["cniVersion"])
    if want != "1.1.0":
        return want
    out = run_delegate({"cniVersion": want, "type": delegate["type"]}, env, "VERSION")
    try:
        supported = json.loads(out).get("supportedVersions") or []
    except (ValueError, AttributeError):
        supported = []
    return want if want in supported or "1.0.0" not in supported else "1.0.0"


def _saved_path(conf: Mapping[str, Any], container_id: str) -> str:
    return os.path.join(str(conf.get("dataDir") or DEFAULT_DATA_DIR), container_id)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _load_saved(path: str) -> dict[str, Any] | None:
    """The delegate config saved at ADD; None when absent or unreadable as JSON."""
    try:
        with open(path) as f:
            saved = json.loads(f.read())
    except FileNotFoundError:
        return None
    except ValueError:
        return None
    except OSError as e:
        raise CNIError(
            CODE_IO, f"cannot read saved delegate config {path}: {e.strerror}"
        ) from None
    return saved if isinstance(saved, dict) else None


def cmd_add(conf: dict[str, Any], env: Mapping[str, str]) -> str:
    """ADD: render the delegate, save it for DEL, run it; the delegate's result."""
    subnet = read_subnet_env(conf.get("subnetFile") or DEFAULT_SUBNET_FILE)
    delegate = build_delegate(conf, subnet)
    delegate["cniVersion"] = delegate_version(delegate, env)
    if conf.get("prevResult"):
        delegate["prevResult"] = _relabel(conf["prevResult"], delegate["cniVersion"])
    path = _saved_path(conf, env["CNI_CONTAINERID"])
    try:
        parent, name = os.path.split(path)
        os.makedirs(parent, mode=0o700, exist_ok=True)
        tmp = os.path.join(parent, f".{name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({k: v for k, v in delegate.items() if k != "prevResult"}, f)
        os.replace(tmp, path)
    except OSError as e:
        raise CNIError(
            CODE_IO, f"cannot save delegate config in {os.path.dirname(path)}: {e.strerror}"
        ) from None
    out = run_delegate(delegate, env, "ADD")
    try:
        result = json.loads(out)
    except ValueError:
        raise CNIError(
            CODE_INTERNAL,
            f"delegate {delegate['type']} ADD printed invalid JSON",
            out[:500],
        ) from None
    if isinstance(result, dict) and result.get("cniVersion") == delegate["cniVersion"]:
        result = _relabel(result, conf["cniVersion"])
    if isinstance(result, dict) and result.get("cniVersion") not in (
        None,
        conf["cniVersion"],
    ):
        raise CNIError(
            CODE_INTERNAL,
            f"delegate answered in cniVersion {result.get('cniVersion')}, config asked for {conf['cniVersion']}",
        )
    return json.dumps(result)


def cmd_del(conf: dict[str, Any], env: Mapping[str, str]) -> None:
    """DEL: run the delegate's DEL with the saved config, then forget it; nothing saved → done."""
    path = _saved_path(conf, env["CNI_CONTAINERID"])
    saved = _load_saved(path)
    if saved is None:
        _unlink(path)  # a corrupt file cannot be used for anything
        return
    if conf.get("runtimeConfig"):
        saved["runtimeConfig"] = conf["runtimeConfig"]
    if conf.get("prevResult"):
        saved["prevResult"] = _relabel(conf["prevResult"], saved.get("cniVersion", ""))
    run_delegate(saved, env, "DEL")
    _unlink(path)


def cmd_check(conf: dict[str, Any], env: Mapping[str, str]) -> None:
    """CHECK: the delegate's CHECK with the saved config and the runtime's prevResult."""
    if not conf.get("prevResult"):
        raise _field_error("prevResult", "CHECK needs the ADD result as prevResult")
    path = _saved_path(conf, env["CNI_CONTAINERID"])
    saved = _load_saved(path)
    if saved is None:
        raise CNIError(
            CODE_UNKNOWN_CONTAINER,
            f"no saved delegate config for container {env['CNI_CONTAINERID']} in {os.path.dirname(path)}",
        )
    if not _same_format(saved.get("cniVersion", ""), conf["cniVersion"]):
        saved["cniVersion"] = conf["cniVersion"]
    saved["prevResult"] = _relabel(conf["prevResult"], saved["cniVersion"])
    if conf.get("runtimeConfig"):
        saved["runtimeConfig"] = conf["runtimeConfig"]
    run_delegate(saved, env, "CHECK")


def cmd_status(conf: dict[str, Any]) -> None:
    """STATUS (1.1): ready when subnet.env can be read."""
    try:
        read_subnet_env(conf.get("subnetFile") or DEFAULT_SUBNET_FILE)
    except CNIError as e:
        raise CNIError(CODE_NOT_AVAILABLE, f"plugin not available: {e.msg}") from None


def cmd_gc(conf: dict[str, Any], env: Mapping[str, str]) -> None:
    """GC (1.1): DEL every saved attachment the runtime no longer lists as valid."""
    valid = {
        str(a.get("containerID"))
        for a in conf.get("cni.dev/valid-attachments") or []
        if isinstance(a, dict)
    }
    data_dir = str(conf.get("dataDir") or DEFAULT_DATA_DIR)
    if not os.path.isdir(data_dir):
        return
    for name in sorted(os.listdir(data_dir)):
        path = os.path.join(data_dir, name)
        if name.startswith(".") or name in valid or not os.path.isfile(path):
            continue
        saved = _load_saved(path)
        if saved is not None:
            try:
                run_delegate(
                    saved,
                    {
                        **env,
                        "CNI_CONTAINERID": name,
                        "CNI_NETNS": "",
                        "CNI_IFNAME": env.get("CNI_IFNAME") or "eth0",
                    },
                    "DEL",
                )
            except CNIError:
                continue  # keep it for the next GC
        _unlink(path)


def run(env: Mapping[str, str], stdin: bytes, stdout: TextIO) -> int:
    """One plugin invocation: the exit status; the result or the spec error JSON goes to ``stdout``."""
    version = DEFAULT_VERSION
    try:
        command = env.get("CNI_COMMAND", "")
        if not command:
            raise CNIError(
                CODE_INVALID_ENV, "required environment variable CNI_COMMAND is not set"
            )
        if command == "VERSION":
            try:
                asked = json.loads(stdin or b"{}").get("cniVersion") or DEFAULT_VERSION
            except (ValueError, AttributeError):
                asked = DEFAULT_VERSION
            stdout.write(
                json.dumps(
                    version_result(asked if isinstance(asked, str) else DEFAULT_VERSION)
                )
                + "\n"
            )
            return 0
        if command not in REQUIRED_ENV:
            raise CNIError(
                CODE_INVALID_ENV,
                f"unknown CNI_COMMAND {command!r}",
                "expected ADD, DEL, CHECK, VERSION, GC or STATUS",
            )
        try:
            raw_version = json.loads(stdin).get("cniVersion")
            if isinstance(raw_version, str) and raw_version:
                version = raw_version
        except (ValueError, AttributeError):
            pass
        conf = parse_conf(stdin)
        _require_env(env, command)
        if command == "ADD":
            stdout.write(cmd_add(conf, env) + "\n")
        elif command == "DEL":
            cmd_del(conf, env)
        elif command == "CHECK":
            cmd_check(conf, env)
        elif command == "STATUS":
            cmd_status(conf)
        else:
            cmd_gc(conf, env)
        return 0
    except CNIError as e:
        stdout.write(e.to_json(version) + "\n")
        return 1
    except Exception as e:  # noqa: BLE001 - a bug: still answer in the spec's format
        err = CNIError(
            CODE_INTERNAL, f"kmesh-cni internal error: {type(e).__name__}: {e}"
        )
        stdout.write(err.to_json(version) + "\n")
        return 1


def main() -> None:
    """Entry point of the ``kmesh-cni`` executable."""
    code = run(os.environ, sys.stdin.buffer.read(), sys.stdout)
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
