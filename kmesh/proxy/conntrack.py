"""UDP conntrack clean-up after a sync, as kube-proxy does it.

UDP has no connection end: a flow DNATed to an endpoint that went away (or
REJECTed while a service had no endpoints) keeps its conntrack entry, and
every later datagram of that flow follows the stale entry instead of the new
rules. So after the rules change, the entries for removed endpoints and for
services that just got their first endpoint are deleted with ``conntrack -D``
inside the proxy's namespace.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kmesh.net import netns
from kmesh.proxy.model import Endpoint, ServicePort, ServicePortName, usable

log = logging.getLogger("kmesh.proxy")


class ConntrackError(Exception):
    """``conntrack`` is missing or failed for another reason than "nothing to delete"."""


@dataclass(frozen=True, order=True)
class Flush:
    """One ``conntrack -D`` filter: UDP flows to ``orig_dst`` (or ``dport``), optionally DNATed to ``dst_nat``."""

    orig_dst: str = ""
    dport: int = 0
    dst_nat: str = ""

    def argv(self) -> list[str]:
        """The ``conntrack`` command line."""
        args = ["conntrack", "-D"]
        if self.orig_dst:
            args += ["--orig-dst", self.orig_dst]
        args += ["-p", "udp"]
        if self.dport:
            args += ["--dport", str(self.dport)]
        if self.dst_nat:
            args += ["--dst-nat", self.dst_nat]
        return args


def _reachable(sp: ServicePort, node: str) -> set[str]:
    """The endpoint IPs a service port's rules could DNAT to (either traffic policy)."""
    eps: list[Endpoint] = [*sp.cluster_endpoints(), *sp.local_endpoints(node)]
    return {e.ip for e in eps}


def _destinations(sp: ServicePort) -> tuple[list[str], int]:
    return [sp.cluster_ip, *sp.external_ips, *sp.load_balancer_ips], sp.node_port


def stale_flushes(
    old: Mapping[ServicePortName, ServicePort],
    new: Mapping[ServicePortName, ServicePort],
    names: Iterable[ServicePortName],
    node: str,
) -> list[Flush]:
    """The deletions a sync from ``old`` to ``new`` needs for the UDP service ports among ``names``.

    Removed endpoint → flows DNATed to it via any of the service's addresses;
    service going from no endpoints to some → every flow to its addresses
    (they were rejected and are remembered as such); deleted service → every
    flow to its addresses.
    """
    out: set[Flush] = set()
    for n in names:
        before, after = old.get(n), new.get(n)
        if n.protocol != "UDP" or before is None:
            continue
        ips, nodeport = _destinations(before)
        if after is None:
            out.update(Flush(orig_dst=ip) for ip in ips)
            if nodeport:
                out.add(Flush(dport=nodeport))
            continue
        was, now = _reachable(before, node), _reachable(after, node)
        for ep in sorted(was - now):
            out.update(Flush(orig_dst=ip, dst_nat=ep) for ip in ips)
            if nodeport:
                out.add(Flush(dport=nodeport, dst_nat=ep))
        if not usable(before.endpoints) and usable(after.endpoints):
            ips, nodeport = _destinations(after)
            out.update(Flush(orig_dst=ip) for ip in ips)
            if nodeport:
                out.add(Flush(dport=nodeport))
    return sorted(out)


def available() -> bool:
    """True when the ``conntrack`` program is installed."""
    return shutil.which("conntrack") is not None


async def flush(ns: str | None, flushes: Iterable[Flush]) -> int:
    """Run each deletion in namespace ``ns`` (None: here); how many commands ran.

    ``conntrack -D`` exits 1 when nothing matched; that is not an error here.
    """
    todo = list(flushes)
    if not todo:
        return 0
    if not available():
        raise ConntrackError("conntrack not found (apt package conntrack); stale UDP flows were not flushed")
    for f in todo:
        proc = await netns.run(ns, f.argv(), check=False)
        text = (proc.stdout + proc.stderr).decode(errors="replace")
        if proc.returncode != 0 and "0 flow entries" not in text:
            raise ConntrackError(f"{' '.join(f.argv())}: {text.strip() or proc.returncode}")
    return len(todo)


async def flush_stale(
    ns: str | None,
    old: Mapping[ServicePortName, ServicePort],
    new: Mapping[ServicePortName, ServicePort],
    names: Iterable[ServicePortName],
    node: str,
    mode: str,
) -> str:
    """After a sync's rules are in: flush the UDP flows ``stale_flushes`` finds; "" or what went wrong.

    A failure is logged and returned, not raised: the rules are installed, and
    a stale UDP flow is not worth a resync.
    """
    try:
        await flush(ns, stale_flushes(old, new, names, node))
    except ConntrackError as exc:
        log.warning("%s proxy: %s", mode, exc)
        return str(exc)
    return ""
