"""kube-proxy's IPVS-mode ipsets: what they are, what goes in them, and ``ipset restore`` to apply them.

The ipsets let the IPVS mode keep a constant handful of iptables rules
however many Services exist: a rule matches a whole set
(``-m set --match-set KUBE-CLUSTER-IP dst,dst``). Each sync rewrites every
set's members with one ``ipset restore`` run inside the node namespace
(create if missing, flush, add), so a set never holds stale entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kmesh.net import netns as nsmod


@dataclass(frozen=True)
class SetSpec:
    """One of upstream's sets: name, ipset type and the comment upstream gives it."""

    name: str
    type: str
    comment: str

    def create_line(self) -> str:
        """The ``create`` line (``-exist`` so re-applying is fine)."""
        if self.type.startswith("bitmap:port"):
            opts = "range 0-65535"
        else:
            opts = "family inet hashsize 1024 maxelem 65536"
        return f"create {self.name} {self.type} {opts} -exist"


LOOP_BACK = SetSpec("KUBE-LOOP-BACK", "hash:ip,port,ip", "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose")
CLUSTER_IP = SetSpec("KUBE-CLUSTER-IP", "hash:ip,port", "Kubernetes service cluster ip + port for masquerade purpose")
EXTERNAL_IP = SetSpec("KUBE-EXTERNAL-IP", "hash:ip,port", "Kubernetes service external ip + port for masquerade and filter purpose")
EXTERNAL_IP_LOCAL = SetSpec("KUBE-EXTERNAL-IP-LOCAL", "hash:ip,port", "Kubernetes service external ip + port with externalTrafficPolicy=local")
LOAD_BALANCER = SetSpec("KUBE-LOAD-BALANCER", "hash:ip,port", "Kubernetes service lb portal")
LOAD_BALANCER_LOCAL = SetSpec("KUBE-LOAD-BALANCER-LOCAL", "hash:ip,port", "Kubernetes service load balancer ip + port with externalTrafficPolicy=local")
NODE_PORT_TCP = SetSpec("KUBE-NODE-PORT-TCP", "bitmap:port", "Kubernetes nodeport TCP port for masquerade purpose")
NODE_PORT_LOCAL_TCP = SetSpec("KUBE-NODE-PORT-LOCAL-TCP", "bitmap:port", "Kubernetes nodeport TCP port with externalTrafficPolicy=local")
NODE_PORT_UDP = SetSpec("KUBE-NODE-PORT-UDP", "bitmap:port", "Kubernetes nodeport UDP port for masquerade purpose")
NODE_PORT_LOCAL_UDP = SetSpec("KUBE-NODE-PORT-LOCAL-UDP", "bitmap:port", "Kubernetes nodeport UDP port with externalTrafficPolicy=local")
HEALTH_CHECK_NODE_PORT = SetSpec("KUBE-HEALTH-CHECK-NODE-PORT", "bitmap:port", "Kubernetes health check node port")
IPVS_IPS = SetSpec("KUBE-IPVS-IPS", "hash:ip", "IPVS service ip")

ALL_SETS: tuple[SetSpec, ...] = (
    LOOP_BACK, CLUSTER_IP, EXTERNAL_IP, EXTERNAL_IP_LOCAL, LOAD_BALANCER, LOAD_BALANCER_LOCAL,
    NODE_PORT_TCP, NODE_PORT_LOCAL_TCP, NODE_PORT_UDP, NODE_PORT_LOCAL_UDP, HEALTH_CHECK_NODE_PORT, IPVS_IPS,
)


def ip_port(ip: str, protocol: str, port: int) -> str:
    """A ``hash:ip,port`` member: ``10.96.0.1,tcp:443``."""
    return f"{ip},{protocol.lower()}:{port}"


def ip_port_ip(ip: str, protocol: str, port: int, ip2: str) -> str:
    """A ``hash:ip,port,ip`` member: ``10.244.1.5,tcp:8080,10.244.1.5``."""
    return f"{ip},{protocol.lower()}:{port},{ip2}"


@dataclass
class IPSets:
    """The members every set should have after a sync."""

    members: dict[str, set[str]] = field(default_factory=lambda: {s.name: set() for s in ALL_SETS})

    def add(self, spec: SetSpec, member: str) -> None:
        """Put ``member`` into set ``spec``."""
        self.members.setdefault(spec.name, set()).add(member)

    def of(self, spec: SetSpec) -> set[str]:
        """The members of set ``spec``."""
        return self.members.get(spec.name, set())

    def restore_text(self) -> str:
        """``ipset restore`` input making every set exactly this (sorted, so the text is stable)."""
        lines: list[str] = []
        for spec in ALL_SETS:
            lines.append(spec.create_line())
            lines.append(f"flush {spec.name}")
            for m in sorted(self.of(spec), key=_member_order):
                lines.append(f"add {spec.name} {m} -exist")
        return "\n".join(lines) + "\n"

    def save_text(self) -> str:
        """The sets as ``ipset save`` would list them (for ``rules()``)."""
        lines: list[str] = []
        for spec in ALL_SETS:
            lines.append(spec.create_line().removesuffix(" -exist"))
            lines += [f"add {spec.name} {m}" for m in sorted(self.of(spec), key=_member_order)]
        return "\n".join(lines) + "\n"


def _member_order(m: str) -> tuple[int, tuple[int, ...], str]:
    """Ports numerically, IPv4 addresses by their octets, anything else by its text."""
    head = m.split(",")[0]
    try:
        return (0, tuple(int(x) for x in head.split(".")), m)
    except ValueError:
        return (1, (), m)


async def apply(netns: str | None, sets: IPSets) -> None:
    """Apply ``sets`` with one ``ipset restore`` in ``netns``."""
    await nsmod.run(netns, ["ipset", "restore"], input=sets.restore_text().encode())


async def destroy(netns: str | None) -> None:
    """Destroy every set this module makes (missing ones are fine; iptables rules using them must be gone first)."""
    for spec in ALL_SETS:
        await nsmod.run(netns, ["ipset", "destroy", spec.name], check=False)


async def listed(netns: str | None) -> str:
    """``ipset save`` in ``netns`` (what is really installed)."""
    proc = await nsmod.run(netns, ["ipset", "save"], check=False)
    return proc.stdout.decode()
