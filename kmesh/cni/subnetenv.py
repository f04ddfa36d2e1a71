"""``subnet.env``: what flanneld tells the CNI plugin about this node's pod network.

The file is written exactly as flannel writes it::

    FLANNEL_NETWORK=10.244.0.0/16
    FLANNEL_SUBNET=10.244.1.1/24
    FLANNEL_MTU=1450
    FLANNEL_IPMASQ=true

``FLANNEL_SUBNET`` is the node subnet's first address (the bridge's gateway)
with the subnet's length. Writes go to a temporary file then rename, so the
plugin never reads half a file.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PATH = Path("/run/flannel/subnet.env")


@dataclass(frozen=True)
class SubnetEnv:
    """The four values of subnet.env."""

    network: ipaddress.IPv4Network
    subnet: ipaddress.IPv4Network
    mtu: int
    ipmasq: bool

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """The node subnet's .1 (what FLANNEL_SUBNET names)."""
        return self.subnet.network_address + 1

    def render(self) -> str:
        """The file's text."""
        return (
            f"FLANNEL_NETWORK={self.network}\n"
            f"FLANNEL_SUBNET={self.gateway}/{self.subnet.prefixlen}\n"
            f"FLANNEL_MTU={self.mtu}\n"
            f"FLANNEL_IPMASQ={'true' if self.ipmasq else 'false'}\n"
        )


def write(path: str | os.PathLike[str], env: SubnetEnv) -> Path:
    """Write ``env`` to ``path`` atomically (parent directories created)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(env.render())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    return target


def parse(text: str) -> SubnetEnv:
    """Parse subnet.env text; ValueError names a missing or bad variable."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        values[name.strip()] = value.strip().strip('"')
    for name in ("FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_MTU"):
        if name not in values:
            raise ValueError(f"subnet.env: {name} is missing")
    try:
        network = ipaddress.IPv4Network(values["FLANNEL_NETWORK"], strict=False)
    except ValueError:
        raise ValueError(f"subnet.env: FLANNEL_NETWORK={values['FLANNEL_NETWORK']!r} is not a CIDR") from None
    try:
        subnet = ipaddress.IPv4Interface(values["FLANNEL_SUBNET"]).network
    except ValueError:
        raise ValueError(f"subnet.env: FLANNEL_SUBNET={values['FLANNEL_SUBNET']!r} is not an address/len") from None
    try:
        mtu = int(values["FLANNEL_MTU"])
    except ValueError:
        raise ValueError(f"subnet.env: FLANNEL_MTU={values['FLANNEL_MTU']!r} is not a number") from None
    ipmasq = values.get("FLANNEL_IPMASQ", "false").lower() == "true"
    return SubnetEnv(network, subnet, mtu, ipmasq)


def read(path: str | os.PathLike[str] = DEFAULT_PATH) -> SubnetEnv:
    """Read and parse a subnet.env file."""
    return parse(Path(path).read_text())


def read_subnet(path: str | os.PathLike[str]) -> ipaddress.IPv4Network | None:
    """The subnet a previous run wrote (flannel reuses it when still free), or None."""
    try:
        return read(path).subnet
    except (OSError, ValueError):
        return None
