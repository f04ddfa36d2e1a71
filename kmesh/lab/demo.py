"""The sample `kmesh up --demo` applies: Deployment `web` (3 agnhost serve-hostname) and Service `web`."""

from __future__ import annotations

import copy
from typing import Any

from kmesh.client.api import Client
from kmesh.lab.addons import apply_objects

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.39"

DEMO: list[dict[str, Any]] = [
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": AGNHOST,
                            "args": ["serve-hostname"],
                            "ports": [{"name": "http", "containerPort": 9376, "protocol": "TCP"}],
                            "readinessProbe": {"tcpSocket": {"port": 9376}, "periodSeconds": 2},
                        }
                    ]
                },
            },
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    },
]


async def apply_demo(client: Client, *, service_port: int = 80) -> None:
    """Create the demo objects (existing ones are left as they are).

    ``service_port``: the Service's port (the sim lab uses 8080, which a plain
    user's proxy can bind; ports below 1024 need root)."""
    objs = copy.deepcopy(DEMO)
    for obj in objs:
        if obj["kind"] == "Service":
            obj["spec"]["ports"][0]["port"] = service_port
    await apply_objects(client, objs)
