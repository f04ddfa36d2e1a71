"""The traffic-from-outside add-ons a lab applies at start, as k3s ships Traefik: an ingress controller and a
Gateway API controller, with their classes.

- Namespace ``kmesh-system``.
- IngressClass ``kmesh`` (the default class; controller ``kmesh.io/ingress-controller``) served by Deployment
  ``kmesh-ingress-controller`` behind the LoadBalancer Service of the same name (ports 80 and 443).
- GatewayClass ``kmesh`` (controllerName ``kmesh.io/gateway-controller``) and Deployment
  ``kmesh-gateway-controller``, which gives each Gateway its own proxy Deployment and LoadBalancer Service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

NAMESPACE = "kmesh-system"
INGRESS_NAME = "kmesh-ingress-controller"
GATEWAY_CONTROLLER_NAME = "kmesh-gateway-controller"
CLASS = "kmesh"
ADDONS = ("ingress", "gateway")
"""What ``kmesh up --disable`` may leave out."""


def _deployment(name: str, image: str, args: list[str], ports: list[tuple[str, int]]) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "kmesh"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": dict(labels)},
        "spec": {"replicas": 1, "selector": {"matchLabels": dict(labels)},
                 "template": {"metadata": {"labels": dict(labels)},
                              "spec": {"containers": [{
                                  "name": "controller", "image": image, "args": args,
                                  "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports]}]}}},
    }


def l7_objects(kubeconfig: Path | None, *, disable: list[str] | tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The add-ons' objects but those ``disable`` names; their pods read the API through ``kubeconfig`` (None: the
    node's credentials)."""
    kc = [f"--kubeconfig={kubeconfig}"] if kubeconfig else []
    ingress_labels = {"app.kubernetes.io/name": INGRESS_NAME, "app.kubernetes.io/part-of": "kmesh"}
    ingress = [
        {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
         "metadata": {"name": CLASS, "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
         "spec": {"controller": "kmesh.io/ingress-controller"}},
        _deployment(INGRESS_NAME, "kmesh/ingress-controller",
                    [*kc, f"--ingress-class={CLASS}", f"--publish-service={NAMESPACE}/{INGRESS_NAME}"],
                    [("http", 80), ("https", 443)]),
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": INGRESS_NAME, "namespace": NAMESPACE, "labels": dict(ingress_labels)},
         "spec": {"type": "LoadBalancer", "selector": dict(ingress_labels),
                  "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                            {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]}},
    ]
    gateway = [
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
         "metadata": {"name": CLASS},
         "spec": {"controllerName": "kmesh.io/gateway-controller",
                  "description": "kmesh: one proxy Deployment per Gateway"}},
        _deployment(GATEWAY_CONTROLLER_NAME, "kmesh/gateway-controller", kc, []),
    ]
    chosen = [*(ingress if "ingress" not in disable else []), *(gateway if "gateway" not in disable else [])]
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}, *chosen] if chosen else []
