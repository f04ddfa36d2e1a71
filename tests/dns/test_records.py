"""The records of the Kubernetes DNS spec 1.1.0, with CoreDNS's choices, asked over UDP and TCP with dnspython."""

from __future__ import annotations

import ipaddress
import time

import dns.asyncquery
import dns.flags
import dns.message
import dns.rdataclass
import dns.rdatatype
import pytest

from tests.dns.conftest import DNSLab, endpoint_slice, ep, rcode_text, service

Z = "cluster.local"
PROTOS = pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])


def rrs(msg: dns.message.Message, section: str = "answer") -> list[tuple[str, str, int, str]]:
    """(owner, type, ttl, rdata) of a section, in order."""
    out = []
    for rrset in getattr(msg, section):
        for rd in rrset:
            out.append((rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rrset.ttl, rd.to_text()))
    return out


def assert_negative(msg: dns.message.Message, rcode: str) -> None:
    """NXDOMAIN/NODATA as CoreDNS sends them: authoritative, empty answer, the zone's SOA in authority."""
    assert rcode_text(msg) == rcode
    assert msg.flags & dns.flags.AA and not msg.flags & dns.flags.RA
    assert not msg.answer
    (owner, typ, ttl, rdata), = rrs(msg, "authority")
    assert (owner, typ, ttl) == (f"{Z}.", "SOA", 5)
    assert rdata.startswith(f"ns.dns.{Z}. hostmaster.{Z}. ") and rdata.endswith(" 7200 1800 86400 5")


async def web(lab: DNSLab) -> str:
    svc = await lab.client.create(service("web", ports=[{"name": "http", "port": 80, "protocol": "TCP"},
                                                        {"name": "dns", "port": 53, "protocol": "UDP"}]))
    await lab.settle(lambda s: s.service("default", "web") is not None)
    return svc["spec"]["clusterIP"]


async def headless(lab: DNSLab, *eps: dict, name: str = "db") -> None:
    await lab.client.create(service(name, cluster_ip="None", ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]))
    await lab.client.create(endpoint_slice(name, endpoints=list(eps), ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]))
    await lab.settle(lambda s: s.service("default", name) is not None and len(s.service("default", name).endpoints) > 0
                     or not any((e.get("conditions") or {}).get("ready", True) for e in eps))


@PROTOS
async def test_cluster_ip_a_echoes_case_and_is_authoritative(lab: DNSLab, tcp: bool) -> None:
    ip = await web(lab)  # no endpoints at all: still answered
    msg = await lab.query(f"WeB.DeFault.SVC.{Z}", "A", tcp=tcp)
    assert rcode_text(msg) == "NOERROR"
    assert msg.flags & dns.flags.AA and not msg.flags & dns.flags.RA and msg.flags & dns.flags.RD
    assert rrs(msg) == [(f"WeB.DeFault.SVC.{Z}.", "A", 5, ip)]
    assert msg.question[0].name.to_text() == f"WeB.DeFault.SVC.{Z}."
    assert_negative(await lab.query(f"web.default.svc.{Z}", "AAAA", tcp=tcp), "NOERROR")  # v4-only: NODATA
    assert_negative(await lab.query(f"web.default.svc.{Z}", "MX", tcp=tcp), "NOERROR")
    assert_negative(await lab.query(f"nope.default.svc.{Z}", "A", tcp=tcp), "NXDOMAIN")


@PROTOS
async def test_headless_answers_ready_endpoints_and_nxdomain_without(lab: DNSLab, tcp: bool) -> None:
    await headless(lab, ep("127.244.0.5"), ep("127.244.0.6", ready=None), ep("127.244.0.7", ready=False))
    msg = await lab.query(f"db.default.svc.{Z}", "A", tcp=tcp)
    assert sorted(r[3] for r in rrs(msg)) == ["127.244.0.5", "127.244.0.6"]
    await headless(lab, ep("127.244.0.9", ready=False), name="cold")
    assert_negative(await lab.query(f"cold.default.svc.{Z}", "A", tcp=tcp), "NXDOMAIN")
    assert_negative(await lab.query(f"cold.default.svc.{Z}", "SRV", tcp=tcp), "NXDOMAIN")


@PROTOS
async def test_endpoint_names_hostname_or_dashed_ip(lab: DNSLab, tcp: bool) -> None:
    await headless(lab, ep("127.244.0.5"), ep("127.244.0.6", hostname="primary"))
    msg = await lab.query(f"primary.db.default.svc.{Z}", "A", tcp=tcp)
    assert rrs(msg) == [(f"primary.db.default.svc.{Z}.", "A", 5, "127.244.0.6")]
    msg = await lab.query(f"127-244-0-5.db.default.svc.{Z}", "A", tcp=tcp)
    assert rrs(msg) == [(f"127-244-0-5.db.default.svc.{Z}.", "A", 5, "127.244.0.5")]
    assert_negative(await lab.query(f"127-244-0-6.db.default.svc.{Z}", "A", tcp=tcp), "NXDOMAIN")  # has a hostname
    assert_negative(await lab.query(f"primary.db.default.svc.{Z}", "AAAA", tcp=tcp), "NOERROR")
    assert_negative(await lab.query(f"a.b.c.db.default.svc.{Z}", "A", tcp=tcp), "NXDOMAIN")  # 3+ extra labels


@PROTOS
async def test_srv_cluster_ip_named_port_bare_name_and_protocol_mismatch(lab: DNSLab, tcp: bool) -> None:
    ip = await web(lab)
    target = f"web.default.svc.{Z}."
    msg = await lab.query(f"_http._tcp.web.default.svc.{Z}", "SRV", tcp=tcp)
    assert rrs(msg) == [(f"_http._tcp.web.default.svc.{Z}.", "SRV", 5, f"0 100 80 {target}")]
    assert rrs(msg, "additional") == [(target, "A", 5, ip)]
    msg = await lab.query(f"web.default.svc.{Z}", "SRV", tcp=tcp)  # bare name: one per port, weight 100/2
    assert sorted(r[3] for r in rrs(msg)) == [f"0 50 53 {target}", f"0 50 80 {target}"]
    assert rrs(msg, "additional") == [(target, "A", 5, ip)]
    assert_negative(await lab.query(f"_http._udp.web.default.svc.{Z}", "SRV", tcp=tcp), "NXDOMAIN")
    assert_negative(await lab.query(f"_nope._tcp.web.default.svc.{Z}", "SRV", tcp=tcp), "NXDOMAIN")
    msg = await lab.query(f"_dns._udp.web.default.svc.{Z}", "A", tcp=tcp)
    assert rrs(msg) == [(f"_dns._udp.web.default.svc.{Z}.", "A", 5, ip)]


@PROTOS
async def test_srv_headless_targets_each_endpoint_with_glue(lab: DNSLab, tcp: bool) -> None:
    await headless(lab, ep("127.244.0.5"), ep("127.244.0.6", hostname="primary"))
    msg = await lab.query(f"_pg._tcp.db.default.svc.{Z}", "SRV", tcp=tcp)
    assert sorted(r[3] for r in rrs(msg)) == [
        f"0 50 5432 127-244-0-5.db.default.svc.{Z}.", f"0 50 5432 primary.db.default.svc.{Z}.",
    ]
    assert sorted(rrs(msg, "additional")) == [
        (f"127-244-0-5.db.default.svc.{Z}.", "A", 5, "127.244.0.5"),
        (f"primary.db.default.svc.{Z}.", "A", 5, "127.244.0.6"),
    ]


async def test_srv_weight_counts_duplicates_before_dropping_them(lab: DNSLab) -> None:
    # The same endpoint listed twice (two slices): 2 records counted (weight 50), one kept.
    await lab.client.create(service("dup", cluster_ip="None", ports=[{"name": "pg", "port": 5432}]))
    for n in ("dup-a", "dup-b"):
        await lab.client.create(endpoint_slice("dup", name=n, endpoints=[ep("127.244.1.1", hostname="x")],
                                               ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]))
    await lab.settle(lambda s: (svc := s.service("default", "dup")) is not None and len(svc.endpoints) == 2)
    msg = await lab.query(f"_pg._tcp.dup.default.svc.{Z}", "SRV")
    assert [r[3] for r in rrs(msg)] == [f"0 50 5432 x.dup.default.svc.{Z}."]
    assert rrs(msg, "additional") == [(f"x.dup.default.svc.{Z}.", "A", 5, "127.244.1.1")]
    msg = await lab.query(f"x.dup.default.svc.{Z}", "A")
    assert rrs(msg) == [(f"x.dup.default.svc.{Z}.", "A", 5, "127.244.1.1")]


@PROTOS
async def test_ptr_for_cluster_ips_and_endpoints(lab: DNSLab, tcp: bool) -> None:
    ip = await web(lab)
    await headless(lab, ep("127.244.0.5"), ep("127.244.0.6", hostname="primary"))
    await headless(lab, ep("127.244.0.6", hostname="primary"), name="db2")
    rev = ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
    msg = await lab.query(rev, "PTR", tcp=tcp)
    assert rrs(msg) == [(rev + ".", "PTR", 5, f"web.default.svc.{Z}.")]
    msg = await lab.query("5.0.244.127.in-addr.arpa", "PTR", tcp=tcp)
    assert rrs(msg) == [("5.0.244.127.in-addr.arpa.", "PTR", 5, f"127-244-0-5.db.default.svc.{Z}.")]
    msg = await lab.query("6.0.244.127.in-addr.arpa", "PTR", tcp=tcp)  # in two services: two PTRs
    assert sorted(r[3] for r in rrs(msg)) == [f"primary.db.default.svc.{Z}.", f"primary.db2.default.svc.{Z}."]
    assert rcode_text(await lab.query("9.9.9.9.in-addr.arpa", "PTR", tcp=tcp)) == "REFUSED"  # not ours, no forwarding


@PROTOS
async def test_external_name_cname_and_in_cluster_target(lab: DNSLab, tcp: bool) -> None:
    ip = await web(lab)
    await lab.client.create(service("ext", external="web.default.svc.cluster.local"))
    await lab.client.create(service("out", external="example.org"))
    await lab.settle(lambda s: s.service("default", "out") is not None)
    msg = await lab.query(f"ext.default.svc.{Z}", "A", tcp=tcp)
    assert rrs(msg) == [(f"ext.default.svc.{Z}.", "CNAME", 5, f"web.default.svc.{Z}."),
                        (f"web.default.svc.{Z}.", "A", 5, ip)]
    msg = await lab.query(f"out.default.svc.{Z}", "CNAME", tcp=tcp)
    assert rrs(msg) == [(f"out.default.svc.{Z}.", "CNAME", 5, "example.org.")]
    msg = await lab.query(f"out.default.svc.{Z}", "A", tcp=tcp)  # no forwarding here: just the CNAME
    assert rrs(msg) == [(f"out.default.svc.{Z}.", "CNAME", 5, "example.org.")]
    assert_negative(await lab.query(f"x.out.default.svc.{Z}", "A", tcp=tcp), "NXDOMAIN")
    assert_negative(await lab.query(f"_http._tcp.out.default.svc.{Z}", "SRV", tcp=tcp), "NXDOMAIN")


@PROTOS
async def test_dns_version_txt_and_other_txt(lab: DNSLab, tcp: bool) -> None:
    await web(lab)
    msg = await lab.query(f"dns-version.{Z}", "TXT", tcp=tcp)
    assert rrs(msg) == [(f"dns-version.{Z}.", "TXT", 28800, '"1.1.0"')]
    assert_negative(await lab.query(f"web.default.svc.{Z}", "TXT", tcp=tcp), "NOERROR")
    assert_negative(await lab.query(f"nope.default.svc.{Z}", "TXT", tcp=tcp), "NXDOMAIN")


@PROTOS
async def test_grammar_nodata_versus_nxdomain(lab: DNSLab, tcp: bool) -> None:
    await web(lab)
    for name in (Z, f"svc.{Z}", f"pod.{Z}", f"default.svc.{Z}"):
        assert_negative(await lab.query(name, "A", tcp=tcp), "NOERROR")
    for name in (f"other.{Z}", f"x.other.{Z}", f"nons.svc.{Z}", f"web.nons.svc.{Z}", f"a.b.c.d.web.default.svc.{Z}"):
        assert_negative(await lab.query(name, "A", tcp=tcp), "NXDOMAIN")


@PROTOS
async def test_apex_soa_and_ns(lab: DNSLab, tcp: bool) -> None:
    msg = await lab.query(Z, "SOA", tcp=tcp)
    (owner, typ, _ttl, rdata), = rrs(msg)
    assert (owner, typ) == (f"{Z}.", "SOA") and rdata.startswith(f"ns.dns.{Z}. hostmaster.{Z}.")
    msg = await lab.query(Z, "NS", tcp=tcp)
    assert rrs(msg) == [(f"{Z}.", "NS", 5, f"ns.dns.{Z}.")]
    assert rrs(msg, "additional") == [(f"ns.dns.{Z}.", "A", 5, "127.0.0.1")]
    await lab.client.create(service("kube-dns", "kube-system", cluster_ip="10.96.0.10",
                                    ports=[{"name": "dns", "port": 53, "protocol": "UDP"}]))
    await lab.settle(lambda s: s.dns_service_ips == ("10.96.0.10",))
    msg = await lab.query(Z, "NS", tcp=tcp)
    assert rrs(msg) == [(f"{Z}.", "NS", 5, f"kube-dns.kube-system.svc.{Z}.")]
    assert rrs(msg, "additional") == [(f"kube-dns.kube-system.svc.{Z}.", "A", 5, "10.96.0.10")]


async def test_soa_serial_is_the_time_of_the_last_change(lab: DNSLab) -> None:
    before = int(time.time())
    await web(lab)
    msg = await lab.query(f"nope.default.svc.{Z}", "A")
    serial = int(rrs(msg, "authority")[0][3].split()[2])
    assert before <= serial <= int(time.time())
    assert serial == lab.dns.resolver.serial


@PROTOS
async def test_refused_for_other_classes_zone_transfers_and_outside_names(lab: DNSLab, tcp: bool) -> None:
    q = dns.message.make_query(f"web.default.svc.{Z}", "A", rdclass=dns.rdataclass.CH)
    fn = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
    assert rcode_text(await fn(q, lab.host, port=lab.port, timeout=3)) == "REFUSED"
    for qtype in ("AXFR", "IXFR"):
        q = dns.message.make_query(Z, qtype)
        assert rcode_text(await fn(q, lab.host, port=lab.port, timeout=3)) == "REFUSED"
    assert rcode_text(await lab.query("example.org", "A", tcp=tcp)) == "REFUSED"


def _flat(out: str) -> str:
    return " ".join(out.split())


@PROTOS
async def test_every_record_kind_with_dig(lab: DNSLab, tcp: bool) -> None:
    ip = await web(lab)
    await headless(lab, ep("127.244.0.5"), ep("127.244.0.6", hostname="primary"))
    await lab.client.create(service("ext", external="web.default.svc.cluster.local"))
    await lab.settle(lambda s: s.service("default", "ext") is not None)
    t = ["+tcp"] if tcp else []
    out = _flat(await lab.dig(*t, "+noall", "+answer", f"WEB.default.svc.{Z}"))
    assert out == f"WEB.default.svc.{Z}. 5 IN A {ip}"
    out = _flat(await lab.dig(*t, "+noall", "+answer", f"db.default.svc.{Z}"))
    assert sorted(out.split(f"db.default.svc.{Z}. 5 IN A ")[1:]) == ["127.244.0.5 ", "127.244.0.6"]
    out = _flat(await lab.dig(*t, "+noall", "+answer", "+additional", f"_pg._tcp.db.default.svc.{Z}", "SRV"))
    assert f"SRV 0 50 5432 primary.db.default.svc.{Z}." in out and f"primary.db.default.svc.{Z}. 5 IN A 127.244.0.6" in out
    out = _flat(await lab.dig(*t, "+noall", "+answer", "-x", "127.244.0.6"))
    assert out == f"6.0.244.127.in-addr.arpa. 5 IN PTR primary.db.default.svc.{Z}."
    out = _flat(await lab.dig(*t, "+noall", "+answer", f"ext.default.svc.{Z}"))
    assert out == f"ext.default.svc.{Z}. 5 IN CNAME web.default.svc.{Z}. web.default.svc.{Z}. 5 IN A {ip}"
    out = _flat(await lab.dig(*t, "+noall", "+answer", f"dns-version.{Z}", "TXT"))
    assert out == f'dns-version.{Z}. 28800 IN TXT "1.1.0"'
    out = _flat(await lab.dig(*t, "+noall", "+comments", "+authority", f"nope.default.svc.{Z}"))
    assert "status: NXDOMAIN" in out and f"{Z}. 5 IN SOA ns.dns.{Z}. hostmaster.{Z}." in out
    out = _flat(await lab.dig(*t, "+noall", "+comments", "+authority", f"default.svc.{Z}"))
    assert "status: NOERROR" in out and "ANSWER: 0" in out and f"{Z}. 5 IN SOA" in out
    out = _flat(await lab.dig(*t, "+noall", "+comments", f"web.default.svc.{Z}", "A", "-c", "CH"))
    assert "status: REFUSED" in out


@PROTOS
async def test_ipv6_endpoints_aaaa_and_ip6_arpa_ptr(lab: DNSLab, tcp: bool) -> None:
    await lab.client.create(service("v6", cluster_ip="None", ports=[{"name": "p", "port": 80}]))
    await lab.client.create(endpoint_slice("v6", family="IPv6", endpoints=[ep("fd00::5"), ep("fd00::6", hostname="six")],
                                           ports=[{"name": "p", "port": 80, "protocol": "TCP"}]))
    await lab.settle(lambda s: (svc := s.service("default", "v6")) is not None and len(svc.endpoints) == 2)
    msg = await lab.query(f"v6.default.svc.{Z}", "AAAA", tcp=tcp)
    assert sorted(r[3] for r in rrs(msg)) == ["fd00::5", "fd00::6"]
    assert_negative(await lab.query(f"v6.default.svc.{Z}", "A", tcp=tcp), "NOERROR")
    msg = await lab.query(f"fd00--5.v6.default.svc.{Z}", "AAAA", tcp=tcp)
    assert rrs(msg) == [(f"fd00--5.v6.default.svc.{Z}.", "AAAA", 5, "fd00::5")]
    rev = ipaddress.ip_address("fd00::6").reverse_pointer
    msg = await lab.query(rev, "PTR", tcp=tcp)
    assert rrs(msg) == [(rev + ".", "PTR", 5, f"six.v6.default.svc.{Z}.")]
