"""``kmesh bench lb --via``: send the requests to a Gateway or to the lab's ingress controller instead of a ClusterIP.

``--via gateway/[NS/]NAME`` aims at the LoadBalancer address a Gateway of class ``kmesh`` got
(``status.addresses``), ``--via ingress`` at the one of the lab's ingress controller (Service
``kmesh-system/kmesh-ingress-controller``); both on port 80, where their HTTP listener is. The layer-7 proxy
behind that address picks an endpoint per request (and, for an HTTPRoute, a Service per request by the
backendRefs' weights), so what ``kmesh bench lb`` counts is that proxy's split, not kube-proxy's.

From a pod's namespace the address is reached as it is (pods reach LoadBalancer addresses directly); from this
process, through the loopback forward ``cluster.json`` lists for the Service (``loadBalancers``).

``parse_via`` needs no lab; ``resolve_via`` reads the API.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from kmesh.bench.lb import Source, UsageError, _get_or_usage_error
from kmesh.lab.datadir import ClusterInfo
from kmesh.proxy.convert import SERVICE_NAME_LABEL

INGRESS_NAMESPACE = "kmesh-system"
INGRESS_SERVICE = "kmesh-ingress-controller"
HTTP_PORT = 80
FORMS = "gateway/[NS/]NAME, ingress or service"


@dataclass(frozen=True)
class Via:
    """Where the requests go instead of the ClusterIP: a Gateway, or the ingress controller, and its address."""

    kind: Literal["gateway", "ingress"]
    namespace: str
    name: str
    address: str = ""  # the LoadBalancer address ("" until resolved)
    port: int = HTTP_PORT

    def spec(self) -> str:
        """How ``--via`` spells it (the ``via`` field of ``--json``): ``gateway/NS/NAME`` or ``ingress``."""
        return f"gateway/{self.namespace}/{self.name}" if self.kind == "gateway" else "ingress"

    def lb_service(self) -> str:
        """``NS/NAME`` of the LoadBalancer Service behind it (the key of cluster.json's ``loadBalancers``)."""
        if self.kind == "gateway":
            return f"{self.namespace}/{self.name}-kmesh"  # kmesh.gateway.controller names it so
        return f"{self.namespace}/{self.name}"

    def __str__(self) -> str:
        what = f"Gateway {self.namespace}/{self.name}" if self.kind == "gateway" else \
            f"ingress controller {self.namespace}/{self.name}"
        return f"{what} ({self.address}:{self.port})" if self.address else what


def parse_via(text: str | None, namespace: str = "default") -> Via | None:
    """``gateway/NAME`` (in ``namespace``), ``gateway/NS/NAME`` or ``ingress``; None for None, "" or ``service``
    (the ClusterIP, as without ``--via``). ``UsageError`` (``--via``) for anything else."""
    if text is None or text.strip() in ("", "service"):
        return None
    t = text.strip()
    if t == "ingress":
        return Via("ingress", INGRESS_NAMESPACE, INGRESS_SERVICE)
    kind, _, rest = t.partition("/")
    parts = rest.split("/")
    if kind != "gateway" or not rest or len(parts) > 2 or not all(parts):
        raise UsageError("--via", f"{text!r} is not {FORMS}")
    ns, name = (namespace, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    return Via("gateway", ns, name)


def _ipv4(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


async def resolve_via(client: Any, via: Via) -> Via:
    """``via`` with its LoadBalancer address, read from the API; ``UsageError`` (``--via``) when the Gateway or
    the controller is missing, has no HTTP listener on port 80, or has no address yet."""
    if via.kind == "gateway":
        gw = await _get_or_usage_error(client, "Gateway", via.name, via.namespace, "--via",
                                       f"no Gateway {via.name!r} in namespace {via.namespace!r}")
        listeners = (gw.get("spec") or {}).get("listeners") or []
        if not any(li.get("port") == HTTP_PORT and li.get("protocol") == "HTTP" for li in listeners):
            have = ", ".join(f"{li.get('name')}={li.get('protocol')}/{li.get('port')}" for li in listeners) or "none"
            raise UsageError("--via", f"Gateway {via.namespace}/{via.name} has no HTTP listener on port {HTTP_PORT} "
                                      f"(listeners: {have})")
        addrs = [a.get("value") or "" for a in (gw.get("status") or {}).get("addresses") or []
                 if a.get("type", "IPAddress") == "IPAddress"]
        addr = next((a for a in addrs if _ipv4(a)), "")
        if not addr:
            cls = (gw.get("spec") or {}).get("gatewayClassName") or "?"
            raise UsageError("--via", f"Gateway {via.namespace}/{via.name} (class {cls}) has no address yet: is it "
                                      f"Programmed? (kubectl wait -n {via.namespace} gateway/{via.name} "
                                      "--for=condition=Programmed)")
        return replace(via, address=addr)
    svc = await _get_or_usage_error(client, "Service", via.name, via.namespace, "--via",
                                    f"this lab has no ingress controller (no Service {via.namespace}/{via.name})")
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    addr = next((i.get("ip") for i in ingress if _ipv4(i.get("ip") or "")), "")
    if not addr:
        raise UsageError("--via", f"the ingress controller's Service {via.namespace}/{via.name} has no "
                                  "LoadBalancer address yet")
    return replace(via, address=addr)


async def proxy_addresses(client: Any, via: Via) -> set[str]:
    """The pod addresses of the proxy behind ``via`` (its LoadBalancer Service's endpoints): the default source
    avoids them."""
    ns, _, name = via.lb_service().partition("/")
    slices, _ = await client.list_all("EndpointSlice", ns, label_selector=f"{SERVICE_NAME_LABEL}={name}")
    return {a for s in slices for e in s.get("endpoints") or [] for a in e.get("addresses") or []}


def address_for(via: Via, source: Source, info: ClusterInfo) -> tuple[str, int]:
    """Where a client at ``source`` reaches ``via``: its address from a namespace (a pod, a node); from this
    process, cluster.json's loopback forward for the Service when the lab lists one, else the address."""
    if source.netns is None and source.bind_ip is None:
        entry = (info.loadBalancers or {}).get(via.lb_service()) or {}
        fwd = str((entry.get("ports") or {}).get(str(via.port)) or "")
        host, _, port = fwd.rpartition(":")
        if host and port.isdigit():
            return host, int(port)
    return via.address, via.port
