"""Service objects → the proxy model: what convert.py reads from status and spec."""

from __future__ import annotations

from typing import Any

from kmesh.proxy.convert import build_state


def lb_service(ingress: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "default", "name": "lb"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.60", "clusterIPs": ["10.96.0.60"],
                 "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]},
        "status": {"loadBalancer": {"ingress": ingress}},
    }


def test_load_balancer_ips_with_ip_mode_proxy_are_left_to_the_load_balancer() -> None:
    svc = lb_service([{"ip": "203.0.113.1", "ipMode": "VIP"}, {"ip": "203.0.113.2", "ipMode": "Proxy"},
                      {"ip": "203.0.113.3"}, {"hostname": "lb.example.com"}])
    (sp,) = build_state([svc], []).services.values()
    assert sp.load_balancer_ips == ("203.0.113.1", "203.0.113.3")


def test_load_balancer_ips_only_for_type_load_balancer() -> None:
    svc = lb_service([{"ip": "203.0.113.1", "ipMode": "VIP"}])
    svc["spec"]["type"] = "NodePort"
    (sp,) = build_state([svc], []).services.values()
    assert sp.load_balancer_ips == ()


def test_ipv6_addresses_are_left_to_an_ipv6_proxy() -> None:
    svc = lb_service([{"ip": "2001:db8::1"}, {"ip": "203.0.113.1"}])
    svc["spec"]["externalIPs"] = ["2001:db8::2", "198.51.100.7"]
    svc["spec"]["loadBalancerSourceRanges"] = ["2001:db8::/64", " 192.0.2.0/24"]
    (sp,) = build_state([svc], []).services.values()
    assert (sp.external_ips, sp.load_balancer_ips, sp.load_balancer_source_ranges) == (
        ("198.51.100.7",), ("203.0.113.1",), ("192.0.2.0/24",))
    svc["spec"]["clusterIP"] = "fd00:10:96::50"
    assert build_state([svc], []).services == {}
