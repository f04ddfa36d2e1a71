"""ClusterIP and NodePort allocation through the real API server (admission), and repair after a restart."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from kmesh.api import errors as E
from kmesh.api.kinds import get as kind_named
from kmesh.apiserver.server import RunningServer, ServerConfig, run_server
from kmesh.client.api import Client
from kmesh.client.kubeconfig import Credentials
from kmesh.apiserver.service_ips import ServiceIPAllocator
from tests.support.cluster import Cluster, start_cluster

Obj = dict[str, Any]


def svc(name: str, *, type_: str = "ClusterIP", cluster_ip: str | None = None, node_ports: list[int] | None = None,
        ns: str = "default", **spec: Any) -> Obj:
    ports: list[Obj] = [{"name": "http", "port": 80, "targetPort": 8080}, {"name": "dns", "port": 53, "protocol": "UDP"}]
    for p, np_ in zip(ports, node_ports or []):
        p["nodePort"] = np_
    body: Obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                 "spec": {"type": type_, "selector": {"app": name}, "ports": ports, **spec}}
    if cluster_ip is not None:
        body["spec"]["clusterIP"] = cluster_ip
    return body


async def refused(c: Client, body: Obj) -> E.APIError:
    with pytest.raises(E.APIError) as err:
        await c.create(body)
    return err.value


async def test_kubernetes_service_gets_first_address_and_points_at_the_server(nursery: trio.Nursery, tmp_path: Path) -> None:
    cl = await start_cluster(nursery, tmp_path, loopback_ok=True)
    try:
        k = await cl.client.get("Service", "kubernetes", "default")
        assert k["spec"]["clusterIP"] == "10.96.0.1" and k["spec"]["clusterIPs"] == ["10.96.0.1"]
        assert k["metadata"]["labels"] == {"component": "apiserver", "provider": "kubernetes"}
        port = int(cl.server.url.rsplit(":", 1)[1])
        assert k["spec"]["ports"] == [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]
        ep = await cl.client.get("Endpoints", "kubernetes", "default")
        assert ep["subsets"] == [{"addresses": [{"ip": "127.0.0.1"}],
                                  "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]
        sl = await cl.client.get("EndpointSlice", "kubernetes", "default")
        assert sl["metadata"]["labels"]["kubernetes.io/service-name"] == "kubernetes"
        assert sl["endpoints"][0]["addresses"] == ["127.0.0.1"] and sl["ports"][0]["port"] == port
        table = await cl.kubectl("get", "svc", "kubernetes")
        assert "10.96.0.1" in table.stdout and "443/TCP" in table.stdout
    finally:
        await cl.client.aclose()


async def test_sim_service_cidr_first_address(nursery: trio.Nursery, tmp_path: Path) -> None:
    cl = await start_cluster(nursery, tmp_path, service_cidr="127.96.0.0/16", loopback_ok=True,
                             advertise_address="127.0.0.1")
    try:
        k = await cl.client.get("Service", "kubernetes", "default")
        assert k["spec"]["clusterIP"] == "127.96.0.1"
        created = await cl.client.create(svc("web"))
        assert ipaddress.ip_address(created["spec"]["clusterIP"]) in ipaddress.ip_network("127.96.0.0/16")
    finally:
        await cl.client.aclose()


async def test_cluster_ip_allocation_rules(cluster: Cluster) -> None:
    c = cluster.client
    a = await c.create(svc("a"))
    spec = a["spec"]
    assert ipaddress.ip_address(spec["clusterIP"]) in ipaddress.ip_network("10.96.0.0/12")
    assert spec["clusterIPs"] == [spec["clusterIP"]]
    assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
    assert "nodePort" not in spec["ports"][0]

    dns = await c.create(svc("kube-dns", cluster_ip="10.96.0.10", ns="kube-system"))
    assert dns["spec"]["clusterIP"] == "10.96.0.10" and dns["spec"]["clusterIPs"] == ["10.96.0.10"]

    err = await refused(c, svc("taken", cluster_ip="10.96.0.10"))
    assert err.code == 422
    assert err.causes == [{"reason": "FieldValueInvalid", "field": "spec.clusterIPs", "message":
                           'Invalid value: []string{"10.96.0.10"}: failed to allocate IP 10.96.0.10: '
                           "provided IP is already allocated"}]
    err = await refused(c, svc("outside", cluster_ip="10.200.0.1"))
    assert err.code == 422 and err.causes[0]["field"] == "spec.clusterIPs"
    assert err.causes[0]["message"].endswith(
        "failed to allocate IP 10.200.0.1: the provided IP (10.200.0.1) is not in the valid range. "
        "The range of valid IPs is 10.96.0.0/12")
    assert err.message.startswith('Service "outside" is invalid: spec.clusterIPs: Invalid value:')
    for name in ("taken", "outside"):  # nothing stored on error
        with pytest.raises(E.APIError):
            await c.get("Service", name, "default")

    headless = await c.create(svc("headless", cluster_ip="None"))
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["clusterIPs"] == ["None"]
    ext = await c.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
                          "spec": {"type": "ExternalName", "externalName": "example.com"}})
    assert "clusterIP" not in ext["spec"] and "ipFamilies" not in ext["spec"]

    # Release on delete: the address can be requested again.
    await c.delete("Service", "kube-dns", "kube-system")
    again = await c.create(svc("dns2", cluster_ip="10.96.0.10"))
    assert again["spec"]["clusterIP"] == "10.96.0.10"

    # A create that fails after allocation (name taken) gives the address back.
    err = await refused(c, svc("a", cluster_ip="10.96.0.20"))
    assert err.code == 409
    assert (await c.create(svc("b", cluster_ip="10.96.0.20")))["spec"]["clusterIP"] == "10.96.0.20"

    # kubectl shows the same.
    out = await cluster.kubectl("get", "svc", "dns2", "-o", "jsonpath={.spec.clusterIP}")
    assert out.stdout == "10.96.0.10"


async def test_node_port_allocation_rules(cluster: Cluster) -> None:
    c = cluster.client
    np_ = await c.create(svc("np", type_="NodePort"))
    ports = [p["nodePort"] for p in np_["spec"]["ports"]]
    assert all(30000 <= p <= 32767 for p in ports) and len(set(ports)) == 2
    assert np_["spec"]["clusterIP"]

    fixed = await c.create(svc("fixed", type_="NodePort", node_ports=[30080]))
    assert fixed["spec"]["ports"][0]["nodePort"] == 30080
    err = await refused(c, svc("clash", type_="NodePort", node_ports=[31000, 30080]))
    assert err.code == 422
    assert err.causes == [{"reason": "FieldValueInvalid", "field": "spec.ports[1].nodePort",
                           "message": "Invalid value: 30080: provided port is already allocated"}]
    # The first port of the refused Service was given back.
    assert (await c.create(svc("p31000", type_="NodePort", node_ports=[31000])))["spec"]["ports"][0]["nodePort"] == 31000
    err = await refused(c, svc("low", type_="NodePort", node_ports=[20000]))
    assert err.causes[0]["field"] == "spec.ports[0].nodePort"
    assert err.causes[0]["message"] == ("Invalid value: 20000: provided port is not in the valid range. "
                                        "The range of valid ports is 30000-32767")

    # LoadBalancer gets node ports; externalTrafficPolicy Local a health-check port too.
    lb = await c.create(svc("lb", type_="LoadBalancer", externalTrafficPolicy="Local"))
    assert all(p.get("nodePort") for p in lb["spec"]["ports"]) and lb["spec"]["healthCheckNodePort"] >= 30000

    # Type changes allocate and release.
    cur = await c.get("Service", "fixed", "default")
    cur["spec"]["type"] = "ClusterIP"
    for p in cur["spec"]["ports"]:
        p.pop("nodePort", None)
    cur["spec"].pop("externalTrafficPolicy", None)
    changed = await c.update(cur)
    assert all("nodePort" not in p for p in changed["spec"]["ports"])
    assert (await c.create(svc("reuse", type_="NodePort", node_ports=[30080])))["spec"]["ports"][0]["nodePort"] == 30080
    plain = await c.create(svc("plain"))
    patched = await c.patch("Service", "plain", {"spec": {"type": "NodePort"}}, "default")
    assert plain["spec"]["clusterIP"] == patched["spec"]["clusterIP"]
    assert all(30000 <= p["nodePort"] <= 32767 for p in patched["spec"]["ports"])
    # kubectl's patch path (strategic merge, retried on conflicts) keeps the allocation stable.
    await cluster.kubectl("patch", "svc", "plain", "-p", json.dumps({"metadata": {"labels": {"x": "y"}}}))
    again = await c.get("Service", "plain", "default")
    assert again["spec"]["ports"] == patched["spec"]["ports"]

    # Deleting releases node ports.
    await c.delete("Service", "reuse", "default")
    assert (await c.create(svc("reuse2", type_="NodePort", node_ports=[30080])))["spec"]["ports"][0]["nodePort"] == 30080


async def test_dry_run_and_failed_update_give_back(cluster: Cluster) -> None:
    c = cluster.client
    await c.create(svc("a"))
    resp = await c.request("POST", kind_named("Service").path("default"), params={"dryRun": "All"},
                           body=svc("dry", type_="NodePort", node_ports=[30500], cluster_ip="10.96.0.50"))
    assert resp["spec"]["clusterIP"] == "10.96.0.50"
    created = await c.create(svc("real", type_="NodePort", node_ports=[30500], cluster_ip="10.96.0.50"))
    assert created["spec"]["ports"][0]["nodePort"] == 30500

    # An update with a stale resourceVersion fails: what it took is given back.
    stale = await c.get("Service", "a", "default")
    await c.patch("Service", "a", {"metadata": {"labels": {"v": "2"}}}, "default")
    stale["spec"]["type"] = "NodePort"
    stale["spec"]["ports"][0]["nodePort"] = 30600
    with pytest.raises(E.APIError) as err:
        await c.update(stale)
    assert err.value.code == 409
    assert (await c.create(svc("p30600", type_="NodePort", node_ports=[30600])))["spec"]["ports"][0]["nodePort"] == 30600


class _Server:
    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.stopped = trio.Event()

    async def run(self, cfg: ServerConfig, *, task_status: trio.TaskStatus[RunningServer]) -> None:
        try:
            with self.scope:
                async with trio.open_nursery() as n:
                    task_status.started(await n.start(run_server, cfg))
        finally:
            self.stopped.set()

    async def stop(self) -> None:
        self.scope.cancel()
        await self.stopped.wait()


async def test_repair_after_restart_on_sqlite(nursery: trio.Nursery, tmp_path: Path) -> None:
    db = f"sqlite://{tmp_path / 'store.db'}"
    cfg = ServerConfig(data_dir=tmp_path, store_url=db, port=0, service_cidr="10.97.0.0/28")
    first = _Server()
    srv = await nursery.start(first.run, cfg)
    async with Client(Credentials(srv.url, srv.pki.ca_pem(), srv.pki.token)) as c:
        held = {(await c.create(svc(f"s{i}", type_="NodePort")))["spec"]["clusterIP"] for i in range(6)}
        ports = {p["nodePort"] for s in (await c.list("Service", "default"))["items"]
                 for p in s["spec"].get("ports", []) if p.get("nodePort")}
    await first.stop()

    second = _Server()
    srv = await nursery.start(second.run, cfg)
    try:
        async with Client(Credentials(srv.url, srv.pki.ca_pem(), srv.pki.token)) as c:
            ip = min(held)
            err = await refused(c, svc("dup", cluster_ip=ip))
            assert err.code == 422 and "already allocated" in err.causes[0]["message"]
            err = await refused(c, svc("dupport", type_="NodePort", node_ports=[min(ports)]))
            assert err.code == 422 and err.causes[0]["field"] == "spec.ports[0].nodePort"
            # 14 usable addresses: kubernetes + 6 held; the other 7 are handed out, then the range is full.
            fresh = {(await c.create(svc(f"n{i}")))["spec"]["clusterIP"] for i in range(7)}
            assert not fresh & held and len(fresh) == 7
            assert "10.97.0.1" not in fresh and "10.97.0.1" not in held
            err = await refused(c, svc("full"))
            assert err.code == 500 and "range is full" in err.message
    finally:
        await second.stop()


# ---------------------------------------------------------------------- the allocator alone


def _obj(uid: str, type_: str, ip: str | None, ports: list[int]) -> Obj:
    spec: Obj = {"type": type_, "ports": [{"port": 80 + i, "protocol": "TCP", **({"nodePort": p} if p else {})}
                                          for i, p in enumerate(ports)]}
    if ip:
        spec["clusterIP"] = ip
    return {"metadata": {"name": uid, "namespace": "default", "uid": uid}, "spec": spec}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["create", "delete", "update"]), st.integers(0, 5),
                          st.sampled_from(["ClusterIP", "NodePort", "ExternalName"]),
                          st.sampled_from([None, "10.96.0.5", "10.96.0.6"]),
                          st.lists(st.sampled_from([0, 30001, 30002]), min_size=1, max_size=2)),
                max_size=30))
def test_allocator_never_double_allocates(ops: list[tuple[str, int, str, str | None, list[int]]]) -> None:
    """Whatever sequence of writes succeeds, no address or port is held by two stored Services."""
    alloc = ServiceIPAllocator("10.96.0.0/28", (30000, 30004))
    kind = kind_named("Service")
    stored: dict[str, Obj] = {}

    async def main() -> None:
        for op, n, type_, ip, ports in ops:
            uid = f"u{n}"
            obj = _obj(uid, type_, ip if type_ != "ExternalName" else None,
                       ports if type_ == "NodePort" else [0] * len(ports))
            try:
                if op == "create" and uid not in stored:
                    await alloc.on_create(kind, obj)
                    stored[uid] = obj
                elif op == "delete" and uid in stored:
                    await alloc.on_delete(kind, stored.pop(uid))
                elif op == "update" and uid in stored:
                    old = stored[uid]
                    if old["spec"]["type"] != "ExternalName" and type_ != "ExternalName":
                        obj["spec"]["clusterIP"] = old["spec"].get("clusterIP")
                    await alloc.on_update(kind, obj, old)
                    await alloc.on_updated(kind, obj, old)
                    stored[uid] = obj
            except E.APIError:
                pass
            ips = [s["spec"]["clusterIP"] for s in stored.values() if s["spec"].get("clusterIP")]
            assert len(ips) == len(set(ips))
            held = [(u, p["nodePort"]) for u, s in stored.items() for p in s["spec"]["ports"] if p.get("nodePort")]
            owners: dict[int, str] = {}
            for u, p in held:
                assert owners.setdefault(p, u) == u
            for s in stored.values():
                for ip_ in ([s["spec"]["clusterIP"]] if s["spec"].get("clusterIP") else []):
                    assert alloc.ip_owner(ip_) == s["metadata"]["uid"]

    trio.run(main)
