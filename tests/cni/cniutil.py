"""Test helpers for the CNI tests: a lab node namespace with pod namespaces, subnet.env, running plugins.

Every namespace is named ``kmc-<random>-...`` and removed by ``CNILab.close``
(called from fixture finalizers, also on failure). Plugins only ever run
inside the lab's node namespace and against its pod namespaces; the
host-local IPAM state lives in the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kmesh.net import netns
from kmesh.net.netns_check import netns_usable
from tests.conftest import require

REFERENCE_PLUGINS = "/usr/lib/cni"
VENV_BIN = str(Path(sys.executable).parent)
CNI_PATH = [VENV_BIN, REFERENCE_PLUGINS]
NETWORK = "10.244.0.0/16"
SUBNET = "10.244.7.0/24"
GATEWAY = "10.244.7.1"


@dataclass
class CNILab:
    """A node namespace plus pod namespaces and a tmp dir for subnet.env, IPAM state and caches."""

    tmp: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    pods: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        """Every namespace of this lab starts with it."""
        return f"kmc-{self.tag}-"

    @property
    def node(self) -> str:
        """The node namespace: cni0, routes and portmap rules live here."""
        return f"{self.prefix}node"

    @property
    def ipam_dir(self) -> Path:
        """host-local's dataDir (never /var/lib/cni)."""
        return self.tmp / "ipam"

    @property
    def subnet_file(self) -> Path:
        """Where the test writes subnet.env."""
        return self.tmp / "subnet.env"

    @property
    def data_dir(self) -> Path:
        """kmesh-cni's dataDir (saved delegate configs)."""
        return self.tmp / "flannel"

    @property
    def cache_dir(self) -> Path:
        """The caller's result cache."""
        return self.tmp / "results"

    def start(self) -> CNILab:
        """Create the node namespace."""
        netns.add(self.node)
        return self

    def add_pod(self, name: str) -> tuple[str, str]:
        """Create pod namespace ``name``; returns (namespace name, its /run/netns path)."""
        ns = f"{self.prefix}{name}"
        netns.add(ns)
        self.pods.append(ns)
        return ns, str(netns.path(ns))

    def write_subnet_env(
        self,
        subnet_ip: str = f"{GATEWAY}/24",
        network: str = NETWORK,
        mtu: int = 1450,
        ipmasq: bool = True,
    ) -> Path:
        """subnet.env as flannel writes it."""
        self.subnet_file.write_text(
            f"FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={subnet_ip}\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ={'true' if ipmasq else 'false'}\n"
        )
        return self.subnet_file

    def close(self) -> None:
        """Remove every namespace of this lab (links and rules in them go too)."""
        for ns in netns.names(self.prefix):
            netns.delete(ns)

    def host_local_files(self, network_name: str) -> list[str]:
        """The addresses host-local has reserved for ``network_name``."""
        d = self.ipam_dir / network_name
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if p.name[0].isdigit())


@pytest.fixture(name="lab")
def lab_fixture(tmp_path: Path) -> Iterator[CNILab]:
    """A fresh CNI lab, removed afterwards whatever happened."""
    require(netns_usable(), "root and network namespaces")
    require(
        os.path.isfile(os.path.join(REFERENCE_PLUGINS, "bridge")),
        f"CNI reference plugins in {REFERENCE_PLUGINS}",
    )
    lab = CNILab(tmp_path)
    try:
        lab.start()
        yield lab
    finally:
        lab.close()


def bridge_conflist(
    lab: CNILab, name: str = "kmc-net", *, portmap: bool = True
) -> dict[str, Any]:
    """A conflist that uses the reference bridge + host-local (+ portmap) directly, as flannel's delegate would."""
    plugins: list[dict[str, Any]] = [
        {
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": True,
            "isDefaultGateway": True,
            "hairpinMode": True,
            "ipMasq": False,
            "mtu": 1450,
            "ipam": {
                "type": "host-local",
                "dataDir": str(lab.ipam_dir),
                "ranges": [[{"subnet": SUBNET}]],
                # With a gw: bridge's CHECK cannot match a gateway-less route it installed via the gateway.
                "routes": [{"dst": NETWORK, "gw": GATEWAY}],
            },
        }
    ]
    if portmap:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
    return {"name": name, "cniVersion": "1.0.0", "plugins": plugins}


@dataclass
class PluginRun:
    """What one plugin process did: exit status, stdout parsed as JSON (None if not JSON), stderr."""

    rc: int
    out: Any
    stdout: str
    stderr: str


def run_plugin(
    exe: str,
    command: str,
    conf: Any,
    *,
    node: str | None,
    container_id: str = "",
    netns_path: str = "",
    ifname: str = "eth0",
    cni_args: str = "",
    cni_path: list[str] | None = None,
    drop: tuple[str, ...] = (),
) -> PluginRun:
    """Run a plugin the way a runtime does (env + config on stdin), inside namespace ``node``.

    ``conf`` is a dict (sent as JSON) or raw text; ``drop`` leaves out env variables."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns_path,
        "CNI_IFNAME": ifname,
        "CNI_ARGS": cni_args,
        "CNI_PATH": os.pathsep.join(cni_path or CNI_PATH),
    }
    for k in drop:
        env.pop(k, None)
    text = conf if isinstance(conf, str) else json.dumps(conf)
    argv = [exe] if node is None else netns.nsenter_argv(node, [exe])
    proc = subprocess.run(
        argv,
        input=text,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    try:
        out = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        out = None
    return PluginRun(proc.returncode, out, proc.stdout, proc.stderr)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ping(ns: str, ip: str, timeout: float = 2.0) -> bool:
    """One ICMP echo from inside namespace ``ns`` to ``ip``: ``ping -c1 -W2`` when installed, else a raw socket."""
    if shutil.which("ping"):
        return in_ns(ns, "ping", "-c1", f"-W{int(timeout)}", ip).returncode == 0
    sock = netns.socket_in(ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        sock.settimeout(timeout)
        ident = os.getpid() & 0xFFFF
        body = b"kmesh-cni-test"
        header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
        header = struct.pack("!BBHHH", 8, 0, _checksum(header + body), ident, 1)
        sock.sendto(header + body, (ip, 0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                packet, (src, _) = sock.recvfrom(2048)
            except TimeoutError:
                return False
            ihl = (packet[0] & 0x0F) * 4
            kind, _, _, rid, _ = struct.unpack("!BBHHH", packet[ihl : ihl + 8])
            if src == ip and kind == 0 and rid == ident:
                return True
        return False
    finally:
        sock.close()


def in_ns(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command inside namespace ``ns`` (for ping, ip, iptables-save)."""
    return subprocess.run(
        netns.exec_argv(ns, argv),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
