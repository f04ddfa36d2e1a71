"""Which network namespace holds a pod of a running lab (for ``kmesh exec`` and ``kmesh proxy rules --pod``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import trio

from kmesh.api import errors as E
from kmesh.client.api import APIUnavailable, Client
from kmesh.lab.topology import LabNames
from kmesh.net import netns


class PodNetnsError(Exception):
    """The pod cannot be reached here: the message says why, for the user."""


@dataclass(frozen=True)
class PodNetns:
    """A pod's object and where its network lives (``netns`` None: the machine's own, host runtime)."""

    pod: dict[str, Any]
    netns: str | None
    host_network: bool


def find_pod_netns(info: Any, namespace: str, pod: str) -> PodNetns:
    """The network namespace of ``namespace/pod`` in the lab described by ``info`` (cluster.json)."""
    if info.runtime not in ("netns", "host"):
        raise PodNetnsError("this needs the netns or host runtime; sim pods share this machine's network")

    async def fetch() -> dict[str, Any]:
        async with Client.from_kubeconfig(info.kubeconfig) as c:
            return await c.get("Pod", pod, namespace)

    try:
        obj = trio.run(fetch)
    except E.APIError as exc:
        raise PodNetnsError(exc.message) from None
    except APIUnavailable as exc:
        raise PodNetnsError(f"the API server does not answer: {exc}") from None
    return pod_netns(info, obj)


def pod_netns(info: Any, obj: dict[str, Any]) -> PodNetns:
    """The network namespace of an already-fetched pod ``obj`` (so callers that list many pods fetch once)."""
    if info.runtime not in ("netns", "host"):
        raise PodNetnsError("this needs the netns or host runtime; sim pods share this machine's network")
    meta = obj.get("metadata") or {}
    namespace, pod = meta.get("namespace", ""), meta.get("name", "")
    spec = obj.get("spec") or {}
    node = spec.get("nodeName")
    if not node:
        raise PodNetnsError(f"pod {namespace}/{pod} is not scheduled to a node yet")
    names = LabNames(info.name)
    host_network = bool(spec.get("hostNetwork"))
    if host_network and info.runtime == "host":
        return PodNetns(obj, None, True)  # the machine's own network is the pod's
    ns = names.node(node) if host_network else names.pod(node, pod, obj["metadata"]["uid"])
    if not netns.exists(ns):
        where = f" on this machine; it runs on node {node}" if info.runtime == "host" else "; is it running?"
        raise PodNetnsError(f"pod {namespace}/{pod} has no network namespace {ns}{where}")
    return PodNetns(obj, ns, host_network)
