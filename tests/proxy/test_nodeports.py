"""--nodeport-addresses: parsing, defaults per mode, the addresses chosen, and upstream's
``ContainsIPv4Loopback`` cases (pkg/proxy/util/nodeport_addresses_test.go)."""

import pytest

from kmesh.proxy import nodeports
from kmesh.proxy.nodeports import contains_ipv4_loopback, is_loopback


def test_parse_accepts_cidrs_lists_and_primary() -> None:
    assert nodeports.parse(["192.168.56.0/24,10.0.0.1/32"]) == ("192.168.56.0/24", "10.0.0.1/32")
    assert nodeports.parse(["192.168.56.7/24"]) == ("192.168.56.0/24",)
    assert nodeports.parse(["primary"]) == ("primary",)
    assert nodeports.parse([]) == ()


@pytest.mark.parametrize("bad, word", [("nonsense", "'nonsense'"), ("192.168.56.11", "prefix length"),
                                        ("300.1.1.0/24", "'300.1.1.0/24'")])
def test_parse_names_the_bad_value(bad: str, word: str) -> None:
    with pytest.raises(ValueError, match="--nodeport-addresses") as err:
        nodeports.parse([bad])
    assert word in str(err.value)


def test_primary_cannot_mix_with_cidrs() -> None:
    with pytest.raises(ValueError, match="primary"):
        nodeports.parse(["primary", "10.0.0.0/8"])


def test_defaults_follow_upstream_per_mode() -> None:
    assert nodeports.effective((), "nftables") == ("primary",)
    assert nodeports.effective((), "iptables") == ()
    assert nodeports.effective(("10.0.0.0/8",), "nftables") == ("10.0.0.0/8",)


def test_select() -> None:
    node, local = ["192.168.56.11"], ["192.168.56.11", "10.244.1.1", "127.0.0.1"]
    assert nodeports.select((), node, local) is nodeports.ALL
    assert nodeports.select(("0.0.0.0/0",), node, local) is nodeports.ALL
    assert nodeports.select(("primary",), node, local) == ["192.168.56.11"]
    assert nodeports.select(("10.244.0.0/16",), node, local) == ["10.244.1.1"]
    assert nodeports.select(("127.0.0.0/8", "192.168.56.0/24"), node, local) == ["192.168.56.11", "127.0.0.1"]
    assert nodeports.select(("172.16.0.0/12",), node, local) == []


def test_needs_local_only_for_cidrs_to_match() -> None:
    assert not nodeports.needs_local(())
    assert not nodeports.needs_local(("primary",))
    assert not nodeports.needs_local(("0.0.0.0/0", "10.0.0.0/8"))  # every address anyway
    assert nodeports.needs_local(("10.0.0.0/8",))


@pytest.mark.parametrize(("addresses", "want"), [
    ((), True),  # no flag: every address, loopback included
    (("0.0.0.0/0",), True),
    (("primary",), False),  # the node IP's /32 (a loopback node IP is left out)
    (("224.0.0.0/24", "192.168.0.0/16", "fd00:1:d::/64", "::1/128"), False),  # IPv6 loopback does not count
    (("224.0.0.0/24", "192.168.0.0/16", "fd00:1:d::/64", "127.0.2.0/28"), True),  # a smaller loopback range
    (("224.0.0.0/24", "192.168.0.0/16", "fd00:1:d::/64", "64.0.0.0/2"), True),  # within a larger range
    (("128.0.2.0/28", "224.0.0.0/24", "192.168.0.0/16", "fd00:1:d::/64"), False),
])
def test_contains_ipv4_loopback(addresses: tuple[str, ...], want: bool) -> None:
    assert contains_ipv4_loopback(addresses) is want


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.3.2.1") and is_loopback("::1")
    assert not is_loopback("192.168.56.11") and not is_loopback("::2")
