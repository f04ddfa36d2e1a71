"""Ingress routing through the real engine: the path-matching table of the Kubernetes Ingress documentation,
host wildcards (one label), defaultBackend, classes, and TLS by SNI."""

from __future__ import annotations

import base64
import ssl
from typing import Any

import trio

from kmesh.gateway import ingress
from kmesh.gateway.world import World
from tests.gateway.rig import serve
from tests.support.certs import CA, server_pair

NS = "default"
CLASS = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
         "metadata": {"name": "kmesh", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
         "spec": {"controller": "kmesh.io/ingress-controller"}}


def _svc(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 3000}]}}


def _ing(name: str, rules: list[dict[str, Any]], *, created: str = "2026-01-01T00:00:00Z", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": NS, "creationTimestamp": created},
            "spec": {"rules": rules, **spec}}


def _paths(host: str | None, *paths: tuple[str, str, str]) -> dict[str, Any]:
    rule: dict[str, Any] = {"http": {"paths": [{"path": p, "pathType": t, "backend": {
        "service": {"name": svc, "port": {"number": 80}}}} for p, t, svc in paths]}}
    if host:
        rule["host"] = host
    return rule


# The "Examples" table of https://kubernetes.io/docs/concepts/services-networking/ingress/#examples:
# (paths as (path, type), request path, the path that must answer or None for no match).
DOC_TABLE: list[tuple[list[tuple[str, str]], str, str | None]] = [
    ([("/", "Prefix")], "/anything", "/"),
    ([("/foo", "Exact")], "/foo", "/foo"),
    ([("/foo", "Exact")], "/bar", None),
    ([("/foo", "Exact")], "/foo/", None),
    ([("/foo/", "Exact")], "/foo", None),
    ([("/foo", "Prefix")], "/foo", "/foo"),
    ([("/foo", "Prefix")], "/foo/", "/foo"),
    ([("/foo/", "Prefix")], "/foo", "/foo/"),
    ([("/foo/", "Prefix")], "/foo/", "/foo/"),
    ([("/aaa/bb", "Prefix")], "/aaa/bbb", None),
    ([("/aaa/bbb", "Prefix")], "/aaa/bbb", "/aaa/bbb"),
    ([("/aaa/bbb/", "Prefix")], "/aaa/bbb", "/aaa/bbb/"),
    ([("/aaa/bbb", "Prefix")], "/aaa/bbb/", "/aaa/bbb"),
    ([("/aaa/bbb", "Prefix")], "/aaa/bbb/ccc", "/aaa/bbb"),
    ([("/aaa/bbb", "Prefix")], "/aaa/bbbxyz", None),
    ([("/", "Prefix"), ("/aaa", "Prefix")], "/aaa/ccc", "/aaa"),
    ([("/", "Prefix"), ("/aaa", "Prefix"), ("/aaa/bbb", "Prefix")], "/aaa/bbb", "/aaa/bbb"),
    ([("/", "Prefix"), ("/aaa", "Prefix"), ("/aaa/bbb", "Prefix")], "/ccc", "/"),
    ([("/aaa", "Prefix")], "/ccc", None),
    ([("/foo", "Prefix"), ("/foo", "Exact")], "/foo", "/foo Exact"),
]


def _svc_name(path: str, ptype: str) -> str:
    return "p" + str(abs(hash((path, ptype))) % 10**8)


async def test_the_documented_path_matching_table() -> None:
    objs: list[dict[str, Any]] = [CLASS]
    for i, (paths, _, _) in enumerate(DOC_TABLE):
        rules = [_paths(f"case{i}.example", *[(p, t, _svc_name(p, t)) for p, t in paths])]
        objs.append(_ing(f"case{i}", rules))
        objs.extend(_svc(_svc_name(p, t)) for p, t in paths)
    objs.append(_svc("fallback"))
    world = World.of(objs)
    config = ingress.translate(world).config
    async with serve(world, {("", "ingress"): config}) as r:
        for i, (paths, request, want) in enumerate(DOC_TABLE):
            reply = await r.request(("", "ingress"), request, host=f"case{i}.example")
            if want is None:
                assert reply.status == 404, (i, paths, request, reply.status)
                continue
            path, _, kind = want.partition(" ")
            ptype = kind or next(t for p, t in paths if p == path)
            assert reply.status == 200, (i, paths, request, reply.status, reply.body[:200])
            assert reply.echo and reply.echo["pod"] == f"{_svc_name(path, ptype)}-pod", (i, paths, request, reply.echo)


async def test_hosts_wildcards_default_backend_and_classes() -> None:
    objs = [CLASS, _svc("exact"), _svc("wild"), _svc("any"), _svc("default"), _svc("other"), _svc("api"),
            _ing("api", [_paths("api.bar.com", ("/v1", "Prefix", "api"))]),
            _ing("hosts", [_paths("foo.bar.com", ("/", "Prefix", "exact")),
                           _paths("*.bar.com", ("/", "Prefix", "wild")),
                           _paths(None, ("/only-hostless", "Prefix", "any"))],
                 defaultBackend={"service": {"name": "default", "port": {"name": "http"}}}),
            {**_ing("other-class", [_paths("foo.bar.com", ("/x", "Exact", "other"))]),
             "spec": {"ingressClassName": "nginx", "rules": [_paths("foo.bar.com", ("/x", "Exact", "other"))]}}]
    world = World.of(objs)
    t = ingress.translate(world)
    assert t.ingresses == [(NS, "api"), (NS, "hosts")]
    async with serve(world, {("", "i"): t.config}) as r:
        async def pod(host: str, path: str = "/") -> str:
            reply = await r.request(("", "i"), path, host=host)
            assert reply.status == 200 and reply.echo, (host, path, reply.status)
            return str(reply.echo["pod"]).removesuffix("-pod")

        assert await pod("foo.bar.com") == "exact"
        assert await pod("FOO.bar.com:8080") == "exact"  # case and port do not matter
        assert await pod("baz.bar.com") == "wild"
        assert await pod("baz.foo.bar.com") == "default"  # a wildcard stands for one label only
        assert await pod("bar.com") == "default"
        assert await pod("elsewhere.io", "/only-hostless/x") == "any"
        assert await pod("foo.bar.com", "/only-hostless/x") == "exact"  # its own rule: Prefix /
        assert await pod("foo.bar.com", "/x") == "exact"  # the other class's Exact /x is not served
        assert await pod("api.bar.com", "/v1/x") == "api"
        # a host with rules is answered by them alone (ingress-nginx's server blocks): neither the wildcard's
        # nor the hostless rules, but the default backend
        assert await pod("api.bar.com", "/only-hostless/x") == "default"
        assert await pod("api.bar.com", "/") == "default"


async def test_tls_certificates_are_chosen_by_sni() -> None:
    ca = CA.new("ingress-test-ca")
    certs = {h: server_pair(ca, h) for h in ("a.example", "b.example")}

    def secret(name: str, crt: bytes, key: bytes) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": name, "namespace": NS},
                "data": {"tls.crt": base64.b64encode(crt).decode(), "tls.key": base64.b64encode(key).decode()}}

    objs = [CLASS, _svc("a"), _svc("b"), secret("a-tls", *certs["a.example"]), secret("b-tls", *certs["b.example"]),
            _ing("tls", [_paths("a.example", ("/", "Prefix", "a")), _paths("b.example", ("/", "Prefix", "b"))],
                 tls=[{"hosts": ["a.example"], "secretName": "a-tls"}, {"hosts": ["b.example"], "secretName": "b-tls"},
                      {"hosts": ["c.example"], "secretName": "missing"}])]
    world = World.of(objs)
    t = ingress.translate(world)
    assert t.problems == {(NS, "tls"): ["tls: Secret default/missing not found"]}
    async with serve(world, {("", "i"): t.config}) as r:
        port = r.ports[("", "i")][443]
        for host in ("a.example", "b.example"):
            ctx = ssl.create_default_context(cadata=ca.pem().decode())
            stream = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", port), ctx, server_hostname=host,
                                    https_compatible=True)
            async with stream:
                await stream.send_all(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while chunk := await stream.receive_some(65536):
                    data += chunk
            assert data.startswith(b"HTTP/1.1 200"), data[:100]
            assert f'"pod": "{host[0]}-pod"'.encode() in data
