"""LoadBalancer addresses: each ``type: LoadBalancer`` Service gets an IPv4 address from the lab's pool.

What MetalLB's controller (and k3s's ServiceLB) do on bare metal: a Service
of type LoadBalancer without ``spec.loadBalancerClass`` (a class means another
implementation owns it) gets one address of the pool written to
``status.loadBalancer.ingress`` as ``[{"ip": ..., "ipMode": "VIP"}]``; the
node agents' speakers (``kmesh.gateway.announce``) then answer ARP for it.

- ``spec.loadBalancerIP`` (deprecated upstream, still widely used) is given
  when it lies in the pool and no other Service holds it; otherwise the
  Service gets no address and a Warning event ``AllocationFailed`` says why.
- An exhausted pool: no address and the same Warning; the Service is retried
  as soon as an address is released.
- A deleted Service, or one that is no longer of type LoadBalancer, gives its
  address back (the API server clears the status of a Service that changes type).
- The addresses Services already hold are the state: the informer's list
  (or a new leader's replay) claims them before any allocation, so a restarted
  controller gives no address twice.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable

from kmesh.api import errors as E
from kmesh.api.obj import Obj
from kmesh.client.api import Client
from kmesh.client.informer import Change
from kmesh.controllers import podutil
from kmesh.controllers.base import Controller
from kmesh.controllers.events import EventRecorder
from kmesh.controllers.informers import InformerFactory

log = logging.getLogger("kmesh.controllers.lbipam")

# The top of the lab underlay 192.168.56.0/24: above every address a lab hands out (gateway .1, control
# plane .10, nodes .11-.74 for the 64 nodes `kmesh up` allows; Vagrant machines count up from .10).
DEFAULT_LB_RANGE = "192.168.56.240-192.168.56.254"
MAX_POOL = 1 << 16  # addresses in one pool: a lab needs a handful; the bound keeps bookkeeping small


class PoolError(ValueError):
    """A pool range that cannot be used; the message names the range and why."""


def parse_range(text: str) -> list[tuple[int, int]]:
    """The address ranges of ``text``: comma-separated IPv4 CIDRs or ``START-END`` ranges (inclusive).

    A CIDR shorter than /31 leaves out its network and broadcast addresses, as MetalLB's
    ``avoidBuggyIPs`` would not, but as a LAN needs."""
    out: list[tuple[int, int]] = []
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise PoolError("empty range: give a CIDR like 192.168.56.240/28 or START-END like "
                        "192.168.56.240-192.168.56.254")
    for part in parts:
        try:
            if "-" in part:
                a, b = (ipaddress.IPv4Address(x.strip()) for x in part.split("-", 1))
                first, last = int(a), int(b)
                if first > last:
                    raise PoolError(f"{part!r}: the start address is above the end address")
            else:
                net = ipaddress.IPv4Network(part, strict=False)
                first, last = int(net.network_address), int(net.broadcast_address)
                if net.prefixlen < 31:
                    first, last = first + 1, last - 1
        except PoolError:
            raise
        except ValueError:
            raise PoolError(f"{part!r} is neither an IPv4 CIDR (192.168.56.240/28) nor a range "
                            "START-END (192.168.56.240-192.168.56.254)") from None
        out.append((first, last))
    if sum(b - a + 1 for a, b in out) > MAX_POOL:
        raise PoolError(f"{text!r}: more than {MAX_POOL} addresses")
    out.sort()
    for (a1, b1), (a2, _) in zip(out, out[1:]):
        if a2 <= b1:
            raise PoolError(f"{text!r}: the ranges overlap")
    return out


def check_range(text: str, avoid: dict[str, Iterable[str]]) -> list[tuple[int, int]]:
    """``parse_range`` plus: no address in any of the networks of ``avoid`` (what → CIDRs/addresses).

    ``avoid`` names what the range must stay out of, e.g. ``{"the service CIDR": ["10.96.0.0/12"],
    "the node addresses": ["192.168.56.11"]}``; the error names the first collision."""
    ranges = parse_range(text)
    for what, nets in avoid.items():
        for cidr in nets:
            net = ipaddress.ip_network(cidr, strict=False)
            if net.version != 4:
                continue
            lo, hi = int(net.network_address), int(net.broadcast_address)
            for a, b in ranges:
                if a <= hi and lo <= b:
                    raise PoolError(f"{text!r} overlaps {what} ({cidr})")
    return ranges


def within(text: str, cidr: str) -> bool:
    """Whether every address of the range ``text`` lies in ``cidr``."""
    net = ipaddress.ip_network(cidr, strict=False)
    lo, hi = int(net.network_address), int(net.broadcast_address)
    return all(lo <= a and b <= hi for a, b in parse_range(text))


class Pool:
    """The addresses of one range and who holds each (keys are ``namespace/name``)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.ranges = parse_range(text)
        self.size = sum(b - a + 1 for a, b in self.ranges)
        self.owner: dict[int, str] = {}
        self.by_key: dict[str, int] = {}

    def __contains__(self, ip: object) -> bool:
        n = _int(ip)
        return n is not None and any(a <= n <= b for a, b in self.ranges)

    def held(self, key: str) -> str | None:
        """The address ``key`` holds, if any."""
        n = self.by_key.get(key)
        return None if n is None else str(ipaddress.IPv4Address(n))

    def holder(self, ip: str) -> str | None:
        """Who holds ``ip``."""
        n = _int(ip)
        return None if n is None else self.owner.get(n)

    def claim(self, key: str, ip: str) -> bool:
        """Give ``ip`` to ``key`` if it is in the pool and free (or already ``key``'s); ``key`` gives back
        any other address it held. False: outside the pool or held by another."""
        n = _int(ip)
        if n is None or ip not in self:
            return False
        if self.owner.get(n, key) != key:
            return False
        self.release(key)
        self.owner[n] = key
        self.by_key[key] = n
        return True

    def allocate(self, key: str) -> str | None:
        """An address for ``key``: the one it holds, else the lowest free one; None when none is free."""
        if key in self.by_key:
            return self.held(key)
        for a, b in self.ranges:
            for n in range(a, b + 1):
                if n not in self.owner:
                    self.owner[n] = key
                    self.by_key[key] = n
                    return str(ipaddress.IPv4Address(n))
        return None

    def release(self, key: str) -> str | None:
        """``key`` gives back its address (the one it held, or None)."""
        n = self.by_key.pop(key, None)
        if n is None:
            return None
        if self.owner.get(n) == key:
            del self.owner[n]
        return str(ipaddress.IPv4Address(n))

    def free(self) -> int:
        """How many addresses are free."""
        return self.size - len(self.owner)


def _int(ip: object) -> int | None:
    try:
        return int(ipaddress.IPv4Address(str(ip)))
    except ValueError:
        return None


def wants_address(svc: Obj) -> bool:
    """Whether this controller gives ``svc`` an address: type LoadBalancer without a loadBalancerClass."""
    spec = svc.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and not spec.get("loadBalancerClass")


def ingress_ips(svc: Obj) -> list[str]:
    """The addresses in ``status.loadBalancer.ingress``."""
    ing = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [i["ip"] for i in ing if isinstance(i, dict) and i.get("ip")]


def _key(svc: Obj) -> str:
    md = podutil.md(svc)
    return f"{md.get('namespace') or 'default'}/{md.get('name', '')}"


class LoadBalancerIPAM(Controller[str]):
    """Gives LoadBalancer Services addresses from one pool (see the module docstring)."""

    name = "service-lb-ipam"
    queue_name = "service-lb-ipam"

    def __init__(self, client: Client, factory: InformerFactory, lb_range: str = DEFAULT_LB_RANGE, *,
                 events: EventRecorder | None = None) -> None:
        super().__init__(workers=1)
        self.client = client
        self.events = events
        self.pool = Pool(lb_range)
        self.waiting: set[str] = set()  # Services that found the pool exhausted: retried when one is freed
        self.services = factory.informer("Service")
        self.services.add_handler(self._on_service)

    def _on_service(self, ch: Change) -> None:
        key = _key(ch.obj)
        if ch.new is None or not wants_address(ch.new):
            self._release(key)
            return
        for ip in ingress_ips(ch.new):  # what the Service holds is the state (a restart rebuilds it here)
            if self.pool.held(key) != ip and ip in self.pool and self.pool.holder(ip) is None:
                self.pool.claim(key, ip)
        self.queue.add(key)

    def _release(self, key: str) -> None:
        self.waiting.discard(key)
        if self.pool.release(key) is not None:
            for other in list(self.waiting):
                self.queue.add(other)

    async def sync(self, key: str) -> None:
        """Bring one Service's status in line with the address it should hold."""
        ns, _, name = key.partition("/")
        svc = self.services.get(name, ns)
        if svc is None or not wants_address(svc):
            self._release(key)
            return
        current = ingress_ips(svc)
        want = ((svc.get("spec") or {}).get("loadBalancerIP") or "").strip()
        if want:
            if want not in self.pool or (self.pool.holder(want) not in (None, key)):
                why = "is not in the pool " + self.pool.text if want not in self.pool else \
                    f"is already in use by {self.pool.holder(want)}"
                await self._fail(svc, key, current, f'Failed to allocate IP for "{key}": {want!r} {why}')
                return
            self.pool.claim(key, want)
            ip: str | None = want
        else:
            held = self.pool.held(key)
            ip = held if held is not None else self.pool.allocate(key)
        if ip is None:
            self.waiting.add(key)
            await self._fail(svc, key, current, f'Failed to allocate IP for "{key}": no available IPs in pool '
                                                f"{self.pool.text}")
            return
        self.waiting.discard(key)
        if current == [ip]:
            return
        try:
            await self._write(key, [{"ip": ip, "ipMode": "VIP"}])
        except E.APIError as exc:
            if exc.code == 404:
                self._release(key)
                return
            raise
        log.info("%s: LoadBalancer address %s", key, ip)
        if self.events:
            self.events.event(svc, "Normal", "IPAllocated", f'Assigned IP ["{ip}"]')

    async def _fail(self, svc: Obj, key: str, current: list[str], message: str) -> None:
        """No address for ``key``: give back what it held, clear its status, say why."""
        self.pool.release(key)
        if current:
            await self._write(key, None)
        log.warning("%s", message)
        if self.events:
            self.events.event(svc, "Warning", "AllocationFailed", message)

    async def _write(self, key: str, ingress: list[Obj] | None) -> None:
        ns, _, name = key.partition("/")
        await self.client.patch("Service", name, {"status": {"loadBalancer": {"ingress": ingress}}}, ns,
                                subresource="status")
