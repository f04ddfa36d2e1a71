"""``kmesh bench modes`` on its own namespaces: the kube-proxy modes' real rules for many Services.

The facts checked are upstream's (the nftables blog of 2025): iptables
matches Services one rule after another, so the last Service of many is
reached later than the first; nftables looks the destination up in a map,
so it is not. Only the direction is checked, never a time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kmesh.bench.modes import ModesUsage, parse_modes, parse_sizes, run
from kmesh.bench.modesworker import MAX_ENDPOINTS, count_rules, endpoint_ip, service_ip
from kmesh.net import netns
from kmesh.net.netns_check import netns_usable
from tests.conftest import require

KMESH = [sys.executable, "-m", "kmesh.cli"]


def test_arguments() -> None:
    assert parse_sizes("1000,100,100") == [100, 1000]
    assert parse_modes("nftables, iptables") == ["nftables", "iptables"]
    for bad, param in (("x", "--services"), ("0", "--services"), ("", "--services")):
        with pytest.raises(ModesUsage) as exc:
            parse_sizes(bad)
        assert exc.value.param == param
    with pytest.raises(ModesUsage, match="unknown mode 'ebpf'"):
        parse_modes("iptables,ebpf")


def test_addresses_and_counts() -> None:
    assert service_ip(0) == "10.100.0.0" and service_ip(256) == "10.100.1.0"
    assert endpoint_ip(0, 0, 2) == "10.250.0.1" and endpoint_ip(1, 1, 2) == "10.250.0.4"
    with pytest.raises(ValueError):
        endpoint_ip(MAX_ENDPOINTS, 0, 1)
    assert count_rules("iptables", "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j X\n-A X -j Y\nCOMMIT\n") == 2
    assert count_rules("ipvs", "TCP  10.100.0.0:80 rr\n  -> 10.250.0.1:80 Masq 1 0 0\n") == 2


def test_cli_refuses_bad_arguments() -> None:
    out = subprocess.run([*KMESH, "bench", "modes", "--modes", "bpf"], capture_output=True, text=True)
    assert out.returncode == 2 and "--modes" in out.stderr
    out = subprocess.run([*KMESH, "bench", "modes", "--services", "100000"], capture_output=True, text=True)
    assert out.returncode == 2 and "--services" in out.stderr and "endpoint addresses" in out.stderr


def _left() -> list[str]:
    return [ns for ns in netns.names("kmesh-bm")]


@pytest.mark.netns
def test_iptables_grows_with_services_and_nftables_does_not() -> None:
    require(netns_usable(), "root and network namespaces")
    res = run(["iptables", "nftables", "ipvs"], [100, 1000], samples=300)
    assert _left() == []
    rows = {(r.mode, r.services): r for r in res.results}
    assert set(rows) == {(m, n) for m in ("iptables", "nftables", "ipvs") for n in (100, 1000)}
    assert all(r.errors == 0 for r in res.results)
    ipt, nft = rows[("iptables", 1000)], rows[("nftables", 1000)]

    def ratio(r):  # type: ignore[no-untyped-def]
        return r.connect_us["last"]["p01"] / r.connect_us["first"]["p01"]

    # the last of 1000 Services is reached later than the first in iptables mode; in nftables mode it is not
    assert ipt.connect_us["last"]["p01"] > ipt.connect_us["first"]["p01"]
    assert ratio(ipt) > ratio(nft), (ipt.connect_us, nft.connect_us)
    # more Services, more rules; a sync and a change each cost something
    for mode in ("iptables", "nftables", "ipvs"):
        assert rows[(mode, 1000)].rules > rows[(mode, 100)].rules > 0
        assert rows[(mode, 1000)].full_sync_s > 0 and rows[(mode, 1000)].change_sync_ms > 0
        assert rows[(mode, 1000)].proxy_rss_mb > 0
    ipvs = rows[("ipvs", 1000)]
    assert "ip_vs" in ipvs.served_by  # kernel ip_vs, or kmesh's own table where the kernel has none


@pytest.mark.netns
def test_cli_json_plot_and_budget(tmp_path: Path) -> None:
    require(netns_usable(), "root and network namespaces")
    png = tmp_path / "modes.png"
    out = subprocess.run([*KMESH, "bench", "modes", "--services", "10,20,20000", "--modes", "userspace",
                          "--samples", "10", "--budget", "1", "--json", "--plot", str(png)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [(r["mode"], r["services"]) for r in doc["results"]] == [("userspace", 10), ("userspace", 20)]
    assert doc["skipped"] and doc["skipped"][0]["services"] == 20000 and "--budget" in doc["skipped"][0]["reason"]
    assert set(doc["results"][0]["connect_us"]) == {"first", "middle", "last"}
    assert png.stat().st_size > 10000
    assert _left() == []
