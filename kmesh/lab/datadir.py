"""The data dir of one lab: where its files live and the cluster.json contract."""

from __future__ import annotations

import errno
import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kmesh.api.wellknown import CLUSTER_CIDR, SERVICE_CIDR, SIM_CLUSTER_CIDR, SIM_SERVICE_CIDR
from kmesh.lab.procs import ProcId

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
    # "NS/NAME" → {"ip": LB address, "ports": {"80": "127.0.0.1:P"}, "node": announcing node}: where the
    # machine reaches each LoadBalancer Service (netns: loopback forwards; kmesh.lab.loadbalancers)
    loadBalancers: dict[str, Any] = field(default_factory=dict)
    lbRange: str = ""  # the LoadBalancer address pool (`kmesh up --lb-range`); "": none (sim)

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
class LabNetwork:
    """The address ranges a lab's state was made with (``D/network.json``, one entry per store).

    Service ClusterIPs and pod CIDRs are stored in the API objects, so a lab
    restarted on its store must get the same ranges back: a sim lab its
    loopback slot (``kmesh.lab.simslots``), and no lab the other runtime's."""

    runtime: str
    serviceCIDR: str
    clusterCIDR: str
    simSlot: int | None = None

    def describe(self) -> str:
        """How a message names these ranges."""
        slot = f"sim address slot {self.simSlot}: " if self.simSlot is not None else ""
        return f"{self.runtime} lab ({slot}Services {self.serviceCIDR}, pods {self.clusterCIDR})"


class LabLocked(RuntimeError):
    """Another process holds the data dir's lab lock: a lab runs there."""


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
    def network_file(self) -> Path:
        """The address ranges the lab's state was made with (see ``LabNetwork``)."""
        return self.root / "network.json"

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

    def read_network(self, store: str) -> LabNetwork | None:
        """The ranges the state of ``store`` (``"sqlite"``, ``"etcd"``, ``"etcd <url>"``) in this dir was made
        with: from network.json, or for a data dir of an older kmesh from cluster.json."""
        try:
            doc = json.loads(self.network_file.read_text())
        except FileNotFoundError:
            doc = None
        except ValueError:
            doc = {}
        if isinstance(doc, dict):
            entry = doc.get(store)
            return LabNetwork(**entry) if isinstance(entry, dict) else None
        info = self.read_cluster()
        if info is None:
            return None
        slot = None
        if info.runtime == "sim":
            slot = int(info.serviceCIDR.split(".")[1]) - int(SIM_SERVICE_CIDR.split(".")[1])
        return LabNetwork(info.runtime, info.serviceCIDR, info.clusterCIDR, slot)

    def write_network(self, store: str, net: LabNetwork) -> None:
        """Record the ranges the state of ``store`` is made with (network.json, 0600; other stores' kept)."""
        from kmesh.lab.access import write_private

        try:
            doc = json.loads(self.network_file.read_text())
        except (FileNotFoundError, ValueError):
            doc = {}
        doc = doc if isinstance(doc, dict) else {}
        doc[store] = asdict(net)
        write_private(self.network_file, json.dumps(doc, indent=2) + "\n")

    def hold_lab_lock(self) -> int:
        """Take the lab lock for this process: an exclusive ``flock`` on the data dir itself, held until
        the returned descriptor is closed or the process exits (even by SIGKILL).

        Its holder is the lab's supervisor; ``supervisor`` trusts a PID only
        while the lock is held. Raises ``LabLocked`` when another process holds it."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LabLocked(f"another kmesh process holds the lab lock on {self.root}: a lab runs there") from None
        return fd

    def locked(self) -> bool:
        """True while some process holds the lab lock (a lab runs here, or is starting or stopping)."""
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                return False
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a shared lock taken just now
        return False

    def supervisor(self) -> ProcId | None:
        """The lab's supervisor process, proven: the lab lock is held and kmesh.pid names a process
        with the recorded start time. None for no lab (a stale PID file included)."""
        if not self.locked():
            return None
        try:
            proc = ProcId.parse(self.pid_file.read_text())
        except FileNotFoundError:
            return None
        return proc if proc is not None and proc.alive() else None

    def supervisor_pid(self) -> int | None:
        """The PID of ``supervisor``, if a lab runs here."""
        proc = self.supervisor()
        return proc.pid if proc is not None else None
