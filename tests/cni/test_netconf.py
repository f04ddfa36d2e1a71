"""net-conf.json parsing (flannel's defaults and errors) and subnet.env."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from kmesh.cni import subnetenv
from kmesh.cni.netconf import NetConf, NetConfError


def test_defaults_for_a_slash_16() -> None:
    c = NetConf.parse('{"Network": "10.244.0.0/16"}')
    assert c.SubnetLen == 24
    assert str(c.SubnetMin) == "10.244.1.0"
    assert str(c.SubnetMax) == "10.244.255.0"
    assert (c.Backend.Type, c.Backend.VNI, c.Backend.Port, c.Backend.DirectRouting) == ("vxlan", 1, 8472, False)
    assert c.count() == 255
    subnets = list(c.subnets())
    assert subnets[0] == ipaddress.IPv4Network("10.244.1.0/24")
    assert subnets[-1] == ipaddress.IPv4Network("10.244.255.0/24")


@pytest.mark.parametrize("network,sublen", [("10.0.0.0/8", 24), ("10.0.0.0/22", 24), ("10.0.0.0/23", 25),
                                            ("10.0.0.0/26", 28), ("10.0.0.0/28", 30)])
def test_subnet_len_rule(network: str, sublen: int) -> None:
    assert NetConf.parse({"Network": network}).SubnetLen == sublen


def test_udp_port_default_and_roundtrip() -> None:
    c = NetConf.parse({"Network": "10.5.0.0/16", "SubnetLen": 26, "SubnetMin": "10.5.0.64",
                       "SubnetMax": "10.5.1.0", "Backend": {"Type": "udp"}})
    assert c.Backend.Port == 8285
    assert [str(s) for s in c.subnets()] == ["10.5.0.64/26", "10.5.0.128/26", "10.5.0.192/26", "10.5.1.0/26"]
    doc = json.loads(c.to_json())
    assert doc == {"Network": "10.5.0.0/16", "SubnetLen": 26, "SubnetMin": "10.5.0.64", "SubnetMax": "10.5.1.0",
                   "Backend": {"Type": "udp", "Port": 8285}}
    assert NetConf.parse(c.to_json()) == c


def test_vxlan_json_and_unknown_backend_keys_kept() -> None:
    c = NetConf.parse({"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": 4096, "GBP": True}})
    assert c.to_dict()["Backend"] == {"Type": "vxlan", "VNI": 4096, "Port": 8472, "DirectRouting": False, "GBP": True}
    assert NetConf.parse({"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}).to_dict()["Backend"] == {"Type": "host-gw"}


@pytest.mark.parametrize("doc,field", [
    ("not json", "(document)"),
    ([], "(document)"),
    ({}, "Network"),
    ({"Network": "10.244.0.0/33"}, "Network"),
    ({"Network": "10.0.0.0/29"}, "Network"),
    ({"Network": "10.244.0.0/16", "SubnetLen": 31}, "SubnetLen"),
    ({"Network": "10.244.0.0/16", "SubnetLen": 17}, "SubnetLen"),
    ({"Network": "10.244.0.0/16", "SubnetLen": "24"}, "SubnetLen"),
    ({"Network": "10.244.0.0/16", "SubnetMin": "10.245.0.0"}, "SubnetMin"),
    ({"Network": "10.244.0.0/16", "SubnetMin": "10.244.1.7"}, "SubnetMin"),
    ({"Network": "10.244.0.0/16", "SubnetMax": "nope"}, "SubnetMax"),
    ({"Network": "10.244.0.0/16", "SubnetMin": "10.244.9.0", "SubnetMax": "10.244.8.0"}, "SubnetMin"),
    ({"Network": "10.244.0.0/16", "Backend": "vxlan"}, "Backend"),
    ({"Network": "10.244.0.0/16", "Backend": {"Type": "ipip"}}, "Backend.Type"),
    ({"Network": "10.244.0.0/16", "Backend": {"VNI": 1 << 24}}, "Backend.VNI"),
    ({"Network": "10.244.0.0/16", "Backend": {"Port": 0}}, "Backend.Port"),
    ({"Network": "10.244.0.0/16", "Backend": {"DirectRouting": "yes"}}, "Backend.DirectRouting"),
])
def test_errors_name_the_field(doc: object, field: str) -> None:
    with pytest.raises(NetConfError) as exc:
        NetConf.parse(doc)  # type: ignore[arg-type]
    assert exc.value.field == field
    assert field in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_allows() -> None:
    c = NetConf.parse({"Network": "10.244.0.0/16", "SubnetMax": "10.244.9.0"})
    assert c.allows(ipaddress.IPv4Network("10.244.9.0/24"))
    assert not c.allows(ipaddress.IPv4Network("10.244.0.0/24"))
    assert not c.allows(ipaddress.IPv4Network("10.244.10.0/24"))
    assert not c.allows(ipaddress.IPv4Network("10.244.4.0/25"))


def test_subnet_env_written_like_flannel(tmp_path: Path) -> None:
    env = subnetenv.SubnetEnv(ipaddress.IPv4Network("10.244.0.0/16"), ipaddress.IPv4Network("10.244.1.0/24"), 1450, True)
    path = subnetenv.write(tmp_path / "run" / "flannel" / "subnet.env", env)
    assert path.read_text() == (
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    )
    assert subnetenv.read(path) == env
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    subnetenv.write(path, subnetenv.SubnetEnv(env.network, env.subnet, 1400, False))
    assert "FLANNEL_IPMASQ=false\n" in path.read_text()
    assert subnetenv.read_subnet(path) == ipaddress.IPv4Network("10.244.1.0/24")
    assert subnetenv.read_subnet(tmp_path / "absent") is None


def test_subnet_env_errors() -> None:
    with pytest.raises(ValueError, match="FLANNEL_MTU is missing"):
        subnetenv.parse("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n")
    with pytest.raises(ValueError, match="FLANNEL_SUBNET"):
        subnetenv.parse("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=x\nFLANNEL_MTU=1450\n")
