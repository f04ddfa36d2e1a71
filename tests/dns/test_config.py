"""DNSConfig: defaults, validation, the config file and the command line (`kmesh dns`) mapping onto it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kmesh.dns.command import config_from_flags, dns
from tests.support.cluster import Cluster
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


def parse(*args: str) -> DNSConfig:
    """The DNSConfig `kmesh dns ARGS` would run with."""
    ctx = dns.make_context("kmesh dns", list(args))
    return config_from_flags(**ctx.params)


def test_config_file_and_flags_override_it(tmp_path: Path) -> None:
    f = tmp_path / "dns.yaml"
    f.write_text("zone: lab.local\nttl: 30\npods: insecure\nupstreams: ['127.0.0.1:5300']\nmetrics_port: 9999\n")
    cfg = parse("--kubeconfig", "k", "--config", str(f), "--ttl", "7", "--listen", "127.0.0.1:5353")
    assert (cfg.zone, cfg.ttl, cfg.pods, cfg.upstreams, cfg.listen, cfg.metrics_port) == (
        "lab.local", 7, "insecure", ["127.0.0.1:5300"], ["127.0.0.1:5353"], 9999)
    cfg = parse("--kubeconfig", "k", "--config", str(f), "--metrics-port", "-1", "--no-forward")
    assert cfg.metrics_port is None and cfg.upstreams == []
    f.write_text("zonee: typo\n")
    with pytest.raises(ValueError, match="zonee"):
        DNSConfig.from_file(f)


def test_flags_alone() -> None:
    cfg = parse("--kubeconfig", "k", "--pods", "verified", "--allow", "10.0.0.0/8", "--workers", "2")
    assert (cfg.pods, cfg.allowed_networks, cfg.workers, cfg.kubeconfig, cfg.upstreams, cfg.metrics_port) == (
        "verified", ["10.0.0.0/8"], 2, "k", None, 9153)


def test_kubeconfig_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "/a/one.yaml:/b/two.yaml")
    assert parse("--zone", "x.local").kubeconfig == "/a/one.yaml:/b/two.yaml"
    assert parse("--kubeconfig", "/c/k.yaml").kubeconfig == "/c/k.yaml"


async def test_python_m_kmesh_dns_is_the_same_command() -> None:
    import sys

    import trio

    res = await trio.run_process([sys.executable, "-m", "kmesh.dns", "--help"], capture_stdout=True)
    out = res.stdout.decode()
    assert "--kubeconfig" in out and "--no-forward" in out and "KUBECONFIG" in out
    res = await trio.run_process([sys.executable, "-m", "kmesh.cli", "dns", "--pods", "sometimes"],
                                 capture_stderr=True, check=False)
    assert res.returncode == 2 and "--pods" in res.stderr.decode()


async def test_kmesh_dns_reads_the_api_through_kubeconfig(cluster: Cluster, tmp_path: Path) -> None:
    """`kmesh dns` with no --kubeconfig: $KUBECONFIG, a list whose first file is missing (skipped, as kubectl does)."""
    import re
    import sys

    import trio

    from kmesh.lab.procs import start_until, stop_process
    from tests.conftest import require_binary

    dig = require_binary("dig")
    kubeconfig = f"{tmp_path / 'missing.yaml'}:{cluster.kubeconfig}"
    proc = await start_until(["env", f"KUBECONFIG={kubeconfig}", sys.executable, "-m", "kmesh.cli", "-v", "dns",
                              "--listen", "127.0.0.1:0", "--metrics-port", "-1", "--no-forward"], b"cluster DNS for")
    try:
        found = re.search(rb"'127\.0\.0\.1', (\d+)", proc.startup_output)  # type: ignore[attr-defined]
        assert found, proc.startup_output  # type: ignore[attr-defined]
        answer: list[str] = []
        with trio.fail_after(30):
            while not answer:  # the server listens before its informers have synced
                res = await trio.run_process([dig, "@127.0.0.1", "-p", found.group(1).decode(), "+short",
                                              "kubernetes.default.svc.cluster.local"], capture_stdout=True)
                answer = res.stdout.decode().split()
                if not answer:
                    await trio.sleep(0.1)
        assert answer == ["10.96.0.1"]
    finally:
        await stop_process(proc)
