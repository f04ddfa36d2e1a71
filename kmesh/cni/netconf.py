"""flannel's network configuration (``net-conf.json`` / etcd's ``/coreos.com/network/config``).

Defaults follow flannel's ``subnet.ParseConfig``: a network of /22 or larger
gets a /24 per node, a smaller one (down to /28) is split into subnets two
bits longer; the first subnet is skipped (``SubnetMin`` defaults to the
second), ``SubnetMax`` to the last; both must lie in the network and on a
``SubnetLen`` boundary. The backend defaults to vxlan, VNI 1, UDP 8472
(the udp backend: 8285).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kmesh.api.wellknown import CLUSTER_CIDR

BACKEND_TYPES = ("vxlan", "host-gw", "udp")
DEFAULT_PORTS = {"vxlan": 8472, "udp": 8285}


class NetConfError(ValueError):
    """net-conf.json is invalid; ``field`` names the offending key (e.g. ``Backend.VNI``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"net-conf {field}: {message}")
        self.field = field


@dataclass(frozen=True)
class BackendConf:
    """The ``Backend`` object: type and its knobs (``extra`` keeps keys kmesh does not use)."""

    Type: str = "vxlan"
    VNI: int = 1
    Port: int = 8472
    DirectRouting: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """flannel's JSON form (VNI/DirectRouting only for vxlan, Port not for host-gw)."""
        out: dict[str, Any] = {**self.extra, "Type": self.Type}
        if self.Type == "vxlan":
            out["VNI"] = self.VNI
            out["DirectRouting"] = self.DirectRouting
        if self.Type in DEFAULT_PORTS:
            out["Port"] = self.Port
        return out


def _ip(doc: dict[str, Any], name: str) -> ipaddress.IPv4Address | None:
    value = doc.get(name)
    if value in (None, ""):
        return None
    try:
        return ipaddress.IPv4Address(value)
    except (ipaddress.AddressValueError, ValueError, TypeError):
        raise NetConfError(name, f"{value!r} is not an IPv4 address") from None


def _int(doc: dict[str, Any], name: str, where: str, lo: int, hi: int) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise NetConfError(where, f"{value!r} is not an integer")
    if not lo <= value <= hi:
        raise NetConfError(where, f"{value} is not in {lo}..{hi}")
    return value


def _backend(raw: Any) -> BackendConf:
    if raw is None:
        return BackendConf()
    if not isinstance(raw, dict):
        raise NetConfError("Backend", f"must be an object, not {type(raw).__name__}")
    btype = raw.get("Type", "vxlan")
    if btype not in BACKEND_TYPES:
        raise NetConfError("Backend.Type", f"{btype!r} is not one of {', '.join(BACKEND_TYPES)}")
    vni = _int(raw, "VNI", "Backend.VNI", 0, 2**24 - 1)
    port = _int(raw, "Port", "Backend.Port", 1, 65535)
    direct = raw.get("DirectRouting", False)
    if not isinstance(direct, bool):
        raise NetConfError("Backend.DirectRouting", f"{direct!r} is not true or false")
    extra = {k: v for k, v in raw.items() if k not in ("Type", "VNI", "Port", "DirectRouting")}
    return BackendConf(
        Type=btype,
        VNI=1 if vni is None else vni,
        Port=port if port is not None else DEFAULT_PORTS.get(btype, 0),
        DirectRouting=direct,
        extra=extra,
    )


@dataclass(frozen=True)
class NetConf:
    """The cluster network and how it is cut into node subnets (all defaults filled in)."""

    Network: ipaddress.IPv4Network
    SubnetLen: int
    SubnetMin: ipaddress.IPv4Address
    SubnetMax: ipaddress.IPv4Address
    Backend: BackendConf = field(default_factory=BackendConf)

    @classmethod
    def parse(cls, source: str | bytes | dict[str, Any]) -> NetConf:
        """Parse net-conf JSON (text or decoded); NetConfError names the bad field."""
        if isinstance(source, (str, bytes)):
            try:
                doc = json.loads(source)
            except ValueError as exc:
                raise NetConfError("(document)", f"not JSON: {exc}") from None
        else:
            doc = source
        if not isinstance(doc, dict):
            raise NetConfError("(document)", "must be a JSON object")
        raw_net = doc.get("Network")
        if not raw_net:
            raise NetConfError("Network", "is required (e.g. \"10.244.0.0/16\")")
        try:
            network = ipaddress.IPv4Network(raw_net, strict=False)
        except (ValueError, TypeError):
            raise NetConfError("Network", f"{raw_net!r} is not an IPv4 CIDR") from None
        plen = network.prefixlen
        sublen = _int(doc, "SubnetLen", "SubnetLen", 0, 32) or 0
        if sublen:
            if sublen > 30:
                raise NetConfError("SubnetLen", f"/{sublen} is too long: must be /30 or shorter")
            if sublen < plen + 2:
                raise NetConfError("SubnetLen", f"/{sublen} leaves fewer than four subnets in {network}")
        elif plen > 28:
            raise NetConfError("Network", f"{network} is too small: the smallest useful network is a /28")
        else:
            sublen = 24 if plen <= 22 else plen + 2
        size = 1 << (32 - sublen)
        smin = _ip(doc, "SubnetMin") or network.network_address + size
        smax = _ip(doc, "SubnetMax") or network.broadcast_address + 1 - size
        for name, addr in (("SubnetMin", smin), ("SubnetMax", smax)):
            if addr not in network:
                raise NetConfError(name, f"{addr} is not in Network {network}")
            if int(addr) % size:
                raise NetConfError(name, f"{addr} is not on a /{sublen} (SubnetLen) boundary")
        if smin > smax:
            raise NetConfError("SubnetMin", f"{smin} is above SubnetMax {smax}")
        return cls(network, sublen, smin, smax, _backend(doc.get("Backend")))

    @classmethod
    def default(cls, network: str = CLUSTER_CIDR, backend: str = "vxlan") -> NetConf:
        """Kubernetes' usual cluster network with flannel's defaults."""
        return cls.parse({"Network": network, "Backend": {"Type": backend}})

    def to_dict(self) -> dict[str, Any]:
        """flannel's field names, defaults written out."""
        return {
            "Network": str(self.Network),
            "SubnetLen": self.SubnetLen,
            "SubnetMin": str(self.SubnetMin),
            "SubnetMax": str(self.SubnetMax),
            "Backend": self.Backend.to_dict(),
        }

    def to_json(self) -> str:
        """The net-conf.json text."""
        return json.dumps(self.to_dict(), indent=2)

    def subnet_at(self, addr: ipaddress.IPv4Address) -> ipaddress.IPv4Network:
        """The node subnet starting at ``addr``."""
        return ipaddress.IPv4Network((addr, self.SubnetLen))

    def subnets(self) -> Iterator[ipaddress.IPv4Network]:
        """Every node subnet from SubnetMin to SubnetMax, in order."""
        size = 1 << (32 - self.SubnetLen)
        for start in range(int(self.SubnetMin), int(self.SubnetMax) + 1, size):
            yield ipaddress.IPv4Network((start, self.SubnetLen))

    def count(self) -> int:
        """How many node subnets SubnetMin..SubnetMax holds."""
        return (int(self.SubnetMax) - int(self.SubnetMin)) // (1 << (32 - self.SubnetLen)) + 1

    def allows(self, subnet: ipaddress.IPv4Network) -> bool:
        """Whether ``subnet`` is one this config hands out (flannel's compatibility check on reuse)."""
        return (
            subnet.prefixlen == self.SubnetLen
            and subnet.subnet_of(self.Network)
            and self.SubnetMin <= subnet.network_address <= self.SubnetMax
        )
