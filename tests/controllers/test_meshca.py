"""The mesh CA (``mesh-ca``) against a real API server: its root, the root's ConfigMaps, and CSRs it signs or denies.

Requests are real PKCS#10 requests from fresh keys, pods are real Pod objects,
and a node's requests come over TLS with a real node client certificate.
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kmesh.apiserver.pki import sign_node_csr
from kmesh.client.api import Client
from kmesh.client.bootstrap import node_csr
from kmesh.client.informer import Informer
from kmesh.client.kubeconfig import Credentials
from kmesh.controllers.informers import InformerFactory
from kmesh.controllers.manager import ControllerConfig, ControllerManager, run_controllers
from kmesh.controllers.meshca import (
    CA_NAMESPACE, CA_SECRET, ROOT_CN, ROOT_CONFIGMAP, ROOT_KEY, SIGNER_NAME, Denial, MeshCA, MeshCAController,
    check_identity, state,
)
from tests.controllers.conftest import Env, StartEnv
from tests.support.cluster import start_cluster

Obj = dict[str, Any]
WAIT = 30  # seconds any one awaited change may take before the test fails instead of hanging


# ------------------------------------------------------------------ helpers


def request_pem(sans: list[x509.GeneralName], key: ec.EllipticCurvePrivateKey | None = None,
                subject: x509.Name | None = None) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A fresh P-256 key and a PKCS#10 request (PEM) for it with ``sans``."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(subject or x509.Name([]))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=True)
    return key, b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def spiffe(ns: str, sa: str, td: str = "cluster.local") -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(f"spiffe://{td}/ns/{ns}/sa/{sa}")


def csr_obj(name: str, pem: bytes, *, pod: str | None, signer: str = SIGNER_NAME,
            expiration: int | None = 3600) -> Obj:
    md: Obj = {"name": name}
    if pod is not None:
        md["annotations"] = {"kmesh.io/pod": pod}
    spec: Obj = {"request": base64.b64encode(pem).decode(), "signerName": signer,
                 "usages": ["digital signature", "key encipherment", "server auth", "client auth"]}
    if expiration is not None:
        spec["expirationSeconds"] = expiration
    return {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": md, "spec": spec}


async def make_pod(c: Client, ns: str, name: str, *, sa: str = "web", node: str = "node-a",
                   meshed: bool = True) -> Obj:
    labels = {"app": name, **({"security.kmesh.io/tlsMode": "kmesh"} if meshed else {})}
    return await c.create({"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": name, "namespace": ns, "labels": labels},
                           "spec": {"serviceAccountName": sa, "nodeName": node,
                                    "containers": [{"name": "app", "image": "kmesh/app"}]}}, ns)


async def make_namespace(c: Client, name: str) -> None:
    await c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def decided(*names: str) -> Any:
    """``Informer.wait_for`` predicate: every CSR of ``names`` is no longer pending or merely approved."""
    return lambda inf: all(inf.get(n) is not None and state(inf.get(n)) in ("issued", "denied", "failed")
                           for n in names)


def condition(csr: Obj, ctype: str) -> Obj:
    return next(c for c in csr["status"]["conditions"] if c["type"] == ctype)


def has_root_cm(ns: str, pem: str | None = None) -> Any:
    def ok(inf: Informer) -> bool:
        cm = inf.get(ROOT_CONFIGMAP, ns)
        return cm is not None and (pem is None or (cm.get("data") or {}) == {ROOT_KEY: pem})
    return ok


async def mesh_env(start_env: StartEnv, **config: Any) -> Env:
    return await start_env(controllers=("mesh-ca",), **config)


async def start_manager(nursery: trio.Nursery, client: Client, **config: Any) -> tuple[ControllerManager, trio.CancelScope]:
    scope = trio.CancelScope()

    async def run(*, task_status: trio.TaskStatus[ControllerManager]) -> None:
        with scope:
            await run_controllers(client, ControllerConfig(controllers=("mesh-ca",), **config),
                                  task_status=task_status)

    return await nursery.start(run), scope


def mesh_ca(mgr: ControllerManager) -> MeshCAController:
    ctl = mgr.controllers["mesh-ca"]
    assert isinstance(ctl, MeshCAController)
    return ctl


# ------------------------------------------------------------------ the root and its ConfigMaps


async def test_root_created_once_shared_and_reused(nursery: trio.Nursery, tmp_path: Path) -> None:
    cluster = await start_cluster(nursery, tmp_path, loopback_ok=True)
    c = cluster.client
    # two managers start together (two servers of a lab): one creates the root, the other reads it back
    (m1, s1), (m2, s2) = [await start_manager(nursery, c) for _ in range(2)]
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as n:
            roots: list[MeshCA] = []

            async def load(ctl: MeshCAController) -> None:
                roots.append(await ctl.root())
            n.start_soon(load, mesh_ca(m1))
            n.start_soon(load, mesh_ca(m2))
    assert roots[0].cert == roots[1].cert
    secret = await c.get("Secret", CA_SECRET, CA_NAMESPACE)
    assert secret["type"] == "kubernetes.io/tls"
    assert MeshCA.from_secret(secret).cert == roots[0].cert
    root = roots[0].cert
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == ROOT_CN
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "kmesh"
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert root.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    assert (root.not_valid_after_utc - root.not_valid_before_utc).days >= 3649
    root.verify_directly_issued_by(root)

    # every manager stopped, a new one starts: same Secret, same root
    s1.cancel()
    s2.cancel()
    m3, _ = await start_manager(nursery, c)
    with trio.fail_after(WAIT):
        assert (await mesh_ca(m3).root()).cert == root
    again = await c.get("Secret", CA_SECRET, CA_NAMESPACE)
    assert again["metadata"]["uid"] == secret["metadata"]["uid"]
    assert again["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]
    await c.aclose()


async def test_root_configmap_everywhere_and_repaired(start_env: StartEnv) -> None:
    env = await mesh_env(start_env)
    c = env.client
    pem = (await mesh_ca(env.mgr).root()).cert_pem
    cms = env.informer("ConfigMap")
    with trio.fail_after(WAIT):
        for ns in ("default", "kube-system", "kube-public", CA_NAMESPACE):
            await cms.wait_for(has_root_cm(ns, pem))
        await make_namespace(c, "team-a")
        await cms.wait_for(has_root_cm("team-a", pem))
        first = cms.get(ROOT_CONFIGMAP, "team-a")["metadata"]["uid"]

        await c.delete("ConfigMap", ROOT_CONFIGMAP, "team-a")
        await cms.wait_for(lambda inf: (inf.get(ROOT_CONFIGMAP, "team-a") or {}).get("metadata", {}).get("uid")
                           not in (None, first))
        assert cms.get(ROOT_CONFIGMAP, "team-a")["data"] == {ROOT_KEY: pem}

        edited = dict(cms.get(ROOT_CONFIGMAP, "team-a"))
        edited["data"] = {ROOT_KEY: "not a certificate", "extra": "x"}
        await c.update(edited)
        await cms.wait_for(has_root_cm("team-a", pem))
    x509.load_pem_x509_certificate(pem.encode()).verify_directly_issued_by(
        MeshCA.from_secret(await c.get("Secret", CA_SECRET, CA_NAMESPACE)).cert)


# ------------------------------------------------------------------ signing


async def test_meshed_pod_gets_a_certificate(start_env: StartEnv) -> None:
    env = await mesh_env(start_env, mesh_cert_max_ttl=900.0)
    c = env.client
    await make_namespace(c, "shop")
    await make_pod(c, "shop", "web-1", sa="web")
    key, pem = request_pem([spiffe("shop", "web")])
    await c.create(csr_obj("web-1-cert", pem, pod="shop/web-1", expiration=3600))
    csrs = env.informer("CertificateSigningRequest")
    with trio.fail_after(WAIT):
        await csrs.wait_for(decided("web-1-cert"))
    csr = csrs.get("web-1-cert")
    assert state(csr) == "issued", csr.get("status")
    approved = condition(csr, "Approved")
    assert approved["reason"] == "AutoApproved"
    assert "shop/web-1" in approved["message"] and "web" in approved["message"]

    cert = x509.load_pem_x509_certificate(base64.b64decode(csr["status"]["certificate"]))
    root = MeshCA.from_secret(await c.get("Secret", CA_SECRET, CA_NAMESPACE)).cert
    cert.verify_directly_issued_by(root)
    assert cert.public_key() == key.public_key()
    assert cert.subject == x509.Name([])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert list(san.value) == [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/shop/sa/web")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment and not ku.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # asked for an hour, capped at mesh_cert_max_ttl (15 minutes); notBefore a minute back
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(seconds=900 + 60)
    now = dt.datetime.now(dt.timezone.utc)
    assert cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


async def test_denials_say_what_is_wrong(start_env: StartEnv, nursery: trio.Nursery) -> None:
    env = await mesh_env(start_env)
    c = env.client
    await make_namespace(c, "shop")
    await make_pod(c, "shop", "web-1", sa="web", node="node-a")
    await make_pod(c, "shop", "plain", sa="web", meshed=False)
    cases = {
        # name: (SANs, pod annotation, words the Denied message must contain)
        "wrong-sa": ([spiffe("shop", "admin")], "shop/web-1", ["runs as service account web, not admin"]),
        "pod-missing": ([spiffe("shop", "web")], "shop/ghost", ["pod shop/ghost does not exist"]),
        "not-meshed": ([spiffe("shop", "web")], "shop/plain", ["not in the mesh", "security.kmesh.io/tlsMode"]),
        "extra-dns": ([spiffe("shop", "web"), x509.DNSName("web.shop.svc")], "shop/web-1",
                      ["exactly one subject alternative name", "DNS:web.shop.svc"]),
        "no-annotation": ([spiffe("shop", "web")], None, ["no annotation kmesh.io/pod"]),
        "other-domain": ([spiffe("shop", "web", "evil.example")], "shop/web-1", ["trust domain cluster.local"]),
        "other-ns": ([spiffe("default", "web")], "shop/web-1", ["names namespace default"]),
    }
    # another signer's request comes first: the mesh CA never touches it
    _, other_pem = request_pem([spiffe("shop", "web")])
    await c.create(csr_obj("other-signer", other_pem, pod="shop/web-1", signer="example.com/other"))
    for name, (sans, pod, _) in cases.items():
        _, pem = request_pem(sans)
        await c.create(csr_obj(name, pem, pod=pod))
    csrs = env.informer("CertificateSigningRequest")
    with trio.fail_after(WAIT):
        await csrs.wait_for(decided(*cases))
    for name, (_, _, words) in cases.items():
        csr = csrs.get(name)
        assert state(csr) == "denied", (name, csr.get("status"))
        denied = condition(csr, "Denied")
        assert denied["reason"] == "KmeshMeshCADenied"
        for w in words:
            assert w in denied["message"], (name, denied["message"])
        assert not csr["status"].get("certificate")
    other = await c.get("CertificateSigningRequest", "other-signer")
    assert state(other) == "pending" and not (other.get("status") or {}).get("conditions")

    # each denial is a Warning event on its CSR (a cluster-scoped object's events go to "default")
    events = Informer(c, "Event", namespace="default")
    nursery.start_soon(events.run)
    with trio.fail_after(WAIT):
        await events.wait_for(lambda inf: {e["involvedObject"]["name"] for e in inf.list()
                                           if e.get("reason") == "KmeshMeshCADenied"} >= set(cases))


async def test_node_may_ask_only_for_its_own_pods(start_env: StartEnv) -> None:
    env = await mesh_env(start_env)
    c = env.client
    srv = env.cluster.server
    await make_namespace(c, "shop")
    await make_pod(c, "shop", "on-a", sa="web", node="node-a")
    await make_pod(c, "shop", "on-b", sa="web", node="node-b")
    node_key, node_req = node_csr("node-a")
    creds = Credentials(srv.url, srv.pki.ca_pem(), client_cert_pem=sign_node_csr(srv.pki, node_req, "node-a"),
                        client_key_pem=node_key)
    async with Client(creds) as node_a:
        for pod in ("on-a", "on-b"):
            _, pem = request_pem([spiffe("shop", "web")])
            made = await node_a.create(csr_obj(f"{pod}-cert", pem, pod=f"shop/{pod}"))
            assert made["spec"].get("username") == "system:node:node-a", made["spec"]
    csrs = env.informer("CertificateSigningRequest")
    with trio.fail_after(WAIT):
        await csrs.wait_for(decided("on-a-cert", "on-b-cert"))
    assert state(csrs.get("on-a-cert")) == "issued"
    refused = csrs.get("on-b-cert")
    assert state(refused) == "denied"
    assert "node node-a asked for pod shop/on-b, which runs on node-b" in condition(refused, "Denied")["message"]


async def test_approved_elsewhere_is_checked_and_decided_requests_cleaned_up(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    cluster = await start_cluster(nursery, tmp_path, loopback_ok=True)
    c = cluster.client
    await make_namespace(c, "shop")
    await make_pod(c, "shop", "web-1", sa="web")
    # approved by someone else (kubectl certificate approve) before the CA runs: checked all the same
    _, bad = request_pem([spiffe("shop", "admin")])
    made = await c.create(csr_obj("approved-bad", bad, pod="shop/web-1"))
    made.setdefault("status", {})["conditions"] = [{"type": "Approved", "status": "True", "reason": "ByHand",
                                                    "message": "looks fine"}]
    await c.update(made, subresource="approval")
    _, good = request_pem([spiffe("shop", "web")])
    await c.create(csr_obj("good", good, pod="shop/web-1"))

    factory = InformerFactory(c)
    ctl = MeshCAController(c, factory, cleanup_after=2.0)
    watched = factory.informer("CertificateSigningRequest")
    seen: dict[str, str] = {}
    watched.add_handler(lambda ch: seen.__setitem__(ch.obj["metadata"]["name"], state(ch.obj))
                        if ch.new is not None else None)
    await nursery.start(factory.run)
    nursery.start_soon(ctl.run)
    with trio.fail_after(WAIT):
        await watched.wait_for(lambda inf: seen.get("approved-bad") == "failed" and seen.get("good") == "issued")
        failed = condition(watched.get("approved-bad"), "Failed")
        assert failed["reason"] == "KmeshMeshCAFailed" and "not admin" in failed["message"]
        assert not watched.get("approved-bad")["status"].get("certificate")
        # an hour upstream, two seconds here: both go
        await watched.wait_for(lambda inf: inf.get("approved-bad") is None and inf.get("good") is None)
    await c.aclose()


# ------------------------------------------------------------------ the checks on plain objects


def _plain(sans: list[x509.GeneralName], pod: str | None = "shop/web-1", username: str = "kmesh-admin") -> Obj:
    _, pem = request_pem(sans)
    obj = csr_obj("x", pem, pod=pod)
    obj["spec"]["username"] = username
    return obj


POD: Obj = {"metadata": {"name": "web-1", "namespace": "shop", "labels": {"security.kmesh.io/tlsMode": "kmesh"}},
            "spec": {"serviceAccountName": "web", "nodeName": "node-a"}}


def test_checks_on_plain_objects() -> None:
    grant = check_identity(_plain([spiffe("shop", "web")]), POD, "cluster.local")
    assert grant.uri == "spiffe://cluster.local/ns/shop/sa/web" and grant.pod == "shop/web-1"
    assert check_identity(_plain([spiffe("shop", "web", "lab.test")]), POD, "lab.test").service_account == "web"
    problems = {
        "no subject alternative name": (_plain([]), POD),
        "not a SPIFFE ID": (_plain([x509.UniformResourceIdentifier("https://shop/web")]), POD),
        "is not <namespace>/<pod>": (_plain([spiffe("shop", "web")], pod="web-1"), POD),
        "is terminating": (_plain([spiffe("shop", "web")]),
                           {**POD, "metadata": {**POD["metadata"], "deletionTimestamp": "2024-01-01T00:00:00Z"}}),
        "which runs on node-a": (_plain([spiffe("shop", "web")], username="system:node:node-b"), POD),
        "exactly one": (_plain([spiffe("shop", "web"), spiffe("shop", "web2")]), POD),
    }
    for words, (csr, pod) in problems.items():
        with pytest.raises(Denial, match=words):
            check_identity(csr, pod, "cluster.local")
    bad = _plain([spiffe("shop", "web")])
    bad["spec"]["request"] = base64.b64encode(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                                              b"-----END CERTIFICATE REQUEST-----\n").decode()
    with pytest.raises(Denial, match="not a PEM certificate request"):
        check_identity(bad, POD, "cluster.local")


def test_state_of_conditions() -> None:
    assert state({}) == "pending"
    assert state({"status": {"conditions": [{"type": "Approved", "status": "True"}]}}) == "approved"
    assert state({"status": {"conditions": [{"type": "Approved", "status": "True"}], "certificate": "x"}}) == "issued"
    assert state({"status": {"conditions": [{"type": "Denied", "status": "True"}]}}) == "denied"
    assert state({"status": {"conditions": [{"type": "Approved", "status": "True"},
                                            {"type": "Failed", "status": "True"}]}}) == "failed"
