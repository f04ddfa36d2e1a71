"""The Node object an agent registers and the status it keeps posting."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

from kmesh import __version__
from kmesh.api.formats import is_label_value, is_qualified_name
from kmesh.api.meta import now
from kmesh.api.obj import Obj

if TYPE_CHECKING:
    from kmesh.node.agent import AgentConfig

KUBELET_VERSION = "v1.32.0-kmesh"
UNREACHABLE_TAINTS = ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def _read(path: str, default: str = "") -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def arch() -> str:
    """The Go-style architecture name of this machine."""
    m = platform.machine()
    return _ARCH.get(m, m)


def os_image() -> str:
    """PRETTY_NAME of /etc/os-release."""
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "Linux"


def memory_ki() -> str:
    """Total memory as a quantity in Ki."""
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return line.split()[1] + "Ki"
    return "0"


def node_labels(cfg: AgentConfig) -> dict[str, str]:
    """The well-known labels plus the configured ones."""
    labels = {
        "kubernetes.io/hostname": cfg.node_name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch(),
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": arch(),
    }
    if cfg.role:
        labels[f"node-role.kubernetes.io/{cfg.role}"] = ""
    labels.update(cfg.labels)
    return labels


# What the kubelet may set with --node-labels in the kubernetes.io / k8s.io namespaces (k8s.io/kubelet's
# IsKubeletLabel); other labels there are the cluster's to set (node-role.kubernetes.io/...: `kubectl label`).
_KUBELET_LABELS = frozenset({
    "kubernetes.io/hostname", "topology.kubernetes.io/zone", "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type", "node.kubernetes.io/instance-type", "kubernetes.io/os", "kubernetes.io/arch",
    "beta.kubernetes.io/os", "beta.kubernetes.io/arch",
})
_KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")


def _in_namespace(prefix: str, namespace: str) -> bool:
    return prefix == namespace or prefix.endswith("." + namespace)


def node_label_problems(key: str, value: str) -> list[str]:
    """What is wrong with ``key=value`` as a label a node agent sets on its own Node (the kubelet's
    ``--node-labels`` rules: a label key and value, and in the kubernetes.io and k8s.io namespaces only
    the labels a kubelet may set); empty when it is fine."""
    problems = [f"key {key!r}: {m}" for m in is_qualified_name(key)]
    problems += [f"value {value!r}: {m}" for m in is_label_value(value)]
    prefix = key.rpartition("/")[0]
    if (not problems and (_in_namespace(prefix, "kubernetes.io") or _in_namespace(prefix, "k8s.io"))
            and key not in _KUBELET_LABELS and not any(_in_namespace(prefix, ns) for ns in _KUBELET_LABEL_NAMESPACES)):
        problems.append(f"key {key!r}: in the kubernetes.io and k8s.io namespaces a node sets only the "
                        "kubelet's own labels (topology.kubernetes.io/zone and /region, node.kubernetes.io/*, "
                        "kubelet.kubernetes.io/*, kubernetes.io/os, /arch, /hostname and their beta forms), as "
                        "with the kubelet's --node-labels; set it with `kubectl label node` once the node is up")
    return problems


def parse_node_labels(text: str) -> dict[str, str]:
    """The kubelet's ``--node-labels`` form, ``key=value,key2=value2``, as a dict; ``ValueError`` naming
    what is wrong."""
    labels: dict[str, str] = {}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"{item!r} is not key=value")
        problems = node_label_problems(key, value)
        if problems:
            raise ValueError("; ".join(problems))
        labels[key] = value
    return labels


def format_node_labels(labels: dict[str, str]) -> str:
    """``parse_node_labels``' form of ``labels``."""
    return ",".join(f"{k}={v}" for k, v in labels.items())


def node_conditions(previous: list[Obj] | None) -> list[Obj]:
    """MemoryPressure/DiskPressure/PIDPressure False and Ready True, transition times kept when unchanged."""
    ts = now()
    wanted = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]
    prev = {c.get("type"): c for c in previous or []}
    out = []
    for ctype, status, reason, message in wanted:
        old = prev.get(ctype) or {}
        since = old.get("lastTransitionTime") if old.get("status") == status else None
        out.append({
            "type": ctype, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": ts, "lastTransitionTime": since or ts,
        })
    others = [c for t, c in prev.items() if t not in {w[0] for w in wanted}]
    return others + out


def node_status(cfg: AgentConfig, previous: Obj | None = None) -> Obj:
    """The full status the agent posts."""
    capacity = {"cpu": str(cfg.cpu or os.cpu_count() or 1), "memory": cfg.memory or memory_ki(), "pods": str(cfg.max_pods)}
    uname = os.uname()
    return {
        "capacity": capacity,
        "allocatable": dict(capacity),
        "conditions": node_conditions((previous or {}).get("conditions")),
        "addresses": [{"type": "InternalIP", "address": cfg.node_ip}, {"type": "Hostname", "address": cfg.node_name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": _read("/etc/machine-id"),
            "systemUUID": _read("/sys/class/dmi/id/product_uuid"),
            "bootID": _read("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": uname.release,
            "osImage": os_image(),
            "containerRuntimeVersion": f"kmesh://{cfg.runtime.version}",
            "kubeletVersion": KUBELET_VERSION,
            "operatingSystem": "linux",
            "architecture": arch(),
        },
    }


def new_node(cfg: AgentConfig) -> Obj:
    """The Node object to register."""
    node: Obj = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": cfg.node_name, "labels": node_labels(cfg),
                     "annotations": {"kmesh.dev/runtime": getattr(cfg.runtime, "name", ""), "kmesh.dev/version": __version__}},
        "spec": {},
        "status": node_status(cfg),
    }
    if cfg.taints:
        node["spec"]["taints"] = list(cfg.taints)
    return node


def status_needs_post(node: Obj) -> bool:
    """Whether the stored Node says something other than Ready=True (e.g. a lifecycle controller marked it Unknown)."""
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") != "True"
    return True


def has_unreachable_taints(node: Obj) -> bool:
    """Whether the node carries the taints a node-lifecycle controller sets on unreachable nodes."""
    return any(t.get("key") in UNREACHABLE_TAINTS for t in (node.get("spec") or {}).get("taints") or [])
