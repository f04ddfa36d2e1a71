"""``kmesh trace``'s lab side: FROM and TO as the lab names them, turned into a probe plan.

FROM is a node or a pod (``[NS/]NAME``). TO is a pod (``[NS/]NAME``), a
Service (``svc/NAME``, ``svc/NS/NAME``, ``NAME.NS[.svc[.cluster.local]]``,
or its ClusterIP), an IP of a pod or node, or ``NODE:NODEPORT``. The API
gives the addresses, the Service's ports and its endpoints (EndpointSlices);
the plan lists every interface of every node and the eth0 of the pods at
both ends as capture points, and who owns each address, so that
``kmesh.packet.trace`` can name what it saw.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from kmesh.api import errors as E
from kmesh.client.api import APIUnavailable, Client
from kmesh.lab.links import LinkLab, NoLab
from kmesh.net import netns
from kmesh.packet import sniff
from kmesh.packet.trace import Plan

MAX_ENDPOINT_POINTS = 16
DNS_PORT = 53
DNS_PROBE_NAME = "kubernetes.default.svc.cluster.local"  # a UDP probe to port 53 asks a DNS server this
_SVC_SUFFIXES = (".svc.cluster.local", ".svc")


class TraceUsage(ValueError):
    """Bad input; ``param`` names the argument (``FROM``, ``TO``, ``--port``...)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(f"{param}: {message}")
        self.message = message
        self.param = param


@dataclass
class Target:
    """What TO resolved to."""

    text: str  # as the user wrote it, normalised: svc/default/web, pod default/web-x, node-1:30080
    ip: str
    port: int
    endpoints: set[tuple[str, int]] = field(default_factory=set)
    pods: list[dict[str, Any]] = field(default_factory=list)  # the pods behind it (to capture on)


@dataclass
class Snapshot:
    """The objects a trace needs, read once."""

    pods: list[dict[str, Any]]
    services: list[dict[str, Any]]
    slices: list[dict[str, Any]]


async def snapshot(lab: LinkLab) -> Snapshot:
    """Read pods, Services and EndpointSlices of every namespace."""
    try:
        async with Client.from_kubeconfig(lab.info.kubeconfig) as c:
            pods, _ = await c.list_all("Pod")
            services, _ = await c.list_all("Service")
            slices, _ = await c.list_all("EndpointSlice")
    except APIUnavailable as exc:
        raise NoLab(f"the API server of lab {lab.info.name} does not answer: {exc}") from None
    except E.APIError as exc:
        raise NoLab(f"the API server of lab {lab.info.name} refused to list objects: {exc.message}") from None
    return Snapshot(pods, services, slices)


def _ns_name(text: str, default_ns: str) -> tuple[str, str]:
    ns, _, name = text.rpartition("/")
    return ns or default_ns, name


def _find_pod(snap: Snapshot, ns: str, name: str) -> dict[str, Any] | None:
    for p in snap.pods:
        m = p["metadata"]
        if m["name"] == name and m.get("namespace") == ns:
            return p
    return None


def _pod_netns(lab: LinkLab, pod: dict[str, Any], param: str) -> str:
    m, spec = pod["metadata"], pod.get("spec") or {}
    node = spec.get("nodeName") or ""
    label = f"{m['namespace']}/{m['name']}"
    if node not in lab.nodes:
        raise TraceUsage(f"pod {label} is not running on a node of the lab yet", param)
    if spec.get("hostNetwork"):
        return lab.names.node(node)
    ns = lab.names.pod(node, m["name"], m["uid"])
    if not (pod.get("status") or {}).get("podIP") or not netns.exists(ns):
        raise TraceUsage(f"pod {label} has no network yet; is it running?", param)
    return ns


def resolve_from(lab: LinkLab, snap: Snapshot, text: str, default_ns: str) -> tuple[str, str, dict[str, Any] | None]:
    """(namespace, label, pod or None) of FROM: a node by name, else a pod ``[NS/]NAME``."""
    if "/" not in text and text in lab.nodes:
        return lab.names.node(text), text, None
    ns, name = _ns_name(text, default_ns)
    pod = _find_pod(snap, ns, name) if name and "/" not in ns else None
    if pod is None:
        raise TraceUsage(f"{text!r} is neither a node of lab {lab.info.name} ({', '.join(lab.nodes)}) nor a pod "
                         f"(no pod {name!r} in namespace {ns!r})", "FROM")
    return _pod_netns(lab, pod, "FROM"), name, pod


def _protocol(udp: bool) -> str:
    return "UDP" if udp else "TCP"


def _service_endpoints(snap: Snapshot, svc: dict[str, Any], port: dict[str, Any]) -> set[tuple[str, int]]:
    m = svc["metadata"]
    out: set[tuple[str, int]] = set()
    for s in snap.slices:
        sm = s["metadata"]
        if sm.get("namespace") != m["namespace"] or (sm.get("labels") or {}).get(
                "kubernetes.io/service-name") != m["name"]:
            continue
        for p in s.get("ports") or []:
            if (p.get("name") or "") != (port.get("name") or "") or (p.get("protocol") or "TCP") != (
                    port.get("protocol") or "TCP"):
                continue
            for ep in s.get("endpoints") or []:
                for a in ep.get("addresses") or []:
                    out.add((a, int(p["port"])))
    return out


def _service_pods(snap: Snapshot, endpoints: set[tuple[str, int]], ns: str) -> list[dict[str, Any]]:
    ips = {ip for ip, _ in endpoints}
    return [p for p in snap.pods if p["metadata"].get("namespace") == ns
            and (p.get("status") or {}).get("podIP") in ips and not (p.get("spec") or {}).get("hostNetwork")]


def _service_port(svc: dict[str, Any], port: int | None, udp: bool) -> dict[str, Any]:
    m = svc["metadata"]
    ports = [p for p in (svc.get("spec") or {}).get("ports") or [] if (p.get("protocol") or "TCP") == _protocol(udp)]
    listed = ", ".join(f"{p['port']}/{p.get('protocol') or 'TCP'}" for p in (svc.get("spec") or {}).get("ports") or [])
    if not ports:
        raise TraceUsage(f"Service {m['namespace']}/{m['name']} has no {_protocol(udp)} port (its ports: "
                         f"{listed or 'none'})", "--udp" if udp else "--port")
    if port is None:
        return ports[0]
    for p in ports:
        if int(p["port"]) == port:
            return p
    raise TraceUsage(f"Service {m['namespace']}/{m['name']} has no {_protocol(udp)} port {port} (its ports: "
                     f"{listed})", "--port")


def _service_target(snap: Snapshot, svc: dict[str, Any], port: int | None, udp: bool) -> Target:
    m = svc["metadata"]
    ip = (svc.get("spec") or {}).get("clusterIP") or ""
    if not ip or ip == "None":
        raise TraceUsage(f"Service {m['namespace']}/{m['name']} is headless: trace one of its pods instead", "TO")
    sp = _service_port(svc, port, udp)
    eps = _service_endpoints(snap, svc, sp)
    return Target(f"svc/{m['namespace']}/{m['name']}", ip, int(sp["port"]), eps,
                  _service_pods(snap, eps, m["namespace"]))


def _find_service(snap: Snapshot, ns: str, name: str) -> dict[str, Any] | None:
    for s in snap.services:
        if s["metadata"]["name"] == name and s["metadata"].get("namespace") == ns:
            return s
    return None


def _pod_target(pod: dict[str, Any], port: int | None, udp: bool, text: str) -> Target:
    m = pod["metadata"]
    ip = (pod.get("status") or {}).get("podIP") or ""
    if not ip:
        raise TraceUsage(f"pod {m['namespace']}/{m['name']} has no IP yet; is it running?", "TO")
    if port is None:
        for c in (pod.get("spec") or {}).get("containers") or []:
            for p in c.get("ports") or []:
                if (p.get("protocol") or "TCP") == _protocol(udp):
                    port = int(p["containerPort"])
                    break
            if port is not None:
                break
    if port is None:
        raise TraceUsage(f"pod {m['namespace']}/{m['name']} declares no {_protocol(udp)} containerPort: say which "
                         "port to probe", "--port")
    return Target(f"pod/{m['namespace']}/{m['name']}", ip, port, {(ip, port)}, [pod])


def _nodeport_target(lab: LinkLab, snap: Snapshot, node: str, port_text: str, udp: bool) -> Target:
    try:
        nodeport = int(port_text)
        if not 0 < nodeport < 65536:
            raise ValueError
    except ValueError:
        raise TraceUsage(f"{node}:{port_text}: {port_text!r} is not a port number", "TO") from None
    for svc in snap.services:
        for p in (svc.get("spec") or {}).get("ports") or []:
            if p.get("nodePort") == nodeport and (p.get("protocol") or "TCP") == _protocol(udp):
                eps = _service_endpoints(snap, svc, p)
                return Target(f"{node}:{nodeport}", lab.nodes[node].ip, nodeport, eps,
                              _service_pods(snap, eps, svc["metadata"]["namespace"]))
    # no Service has it: trace anyway, to show what the node does with it
    return Target(f"{node}:{nodeport}", lab.nodes[node].ip, nodeport)


def resolve_to(lab: LinkLab, snap: Snapshot, text: str, default_ns: str, port: int | None, udp: bool) -> Target:
    """TO as an address and port, with the endpoints behind it."""
    node, colon, rest = text.partition(":")
    if colon and node in lab.nodes:
        return _nodeport_target(lab, snap, node, rest, udp)
    if text.startswith(("svc/", "service/", "services/")):
        ns, name = _ns_name(text.split("/", 1)[1], default_ns)
        svc = _find_service(snap, ns, name) if name and "/" not in ns else None
        if svc is None:
            raise TraceUsage(f"no Service {name!r} in namespace {ns!r}", "TO")
        return _service_target(snap, svc, port, udp)
    try:
        ip = str(ipaddress.IPv4Address(text))
    except ValueError:
        ip = ""
    if ip:
        for svc in snap.services:
            if (svc.get("spec") or {}).get("clusterIP") == ip:
                return _service_target(snap, svc, port, udp)
        for pod in snap.pods:
            if (pod.get("status") or {}).get("podIP") == ip and not (pod.get("spec") or {}).get("hostNetwork"):
                return _pod_target(pod, port, udp, text)
        for n in lab.nodes.values():
            if n.ip == ip:
                if port is None:
                    raise TraceUsage(f"{ip} is node {n.name}: say which port (or write {n.name}:NODEPORT)", "--port")
                return _nodeport_target(lab, snap, n.name, str(port), udp)
        raise TraceUsage(f"{ip} is no Service's ClusterIP, pod's or node's address in lab {lab.info.name}", "TO")
    if "." in text and "/" not in text:
        name, _, ns = text.partition(".")
        for suffix in _SVC_SUFFIXES:
            ns = ns.removesuffix(suffix)
        svc = _find_service(snap, ns, name)
        if svc is None:
            raise TraceUsage(f"no Service {name!r} in namespace {ns!r}", "TO")
        return _service_target(snap, svc, port, udp)
    ns, name = _ns_name(text, default_ns)
    pod = _find_pod(snap, ns, name) if name and "/" not in ns else None
    if pod is None:
        raise TraceUsage(f"{text!r}: no pod {name!r} in namespace {ns!r} (a Service is svc/NAME or NAME.NAMESPACE; "
                         "a NodePort NODE:PORT)", "TO")
    return _pod_target(pod, port, udp, text)


def _pod_point(lab: LinkLab, pod: dict[str, Any], clash: set[str]) -> sniff.Point | None:
    m, spec = pod["metadata"], pod.get("spec") or {}
    if spec.get("hostNetwork") or spec.get("nodeName") not in lab.nodes:
        return None
    ns = lab.names.pod(spec["nodeName"], m["name"], m["uid"])
    if not netns.exists(ns):
        return None
    label = f"{m['namespace']}/{m['name']}" if m["name"] in clash else m["name"]
    return sniff.Point(f"{label}/eth0", ns, "eth0")


def plan(lab: LinkLab, snap: Snapshot, source: str, to: str, *, namespace: str = "default", port: int | None = None,
         udp: bool = False, timeout: float = 3.0, http_path: str | None = None) -> tuple[Plan, Target]:
    """The probe plan for FROM and TO; ``TraceUsage`` naming the argument when either is wrong."""
    if port is not None and not 0 < port < 65536:
        raise TraceUsage(f"{port} is not a port number", "--port")
    if http_path is not None and (udp or not http_path.startswith("/")):
        raise TraceUsage("--http takes a path (/hostname) and works with TCP only", "--http")
    src_ns, src_label, src_pod = resolve_from(lab, snap, source, namespace)
    target = resolve_to(lab, snap, to, namespace, port, udp)
    names = [p["metadata"]["name"] for p in snap.pods]
    clash = {n for n in names if names.count(n) > 1}
    node_ns = {n: lab.names.node(n) for n in lab.nodes}
    points: list[sniff.Point] = []
    for node, ns in node_ns.items():
        points += [sniff.Point(f"{node}/{dev}", ns, dev) for dev in sniff.interfaces(ns)]
    ends = ([src_pod] if src_pod else []) + target.pods[:MAX_ENDPOINT_POINTS]
    seen: set[str] = set()
    for pod in ends:
        pt = _pod_point(lab, pod, clash)
        if pt and pt.label not in seen:
            seen.add(pt.label)
            points.append(pt)
    owners = {n.ip: f"node {n.name}" for n in lab.nodes.values()}
    for p in snap.pods:
        ip = (p.get("status") or {}).get("podIP")
        if ip and not (p.get("spec") or {}).get("hostNetwork"):
            owners[ip] = f"{p['metadata']['namespace']}/{p['metadata']['name']}"
    pl = Plan(src_ns, src_label, target.ip, target.port, udp, node_ns, points, owners, target.endpoints, timeout,
              http_path, lab.info.proxyMode)
    if udp and target.port == DNS_PORT:
        pl.dns_name = DNS_PROBE_NAME
    return pl, target
