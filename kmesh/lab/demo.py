"""The sample `kmesh up --demo` applies: Deployment `web` (3 agnhost serve-hostname) and Service `web`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import trio

from kmesh.client.api import Client
from kmesh.client.informer import Informer
from kmesh.controllers.podutil import is_ready
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


def _pod_trouble(pod: dict[str, Any]) -> str:
    """Why a pod is not ready, as `kubectl get pods` would show it (waiting reason, unscheduled, probe)."""
    st = pod.get("status") or {}
    for cs in st.get("containerStatuses") or []:
        state = cs.get("state") or {}
        for key in ("waiting", "terminated"):
            if state.get(key):
                reason, msg = state[key].get("reason") or key, state[key].get("message") or ""
                return f"{reason}: {msg[:120]}" if msg else reason
        if not cs.get("ready"):
            return "running, not ready (readiness probe)"
    for c in st.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            return f"not scheduled ({c.get('reason') or 'no node'})"
    return str(st.get("phase") or "Pending")


def wait_demo(kubeconfig: Path, timeout: float = 120.0) -> str | None:
    """Wait until the demo Deployment `web` is available; None when it is, else what is not ready."""

    def available(inf: Informer) -> bool:
        d = inf.get("web", "default") or {}
        st = d.get("status") or {}
        return bool(d) and st.get("availableReplicas", 0) >= (d.get("spec") or {}).get("replicas", 1)

    async def wait() -> str | None:
        async with Client.from_kubeconfig(kubeconfig) as c:
            async with trio.open_nursery() as n:
                deploys = Informer(c, "Deployment", namespace="default")
                await n.start(deploys.run)
                ready = False
                with trio.move_on_after(timeout):
                    await deploys.wait_for(available)
                    ready = True
                d = deploys.get("web", "default") or {}
                n.cancel_scope.cancel()
            if ready:
                return None
            if not d:
                return f"demo: Deployment web does not exist after {timeout:g} s"
            want = (d.get("spec") or {}).get("replicas", 1)
            have = (d.get("status") or {}).get("availableReplicas", 0)
            lines = [f"demo: Deployment web has {have}/{want} available replicas after {timeout:g} s"]
            selector = ",".join(f"{k}={v}" for k, v in
                                (((d.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}).items())
            pods = (await c.list("Pod", "default", label_selector=selector)).get("items") or []
            for pod in pods[:5]:
                if not is_ready(pod):
                    lines.append(f"  pod {pod['metadata']['name']}: {_pod_trouble(pod)}")
            return "\n".join(lines)

    return trio.run(wait)
