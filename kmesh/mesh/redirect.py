"""The mesh's traffic redirect: the nat rules an init container puts in a pod's namespace.

The chain layout follows istio-init (``ISTIO_INBOUND``/``ISTIO_IN_REDIRECT``
for arriving TCP, ``ISTIO_OUTPUT``/``ISTIO_REDIRECT`` for TCP the pod opens),
renamed ``KMESH_*``, with the same ports: inbound connections are REDIRECTed
to the sidecar's port 15006, outbound ones to 15001. UDP (DNS among it) is
never redirected.

One difference: Istio lets its proxy's own connections out by matching its
uid (``-m owner --uid-owner 1337``). kmesh's sidecar is a task of the node
agent, not a process of its own, so it has no uid to match; it marks its
sockets with ``SO_MARK`` instead (``mark``, 0x539 = 1337 by default) and the
first rule of ``KMESH_OUTPUT`` lets marked packets through.

``render`` gives the whole ``iptables-restore`` input of the nat table, which
replaces that table at once: applying it again (an init container may run
again) leaves the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from kmesh.apiserver.meshinject import INBOUND_PORT, OUTBOUND_PORT
from kmesh.apiserver.meshinject import MARK as PROXY_MARK
from kmesh.apiserver.meshinject import port_list as parse_ports
from kmesh.net import netns

__all__ = ["INBOUND_PORT", "OUTBOUND_PORT", "PROXY_MARK", "RedirectSpec", "apply", "check_port", "parse_mark",
           "parse_ports", "render"]

INBOUND = "KMESH_INBOUND"
IN_REDIRECT = "KMESH_IN_REDIRECT"
OUTPUT = "KMESH_OUTPUT"
REDIRECT = "KMESH_REDIRECT"
BUILTIN_CHAINS = ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")


@dataclass(frozen=True)
class RedirectSpec:
    """Where a pod's TCP goes: the sidecar's ports, the mark of its own sockets, the ports left alone."""

    inbound_port: int = INBOUND_PORT
    outbound_port: int = OUTBOUND_PORT
    mark: int = PROXY_MARK
    exclude_inbound_ports: tuple[int, ...] = ()
    exclude_outbound_ports: tuple[int, ...] = ()


def check_port(port: int, what: str = "port") -> int:
    """``port`` when it is 1-65535; ValueError saying which one is not."""
    if not 1 <= port <= 65535:
        raise ValueError(f"{what}: port {port} is not in 1-65535")
    return port


def parse_mark(text: object) -> int:
    """A packet mark written ``1337`` or ``0x539``: 1 … 2^32-1; ValueError says why not."""
    try:
        mark = int(str(text), 0)
    except ValueError:
        raise ValueError(f"want a number (0x539 or 1337), got {text!r}") from None
    if not 0 < mark <= 0xFFFFFFFF:
        raise ValueError(f"want a non-zero 32-bit mark, got {mark}")
    return mark


def _inbound_rules(spec: RedirectSpec) -> list[str]:
    rules = [f"-A PREROUTING -p tcp -j {INBOUND}"]
    rules += [f"-A {INBOUND} -p tcp --dport {p} -j RETURN" for p in spec.exclude_inbound_ports]
    rules.append(f"-A {INBOUND} -p tcp -j {IN_REDIRECT}")
    rules.append(f"-A {IN_REDIRECT} -p tcp -j REDIRECT --to-ports {spec.inbound_port}")
    return rules


def _outbound_rules(spec: RedirectSpec) -> list[str]:
    rules = [
        f"-A OUTPUT -p tcp -j {OUTPUT}",
        f"-A {OUTPUT} -m mark --mark {spec.mark:#x} -j RETURN",  # the sidecar's own sockets
        f"-A {OUTPUT} -o lo -j RETURN",  # inside the pod stays direct
        f"-A {OUTPUT} -d 127.0.0.1/32 -j RETURN",
    ]
    rules += [f"-A {OUTPUT} -p tcp --dport {p} -j RETURN" for p in spec.exclude_outbound_ports]
    rules.append(f"-A {OUTPUT} -j {REDIRECT}")
    rules.append(f"-A {REDIRECT} -p tcp -j REDIRECT --to-ports {spec.outbound_port}")
    return rules


def render(spec: RedirectSpec) -> str:
    """The ``iptables-restore`` input that makes a pod namespace's whole nat table the mesh's redirect."""
    check_port(spec.inbound_port, "inbound port")
    check_port(spec.outbound_port, "outbound port")
    for p in spec.exclude_inbound_ports + spec.exclude_outbound_ports:
        check_port(p, "excluded port")
    if not 0 <= spec.mark <= 0xFFFFFFFF:
        raise ValueError(f"mark {spec.mark:#x} does not fit 32 bits")
    lines = ["*nat"]
    lines += [f":{c} ACCEPT [0:0]" for c in BUILTIN_CHAINS]
    lines += [f":{c} - [0:0]" for c in (INBOUND, IN_REDIRECT, OUTPUT, REDIRECT)]
    lines += _inbound_rules(spec) + _outbound_rules(spec)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


async def apply(namespace: str, rules: str) -> None:
    """Load ``rules`` (``render``'s text) into the nat table of pod namespace ``namespace``.

    Refuses an empty name and the machine's own namespace: these rules belong in a pod's only."""
    if not namespace:
        raise netns.NetnsError("no pod network namespace to put the redirect rules in")
    if await netns.run_sync_in(namespace, netns.in_root_namespace):
        raise netns.NetnsError(f"{namespace!r} is the machine's own network namespace: not putting rules there")
    await netns.run(namespace, ["iptables-restore", "-w"], input=rules.encode())
