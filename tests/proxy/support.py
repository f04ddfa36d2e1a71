"""Helpers the proxy tests (and benchmarks/proxy_userspace.py) share: manifests for kubectl, a line reader, a bridged node."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from kmesh.net import netns


def service_yaml(cluster_ip: str, *ports: str, name: str = "web", namespace: str = "default") -> str:
    """A Service ``name`` selecting ``app: <name>`` at ``cluster_ip``, for ``kubectl apply``.

    ``ports`` are YAML flow mappings, e.g. ``{name: http, port: 80, targetPort: 9376}``."""
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n"
            f"  clusterIP: {cluster_ip}\n  selector: {{app: {name}}}\n  ports:\n"
            + "".join(f"  - {p}\n" for p in ports))


def endpoint_yaml(ip: str, node: str, ready: bool | str = True) -> str:
    """One endpoint of an EndpointSlice as a YAML flow mapping (``ready`` may be a ``%s`` placeholder)."""
    if isinstance(ready, bool):
        ready = "true" if ready else "false"
    return f"{{addresses: [{ip}], conditions: {{ready: {ready}}}, nodeName: {node}}}"


def endpoint_slice_yaml(ports: Sequence[str], endpoints: Sequence[str], *, service: str = "web",
                        name: str = "web-abc", namespace: str = "default", annotations: str = "") -> str:
    """An IPv4 EndpointSlice of Service ``service``, for ``kubectl apply``.

    ``ports`` and ``endpoints`` are YAML flow mappings (``endpoint_yaml``); ``annotations`` one too."""
    meta = f"  annotations: {annotations}\n" if annotations else ""
    return (f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n"
            f"  namespace: {namespace}\n  labels: {{kubernetes.io/service-name: {service}}}\n{meta}"
            "addressType: IPv4\nports:\n" + "".join(f"- {p}\n" for p in ports)
            + "endpoints:\n" + "".join(f"- {e}\n" for e in endpoints))


async def read_line(sock: trio.socket.SocketType) -> str:
    """One line from ``sock`` (a name server's greeting), stripped; ConnectionResetError if it closes first."""
    buf = b""
    while not buf.endswith(b"\n"):
        data = await sock.recv(100)
        if not data:
            raise ConnectionResetError("closed before a full line")
        buf += data
    return buf.decode().strip()


def bridged_node(node: str, pods: Sequence[tuple[str, str]]) -> None:
    """Create namespace ``node`` with bridge cni0 (10.244.1.1/24) and, for each ``(namespace, ip)``
    in ``pods``, a pod namespace on it: eth0 ``ip``/24, default route via the bridge."""
    netns.add(node)
    netns.ip(node, "link", "add", "cni0", "type", "bridge")
    netns.ip(node, "addr", "add", "10.244.1.1/24", "dev", "cni0")
    netns.ip(node, "link", "set", "cni0", "up")
    for k, (ns, ip) in enumerate(pods):
        netns.add(ns)
        netns.add_veth(node, f"veth{k}", ns, "eth0")
        netns.ip(node, "link", "set", f"veth{k}", "master", "cni0")
        netns.ip(ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        netns.ip(ns, "route", "add", "default", "via", "10.244.1.1")
