"""--nodeport-addresses: parsing, defaults per mode, and the addresses chosen."""

import pytest

from kmesh.proxy import nodeports


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
