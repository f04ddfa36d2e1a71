"""The IPVS table model: reconcile, graceful termination, persistence, counters, ``ipvsadm -Ln`` text, netlink messages."""

from __future__ import annotations

import sys
from dataclasses import replace

from pyroute2.netlink.generic.ipvs import ipvsmsg

from kmesh.proxy.ipvs_kernel import (
    dest_fields,
    dest_message,
    parse_dest,
    parse_service,
    service_fields,
    service_message,
)
from kmesh.proxy.ipvs_table import (
    DesiredVS,
    IPVSTable,
    RealServer,
    VirtualServer,
    render_table,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def table(linger: float = 5.0) -> tuple[IPVSTable, Clock]:
    clock = Clock()
    return IPVSTable(clock=clock, linger=linger), clock


KUBERNETES = DesiredVS("TCP", "10.96.0.1", 443, (("192.168.56.10", 6443),), comment="default/kubernetes:https")
DNS_UDP = DesiredVS("UDP", "10.96.0.10", 53, (("10.244.1.3", 53), ("10.244.0.2", 53)))
DNS_TCP = DesiredVS("TCP", "10.96.0.10", 53, (("10.244.1.3", 53), ("10.244.0.2", 53)))
WEB = DesiredVS("TCP", "10.96.0.9", 80, (("10.244.2.10", 8080), ("10.244.1.7", 8080)), scheduler="wlc", persistent=10800)

EXPECTED = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.96.0.1:443 rr
  -> 192.168.56.10:6443           Masq    1      0          0         
TCP  10.96.0.9:80 wlc persistent 10800
  -> 10.244.1.7:8080              Masq    1      2          0         
  -> 10.244.2.10:8080             Masq    0      0          1         
TCP  10.96.0.10:53 rr
  -> 10.244.0.2:53                Masq    1      0          0         
  -> 10.244.1.3:53                Masq    1      0          0         
UDP  10.96.0.10:53 rr
  -> 10.244.0.2:53                Masq    1      0          0         
  -> 10.244.1.3:53                Masq    1      0          0         
"""


def test_render_is_ipvsadm_Ln() -> None:
    t, _ = table()
    t.reconcile([DNS_UDP, WEB, KUBERNETES, DNS_TCP])
    web = t.services[WEB.key]
    web.dest("10.244.1.7", 8080).active = 2  # type: ignore[union-attr]
    web.dest("10.244.2.10", 8080).inactive = 1  # type: ignore[union-attr]
    # 10.244.2.10 terminates: weight 0 while its connection lingers
    t.reconcile([DNS_UDP, replace(WEB, dests=(("10.244.1.7", 8080),)), KUBERNETES, DNS_TCP])
    assert render_table(t) == EXPECTED


def test_render_empty_and_ipv6() -> None:
    t, _ = table()
    assert render_table(t) == "\n".join(EXPECTED.splitlines()[:3]) + "\n"
    t.reconcile([DesiredVS("TCP", "fd00:10:96::1", 443, (("fd00:10:244::5", 6443),))])
    assert render_table(t).splitlines()[3:] == [
        "TCP  [fd00:10:96::1]:443 rr",
        "  -> [fd00:10:244::5]:6443        Masq    1      0          0         ",
    ]


def test_reconcile_adds_and_deletes_virtual_servers() -> None:
    t, _ = table()
    added, removed = t.reconcile([KUBERNETES, DNS_UDP])
    assert added == {KUBERNETES.key, DNS_UDP.key} and removed == set()
    assert [d.key for d in t.services[DNS_UDP.key].dests] == [("10.244.0.2", 53), ("10.244.1.3", 53)]  # sorted
    added, removed = t.reconcile([KUBERNETES])
    assert added == set() and removed == {DNS_UDP.key}
    assert list(t.services) == [KUBERNETES.key]


def test_terminating_endpoint_drains_with_weight_zero_then_goes() -> None:
    t, clock = table(linger=5.0)
    t.reconcile([DNS_TCP])
    key = DNS_TCP.key
    rs = t.schedule(key, "10.244.3.3")
    assert rs is not None
    t.opened(key, rs, "10.244.3.3")
    # the endpoint goes away: weight 0, kept while it has a connection
    others = tuple(d for d in DNS_TCP.dests if d != rs.key)
    t.reconcile([DesiredVS("TCP", "10.96.0.10", 53, others)])
    vs = t.services[key]
    assert vs.dest(*rs.key) is rs and rs.weight == 0 and not rs.wanted
    assert all(t.schedule(key, f"10.1.0.{i}") is not rs for i in range(10))  # no new connections
    assert t.sweep() == []
    t.closed(key, rs, "10.244.3.3")
    assert (rs.active, rs.inactive) == (0, 1)  # TIME_WAIT: still counted
    assert t.sweep() == []
    clock.now += 6
    assert t.sweep() == [(key, rs.key)]
    assert vs.dest(*rs.key) is None


def test_draining_endpoint_back_gets_weight_one() -> None:
    t, _ = table()
    t.reconcile([DNS_TCP])
    rs = t.services[DNS_TCP.key].dests[0]
    t.opened(DNS_TCP.key, rs, "c")
    t.reconcile([DesiredVS("TCP", "10.96.0.10", 53, DNS_TCP.dests[:1])])
    assert rs.weight == 0
    t.reconcile([DNS_TCP])
    assert rs.weight == 1 and rs.wanted


def test_udp_real_servers_go_at_once() -> None:
    t, _ = table()
    t.reconcile([DNS_UDP])
    rs = t.services[DNS_UDP.key].dest("10.244.1.3", 53)
    assert rs is not None
    t.opened(DNS_UDP.key, rs, "c", active=False)
    assert (rs.active, rs.inactive) == (0, 1)  # UDP flows are InActConn
    t.reconcile([DesiredVS("UDP", "10.96.0.10", 53, (("10.244.0.2", 53),))])
    assert t.services[DNS_UDP.key].dest("10.244.1.3", 53) is None


def test_rr_over_the_table() -> None:
    t, _ = table()
    t.reconcile([DNS_TCP])
    got = [t.schedule(DNS_TCP.key, "c").ip for _ in range(4)]  # type: ignore[union-attr]
    assert got == ["10.244.0.2", "10.244.1.3"] * 2


def test_persistence_pins_clients_while_connected_and_for_the_timeout() -> None:
    t, clock = table()
    vs = DesiredVS("TCP", "10.96.0.9", 80, (("10.244.1.7", 8080), ("10.244.2.10", 8080)), persistent=100)
    t.reconcile([vs])
    a = t.schedule(vs.key, "10.1.0.1")
    b = t.schedule(vs.key, "10.1.0.2")
    assert a is not None and b is not None and a is not b  # rr between clients
    assert all(t.schedule(vs.key, "10.1.0.1") is a for _ in range(20))  # pinned
    t.opened(vs.key, a, "10.1.0.1")
    clock.now += 500  # long past the timeout, but a connection is open: still pinned
    assert t.schedule(vs.key, "10.1.0.1") is a
    t.closed(vs.key, a, "10.1.0.1")
    clock.now += 99
    assert t.schedule(vs.key, "10.1.0.1") is a
    clock.now += 102  # timeout after the last connection ended: the pin is gone
    t.expire()
    assert "10.1.0.1" not in t.services[vs.key].templates
    # a retry (the pinned server did not answer) ignores the pin
    pinned = t.schedule(vs.key, "10.1.0.3")
    assert t.schedule(vs.key, "10.1.0.3", ignore_persistence=True) is not pinned
    # a pin to a quiesced server is dropped (expire_quiescent_template)
    c = t.schedule(vs.key, "10.1.0.4")
    assert c is not None
    t.reconcile([DesiredVS("TCP", "10.96.0.9", 80, tuple(d for d in vs.dests if d != c.key), persistent=100)])
    assert t.schedule(vs.key, "10.1.0.4") is not c


def test_scheduler_and_persistence_changes() -> None:
    t, _ = table()
    t.reconcile([DNS_TCP])
    vs = t.services[DNS_TCP.key]
    t.reconcile([DesiredVS("TCP", "10.96.0.10", 53, DNS_TCP.dests, scheduler="lc", persistent=60)])
    assert vs.scheduler == "lc" and vs.sched.name == "lc" and vs.persistent == 60
    assert "lc persistent 60" in render_table(t)


def test_netlink_messages() -> None:
    vs = VirtualServer("TCP", "10.96.0.9", 80, "wlc", persistent=10800)
    assert service_fields(vs) == {
        "addr": "10.96.0.9", "port": 80, "protocol": 6, "sched_name": "wlc",
        "flags": {"flags": 1, "mask": 0xFFFFFFFF}, "timeout": 10800, "netmask": "255.255.255.255",
    }
    rs = RealServer("10.244.1.7", 8080, weight=0)
    assert dest_fields(rs) == {"addr": "10.244.1.7", "port": 8080, "weight": 0, "fwd_method": 0}
    # both encode into an IPVS_CMD_NEW_DEST message and decode back
    msg = ipvsmsg()
    msg["cmd"] = 5
    msg["version"] = 1
    msg["attrs"] = [("IPVS_CMD_ATTR_SERVICE", service_message(vs).dump_nla()), ("IPVS_CMD_ATTR_DEST", dest_message(rs).dump_nla())]
    msg.encode()
    back = ipvsmsg(msg.data)
    back.decode()
    key, attrs = parse_service(back)  # type: ignore[misc]
    assert key == ("TCP", "10.96.0.9", 80)
    assert attrs["IPVS_SVC_ATTR_SCHED_NAME"] == "wlc" and attrs["IPVS_SVC_ATTR_TIMEOUT"] == 10800
    d = parse_dest(back)
    assert (d["IPVS_DEST_ATTR_ADDR"], d["IPVS_DEST_ATTR_PORT"], d["IPVS_DEST_ATTR_WEIGHT"], d["IPVS_DEST_ATTR_FWD_METHOD"]) == (
        "10.244.1.7", 8080, 0, 0)
    v6 = service_fields(VirtualServer("TCP", "fd00::10", 53))
    assert v6["netmask"] == ("128.0.0.0" if sys.byteorder == "little" else "0.0.0.128")  # 128 as a host-order u32
    plain = VirtualServer("UDP", "10.96.0.10", 53)
    assert service_fields(plain)["flags"] == {"flags": 0, "mask": 0xFFFFFFFF}
    assert service_fields(plain)["protocol"] == 17


# ---------------------------------------------------------------------------------------------- the kernel path, against a stand-in


def roundtrip(*attrs: tuple[str, object]) -> ipvsmsg:
    """Encode a genetlink IPVS message and decode it again, as the kernel's answer would arrive."""
    msg = ipvsmsg()
    msg["cmd"] = 0
    msg["version"] = 1
    msg["attrs"] = list(attrs)
    msg.encode()
    back = ipvsmsg(msg.data)
    back.decode()
    return back


class FakeIPVS:
    """The kernel's IPVS table as the genetlink commands see it (these machines have no ip_vs)."""

    def __init__(self) -> None:
        self.services: dict[tuple[str, str, int], dict] = {}
        self.calls: list[tuple] = []

    def __call__(self) -> FakeIPVS:
        return self

    def close(self) -> None:
        pass

    def service(self, cmd: str, service: object = None) -> list[ipvsmsg] | None:
        if cmd == "dump":
            return [roundtrip(("IPVS_CMD_ATTR_SERVICE", v["svc"])) for v in self.services.values()]
        nla = service.dump_nla()  # type: ignore[attr-defined]
        key, _ = parse_service(roundtrip(("IPVS_CMD_ATTR_SERVICE", nla)))  # type: ignore[misc]
        self.calls.append(("service", cmd, key))
        if cmd == "add":
            self.services[key] = {"svc": nla, "dests": {}}
        elif cmd == "set":
            self.services[key]["svc"] = nla
        elif cmd == "del":
            del self.services[key]
        return None

    def dest(self, cmd: str, service: object, dest: object = None) -> list[ipvsmsg] | None:
        attrs = [("IPVS_CMD_ATTR_SERVICE", service.dump_key())]  # type: ignore[attr-defined]
        if dest is not None:
            attrs.append(("IPVS_CMD_ATTR_DEST", dest.dump_nla()))  # type: ignore[attr-defined]
        msg = roundtrip(*attrs)
        key, _ = parse_service(msg)  # type: ignore[misc]
        dests = self.services[key]["dests"]
        if cmd == "dump":
            return [roundtrip(("IPVS_CMD_ATTR_DEST", nla)) for nla in dests.values()]
        d = parse_dest(msg)
        dk = (d["IPVS_DEST_ATTR_ADDR"], d["IPVS_DEST_ATTR_PORT"])
        self.calls.append(("dest", cmd, key, dk, d.get("IPVS_DEST_ATTR_WEIGHT")))
        if cmd in ("add", "set"):
            counts = [a for a in dests[dk]["attrs"] if a[0].endswith("_CONNS")] if cmd == "set" else []
            dests[dk] = dest.dump_nla()  # type: ignore[attr-defined]
            dests[dk]["attrs"] += counts  # the kernel keeps a destination's counters across a change
        elif cmd == "del":
            del dests[dk]
        return None

    def set_counts(self, key: tuple[str, str, int], dk: tuple[str, int], active: int, inactive: int) -> None:
        nla = self.services[key]["dests"][dk]
        nla["attrs"] = [a for a in nla["attrs"] if a[0] not in ("IPVS_DEST_ATTR_ACTIVE_CONNS", "IPVS_DEST_ATTR_INACT_CONNS")]
        nla["attrs"] += [("IPVS_DEST_ATTR_ACTIVE_CONNS", active), ("IPVS_DEST_ATTR_INACT_CONNS", inactive)]


async def test_kernel_sync_diffs_services_and_destinations() -> None:
    from kmesh.proxy.ipvs_kernel import KernelIPVS

    fake = FakeIPVS()
    kernel = KernelIPVS(None, socket_factory=fake)
    stale = VirtualServer("TCP", "10.96.0.99", 80)
    fake.service("add", service_message(stale))
    t, _ = table()
    t.reconcile([DNS_TCP, KUBERNETES])
    fake.calls.clear()
    await kernel.sync(t)
    assert ("service", "del", ("TCP", "10.96.0.99", 80)) in fake.calls
    assert set(fake.services) == {DNS_TCP.key, KUBERNETES.key}
    assert set(fake.services[DNS_TCP.key]["dests"]) == {("10.244.0.2", 53), ("10.244.1.3", 53)}
    # nothing changed: nothing sent
    fake.calls.clear()
    await kernel.sync(t)
    assert fake.calls == []
    # an endpoint with a connection the kernel counts terminates (weight 0), and the scheduler changes
    fake.set_counts(DNS_TCP.key, ("10.244.0.2", 53), 1, 0)
    await kernel.read_counters(t)
    t.reconcile([replace(DNS_TCP, dests=(("10.244.1.3", 53),), scheduler="lc"), KUBERNETES])
    await kernel.sync(t)
    assert ("service", "set", DNS_TCP.key) in fake.calls
    assert ("dest", "set", DNS_TCP.key, ("10.244.0.2", 53), 0) in fake.calls
    assert "10.244.0.2:53                Masq    0      1          0" in render_table(t)
    # it stays while the kernel counts the connection; once idle it is deleted
    await kernel.read_counters(t)
    assert t.sweep() == []
    fake.set_counts(DNS_TCP.key, ("10.244.0.2", 53), 0, 0)
    await kernel.read_counters(t)
    assert t.sweep() == [(DNS_TCP.key, ("10.244.0.2", 53))]
    fake.calls.clear()
    await kernel.sync(t)
    assert fake.calls == [("dest", "del", DNS_TCP.key, ("10.244.0.2", 53), 1)]
    await kernel.flush()
    assert fake.services == {}


def test_order_follows_libipvs_comparison_quirk() -> None:
    # libipvs compares addresses as `int r = ntohl(a) - ntohl(b)`: a difference past 2**31 wraps negative,
    # so on a real node `ipvsadm -Ln` lists 192.168.56.11:30080 before 10.96.0.1:443 — and so does kmesh
    t, _ = table()
    t.reconcile([DesiredVS("TCP", "10.96.0.1", 443, ()), DesiredVS("TCP", "192.168.56.11", 30080, ()),
                 DesiredVS("TCP", "10.96.0.10", 53, (("192.168.56.10", 1), ("10.244.1.3", 53)))])
    lines = [line for line in render_table(t).splitlines()[3:]]
    assert lines == [
        "TCP  192.168.56.11:30080 rr",
        "TCP  10.96.0.1:443 rr",
        "TCP  10.96.0.10:53 rr",
        "  -> 192.168.56.10:1              Masq    1      0          0         ",
        "  -> 10.244.1.3:53                Masq    1      0          0         ",
    ]
