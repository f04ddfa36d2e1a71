"""``kmesh.net.ifaces.choose``: the Vagrant pitfall on one kernel.

A namespace made like a VirtualBox VM: ``eth0`` with 10.0.2.15/24 and the
default route (via 10.0.2.2 in a second namespace, "the NAT"), ``eth1`` on the
host-only network with 192.168.56.11/24 and MTU 1400. ``choose`` runs inside
that namespace, never in the one the tests run in.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from kmesh.net import netns
from kmesh.net.ifaces import Address, InterfaceError, choose
from kmesh.net.netns_check import netns_usable
from tests.conftest import require

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def vm() -> Iterator[str]:
    """The VM-like namespace's name (its peer namespace holds 10.0.2.2 and the other end of eth1)."""
    require(netns_usable(), "root and network namespaces")
    tag = secrets.token_hex(3)
    machine, peer = f"kmif{tag}-vm", f"kmif{tag}-peer"
    try:
        netns.add(machine)
        netns.add(peer)
        netns.add_veth(machine, "eth0", peer, "wan")
        netns.ip(peer, "addr", "add", "10.0.2.2/24", "dev", "wan")
        netns.ip(machine, "addr", "add", "10.0.2.15/24", "dev", "eth0")
        netns.ip(machine, "route", "add", "default", "via", "10.0.2.2", "dev", "eth0")
        netns.add_veth(machine, "eth1", peer, "lan", mtu=1400)
        netns.ip(machine, "link", "set", "eth1", "mtu", "1400")
        netns.ip(peer, "link", "set", "lan", "mtu", "1400")
        netns.ip(machine, "addr", "add", "192.168.56.11/24", "dev", "eth1")
        yield machine
    finally:
        for ns in (machine, peer):
            netns.delete(ns)


def _choose(ns: str, **kw: str) -> Address:
    return netns.call_in(ns, lambda: choose(**kw))


def test_the_subnet_holding_the_server_wins_over_the_default_route(vm: str) -> None:
    got = _choose(vm, server="192.168.56.10")
    assert (got.iface, got.ip, got.mtu, str(got.network)) == ("eth1", "192.168.56.11", 1400, "192.168.56.0/24")


def test_a_routed_server_takes_the_routes_interface(vm: str) -> None:
    got = _choose(vm, server="172.16.0.1")  # no subnet here holds it: the default route decides
    assert (got.iface, got.ip, got.mtu) == ("eth0", "10.0.2.15", 1500)


def test_iface_and_node_ip_decide_when_given(vm: str) -> None:
    assert _choose(vm, iface="eth0").ip == "10.0.2.15"
    assert _choose(vm, iface="eth0", server="192.168.56.10").iface == "eth0"  # the flag beats the subnet
    got = _choose(vm, node_ip="192.168.56.11")
    assert (got.iface, got.ip, got.mtu) == ("eth1", "192.168.56.11", 1400)
    assert _choose(vm, node_ip="10.0.2.15", server="192.168.56.10").iface == "eth0"


def test_an_address_not_on_the_machine_is_refused_with_what_there_is(vm: str) -> None:
    with pytest.raises(InterfaceError) as exc:
        _choose(vm, node_ip="192.168.56.99")
    message = str(exc.value)
    assert "--node-ip" in message and "192.168.56.99" in message
    assert "eth0 10.0.2.15/24" in message and "eth1 192.168.56.11/24" in message


def test_a_missing_interface_is_refused_naming_the_flag(vm: str) -> None:
    with pytest.raises(InterfaceError) as exc:
        _choose(vm, iface="eth7")
    message = str(exc.value)
    assert "--iface" in message and "eth7" in message
    assert "eth1 192.168.56.11/24" in message
    with pytest.raises(InterfaceError) as exc:  # lo has 127.0.0.1, but is not a way to the cluster
        _choose(vm, iface="lo")
    assert "--iface" in str(exc.value)
