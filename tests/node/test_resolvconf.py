"""A pod's resolv.conf and hosts as the kubelet composes them (dnsPolicy, dnsConfig merge, limits)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kmesh.node.resolvconf import (
    DNSConfig,
    dns_policy,
    host_network_hosts_file,
    parse_resolv_conf,
    pod_dns_config,
    pod_hosts_file,
    pod_resolv_conf,
    read_host_config,
)

Obj = dict[str, Any]
HOST = DNSConfig(["192.168.1.1", "192.168.1.2"], ["corp.example", "lab.example"], ["timeout:2", "ndots:1"])


def _pod(ns: str = "team-a", **spec: Any) -> Obj:
    return {"metadata": {"name": "web-0", "namespace": ns}, "spec": {"containers": [], **spec}}


def _cfg(pod: Obj, host: DNSConfig | None = HOST) -> DNSConfig:
    cfg, _ = pod_dns_config(pod, cluster_dns=["10.96.0.10"], cluster_domain="cluster.local", host=host)
    return cfg


def test_cluster_first_puts_the_pods_search_path_before_the_nodes() -> None:
    text, warnings = pod_resolv_conf(_pod(), cluster_dns=["10.96.0.10"], cluster_domain="cluster.local", host=DNSConfig())
    assert text == (
        "search team-a.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.96.0.10\n"
        "options ndots:5\n"
    )
    assert warnings == []
    cfg = _cfg(_pod())
    assert cfg.servers == ["10.96.0.10"]  # the cluster DNS is the only server
    assert cfg.searches == ["team-a.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example", "lab.example"]
    assert cfg.options == ["ndots:5"]  # the node's options are not kept


def test_policies_default_none_and_host_network() -> None:
    assert _cfg(_pod(dnsPolicy="Default")) == HOST
    assert _cfg(_pod(dnsPolicy="None", dnsConfig={"nameservers": ["1.1.1.1"]})) == DNSConfig(["1.1.1.1"], [], [])
    # ClusterFirst on the host network falls back to Default; ClusterFirstWithHostNet keeps the cluster DNS.
    assert dns_policy(_pod(hostNetwork=True)) == "host"
    assert _cfg(_pod(hostNetwork=True)) == HOST
    assert _cfg(_pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")).servers == ["10.96.0.10"]
    assert dns_policy(_pod(dnsPolicy="ClusterFirstWithHostNet")) == "cluster"
    # --resolv-conf="" (no host file): upstream points Default pods at the local machine.
    assert _cfg(_pod(dnsPolicy="Default"), host=None) == DNSConfig(["127.0.0.1"], ["."], [])


def test_no_cluster_dns_falls_back_to_default_with_a_warning() -> None:
    cfg, warnings = pod_dns_config(_pod(), cluster_dns=[], cluster_domain="cluster.local", host=HOST)
    assert cfg == HOST and "Falling back" in warnings[0]


def test_dns_config_is_appended_without_duplicates_and_options_merge_by_name() -> None:
    pod = _pod(dnsConfig={
        "nameservers": ["10.96.0.10", "8.8.8.8"],
        "searches": ["svc.cluster.local", "extra.example"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}, {"name": "attempts", "value": "3"}],
    })
    cfg = _cfg(pod, host=DNSConfig())
    assert cfg.servers == ["10.96.0.10", "8.8.8.8"]
    assert cfg.searches == ["team-a.svc.cluster.local", "svc.cluster.local", "cluster.local", "extra.example"]
    assert cfg.options == ["ndots:2", "edns0", "attempts:3"]
    assert cfg.render().splitlines()[-1] == "options ndots:2 edns0 attempts:3"


def test_limits_cut_nameservers_and_search_paths() -> None:
    pod = _pod(dnsPolicy="None", dnsConfig={
        "nameservers": ["1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4"],
        "searches": [f"d{i}.example" for i in range(40)] + ["x" * 254],
    })
    cfg, warnings = pod_dns_config(pod, cluster_dns=["10.96.0.10"], cluster_domain="cluster.local", host=HOST)
    assert cfg.servers == ["1.1.1.1", "1.0.0.1", "8.8.8.8"]
    assert len(cfg.searches) == 32 and cfg.searches[-1] == "d31.example"
    assert any("Nameserver limits" in w for w in warnings) and any("Search Line limits" in w for w in warnings)
    long = _pod(dnsPolicy="None", dnsConfig={"searches": ["a" * 250 + f".{i:02d}" for i in range(10)]})
    cfg, _ = pod_dns_config(long, cluster_dns=[], cluster_domain="cluster.local", host=None)
    assert len(" ".join(cfg.searches)) <= 2048 and len(cfg.searches) == 8  # 8 * 253 + 7 spaces


def test_parse_resolv_conf_like_upstream(tmp_path: Path) -> None:
    text = (
        "# generated\nnameserver 10.0.0.1\nsearch old.example\nnameserver 10.0.0.2\n"
        "search a.example. . b.example\noptions ndots:2\noptions rotate\n"
    )
    assert parse_resolv_conf(text) == DNSConfig(["10.0.0.1", "10.0.0.2"], ["a.example", "b.example"], ["rotate"])
    f = tmp_path / "resolv.conf"
    f.write_text(text)
    assert read_host_config(f) == parse_resolv_conf(text)
    assert read_host_config(tmp_path / "missing") == DNSConfig()
    assert read_host_config(None) is None


def test_hosts_file_with_subdomain_and_aliases() -> None:
    plain = pod_hosts_file(_pod(), "10.244.1.5", "web-0", "cluster.local")
    assert plain.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
    assert plain.endswith("10.244.1.5\tweb-0\n")
    pod = _pod(subdomain="web", hostAliases=[{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]}])
    text = pod_hosts_file(pod, "10.244.1.5", "web-0", "cluster.local")
    assert "10.244.1.5\tweb-0.web.team-a.svc.cluster.local\tweb-0\n" in text
    assert text.endswith("\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n")
    host = host_network_hosts_file(pod, "127.0.0.1 localhost\n192.168.56.11 node-1")
    assert host.startswith("# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n192.168.56.11 node-1\n")
    assert "10.1.2.3\tfoo.local" in host
