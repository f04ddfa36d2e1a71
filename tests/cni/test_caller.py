"""CNIChain runs real plugins (bridge, host-local, portmap) the way kubelet's runtime does."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

import pytest

from kmesh.cni.caller import (
    CNIChain,
    cni_args_string,
    default_cni_path,
    find_conflist,
    install_launcher,
    load_conflist,
    pod_args,
    pod_ip,
    write_conflist,
)
from kmesh.cni.spec import CODE_INCOMPATIBLE_VERSION, CODE_INVALID_CONFIG, CNIError
from kmesh.net import netns
from tests.cni.cniutil import (  # noqa: F401
    CNI_PATH,
    GATEWAY,
    SUBNET,
    CNILab,
    bridge_conflist,
    in_ns,
    lab_fixture,
    ping,
)

# -- no namespaces needed ------------------------------------------------------


@pytest.mark.parametrize(
    "conf, field",
    [
        ({"cniVersion": "1.0.0", "plugins": [{"type": "bridge"}]}, "'name'"),
        ({"name": "n", "plugins": [{"type": "bridge"}]}, "'cniVersion'"),
        ({"name": "n", "cniVersion": "1.0.0", "plugins": []}, "'plugins'"),
        (
            {
                "name": "n",
                "cniVersion": "1.0.0",
                "plugins": [{"type": "bridge"}, {"mtu": 1}],
            },
            "'plugins[1].type'",
        ),
        (
            {"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "../bin/sh"}]},
            "'plugins[0].type'",
        ),
        (
            {
                "name": "n",
                "cniVersion": "1.0.0",
                "plugins": [{"type": "portmap", "capabilities": []}],
            },
            "'plugins[0].capabilities'",
        ),
    ],
)
def test_conflist_errors_name_the_field(conf: dict, field: str) -> None:
    with pytest.raises(CNIError) as e:
        load_conflist(conf)
    assert e.value.code == CODE_INVALID_CONFIG
    assert field in e.value.msg


def test_conflist_unknown_version_is_incompatible() -> None:
    with pytest.raises(CNIError) as e:
        load_conflist(
            {"name": "n", "cniVersion": "9.9.9", "plugins": [{"type": "bridge"}]}
        )
    assert e.value.code == CODE_INCOMPATIBLE_VERSION


async def test_launcher_is_the_same_plugin_without_site_packages(tmp_path: Path) -> None:
    exe = install_launcher(tmp_path / "bin")
    assert exe is not None and exe.name == "kmesh-cni" and exe.stat().st_mode & 0o111
    assert exe.read_text().splitlines()[0].endswith(" -IS")
    chain = CNIChain(
        write_conflist(tmp_path, subnet_file="/x/subnet.env", data_dir="/x/data"),
        cni_path=[str(exe.parent), *default_cni_path()], cache_dir=tmp_path / "c",
    )
    assert chain.find_plugin("kmesh-cni") == str(exe)
    assert "1.0.0" in (await chain.version("kmesh-cni"))["supportedVersions"]
    probe = subprocess.run(  # what it imports: the stdlib's basics and kmesh.cni, no typing/pathlib/subprocess
        [*exe.read_text().splitlines()[0][2:].split(), "-c",
         f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r}); import kmesh.cni.plugin; "
         "print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert not {"typing", "pathlib", "subprocess"} & set(probe)


def test_conflist_from_file(tmp_path: Path) -> None:
    p = write_conflist(
        tmp_path, subnet_file="/x/subnet.env", data_dir="/x/data", mtu=1400
    )
    assert p.name == "10-kmesh.conflist"
    chain = CNIChain(p, cni_path=default_cni_path(), cache_dir=tmp_path / "c")
    assert chain.find_plugin("kmesh-cni").endswith("/kmesh-cni")
    assert chain.name == "cbr0" and chain.cni_version == "1.0.0"
    assert [pl["type"] for pl in chain.plugins] == ["kmesh-cni", "portmap"]
    assert chain.plugins[0]["delegate"] == {
        "hairpinMode": True,
        "isDefaultGateway": True,
        "mtu": 1400,
    }
    assert chain.plugins[1]["capabilities"] == {"portMappings": True}
    assert find_conflist(tmp_path) == p
    (tmp_path / "99-other.conflist").write_text("{}")
    assert find_conflist(tmp_path) == p and find_conflist(tmp_path / "none") is None
    bad = tmp_path / "bad.conflist"
    bad.write_text("{nope")
    with pytest.raises(CNIError) as e:
        CNIChain(bad, cni_path=CNI_PATH, cache_dir=tmp_path)
    assert e.value.code == CODE_INVALID_CONFIG and "bad.conflist" in e.value.msg


def test_cni_args_and_pod_ip() -> None:
    args = pod_args("default", "web-1", uid="u-1", infra_container_id="c1")
    assert cni_args_string(args) == (
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=u-1"
    )
    assert cni_args_string(None) == ""
    with pytest.raises(CNIError):
        cni_args_string({"A": "x;y"})
    result = {
        "interfaces": [{"name": "cni0"}, {"name": "eth0", "sandbox": "/run/netns/p"}],
        "ips": [
            {"address": "fd00::2/64", "interface": 1},
            {"address": "10.244.7.5/24", "interface": 1, "gateway": GATEWAY},
        ],
    }
    assert pod_ip(result) == "10.244.7.5"
    with pytest.raises(ValueError):
        pod_ip({"ips": []})


async def test_missing_plugin_is_a_clear_error(tmp_path: Path) -> None:
    chain = CNIChain(
        {
            "name": "n",
            "cniVersion": "1.0.0",
            "plugins": [{"type": "kmc-no-such-plugin"}],
        },
        cni_path=[str(tmp_path)],
        cache_dir=tmp_path,
    )
    with pytest.raises(CNIError) as e:
        await chain.version("kmc-no-such-plugin")
    assert "kmc-no-such-plugin" in e.value.msg and str(tmp_path) in e.value.msg


# -- real plugins in lab namespaces ---------------------------------------------


def _chain(lab: CNILab, conf: dict | None = None) -> CNIChain:
    return CNIChain(
        conf or bridge_conflist(lab),
        cni_path=CNI_PATH,
        cache_dir=lab.cache_dir,
        netns_for_plugins=lab.node,
    )


def _root_has_cni0() -> bool:
    return (
        subprocess.run(
            ["ip", "link", "show", "cni0"], capture_output=True, check=False
        ).returncode
        == 0
    )


@pytest.mark.netns
async def test_add_two_pods_ping_check_delete(lab: CNILab) -> None:
    root_cni0_before = _root_has_cni0()
    chain = _chain(lab)
    a, a_path = lab.add_pod("a")
    b, b_path = lab.add_pod("b")
    ra = await chain.add(
        "ctr-a",
        a_path,
        args=pod_args("default", "a", uid="uid-a", infra_container_id="ctr-a"),
    )
    rb = await chain.add("ctr-b", b_path, args=pod_args("default", "b"))
    ip_a, ip_b = pod_ip(ra), pod_ip(rb)
    net = ipaddress.ip_network(SUBNET)
    assert (
        ipaddress.ip_address(ip_a) in net
        and ipaddress.ip_address(ip_b) in net
        and ip_a != ip_b
    )
    assert sorted(lab.host_local_files("kmc-net")) == sorted([ip_a, ip_b])

    # cni0 with the gateway lives in the node namespace, not in ours.
    assert f"inet {GATEWAY}/24" in netns.ip(
        lab.node, "-o", "addr", "show", "dev", "cni0"
    )
    assert _root_has_cni0() == root_cni0_before
    assert f"inet {ip_a}/24" in netns.ip(a, "-o", "addr", "show", "dev", "eth0")
    assert f"default via {GATEWAY} dev eth0" in netns.ip(a, "route", "show")
    assert "10.244.0.0/16 via 10.244.7.1 dev eth0" in netns.ip(a, "route", "show")

    assert ping(a, ip_b) and ping(b, ip_a) and ping(b, GATEWAY)
    assert not ping(a, "10.244.7.250", timeout=0.3)  # nobody there: the check can fail

    assert chain.cached_result("ctr-a") == ra
    await chain.check("ctr-a", a_path)
    netns.ip(a, "link", "del", "eth0")
    with pytest.raises(CNIError):
        await chain.check("ctr-a", a_path)

    await chain.delete("ctr-a", a_path)
    assert lab.host_local_files("kmc-net") == [ip_b]
    assert chain.cached_result("ctr-a") is None
    await chain.delete("ctr-a", a_path)  # twice is fine

    netns.delete(b)  # the sandbox died first: DEL must still free the address
    await chain.delete("ctr-b", b_path)
    assert lab.host_local_files("kmc-net") == []
    with pytest.raises(CNIError):
        await chain.check("ctr-b", b_path)  # nothing cached any more


@pytest.mark.netns
async def test_hostport_via_portmap_capability(lab: CNILab) -> None:
    chain = _chain(lab)
    _, p_path = lab.add_pod("hp")
    maps = [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]
    result = await chain.add(
        "ctr-hp", p_path, capability_args={"portMappings": maps, "bandwidth": {"x": 1}}
    )
    ip = pod_ip(result)
    nat = in_ns(lab.node, "iptables-save", "-t", "nat").stdout
    dnat = [
        line
        for line in nat.splitlines()
        if "--dport 18080" in line or f"{ip}:80" in line
    ]
    assert any(f"--to-destination {ip}:80" in line for line in dnat), nat
    # No CHECK here: Debian's portmap 1.1.1 looks for an IPv6 DNAT chain it never made.
    restarted = _chain(lab)  # a new runtime process: the cache still knows the mappings
    await restarted.delete("ctr-hp", p_path)
    nat = in_ns(lab.node, "iptables-save", "-t", "nat").stdout
    assert f"{ip}:80" not in nat
    assert lab.host_local_files("kmc-net") == []


@pytest.mark.netns
async def test_cni_args_reach_the_plugins(lab: CNILab) -> None:
    """host-local honours IP= from CNI_ARGS, next to the K8S_* keys kubelet sends."""
    chain = _chain(lab)
    p, p_path = lab.add_pod("args")
    args = {
        **pod_args("default", "pinned", uid="u-9", infra_container_id="ctr-args"),
        "IP": "10.244.7.77",
    }
    result = await chain.add("ctr-args", p_path, args=args)
    assert pod_ip(result) == "10.244.7.77"
    assert "inet 10.244.7.77/24" in netns.ip(p, "-o", "addr", "show", "dev", "eth0")
    await chain.delete("ctr-args", p_path, args=args)
    assert lab.host_local_files("kmc-net") == []


@pytest.mark.netns
async def test_missing_node_namespace(lab: CNILab, tmp_path: Path) -> None:
    chain = CNIChain(
        bridge_conflist(lab),
        cni_path=CNI_PATH,
        cache_dir=tmp_path,
        netns_for_plugins=f"{lab.prefix}gone",
    )
    with pytest.raises(CNIError) as e:
        await chain.add("ctr-x", "/run/netns/nothing")
    assert f"{lab.prefix}gone" in e.value.msg


@pytest.mark.netns
async def test_failed_add_rolls_back(lab: CNILab) -> None:
    conf = bridge_conflist(lab, portmap=False)
    conf["plugins"].append({"type": "portmap", "capabilities": {"portMappings": True}})
    chain = _chain(lab, conf)
    _, p_path = lab.add_pod("rb")
    bad = [{"hostPort": "not-a-port", "containerPort": 80, "protocol": "tcp"}]
    with pytest.raises(CNIError) as e:
        await chain.add("ctr-rb", p_path, capability_args={"portMappings": bad})
    assert "portmap ADD" in e.value.msg
    assert lab.host_local_files("kmc-net") == []  # bridge's address was released again
    assert chain.cached_result("ctr-rb") is None


@pytest.mark.netns
async def test_version_of_a_reference_plugin(lab: CNILab) -> None:
    out = await _chain(lab).version("bridge")
    assert "1.0.0" in out["supportedVersions"]


def test_cache_record_shape(tmp_path: Path) -> None:
    chain = CNIChain(
        {"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "x"}]},
        cni_path=[],
        cache_dir=tmp_path,
    )
    chain._save_cache(
        "c1",
        "eth0",
        {"K8S_POD_NAME": "p"},
        {"portMappings": []},
        {"cniVersion": "1.0.0"},
    )
    record = json.loads((tmp_path / "n-c1-eth0").read_text())
    assert record["kind"] == "cniCacheV1" and record["cniArgs"] == {"K8S_POD_NAME": "p"}
