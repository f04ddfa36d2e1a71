"""The data dir of one lab: where its files live and the cluster.json contract."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kmesh.api.wellknown import CLUSTER_CIDR, SERVICE_CIDR, SIM_CLUSTER_CIDR, SIM_SERVICE_CIDR

__all__ = ["CLUSTER_CIDR", "SERVICE_CIDR", "SIM_CLUSTER_CIDR", "SIM_SERVICE_CIDR"]


def default_data_dir() -> Path:
    """``/var/lib/kmesh`` for root, else ``~/.local/share/kmesh`` (XDG_DATA_HOME honoured)."""
    if os.geteuid() == 0:
        return Path("/var/lib/kmesh")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "kmesh"


@dataclass
class NodeInfo:
    """One node as cluster.json lists it."""

    name: str
    ip: str
    podCIDR: str
    netns: str | None = None


@dataclass
class ClusterInfo:
    """The content of ``cluster.json``: how to reach a running lab."""

    name: str
    api: str
    kubeconfig: str
    dns: list[Any] | None
    runtime: str
    proxyMode: str
    serviceCIDR: str
    clusterCIDR: str
    nodes: list[NodeInfo] = field(default_factory=list)
    # component → its Prometheus /metrics URL, reachable from the machine that ran `kmesh up`:
    # apiserver (HTTPS, the kubeconfig's credentials), controller-manager, scheduler, coredns,
    # kubelet/<node>, kube-proxy/<node> (sim: one "kube-proxy" for every node)
    metrics: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        """The JSON text written to disk."""
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ClusterInfo:
        """Parse cluster.json."""
        doc = json.loads(text)
        nodes = [NodeInfo(**n) for n in doc.pop("nodes", [])]
        return cls(**doc, nodes=nodes)


@dataclass(frozen=True)
class DataDir:
    """Paths inside one lab's data dir."""

    root: Path

    @property
    def kubeconfig(self) -> Path:
        """The kubeconfig kubectl uses."""
        return self.root / "kubeconfig.yaml"

    @property
    def cluster_json(self) -> Path:
        """The cluster.json contract file."""
        return self.root / "cluster.json"

    @property
    def pid_file(self) -> Path:
        """The PID of the lab's supervisor process."""
        return self.root / "kmesh.pid"

    @property
    def log_dir(self) -> Path:
        """Component logs."""
        return self.root / "logs"

    @property
    def config_file(self) -> Path:
        """The options ``kmesh up`` was given, read by the supervisor."""
        return self.root / "up.json"

    def read_cluster(self) -> ClusterInfo | None:
        """cluster.json, or None when no lab runs here."""
        try:
            return ClusterInfo.from_json(self.cluster_json.read_text())
        except FileNotFoundError:
            return None

    def write_cluster(self, info: ClusterInfo) -> None:
        """Write cluster.json atomically, 0600 as everything in the data dir."""
        from kmesh.lab.access import write_private

        write_private(self.cluster_json, info.to_json())

    def supervisor_pid(self) -> int | None:
        """The supervisor's PID if it is still running."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid
