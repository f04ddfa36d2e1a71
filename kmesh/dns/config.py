"""What ``kmesh dns`` can be told: zone, TTL, pods mode, upstreams, listeners, client ACL, metrics."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from kmesh.api.wellknown import CLUSTER_CIDR, CLUSTER_DOMAIN, SERVICE_CIDR

PodsMode = Literal["disabled", "insecure", "verified"]

DEFAULT_ALLOWED = (CLUSTER_CIDR, SERVICE_CIDR, "127.0.0.0/8", "::1/128")


def resolv_conf_nameservers(path: str | Path = "/etc/resolv.conf") -> list[str]:
    """The host's upstream resolvers (``nameserver`` lines), as ``ip:53`` strings; loopback stub resolvers kept."""
    out: list[str] = []
    try:
        text = Path(path).read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            ip = parts[1].split("%", 1)[0]
            out.append(f"[{ip}]:53" if ":" in ip else f"{ip}:53")
    return out


def parse_hostport(text: str, default_port: int = 53) -> tuple[str, int]:
    """``1.2.3.4``, ``1.2.3.4:5353``, ``[::1]:53`` or ``::1`` → (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, default_port


@dataclass
class DNSConfig:
    """Configuration of one cluster DNS server (the flags of ``kmesh dns`` map one to one onto these fields)."""

    zone: str = CLUSTER_DOMAIN
    ttl: int = 5
    pods: PodsMode = "disabled"
    listen: list[str] = field(default_factory=lambda: ["127.0.0.1:53"])
    """``host:port`` addresses; UDP and TCP on each. Port 0 picks a free port (see ``RunningDNS.addresses``)."""
    upstreams: list[str] | None = None
    """``host:port`` resolvers for non-cluster names; None = the nameservers in /etc/resolv.conf; [] = no forwarding."""
    allowed_networks: list[str] = field(default_factory=lambda: list(DEFAULT_ALLOWED))
    """Clients allowed to have names forwarded (others get REFUSED for non-cluster names)."""
    metrics_port: int | None = 9153
    """Prometheus metrics on ``metrics_host:metrics_port`` (None: no metrics listener; 0: a free port)."""
    metrics_host: str = "127.0.0.1"
    workers: int = 1
    """Processes serving the same UDP/TCP ports through SO_REUSEPORT (extra ones need ``kubeconfig``)."""
    kubeconfig: str | None = None
    """Kubeconfig the extra worker processes use to build their own client + informers."""
    cache_size: int = 10000
    """Upper bound on forwarded answers kept (and on cached cluster answers built on demand)."""
    forward_timeout: float = 2.0
    max_udp_payload: int = 4096
    """Largest UDP answer we send to an EDNS client (its advertised size is honoured below this)."""

    def __post_init__(self) -> None:
        self.zone = self.zone.strip(".").lower()
        if self.pods not in ("disabled", "insecure", "verified"):
            raise ValueError(f"pods mode must be disabled|insecure|verified, not {self.pods!r}")
        if self.ttl < 0 or self.ttl > 3600:
            raise ValueError("ttl must be within 0..3600")
        for net in self.allowed_networks:
            ipaddress.ip_network(net, strict=False)
        for addr in self.listen:
            parse_hostport(addr)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: object) -> DNSConfig:
        """Load a YAML or JSON file whose keys are this class's fields (``allowed_networks``, ``metrics_port``...);
        ``overrides`` (e.g. flags given on the command line) win over the file."""
        import yaml

        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise TypeError(f"{path}: expected a mapping of DNSConfig fields")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown settings {', '.join(unknown)}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)

    def upstream_addresses(self) -> list[tuple[str, int]]:
        """The resolved upstream list (resolv.conf when not configured)."""
        ups = resolv_conf_nameservers() if self.upstreams is None else self.upstreams
        return [parse_hostport(u) for u in ups]
