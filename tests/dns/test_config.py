"""DNSConfig: defaults, validation, the config file and the command line mapping onto it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kmesh.dns.__main__ import build_parser, config_from_args
from kmesh.dns.config import (
    DEFAULT_ALLOWED,
    DNSConfig,
    parse_hostport,
    resolv_conf_nameservers,
)


def test_defaults_match_coredns_in_kubernetes() -> None:
    cfg = DNSConfig()
    assert (cfg.zone, cfg.ttl, cfg.pods, cfg.metrics_port) == ("cluster.local", 5, "disabled", 9153)
    assert cfg.allowed_networks == list(DEFAULT_ALLOWED)
    assert DNSConfig(zone="Example.Org.").zone == "example.org"


@pytest.mark.parametrize("bad", [{"pods": "sometimes"}, {"ttl": -1}, {"allowed_networks": ["nonsense"]}])
def test_bad_settings_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        DNSConfig(**bad)


def test_hostports_and_resolv_conf(tmp_path: Path) -> None:
    assert parse_hostport("10.0.0.1") == ("10.0.0.1", 53)
    assert parse_hostport("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_hostport("[::1]:54") == ("::1", 54)
    assert parse_hostport("::1") == ("::1", 53)
    rc = tmp_path / "resolv.conf"
    rc.write_text("search x\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\noptions ndots:5\n")
    assert resolv_conf_nameservers(rc) == ["10.0.0.2:53", "[fe80::1]:53"]
    assert DNSConfig(upstreams=["1.1.1.1", "127.0.0.1:5353"]).upstream_addresses() == [("1.1.1.1", 53), ("127.0.0.1", 5353)]


def test_config_file_and_flags_override_it(tmp_path: Path) -> None:
    f = tmp_path / "dns.yaml"
    f.write_text("zone: lab.local\nttl: 30\npods: insecure\nupstreams: ['127.0.0.1:5300']\nmetrics_port: 9999\n")
    ns = build_parser().parse_args(["--kubeconfig", "k", "--config", str(f), "--ttl", "7", "--listen", "127.0.0.1:5353"])
    cfg = config_from_args(ns)
    assert (cfg.zone, cfg.ttl, cfg.pods, cfg.upstreams, cfg.listen, cfg.metrics_port) == (
        "lab.local", 7, "insecure", ["127.0.0.1:5300"], ["127.0.0.1:5353"], 9999)
    cfg = config_from_args(build_parser().parse_args(["--kubeconfig", "k", "--config", str(f), "--metrics-port", "-1", "--no-forward"]))
    assert cfg.metrics_port is None and cfg.upstreams == []
    f.write_text("zonee: typo\n")
    with pytest.raises(ValueError, match="zonee"):
        DNSConfig.from_file(f)


def test_flags_alone() -> None:
    cfg = config_from_args(build_parser().parse_args(["--kubeconfig", "k", "--pods", "verified", "--allow", "10.0.0.0/8", "--workers", "2"]))
    assert (cfg.pods, cfg.allowed_networks, cfg.workers, cfg.kubeconfig, cfg.upstreams, cfg.metrics_port) == (
        "verified", ["10.0.0.0/8"], 2, "k", None, 9153)
