"""The EndpointSlice and Endpoints controllers against a real API server, pods driven as a kubelet would."""

from __future__ import annotations

from typing import Any

import trio

from kmesh.client.informer import Informer
from kmesh.controllers.endpoint_model import TRIGGER_ANNOTATION
from tests.controllers.conftest import Env
from tests.controllers.kubelet import add_node, pod

Obj = dict[str, Any]
SVC_LABEL = "kubernetes.io/service-name"


def service(name: str, selector: dict[str, str] | None, *, ports: list[Obj] | None = None, **spec: Any) -> Obj:
    body: Obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
                 "spec": {"ports": ports or [{"name": "http", "port": 80, "targetPort": 9376}], **spec}}
    if selector is not None:
        body["spec"]["selector"] = selector
    return body


def slices_of(inf: Informer, svc: str) -> list[Obj]:
    return [s for s in inf.list("default") if (s["metadata"].get("labels") or {}).get(SVC_LABEL) == svc
            and s["metadata"]["labels"].get("endpointslice.kubernetes.io/managed-by")]


def endpoints_of(inf: Informer, svc: str) -> dict[str, Obj]:
    """Address -> endpoint across the Service's slices."""
    return {e["addresses"][0]: e for s in slices_of(inf, svc) for e in s.get("endpoints") or []}


def by_pod(inf: Informer, svc: str) -> dict[str, Obj]:
    return {e["targetRef"]["name"]: e for e in endpoints_of(inf, svc).values()}


async def wait(inf: Informer, pred: Any, timeout: float = 20) -> None:
    with trio.fail_after(timeout):
        await inf.wait_for(pred)


async def test_slices_follow_pods_readiness_and_termination(env: Env) -> None:
    c = env.client
    await add_node(c, "n1", labels={"topology.kubernetes.io/zone": "z1"})
    svc = await c.create(service("web", {"app": "web"}))
    slices = env.informer("EndpointSlice")
    # No pods yet: one placeholder slice without endpoints.
    await wait(slices, lambda i: len(slices_of(i, "web")) == 1)
    placeholder = slices_of(slices, "web")[0]
    assert placeholder["endpoints"] == [] and not placeholder.get("ports")
    assert placeholder["metadata"]["generateName"] == "web-"
    assert placeholder["metadata"]["ownerReferences"][0]["uid"] == svc["metadata"]["uid"]
    assert placeholder["addressType"] == "IPv4"

    env.kubelet.not_ready.add(("default", "web-2"))
    for i in range(3):
        await c.create(pod(f"web-{i}", {"app": "web"}, node="n1", ports=[{"containerPort": 9376}]))
    await c.create(pod("other", {"app": "db"}, node="n1"))
    await wait(slices, lambda i: len(by_pod(i, "web")) == 3)
    eps = by_pod(slices, "web")
    assert set(eps) == {"web-0", "web-1", "web-2"}
    assert eps["web-0"]["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert eps["web-2"]["conditions"] == {"ready": False, "serving": False, "terminating": False}
    assert eps["web-0"]["nodeName"] == "n1" and eps["web-0"]["zone"] == "z1"
    assert eps["web-0"]["targetRef"]["kind"] == "Pod"
    sl = slices_of(slices, "web")
    assert len(sl) == 1 and sl[0]["ports"] == [{"name": "http", "port": 9376, "protocol": "TCP"}]

    # Readiness comes and goes.
    await env.kubelet.set_ready("web-2", True)
    await wait(slices, lambda i: by_pod(i, "web").get("web-2", {}).get("conditions", {}).get("ready") is True)
    await env.kubelet.set_ready("web-0", False)
    await wait(slices, lambda i: by_pod(i, "web")["web-0"]["conditions"]["ready"] is False)

    # Graceful deletion: terminating, not ready, still serving (it was Ready) until the kubelet finishes.
    env.kubelet.nodes = set()  # the kubelet stops acting: the pod stays terminating
    await c.delete("Pod", "web-1", "default")
    await wait(slices, lambda i: by_pod(i, "web")["web-1"]["conditions"]["terminating"] is True)
    assert by_pod(slices, "web")["web-1"]["conditions"] == {"ready": False, "serving": True, "terminating": True}
    await c.delete("Pod", "web-1", "default", grace_period=0)
    await wait(slices, lambda i: "web-1" not in by_pod(i, "web"))

    # Scale down to nothing: back to one placeholder.
    for name in ("web-0", "web-2"):
        await c.delete("Pod", name, "default", grace_period=0)
    await wait(slices, lambda i: len(slices_of(i, "web")) == 1 and not slices_of(i, "web")[0]["endpoints"])

    # The Service goes: its slices are garbage collected.
    await c.delete("Service", "web", "default")
    await wait(slices, lambda i: not slices_of(i, "web"))


async def test_legacy_endpoints_and_publish_not_ready(env: Env) -> None:
    c = env.client
    await add_node(c, "n1")
    await c.create(service("web", {"app": "web"}, ports=[{"name": "http", "port": 80, "targetPort": 9376},
                                                        {"name": "udp", "port": 53, "protocol": "UDP", "targetPort": 53}]))
    await c.create(service("all", {"app": "web"}, publishNotReadyAddresses=True))
    env.kubelet.not_ready.add(("default", "b"))
    await c.create(pod("a", {"app": "web"}, node="n1", hostname="a", subdomain="web"))
    await c.create(pod("b", {"app": "web"}, node="n1"))
    legacy = env.informer("Endpoints")
    slices = env.informer("EndpointSlice")

    def ready_split(i: Informer) -> bool:
        ep = i.get("web", "default")
        if ep is None or not ep.get("subsets"):
            return False
        ss = ep["subsets"][0]
        return len(ss.get("addresses") or []) == 1 and len(ss.get("notReadyAddresses") or []) == 1

    await wait(legacy, ready_split)
    ss = legacy.get("web", "default")["subsets"]
    assert len(ss) == 1
    addr = ss[0]["addresses"][0]
    assert addr["hostname"] == "a" and addr["nodeName"] == "n1"
    assert addr["targetRef"]["name"] == "a" and addr["targetRef"]["kind"] == "Pod"
    assert ss[0]["notReadyAddresses"][0]["targetRef"]["name"] == "b"
    assert ss[0]["ports"] == [{"name": "http", "port": 9376, "protocol": "TCP"},
                              {"name": "udp", "port": 53, "protocol": "UDP"}]
    assert TRIGGER_ANNOTATION in legacy.get("web", "default")["metadata"]["annotations"]
    await wait(slices, lambda i: len(by_pod(i, "web")) == 2)
    assert by_pod(slices, "web")["a"]["hostname"] == "a" and "hostname" not in by_pod(slices, "web")["b"]

    # publishNotReadyAddresses: every endpoint ready, everywhere.
    await wait(slices, lambda i: len(by_pod(i, "all")) == 2)
    assert all(e["conditions"]["ready"] for e in by_pod(slices, "all").values())
    assert not by_pod(slices, "all")["b"]["conditions"]["serving"]
    await wait(legacy, lambda i: len(((i.get("all", "default") or {}).get("subsets") or [{}])[0].get("addresses") or []) == 2)

    # Deleting the Service deletes its Endpoints.
    await c.delete("Service", "web", "default")
    await wait(legacy, lambda i: i.get("web", "default") is None)


async def test_selectorless_service_is_left_alone(env: Env) -> None:
    c = env.client
    await c.create(service("manual", None))
    mine = await c.create({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "manual-1", "namespace": "default", "labels": {SVC_LABEL: "manual"}},
        "addressType": "IPv4", "endpoints": [{"addresses": ["10.1.2.3"]}], "ports": [{"name": "http", "port": 80}],
    })
    ep = await c.create({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "manual", "namespace": "default"},
                         "subsets": [{"addresses": [{"ip": "10.1.2.3"}], "ports": [{"name": "http", "port": 80}]}]})
    # A Service with a selector created after it is a barrier: once it has its slice, "manual" was seen too.
    await c.create(service("barrier", {"app": "x"}))
    slices = env.informer("EndpointSlice")
    await wait(slices, lambda i: len(slices_of(i, "barrier")) == 1)
    await wait(env.informer("Endpoints"), lambda i: i.get("barrier", "default") is not None)
    assert [s["metadata"]["name"] for s in slices.list("default")
            if s["metadata"]["labels"].get(SVC_LABEL) == "manual"] == ["manual-1"]
    assert (await c.get("EndpointSlice", "manual-1", "default"))["metadata"]["resourceVersion"] == \
        mine["metadata"]["resourceVersion"]
    assert (await c.get("Endpoints", "manual", "default"))["metadata"]["resourceVersion"] == \
        ep["metadata"]["resourceVersion"]


async def test_named_ports_group_pods_by_port_set(env: Env) -> None:
    c = env.client
    await add_node(c, "n1")
    await c.create(service("named", {"app": "n"}, ports=[{"name": "http", "port": 80, "targetPort": "web"}]))
    await c.create(pod("p8080", {"app": "n"}, node="n1", ports=[{"name": "web", "containerPort": 8080}]))
    await c.create(pod("p9090", {"app": "n"}, node="n1", ports=[{"name": "web", "containerPort": 9090}]))
    await c.create(pod("q8080", {"app": "n"}, node="n1", ports=[{"name": "web", "containerPort": 8080}]))
    await c.create(pod("none", {"app": "n"}, node="n1", ports=[{"name": "other", "containerPort": 7070}]))
    slices = env.informer("EndpointSlice")
    await wait(slices, lambda i: len(by_pod(i, "named")) == 4)
    groups = {tuple(p["port"] for p in s.get("ports") or []): sorted(e["targetRef"]["name"] for e in s["endpoints"])
              for s in slices_of(slices, "named")}
    assert groups == {(8080,): ["p8080", "q8080"], (9090,): ["p9090"], (): ["none"]}
    legacy = env.informer("Endpoints")
    await wait(legacy, lambda i: len((i.get("named", "default") or {}).get("subsets") or []) == 2)
    subsets = legacy.get("named", "default")["subsets"]
    assert sorted((ss["ports"][0]["port"], len(ss["addresses"])) for ss in subsets) == [(8080, 2), (9090, 1)]


async def test_more_than_100_endpoints_split_and_writes_stay_minimal(env: Env) -> None:
    c = env.client
    await add_node(c, "n1")
    await c.create(service("big", {"app": "big"}))
    sem = trio.Semaphore(20)

    async def make(i: int) -> None:
        async with sem:
            await c.create(pod(f"big-{i:03d}", {"app": "big"}, node="n1"))

    async with trio.open_nursery() as n:
        for i in range(150):
            n.start_soon(make, i)
    slices = env.informer("EndpointSlice")
    await wait(slices, lambda i: len(endpoints_of(i, "big")) == 150 and
               all(e["conditions"]["ready"] for e in endpoints_of(i, "big").values()), timeout=60)
    sizes = sorted(len(s["endpoints"]) for s in slices_of(slices, "big"))
    assert max(sizes) <= 100 and sum(sizes) == 150 and len(sizes) == 2

    # One pod turns not ready: exactly one slice is written.
    before = {s["metadata"]["name"]: s["metadata"]["resourceVersion"] for s in slices_of(slices, "big")}
    await env.kubelet.set_ready("big-077", False)
    await wait(slices, lambda i: by_pod(i, "big")["big-077"]["conditions"]["ready"] is False)
    holder_slice = next(s for s in slices_of(slices, "big")
                        if any(e["targetRef"]["name"] == "big-077" for e in s["endpoints"]))
    holder = holder_slice["metadata"]["name"]
    other = next(n for n in before if n != holder)
    # A second change in the same slice: once it shows, every write of the first is in too.
    second = next(e["targetRef"]["name"] for e in holder_slice["endpoints"] if e["targetRef"]["name"] != "big-077")
    await env.kubelet.set_ready(second, False)
    await wait(slices, lambda i: by_pod(i, "big")[second]["conditions"]["ready"] is False)
    after = {s["metadata"]["name"]: s["metadata"]["resourceVersion"] for s in slices_of(slices, "big")}
    assert after.keys() == before.keys()
    assert after[other] == before[other] and after[holder] != before[holder]


async def test_last_change_trigger_time_is_the_ready_transition(env: Env) -> None:
    c = env.client
    await add_node(c, "n1")
    env.kubelet.not_ready.add(("default", "t"))
    await c.create(service("trig", {"app": "t"}))
    await c.create(pod("t", {"app": "t"}, node="n1"))
    slices = env.informer("EndpointSlice")
    await wait(slices, lambda i: "t" in by_pod(i, "trig"))
    flipped = await env.kubelet.set_ready("t", True)
    ready_at = next(x for x in flipped["status"]["conditions"] if x["type"] == "Ready")["lastTransitionTime"]
    await wait(slices, lambda i: by_pod(i, "trig")["t"]["conditions"]["ready"])
    sl = next(s for s in slices_of(slices, "trig") if s["endpoints"])
    assert sl["metadata"]["annotations"][TRIGGER_ANNOTATION] == ready_at
