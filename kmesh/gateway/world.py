"""What the controllers read: a snapshot of the objects the Gateway API and Ingress translation depend on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

CONTROLLER_NAME = "kmesh.io/gateway-controller"
"""The GatewayClass ``spec.controllerName`` kmesh's Gateway controller owns."""

INGRESS_CONTROLLER = "kmesh.io/ingress-controller"
"""The IngressClass ``spec.controller`` kmesh's ingress controller owns."""


def meta(obj: Obj) -> Obj:
    """An object's metadata (empty if missing)."""
    return obj.get("metadata") or {}


def nsname(obj: Obj) -> tuple[str, str]:
    """(namespace, name) of an object."""
    m = meta(obj)
    return m.get("namespace") or "", m.get("name") or ""


@dataclass
class World:
    """The objects one translation sees, keyed for lookup."""

    gateway_classes: dict[str, Obj] = field(default_factory=dict)
    gateways: dict[tuple[str, str], Obj] = field(default_factory=dict)
    routes: dict[tuple[str, str], Obj] = field(default_factory=dict)
    services: dict[tuple[str, str], Obj] = field(default_factory=dict)
    secrets: dict[tuple[str, str], Obj] = field(default_factory=dict)
    grants: list[Obj] = field(default_factory=list)
    namespaces: dict[str, Obj] = field(default_factory=dict)
    ingresses: dict[tuple[str, str], Obj] = field(default_factory=dict)
    ingress_classes: dict[str, Obj] = field(default_factory=dict)

    @classmethod
    def of(cls, objects: list[Obj]) -> World:
        """A world from a flat list of objects (any order, unknown kinds ignored)."""
        w = cls()
        for o in objects:
            kind, key = o.get("kind"), nsname(o)
            if kind == "GatewayClass":
                w.gateway_classes[key[1]] = o
            elif kind == "Gateway":
                w.gateways[key] = o
            elif kind == "HTTPRoute":
                w.routes[key] = o
            elif kind == "Service":
                w.services[key] = o
            elif kind == "Secret":
                w.secrets[key] = o
            elif kind == "ReferenceGrant":
                w.grants.append(o)
            elif kind == "Namespace":
                w.namespaces[key[1]] = o
            elif kind == "Ingress":
                w.ingresses[key] = o
            elif kind == "IngressClass":
                w.ingress_classes[key[1]] = o
        return w
