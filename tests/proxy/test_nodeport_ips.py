"""Upstream's ``ContainsIPv4Loopback`` cases (pkg/proxy/util/nodeport_addresses_test.go) and the loopback test the modes use."""

from __future__ import annotations

import pytest

from kmesh.proxy.nodeport_ips import contains_ipv4_loopback, is_loopback


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
