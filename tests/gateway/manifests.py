"""The Gateway API conformance manifests (copied unchanged) as objects, with the API server's defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CONFORMANCE = Path(__file__).parent / "conformance"
CLASS = "kmesh"
INFRA = "gateway-conformance-infra"


def load(*names: str) -> list[dict[str, Any]]:
    """The objects of conformance manifests (``base/manifests.yaml`` is ``manifests.yaml``), class substituted."""
    out: list[dict[str, Any]] = []
    for name in names:
        text = (CONFORMANCE / name).read_text().replace("{GATEWAY_CLASS_NAME}", CLASS)
        out.extend(d for d in yaml.safe_load_all(text) if d)
    return out


def gateway_class() -> dict[str, Any]:
    """The GatewayClass the conformance suite expects to exist."""
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": CLASS, "generation": 1},
            "spec": {"controllerName": "kmesh.io/gateway-controller"}}


def with_defaults(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects as the API server stores them (its defaults applied, for the kinds it serves)."""
    from kmesh.api import kinds
    from kmesh.api.defaults import apply_defaults

    for o in objs:
        if kinds.by_kind(o.get("apiVersion", ""), o.get("kind", "")) is not None:
            apply_defaults(o["kind"], o)
    return objs
