"""The kmesh-cni executable, run as a container runtime runs it: real processes, env, stdin, namespaces."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from kmesh.cni.caller import CNIChain, pod_args, pod_ip, write_conflist
from kmesh.cni.spec import (
    CODE_DECODE,
    CODE_INCOMPATIBLE_VERSION,
    CODE_INVALID_CONFIG,
    CODE_INVALID_ENV,
    CODE_TRY_AGAIN_LATER,
    CODE_UNKNOWN_CONTAINER,
    SUPPORTED_VERSIONS,
    CNIError,
)
from kmesh.net import netns
from tests.cni.cniutil import (  # noqa: F401
    CNI_PATH,
    GATEWAY,
    NETWORK,
    SUBNET,
    VENV_BIN,
    CNILab,
    in_ns,
    lab_fixture,
    ping,
    run_plugin,
)

KMESH_CNI = os.path.join(VENV_BIN, "kmesh-cni")


@pytest.fixture
def exe() -> str:
    """The installed plugin (pip install -e . puts it next to the venv's python)."""
    assert os.access(KMESH_CNI, os.X_OK), (
        f"{KMESH_CNI} missing: run .venv/bin/pip install -e . --no-deps"
    )
    return KMESH_CNI


def _conf(tmp: Path, **extra: object) -> dict:
    conf = {
        "cniVersion": "1.0.0",
        "name": "cbr0",
        "type": "kmesh-cni",
        "subnetFile": str(tmp / "subnet.env"),
        "dataDir": str(tmp / "flannel"),
        "ipam": {"dataDir": str(tmp / "ipam")},
        "delegate": {"hairpinMode": True, "isDefaultGateway": True},
    }
    conf.update(extra)
    return conf


def _error(run, code: int) -> dict:
    assert run.rc != 0, run.stdout
    assert isinstance(run.out, dict), run.stdout
    assert run.out["code"] == code, run.out
    assert run.out["cniVersion"] and run.out["msg"]
    return run.out


# -- error paths: fail before any delegate could run (CNI_PATH has no plugins) ---------


def _safe(exe: str, command: str, conf: object, tmp: Path, **kw: object):
    empty = tmp / "no-plugins"
    empty.mkdir(exist_ok=True)
    kw.setdefault("container_id", "ctr-x")
    kw.setdefault("netns_path", "/run/netns/kmc-does-not-exist")
    return run_plugin(exe, command, conf, node=None, cni_path=[str(empty)], **kw)


def lab_chain(lab: CNILab, conflist: dict | Path | None = None) -> CNIChain:
    """``conflist`` (default: the node agent's, written into the lab) as a CNIChain run in the lab's node namespace."""
    if conflist is None:
        conflist = write_conflist(
            lab.tmp,
            subnet_file=lab.subnet_file,
            data_dir=lab.data_dir,
            ipam_data_dir=lab.ipam_dir,
        )
    return CNIChain(
        conflist, cni_path=CNI_PATH, cache_dir=lab.cache_dir, netns_for_plugins=lab.node
    )


def test_version(exe: str, tmp_path: Path) -> None:
    run = _safe(exe, "VERSION", {"cniVersion": "1.1.0"}, tmp_path)
    assert run.rc == 0 and run.out == {
        "cniVersion": "1.1.0",
        "supportedVersions": SUPPORTED_VERSIONS,
    }
    run = _safe(exe, "VERSION", "", tmp_path)
    assert run.rc == 0 and "1.0.0" in run.out["supportedVersions"]


def test_bad_json_is_code_6(exe: str, tmp_path: Path) -> None:
    _error(_safe(exe, "ADD", "{not json", tmp_path), CODE_DECODE)
    _error(_safe(exe, "ADD", "[1, 2]", tmp_path), CODE_DECODE)


@pytest.mark.parametrize(
    "command, drop, variable",
    [
        ("ADD", ("CNI_COMMAND",), "CNI_COMMAND"),
        ("ADD", ("CNI_CONTAINERID",), "CNI_CONTAINERID"),
        ("ADD", ("CNI_NETNS",), "CNI_NETNS"),
        ("CHECK", ("CNI_NETNS",), "CNI_NETNS"),
        ("DEL", ("CNI_CONTAINERID",), "CNI_CONTAINERID"),
        ("ADD", ("CNI_PATH",), "CNI_PATH"),
    ],
)
def test_missing_env_is_code_4(
    exe: str, tmp_path: Path, command: str, drop: tuple[str, ...], variable: str
) -> None:
    out = _error(
        _safe(exe, command, _conf(tmp_path), tmp_path, drop=drop), CODE_INVALID_ENV
    )
    assert variable in out["msg"]


def test_unknown_command_and_bad_container_id(exe: str, tmp_path: Path) -> None:
    assert (
        "FROB"
        in _error(_safe(exe, "FROB", _conf(tmp_path), tmp_path), CODE_INVALID_ENV)[
            "msg"
        ]
    )
    out = _error(
        _safe(exe, "ADD", _conf(tmp_path), tmp_path, container_id="../etc"),
        CODE_INVALID_ENV,
    )
    assert "CNI_CONTAINERID" in out["msg"]


@pytest.mark.parametrize(
    "change, field",
    [
        ({"delegate": "bridge"}, "delegate"),
        ({"delegate": {"type": 5}}, "delegate.type"),
        ({"delegate": {"ipam": {}}}, "delegate.ipam"),
        ({"delegate": {"name": "x"}}, "delegate.name"),
        ({"subnetFile": 7}, "subnetFile"),
        ({"dataDir": ""}, "dataDir"),
        ({"name": ""}, "name"),
        ({"ipam": {"routes": [{"gw": "10.0.0.1"}]}}, "ipam.routes"),
    ],
)
def test_bad_config_is_code_7_naming_the_field(
    exe: str, tmp_path: Path, change: dict, field: str
) -> None:
    out = _error(
        _safe(exe, "ADD", _conf(tmp_path, **change), tmp_path), CODE_INVALID_CONFIG
    )
    assert repr(field) in out["msg"]


def test_unsupported_version_is_code_1(exe: str, tmp_path: Path) -> None:
    out = _error(
        _safe(exe, "ADD", _conf(tmp_path, cniVersion="0.1.0"), tmp_path),
        CODE_INCOMPATIBLE_VERSION,
    )
    assert out["cniVersion"] == "0.1.0"


def test_missing_subnet_env_is_code_11(exe: str, tmp_path: Path) -> None:
    out = _error(_safe(exe, "ADD", _conf(tmp_path), tmp_path), CODE_TRY_AGAIN_LATER)
    assert str(tmp_path / "subnet.env") in out["msg"]
    (tmp_path / "subnet.env").write_text("FLANNEL_NETWORK=10.244.0.0/16\n")
    out = _error(_safe(exe, "ADD", _conf(tmp_path), tmp_path), CODE_TRY_AGAIN_LATER)
    assert "FLANNEL_SUBNET" in out["msg"] and "FLANNEL_MTU" in out["msg"]


def test_del_and_check_without_saved_config(exe: str, tmp_path: Path) -> None:
    run = _safe(exe, "DEL", _conf(tmp_path), tmp_path)
    assert run.rc == 0 and run.stdout == "", run.stdout
    out = _error(
        _safe(
            exe, "CHECK", _conf(tmp_path, prevResult={"cniVersion": "1.0.0"}), tmp_path
        ),
        CODE_UNKNOWN_CONTAINER,
    )
    assert "ctr-x" in out["msg"]
    assert (
        "prevResult"
        in _error(_safe(exe, "CHECK", _conf(tmp_path), tmp_path), CODE_INVALID_CONFIG)[
            "msg"
        ]
    )


def test_status_follows_subnet_env(exe: str, tmp_path: Path) -> None:
    assert (
        _safe(exe, "STATUS", _conf(tmp_path, cniVersion="1.1.0"), tmp_path).out["code"]
        == 50
    )
    (tmp_path / "subnet.env").write_text(
        f"FLANNEL_NETWORK={NETWORK}\nFLANNEL_SUBNET={GATEWAY}/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    )
    assert _safe(exe, "STATUS", _conf(tmp_path, cniVersion="1.1.0"), tmp_path).rc == 0


def test_imports_only_the_stdlib() -> None:
    code = "import sys, kmesh.cni.plugin; print(' '.join(sorted(sys.modules)))"
    mods = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    heavy = [
        m
        for m in mods
        if m.split(".")[0]
        in ("trio", "httpx", "pyroute2", "scapy", "anyio", "yaml", "rich", "click")
    ]
    assert heavy == []
    assert {m for m in mods if m.startswith("kmesh")} == {
        "kmesh",
        "kmesh.cni",
        "kmesh.cni.spec",
        "kmesh.cni.plugin",
    }


# -- the real thing, inside lab namespaces -------------------------------------------


@pytest.mark.netns
def test_executable_add_check_del(exe: str, lab: CNILab) -> None:
    lab.write_subnet_env(mtu=1400, ipmasq=True)
    conf = _conf(lab.tmp)
    a, a_path = lab.add_pod("a")
    b, b_path = lab.add_pod("b")

    def call(command: str, cid: str, path: str, c: dict | None = None):
        return run_plugin(
            exe, command, c or conf, node=lab.node, container_id=cid, netns_path=path
        )

    ra = call("ADD", "ctr-a", a_path)
    assert ra.rc == 0, ra.stdout + ra.stderr
    rb = call("ADD", "ctr-b", b_path)
    assert rb.rc == 0, rb.stdout + rb.stderr
    assert ra.out["cniVersion"] == "1.0.0"
    ip_a, ip_b = pod_ip(ra.out), pod_ip(rb.out)
    assert ipaddress.ip_address(ip_a) in ipaddress.ip_network(SUBNET)
    assert sorted(lab.host_local_files("cbr0")) == sorted([ip_a, ip_b])

    saved = json.loads((lab.data_dir / "ctr-a").read_text())
    assert (
        saved["type"] == "bridge"
        and saved["name"] == "cbr0"
        and saved["cniVersion"] == "1.0.0"
    )
    assert (
        saved["isGateway"] is True and saved["ipMasq"] is False and saved["mtu"] == 1400
    )
    assert saved["hairpinMode"] is True and saved["isDefaultGateway"] is True
    assert saved["ipam"]["type"] == "host-local" and saved["ipam"]["dataDir"] == str(
        lab.ipam_dir
    )
    assert saved["ipam"]["ranges"] == [[{"subnet": SUBNET}]]
    assert saved["ipam"]["routes"] == [{"dst": NETWORK, "gw": GATEWAY}]

    assert f"inet {GATEWAY}/24" in netns.ip(
        lab.node, "-o", "addr", "show", "dev", "cni0"
    )
    assert "mtu 1400" in netns.ip(a, "link", "show", "eth0")
    assert f"default via {GATEWAY} dev eth0" in netns.ip(a, "route", "show")
    assert ping(a, ip_b) and ping(b, ip_a)

    check = dict(conf, prevResult=ra.out)
    assert call("CHECK", "ctr-a", a_path, check).rc == 0
    netns.ip(a, "link", "del", "eth0")
    assert call("CHECK", "ctr-a", a_path, check).rc != 0

    # DEL uses the saved delegate even when subnet.env is gone.
    lab.subnet_file.unlink()
    d = call("DEL", "ctr-a", a_path)
    assert d.rc == 0, d.stdout + d.stderr
    assert not (lab.data_dir / "ctr-a").exists()
    assert lab.host_local_files("cbr0") == [ip_b]
    assert call("DEL", "ctr-a", a_path).rc == 0

    netns.delete(b)
    assert call("DEL", "ctr-b", b_path).rc == 0
    assert lab.host_local_files("cbr0") == []
    assert "cni0" in netns.ip(lab.node, "link", "show")


@pytest.mark.netns
async def test_conflist_through_the_chain(lab: CNILab) -> None:
    """What the node agent does: write 10-kmesh.conflist, run it with CNIChain inside the node namespace."""
    lab.write_subnet_env(ipmasq=False)
    chain = lab_chain(lab)
    assert "1.0.0" in (await chain.version("kmesh-cni"))["supportedVersions"]
    a, a_path = lab.add_pod("a")
    b, b_path = lab.add_pod("b")
    maps = [{"hostPort": 18081, "containerPort": 8080, "protocol": "tcp"}]
    ra = await chain.add(
        "ctr-a",
        a_path,
        args=pod_args("default", "a", uid="u-a"),
        capability_args={"portMappings": maps},
    )
    rb = await chain.add("ctr-b", b_path, args=pod_args("default", "b"))
    ip_a, ip_b = pod_ip(ra), pod_ip(rb)
    assert ping(b, ip_a) and ping(a, ip_b)
    nat = in_ns(lab.node, "iptables-save", "-t", "nat").stdout
    assert f"--to-destination {ip_a}:8080" in nat and "--dport 18081" in nat
    # FLANNEL_IPMASQ=false: the bridge masquerades pod traffic itself, in the node namespace.
    assert "CNI-" in nat and "MASQUERADE" in nat

    await chain.check("ctr-b", b_path)
    netns.ip(b, "link", "del", "eth0")
    with pytest.raises(CNIError):
        await chain.check("ctr-b", b_path)

    await chain.delete("ctr-a", a_path)
    await chain.delete("ctr-a", a_path)
    nat = in_ns(lab.node, "iptables-save", "-t", "nat").stdout
    assert f"{ip_a}:8080" not in nat
    netns.delete(b)
    await chain.delete("ctr-b", b_path)
    assert lab.host_local_files("cbr0") == []
    assert list(lab.data_dir.iterdir()) == []


@pytest.mark.netns
async def test_spec_1_1_status_and_gc(lab: CNILab) -> None:
    """A 1.1.0 network over 1.0-only reference plugins: results relabelled, STATUS and GC work."""
    lab.write_subnet_env()
    conf = {
        "name": "cbr0",
        "cniVersion": "1.1.0",
        "plugins": [
            {
                "type": "kmesh-cni",
                "subnetFile": str(lab.subnet_file),
                "dataDir": str(lab.data_dir),
                "ipam": {"dataDir": str(lab.ipam_dir)},
                "delegate": {"hairpinMode": True, "isDefaultGateway": True},
            }
        ],
    }
    chain = lab_chain(lab, conf)
    await chain.status()
    a, a_path = lab.add_pod("a")
    _, b_path = lab.add_pod("b")
    ra = await chain.add("ctr-a", a_path)
    rb = await chain.add("ctr-b", b_path)
    assert ra["cniVersion"] == "1.1.0"
    assert json.loads((lab.data_dir / "ctr-a").read_text())["cniVersion"] == "1.0.0"
    assert ping(a, pod_ip(rb))
    await chain.check("ctr-a", a_path)

    await chain.gc([("ctr-a", "eth0")])
    assert sorted(p.name for p in lab.data_dir.iterdir()) == ["ctr-a"]
    assert lab.host_local_files("cbr0") == [pod_ip(ra)]
    assert chain.cached_result("ctr-b") is None and chain.cached_result("ctr-a") == ra

    await chain.delete("ctr-a", a_path)
    assert lab.host_local_files("cbr0") == []
    lab.subnet_file.unlink()
    with pytest.raises(CNIError) as e:
        await chain.status()
    assert e.value.code == 50 and "subnet" in e.value.msg


@pytest.mark.netns
async def test_concurrent_adds_get_distinct_addresses(lab: CNILab) -> None:
    """The pod runtime starts pods in parallel: host-local's lock keeps the addresses apart."""
    lab.write_subnet_env()
    chain = lab_chain(lab)
    pods = [lab.add_pod(f"p{i}") for i in range(6)]
    results: dict[str, str] = {}

    async def one(i: int, ns_path: str) -> None:
        results[f"ctr-{i}"] = pod_ip(await chain.add(f"ctr-{i}", ns_path))

    async with trio.open_nursery() as nursery:
        for i, (_, ns_path) in enumerate(pods):
            nursery.start_soon(one, i, ns_path)
    assert len(set(results.values())) == 6
    assert sorted(lab.host_local_files("cbr0")) == sorted(results.values())
    async with trio.open_nursery() as nursery:
        for i, (_, ns_path) in enumerate(pods):
            nursery.start_soon(chain.delete, f"ctr-{i}", ns_path)
    assert lab.host_local_files("cbr0") == []
