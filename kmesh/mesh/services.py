"""What a sidecar knows about each Service port: its virtual listener in the L7 engine and its protocol.

A meshed client connects to a ClusterIP; the redirect rules hand the
connection to the sidecar, which reads the original destination and looks it
up here. Every TCP port of every Service with a ClusterIP becomes one virtual
listener of the sidecar's engine (nothing is bound: the sidecar adopts the
connection into it) whose single route sends requests to that Service port,
so HTTP is balanced per request over the ready endpoints; the same endpoint
sets serve connections balanced as plain TCP.

Protocol selection, as Istio's: the port's ``appProtocol`` (``http``,
``kubernetes.io/h2c``; anything else is TCP), else the port's name prefix
(``http``, ``http2``, ``h2c``: HTTP), else the first bytes the client sends
(an HTTP/1 request line) within a short window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kmesh.gateway.world import Obj, World
from kmesh.l7.model import Backend, Config, HostMatch, Listener, Match, RouteEntry, Rule

HTTP_APP_PROTOCOLS = frozenset({"http", "kubernetes.io/h2c"})
HTTP_NAME_PREFIXES = ("http", "h2c")


@dataclass(frozen=True)
class ServicePort:
    """One TCP port of a Service, as the sidecar serves it."""

    namespace: str
    service: str
    port: int
    listener: int
    """The engine's virtual listener number for this port."""
    protocol: str
    """"http", "tcp" or "" (not declared: look at the first bytes)."""


def port_protocol(port: Obj) -> str:
    """``http``, ``tcp`` or ``""`` (undeclared) for one entry of a Service's ``spec.ports``."""
    app = port.get("appProtocol")
    if app:
        return "http" if app in HTTP_APP_PROTOCOLS else "tcp"
    name = (port.get("name") or "").lower()
    if name.startswith(HTTP_NAME_PREFIXES):
        return "http"
    return ""


@dataclass
class ServiceTable:
    """ClusterIP:port → ServicePort, rebuilt from the world; listener numbers stay stable across rebuilds."""

    by_address: dict[tuple[str, int], ServicePort] = field(default_factory=dict)
    _numbers: dict[tuple[str, str, int], int] = field(default_factory=dict)
    _last: int = 0

    def _number(self, key: tuple[str, str, int]) -> int:
        n = self._numbers.get(key)
        if n is None:
            self._last += 1
            n = self._numbers[key] = self._last
        return n

    def build(self, world: World) -> Config:
        """The engine config for ``world``'s Services (and refresh ``by_address``)."""
        by_address: dict[tuple[str, int], ServicePort] = {}
        listeners: list[Listener] = []
        for (ns, name), svc in sorted(world.services.items()):
            spec = svc.get("spec") or {}
            ips = [ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and ip != "None"]
            if not ips:
                continue
            for p in spec.get("ports") or []:
                if (p.get("protocol") or "TCP") != "TCP" or not p.get("port"):
                    continue
                port = int(p["port"])
                key = (ns, name, port)
                sp = ServicePort(ns, name, port, self._number(key), port_protocol(p))
                for ip in ips:
                    by_address[(ip, port)] = sp
                backend = Backend(ns, name, port, app_protocol=p.get("appProtocol"))
                rule = Rule((backend,), name=f"{ns}/{name}:{port}")
                listeners.append(Listener(sp.listener, (RouteEntry(HostMatch(), Match(), rule),),
                                          name=f"{ns}/{name}:{port}"))
        live = {(sp.namespace, sp.service, sp.port) for sp in by_address.values()}
        for key in [k for k in self._numbers if k not in live]:
            del self._numbers[key]  # a port that comes back gets a new number: its old listener is gone
        self.by_address = by_address
        return Config(tuple(sorted(listeners, key=lambda ls: ls.port)))
