"""Namespaces that act as machines, for the host runtime's tests: what a Vagrant lab looks like, on one kernel.

Each machine is a namespace with
- ``eth0``: a NAT-like interface with 10.0.2.15/24 on EVERY machine and the
  default route (via 10.0.2.2, which lives in a small namespace of its own per
  machine): VirtualBox's NAT NIC;
- ``eth1``: its own address on the shared "host-only" bridge (192.168.56.0/24,
  the bridge in a LAN namespace that also holds 192.168.56.1, "the host").

Machines run kmesh as a user would on a VM: ``nsenter --net=<machine> kmesh
up --runtime host ...`` (``run``). Everything is named with one unique prefix
and removed by ``close``, processes first (only those inside these
namespaces, through pidfds), then the lab's pod namespaces, then the
machines.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kmesh.lab.procs import send, wait_fd
from kmesh.lab.topology import LabNames, processes_in, sweep
from kmesh.net import netns

LAN = "192.168.56"
# The echo workload the multi-machine tests (namespace machines and real VMs) run: Service web → pods :8080.
WEB_SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""
NAT_IP = "10.0.2.15"
KMESH = [sys.executable, "-m", "kmesh.cli"]


@dataclass
class Machines:
    """A set of namespace machines on one host-only LAN, and the lab name their kmesh uses."""

    prefix: str
    root: Path  # data dirs live under it, one per machine
    lab: str  # --name of every kmesh command (prefixes pod namespaces)
    names: list[str] = field(default_factory=list)
    eth1_mtu: int = 1400

    @property
    def lan(self) -> str:
        """The namespace holding the host-only bridge and "the host" (192.168.56.1)."""
        return f"{self.prefix}lan"

    def ns(self, machine: str) -> str:
        """The namespace of ``machine``."""
        return f"{self.prefix}{machine}"

    def ip(self, machine: str) -> str:
        """``machine``'s eth1 address."""
        return f"{LAN}.{10 + self.names.index(machine)}"

    def data_dir(self, machine: str) -> Path:
        """``machine``'s kmesh data dir."""
        return self.root / machine

    def add(self, machine: str) -> None:
        """Create ``machine`` (eth0 NAT-like with 10.0.2.15, eth1 on the LAN)."""
        self.names.append(machine)
        ns, nat = self.ns(machine), f"{self.prefix}{machine}-nat"
        netns.add(ns)
        netns.add(nat)
        netns.add_veth(nat, "wan", ns, "eth0")
        netns.ip(nat, "addr", "add", "10.0.2.2/24", "dev", "wan")
        netns.ip(ns, "addr", "add", f"{NAT_IP}/24", "dev", "eth0")
        netns.ip(ns, "route", "add", "default", "via", "10.0.2.2", "dev", "eth0")
        port = f"p-{machine}"[:15]
        netns.add_veth(self.lan, port, ns, "eth1", mtu=self.eth1_mtu)
        netns.ip(ns, "link", "set", "eth1", "mtu", str(self.eth1_mtu))  # both ends: a bridge does not fragment
        netns.ip(self.lan, "link", "set", port, "master", "br0")
        netns.ip(ns, "addr", "add", f"{self.ip(machine)}/24", "dev", "eth1")
        for key, value in (("net/ipv4/ip_forward", "1"), ("net/ipv4/conf/all/rp_filter", "0"),
                           ("net/bridge/bridge-nf-call-iptables", "1")):
            netns.call_in(ns, _write_sysctl, key, value)

    def run(self, machine: str, *argv: str, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a command on ``machine``, output captured: ``nsenter --net`` only, as the lab runs its agents, so
        the namespaces kmesh makes there (pods) are seen by every process (``ip netns exec`` would give the
        command a mount namespace of its own, and pod namespaces made in it would not be seen outside)."""
        return subprocess.run(netns.nsenter_argv(self.ns(machine), list(argv)), capture_output=True, text=True,
                               timeout=timeout, check=check, env=dict(os.environ, COLUMNS="200"))

    def kmesh(self, machine: str, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """``kmesh ARGV --data-dir <machine's>`` on ``machine``."""
        return self.run(machine, *KMESH, *argv, "--data-dir", str(self.data_dir(machine)), timeout=timeout)

    def kubectl(self, *argv: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        """``kubectl`` from "the host" (the LAN namespace), with the first machine's admin kubeconfig."""
        cfg = kubeconfig or self.data_dir(self.names[0]) / "kubeconfig.yaml"
        return subprocess.run(["ip", "netns", "exec", self.lan, "kubectl", "--kubeconfig", str(cfg), *argv],
                              capture_output=True, text=True, timeout=60)

    def pod_ns(self, node: str, pod: str, uid: str) -> str:
        """The namespace of a pod on ``node``."""
        return LabNames(self.lab).pod(node, pod, uid)

    def close(self) -> None:
        """Stop everything running in the machines, then remove the lab's pods and every namespace made."""
        for machine in self.names:
            if self.data_dir(machine).exists():
                try:
                    self.kmesh(machine, "down", timeout=120)
                except subprocess.TimeoutExpired:
                    pass
        spaces = netns.names(self.prefix)
        _kill_in(spaces)
        sweep(LabNames(self.lab))
        for ns in sorted(spaces, key=lambda n: n == self.lan):
            netns.delete(ns)


def _write_sysctl(key: str, value: str) -> None:
    p = Path("/proc/sys") / key
    if p.exists():
        p.write_text(value)


def make_machines(root: Path, count: int, *, eth1_mtu: int = 1400) -> Machines:
    """``count`` machines m1..mN on a fresh LAN (close them with ``Machines.close``)."""
    tag = secrets.token_hex(3)
    m = Machines(prefix=f"kmh{tag}-", root=root, lab=f"t{tag}", eth1_mtu=eth1_mtu)
    try:
        netns.add(m.lan)
        netns.ip(m.lan, "link", "add", "br0", "type", "bridge")
        netns.ip(m.lan, "addr", "add", f"{LAN}.1/24", "dev", "br0")
        netns.ip(m.lan, "link", "set", "br0", "up")
        for i in range(count):
            m.add(f"m{i + 1}")
    except BaseException:
        m.close()
        raise
    return m


@dataclass
class EtcdCluster:
    """The etcd cluster ``start_etcd_members`` runs, as kubeadm runs one: TLS on client and peer URLs, client
    certificates of one etcd CA required. Each member's machine holds its own pairs in ``pki(machine)``
    (kubeadm's layout, from ``kmesh certs etcd``), among them an API server's client pair."""

    m: Machines
    members: list[str]
    procs: dict[str, subprocess.Popen[bytes]]
    ca_dir: Path  # the CA the machines share (like the copy kubeadm hands each control-plane node)

    def pki(self, machine: str) -> Path:
        """``machine``'s etcd PKI dir (kubeadm's /etc/kubernetes/pki)."""
        return self.m.root / f"etcd-pki-{machine}"

    def cafile(self, machine: str) -> Path:
        """etcd's CA certificate on ``machine``."""
        return self.pki(machine) / "etcd" / "ca.crt"

    def pair(self, machine: str, name: str) -> tuple[Path, Path]:
        """(certificate, key) of ``name`` on ``machine``: apiserver-etcd-client, etcd/healthcheck-client, ..."""
        return self.pki(machine) / f"{name}.crt", self.pki(machine) / f"{name}.key"

    def url(self, member: str) -> str:
        """``member``'s client URL."""
        return f"https://{self.m.ip(member)}:2379"

    def urls(self, first: str = "") -> str:
        """Every member's client URL, comma-separated, ``first``'s first."""
        order = [first] if first in self.members else []
        return ",".join(self.url(x) for x in [*order, *[y for y in self.members if y not in order]])

    def kmesh_flags(self, machine: str) -> list[str]:
        """``kmesh up``'s etcd flags on ``machine`` (its own member first, its own client pair)."""
        cert, key = self.pair(machine, "apiserver-etcd-client")
        return ["--etcd", self.urls(machine), "--etcd-cafile", str(self.cafile(machine)), "--etcd-certfile", str(cert),
                "--etcd-keyfile", str(key)]

    def curl(self, machine: str, url: str, *tls: str) -> subprocess.CompletedProcess[str]:
        """``curl -fsS TLS... URL`` on ``machine``."""
        return self.m.run(machine, "curl", "-fsS", "--max-time", "5", *tls, url, timeout=10)

    def healthy(self, member: str) -> bool:
        """Whether ``member`` answers /health with true to the health-check client."""
        cert, key = self.pair(member, "etcd/healthcheck-client")
        try:
            r = self.curl(member, f"{self.url(member)}/health", "--cacert", str(self.cafile(member)), "--cert",
                          str(cert), "--key", str(key))
        except subprocess.TimeoutExpired:
            return False
        return r.returncode == 0 and '"true"' in r.stdout


def start_etcd_members(m: Machines, members: list[str]) -> EtcdCluster:
    """An etcd cluster, one member per machine on its eth1 address (client 2379, peer 2380), TLS with client
    certificates: each machine makes its pairs with ``kmesh certs etcd`` from one shared CA (the first
    machine makes it), as vagrant/scripts/etcd-member.sh does. Returns once every member answers /health.
    ``Machines.close`` stops them with everything else."""
    import time

    from kmesh.store.etcd_server import EtcdServerTLS

    cluster = EtcdCluster(m, list(members), {}, m.root / "etcd-ca")
    initial = ",".join(f"{x}=https://{m.ip(x)}:2380" for x in members)
    for i, x in enumerate(members):
        ip = m.ip(x)
        ok(subprocess.run([*KMESH, "certs", "etcd", "--out", str(cluster.pki(x)), "--ca-dir", str(cluster.ca_dir),
                           *(["--existing-ca"] if i else []), "--member", x, "--ip", ip,
                           "--client", "apiserver-etcd-client", "--client", "healthcheck-client"],
                          capture_output=True, text=True, timeout=60))
        etcd = cluster.pki(x) / "etcd"
        tls = EtcdServerTLS(etcd / "ca.crt", etcd / "server.crt", etcd / "server.key", etcd / "peer.crt",
                            etcd / "peer.key", etcd / "healthcheck-client.crt", etcd / "healthcheck-client.key")
        log = open(m.root / f"etcd-{x}.log", "wb")
        cluster.procs[x] = subprocess.Popen(netns.nsenter_argv(m.ns(x), [
            "etcd", "--name", x, "--data-dir", str(m.root / f"etcd-{x}"),
            "--listen-peer-urls", f"https://{ip}:2380", "--initial-advertise-peer-urls", f"https://{ip}:2380",
            "--listen-client-urls", cluster.url(x), "--advertise-client-urls", cluster.url(x),
            "--initial-cluster", initial, "--initial-cluster-state", "new", "--initial-cluster-token", m.prefix,
            *tls.argv()]),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
    deadline = time.monotonic() + 60
    for x in members:
        while not cluster.healthy(x):
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd member {x} is not healthy: {(m.root / f'etcd-{x}.log').read_text()[-2000:]}")
            time.sleep(0.3)
    return cluster


def kill_machine(m: Machines, machine: str) -> list[int]:
    """SIGKILL every process inside ``machine``'s namespace (a machine that loses power); their PIDs."""
    return _kill_in([m.ns(machine)])


def _kill_in(spaces: list[str]) -> list[int]:
    """SIGKILL every process inside one of ``spaces`` (through a pidfd); their PIDs."""
    from kmesh.lab.topology import _netns_inodes, _open_if_in

    killed = []
    inodes = _netns_inodes(spaces)
    for pid in processes_in(spaces):
        fd = _open_if_in(pid, inodes)  # checked again once the pidfd holds the process
        if fd is None:
            continue
        try:
            if send(fd, signal.SIGKILL):
                wait_fd(fd, 5.0)
                killed.append(pid)
        finally:
            os.close(fd)
    return killed


def echo_pod(name: str, node: str, labels: dict[str, str] | None = None) -> dict:
    """A kmesh/echo pod (HTTP on 8080) bound to ``node``."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "kmesh/echo",
                                                        "ports": [{"containerPort": 8080}]}]}}


def ok(r: subprocess.CompletedProcess[str]) -> str:
    """The command's stdout; fails the test with its exit status and output when it did not succeed."""
    assert r.returncode == 0, f"rc {r.returncode}\nstdout: {r.stdout[-3000:]}\nstderr: {r.stderr[-3000:]}"
    return r.stdout
