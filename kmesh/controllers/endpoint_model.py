"""Pure functions behind the endpoint controllers: pod → endpoint, ports, grouping, slice plans.

Nothing here talks to the API: given a Service, its pods and the slices that
exist, they compute what should exist. Behaviour follows upstream's
EndpointSlice and Endpoints controllers (pkg/controller/endpointslice,
pkg/controller/endpoint).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterable

from kmesh.api.obj import Obj
from kmesh.controllers import podutil

Key = tuple[str, str]
PortKey = tuple[tuple[str, int, str, str], ...]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
HEADLESS_LABEL = "service.kubernetes.io/headless"
TRIGGER_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"
OVER_CAPACITY_ANNOTATION = "endpoints.kubernetes.io/over-capacity"
MAX_ENDPOINTS_PER_SLICE = 100
MAX_ENDPOINTS_ADDRESSES = 1000  # legacy Endpoints are truncated past this


# ------------------------------------------------------------------ services and pods


def svc_key(svc: Obj) -> Key:
    """(namespace, name) of a Service."""
    m = podutil.md(svc)
    return (m.get("namespace") or "", m.get("name") or "")


def is_headless(svc: Obj) -> bool:
    """``clusterIP: None``."""
    return (svc.get("spec") or {}).get("clusterIP") == "None"


def should_be_in_endpoints(pod: Obj, include_terminating: bool) -> bool:
    """Upstream's ShouldPodBeInEndpoints: has an IP, not finished, terminating only if asked."""
    if not podutil.pod_ips(pod):
        return False
    if not include_terminating and podutil.is_terminating(pod):
        return False
    return not podutil.is_terminal(pod)


def find_port(pod: Obj, svc_port: Obj) -> int | None:
    """The pod port a Service port targets: a number, or a named container port of the same protocol."""
    target = svc_port.get("targetPort")
    if isinstance(target, str):
        proto = svc_port.get("protocol") or "TCP"
        for c in (pod.get("spec") or {}).get("containers") or []:
            for p in c.get("ports") or []:
                if p.get("name") == target and (p.get("protocol") or "TCP") == proto:
                    return int(p["containerPort"])
        return None
    if isinstance(target, int) and target > 0:
        return target
    port = svc_port.get("port")
    return int(port) if isinstance(port, int) else None


def endpoint_ports(svc: Obj, pod: Obj) -> list[Obj]:
    """The resolved ports of one pod (ports that do not resolve are left out, as upstream)."""
    out = []
    for sp in (svc.get("spec") or {}).get("ports") or []:
        n = find_port(pod, sp)
        if n is None:
            continue
        p: Obj = {"name": sp.get("name") or "", "port": n, "protocol": sp.get("protocol") or "TCP"}
        if sp.get("appProtocol"):
            p["appProtocol"] = sp["appProtocol"]
        out.append(p)
    return out


def port_key(ports: Iterable[Obj]) -> PortKey:
    """An order-independent key of a port set."""
    return tuple(sorted(
        (p.get("name") or "", int(p.get("port") or 0), p.get("protocol") or "TCP", p.get("appProtocol") or "")
        for p in ports
    ))


def hostname_for(pod: Obj, svc: Obj) -> str | None:
    """``spec.hostname`` when the pod's subdomain is this Service (same namespace)."""
    spec = pod.get("spec") or {}
    if spec.get("hostname") and spec.get("subdomain") == podutil.md(svc).get("name") \
            and podutil.md(pod).get("namespace") == podutil.md(svc).get("namespace"):
        return str(spec["hostname"])
    return None


def target_ref(pod: Obj) -> Obj:
    """The ObjectReference of a pod."""
    m = podutil.md(pod)
    return {"kind": "Pod", "namespace": m.get("namespace", ""), "name": m.get("name", ""), "uid": m.get("uid", "")}


def slice_endpoint(pod: Obj, svc: Obj, ip: str, zone: str | None) -> Obj:
    """One EndpointSlice endpoint for a pod (conditions as upstream's podToEndpoint)."""
    serving = podutil.is_ready(pod)
    terminating = podutil.is_terminating(pod)
    ready = bool((svc.get("spec") or {}).get("publishNotReadyAddresses")) or (serving and not terminating)
    ep: Obj = {
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "targetRef": target_ref(pod),
    }
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        ep["nodeName"] = node
    if zone:
        ep["zone"] = zone
    hn = hostname_for(pod, svc)
    if hn:
        ep["hostname"] = hn
    return ep


def endpoint_fingerprint(pod: Obj) -> tuple[Any, ...]:
    """What of a pod matters to endpoints: a pod update that keeps it unchanged is ignored."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    ports = tuple(
        (p.get("name"), p.get("containerPort"), p.get("protocol"))
        for c in spec.get("containers") or [] for p in c.get("ports") or []
    )
    return (
        tuple(sorted(podutil.labels(pod).items())), status.get("podIP"), tuple(podutil.pod_ips(pod)),
        podutil.is_ready(pod), podutil.is_terminating(pod), status.get("phase"), spec.get("nodeName"),
        spec.get("hostname"), spec.get("subdomain"), ports,
    )


def trigger_time(pod: Obj) -> str:
    """A pod's last change that matters to endpoints: its Ready transition, else its creation."""
    c = podutil.condition(pod, "Ready")
    if c is not None and c.get("lastTransitionTime"):
        return str(c["lastTransitionTime"])
    return str(podutil.md(pod).get("creationTimestamp") or "")


class TriggerTimes:
    """Upstream's TriggerTimeTracker: the earliest change among those since a Service's last sync.

    A pod counts as changed when what endpoints show of it changed (timestamps
    have whole seconds, so two changes within a second keep the same time).
    """

    def __init__(self) -> None:
        self._state: dict[Key, tuple[str, dict[Key, tuple[Any, ...]]]] = {}

    def compute(self, svc: Obj, pods: Iterable[Obj]) -> str | None:
        """The trigger time for this sync (None when nothing that has a time changed)."""
        key = svc_key(svc)
        prev_svc, prev_pods = self._state.get(key, ("", {}))
        svc_t = str(podutil.md(svc).get("creationTimestamp") or "")
        times = [svc_t] if svc_t and svc_t != prev_svc else []
        cur: dict[Key, tuple[Any, ...]] = {}
        for pod in pods:
            m = podutil.md(pod)
            pk = (m.get("namespace") or "", m.get("name") or "")
            t = trigger_time(pod)
            state = (t, endpoint_fingerprint(pod))
            cur[pk] = state
            if t and prev_pods.get(pk) != state:
                times.append(t)
        self._state[key] = (svc_t, cur)
        return min(times) if times else None

    def forget(self, key: Key) -> None:
        """Drop a deleted Service's state."""
        self._state.pop(key, None)


# ------------------------------------------------------------------ slices


@dataclass
class Group:
    """The endpoints of one port set."""

    ports: list[Obj]
    endpoints: dict[str, Obj] = field(default_factory=dict)  # first address -> endpoint


def desired_groups(svc: Obj, pods: Iterable[Obj], zone_of: Any = None) -> dict[PortKey, Group]:
    """The Service's endpoints grouped by port set (upstream's desired state per slice family)."""
    groups: dict[PortKey, Group] = {}
    for pod in sorted(pods, key=lambda p: podutil.md(p).get("name") or ""):
        if not should_be_in_endpoints(pod, include_terminating=True):
            continue
        ips = podutil.pod_ips(pod, 4)
        if not ips:
            continue
        ports = endpoint_ports(svc, pod)
        pk = port_key(ports)
        g = groups.get(pk)
        if g is None:
            g = groups[pk] = Group(ports)
        if ips[0] in g.endpoints:
            continue
        node = (pod.get("spec") or {}).get("nodeName")
        zone = zone_of(node) if zone_of is not None and node else None
        g.endpoints[ips[0]] = slice_endpoint(pod, svc, ips[0], zone)
    return groups


def slice_labels(svc: Obj) -> dict[str, str]:
    """Labels of the Service's slices: its own labels plus the service-name and managed-by labels."""
    out = {k: v for k, v in podutil.labels(svc).items() if k not in (SERVICE_NAME_LABEL, MANAGED_BY_LABEL)}
    if is_headless(svc):
        out[HEADLESS_LABEL] = ""
    out[SERVICE_NAME_LABEL] = podutil.md(svc).get("name") or ""
    out[MANAGED_BY_LABEL] = MANAGED_BY
    return out


def service_owner_ref(svc: Obj) -> Obj:
    """The ownerReference of a slice to its Service."""
    m = podutil.md(svc)
    return {"apiVersion": "v1", "kind": "Service", "name": m.get("name", ""), "uid": m.get("uid", ""),
            "controller": True, "blockOwnerDeletion": True}


@dataclass
class SlicePlan:
    """Writes that bring a Service's slices in line: each object is the full body to send."""

    create: list[Obj] = field(default_factory=list)
    update: list[Obj] = field(default_factory=list)
    delete: list[Obj] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.create or self.update or self.delete)


def _addr(ep: Obj) -> str:
    a = ep.get("addresses") or [""]
    return str(a[0])


class _Slot:
    """An existing slice and the endpoints it will hold."""

    def __init__(self, obj: Obj, eps: list[Obj], changed: bool) -> None:
        self.obj = obj
        self.eps = eps
        self.changed = changed


def _meta_stale(s: Obj, labels: dict[str, str], owner: Obj) -> bool:
    m = podutil.md(s)
    refs = m.get("ownerReferences") or []
    return (m.get("labels") or {}) != labels or not any(r.get("uid") == owner["uid"] for r in refs)


def _body(svc: Obj, base: Obj | None, ports: list[Obj] | None, eps: list[Obj], labels: dict[str, str],
          owner: Obj, trigger: str | None) -> Obj:
    if base is not None:
        obj = copy.deepcopy(base)
    else:
        m = podutil.md(svc)
        obj = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"generateName": f"{m.get('name')}-", "namespace": m.get("namespace")}}
    md_ = obj["metadata"]
    md_["labels"] = dict(labels)
    refs = [r for r in md_.get("ownerReferences") or [] if r.get("uid") != owner["uid"] and r.get("kind") != "Service"]
    md_["ownerReferences"] = [owner, *refs]
    if trigger:
        md_.setdefault("annotations", {})[TRIGGER_ANNOTATION] = trigger
    obj["addressType"] = "IPv4"
    obj["endpoints"] = eps
    if ports is None:
        obj.pop("ports", None)
    else:
        obj["ports"] = ports
    return obj


def plan_slices(svc: Obj, groups: dict[PortKey, Group], existing: list[Obj], *,
                max_per_slice: int = MAX_ENDPOINTS_PER_SLICE, trigger: str | None = None) -> SlicePlan:
    """Creates, updates and deletes that make ``existing`` hold ``groups``, touching as few slices as possible.

    Endpoints stay in the slice that has them; new ones go first into slices
    that change anyway, then into an unchanged slice they fit in whole, then
    into new slices. A Service without endpoints keeps one empty placeholder.
    """
    labels = slice_labels(svc)
    owner = service_owner_ref(svc)
    plan = SlicePlan()
    by_key: dict[PortKey, list[Obj]] = {}
    for s in sorted(existing, key=lambda o: podutil.md(o).get("name") or ""):
        by_key.setdefault(port_key(s.get("ports") or []), []).append(s)

    if not any(g.endpoints for g in groups.values()):
        return _plan_placeholder(svc, existing, labels, owner, trigger)

    for pk, group in groups.items():
        if not group.endpoints:
            continue
        remaining = dict(group.endpoints)
        slots: list[_Slot] = []
        for s in by_key.pop(pk, []):
            eps = [remaining.pop(_addr(ep)) for ep in s.get("endpoints") or [] if _addr(ep) in remaining]
            changed = eps != (s.get("endpoints") or []) or _meta_stale(s, labels, owner) \
                or (s.get("ports") or []) != group.ports
            slots.append(_Slot(s, eps, changed))
        left = list(remaining.values())
        for slot in slots:
            if not left:
                break
            if slot.changed and slot.eps:
                room = max_per_slice - len(slot.eps)
                slot.eps.extend(left[:room])
                left = left[room:]
        while left:
            fits = [s for s in slots if not s.changed and max_per_slice - len(s.eps) >= len(left)]
            if fits:
                best = min(fits, key=lambda s: max_per_slice - len(s.eps))
                best.eps.extend(left)
                best.changed = True
                break
            empty = next((s for s in slots if s.changed and not s.eps), None)
            chunk, left = left[:max_per_slice], left[max_per_slice:]
            if empty is not None:
                empty.eps = chunk
            else:
                plan.create.append(_body(svc, None, group.ports, chunk, labels, owner, trigger))
        for slot in slots:
            if not slot.eps:
                plan.delete.append(slot.obj)
            elif slot.changed:
                plan.update.append(_body(svc, slot.obj, group.ports, slot.eps, labels, owner, trigger))
    for stale in by_key.values():
        plan.delete.extend(stale)
    return plan


def _plan_placeholder(svc: Obj, existing: list[Obj], labels: dict[str, str], owner: Obj,
                      trigger: str | None) -> SlicePlan:
    plan = SlicePlan()
    keep = next((s for s in existing if not s.get("endpoints") and not s.get("ports")), None)
    if keep is None and existing:
        keep = existing[0]
    for s in existing:
        if s is not keep:
            plan.delete.append(s)
    if keep is None:
        plan.create.append(_body(svc, None, None, [], labels, owner, trigger))
    elif keep.get("endpoints") or keep.get("ports") or _meta_stale(keep, labels, owner):
        plan.update.append(_body(svc, keep, None, [], labels, owner, trigger))
    return plan


# ------------------------------------------------------------------ legacy Endpoints


def endpoints_subsets(svc: Obj, pods: Iterable[Obj]) -> tuple[list[Obj], bool]:
    """The Endpoints subsets of a Service (grouped by port set, sorted) and whether they were truncated."""
    spec = svc.get("spec") or {}
    tolerate = bool(spec.get("publishNotReadyAddresses"))
    groups: dict[PortKey, tuple[list[Obj], list[Obj], list[Obj]]] = {}
    seen: set[tuple[PortKey, str]] = set()
    for pod in pods:
        if not should_be_in_endpoints(pod, include_terminating=tolerate):
            continue
        ips = podutil.pod_ips(pod, 4)
        if not ips:
            continue
        addr: Obj = {"ip": ips[0], "targetRef": target_ref(pod)}
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            addr["nodeName"] = node
        hn = hostname_for(pod, svc)
        if hn:
            addr["hostname"] = hn
        if spec.get("ports"):
            ports = endpoint_ports(svc, pod)
            if not ports:
                continue
        elif is_headless(svc):
            ports = []
        else:
            continue
        pk = port_key(ports)
        if (pk, ips[0]) in seen:
            continue
        seen.add((pk, ips[0]))
        g = groups.setdefault(pk, (sorted(ports, key=lambda p: (p["name"], p["port"])), [], []))
        (g[1] if tolerate or podutil.is_ready(pod) else g[2]).append(addr)
    subsets = []
    total = 0
    truncated = False
    for pk in sorted(groups):
        ports, ready, not_ready = groups[pk]
        ready.sort(key=lambda a: a["ip"])
        not_ready.sort(key=lambda a: a["ip"])
        room = MAX_ENDPOINTS_ADDRESSES - total
        if len(ready) + len(not_ready) > room:
            truncated = True
            ready = ready[:room]
            not_ready = not_ready[: max(0, room - len(ready))]
        total += len(ready) + len(not_ready)
        if not ready and not not_ready:
            continue
        ss: Obj = {}
        if ready:
            ss["addresses"] = ready
        if not_ready:
            ss["notReadyAddresses"] = not_ready
        if ports:
            ss["ports"] = ports
        subsets.append(ss)
    return subsets, truncated


def endpoints_labels(svc: Obj) -> dict[str, str]:
    """Labels of a Service's Endpoints: the Service's, plus the headless label."""
    out = dict(podutil.labels(svc))
    if is_headless(svc):
        out[HEADLESS_LABEL] = ""
    return out
