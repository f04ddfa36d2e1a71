"""The mesh CA (``mesh-ca``): workload certificates for meshed pods through the CertificateSigningRequest API.

What istiod's built-in CA does, with the Kubernetes CSR API as its transport
(as Istio's ``--ca-provider`` for Kubernetes signers and cert-manager's
istio-csr do):

- **The root.** Istio's self-signed CA keeps its root key pair in the Secret
  ``istio-system/istio-ca-secret``, made by the first istiod and read back by
  every later one. kmesh keeps an EC P-256 root (CN ``kmesh mesh CA``,
  O ``kmesh``, ten years, ``basicConstraints CA``, ``keyCertSign``) in the
  ``kubernetes.io/tls`` Secret ``kmesh-system/kmesh-ca-secret`` (``tls.crt``,
  ``tls.key``): the first controller manager to start creates it (and the
  namespace), every other one, and every later term, reads it back, so all
  servers of a lab sign with the same root. The root is loaded once per term:
  replacing the Secret takes effect when a manager next starts leading.
- **Root distribution.** As kube-controller-manager's ``root-ca-cert-publisher``
  keeps ``kube-root-ca.crt`` and istiod keeps ``istio-ca-root-cert``, the
  ConfigMap ``kmesh-root-ca.crt`` (key ``root-cert.pem``) is kept in every
  active namespace: created when a namespace appears, rewritten when edited,
  created again when deleted.
- **Identities.** A workload's identity is a SPIFFE ID
  ``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``, carried as
  the only subject alternative name (a URI) of an X.509-SVID with an empty
  subject (so the SAN extension is critical, RFC 5280 4.2.1.6).
- **Approve, then issue.** The CSR API separates the two steps: an approver
  adds the ``Approved`` (or ``Denied``) condition through the ``/approval``
  subresource, then the signer of ``spec.signerName`` writes
  ``status.certificate`` through ``/status`` (or adds ``Failed``). For the
  signer ``kmesh.io/mesh`` this controller is both. It approves a request
  only when it names a pod that could hold the identity: the annotation
  ``kmesh.io/pod: <ns>/<pod>`` names an existing, not terminating, meshed
  (``security.kmesh.io/tlsMode: kmesh``) pod of the SPIFFE ID's namespace
  running as its service account and, when a node asks
  (``spec.username`` ``system:node:<node>``), running on that node (what
  Istio's node authorizer checks for a node agent asking on a pod's behalf).
  Anything else is denied with a message that says what was wrong, and a
  Warning event on the CSR. A request someone else approved is checked the
  same way before it is signed; one that fails gets ``Failed``.
- **Lifetime.** ``spec.expirationSeconds`` (default 24 h, Istio's default
  workload certificate TTL), capped by ``mesh_cert_max_ttl`` and by the
  root's own expiry; ``notBefore`` is a minute back for clock skew.
- **Clean-up.** As kube-controller-manager's ``csrcleaner`` removes approved
  and denied requests an hour after the decision, requests of this signer
  that were issued, denied or failed are deleted an hour later.

Other signers' requests are left alone.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import logging
import re
import time
from dataclasses import dataclass

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client import Counter

from kmesh.api import errors as E
from kmesh.api.obj import Obj
from kmesh.apiserver.meshinject import TLS_MODE, TLS_MODE_LABEL
from kmesh.client.api import Client
from kmesh.client.informer import Change
from kmesh.controllers import podutil
from kmesh.controllers.base import Controller
from kmesh.controllers.events import EventRecorder
from kmesh.controllers.informers import InformerFactory
from kmesh.controllers.metrics import CONTROLLER_MANAGER

log = logging.getLogger("kmesh.controllers.meshca")

SIGNER_NAME = "kmesh.io/mesh"
CA_NAMESPACE = "kmesh-system"
CA_SECRET = "kmesh-ca-secret"
ROOT_CONFIGMAP = "kmesh-root-ca.crt"
ROOT_KEY = "root-cert.pem"
POD_ANNOTATION = "kmesh.io/pod"
DEFAULT_TRUST_DOMAIN = "cluster.local"
DEFAULT_TTL = 24 * 3600.0  # Istio's default workload certificate lifetime
CLEANUP_AFTER = 3600.0  # upstream csrcleaner: approved/denied requests go an hour after the decision
ROOT_CN = "kmesh mesh CA"
ROOT_O = "kmesh"
ROOT_DAYS = 3650
BACKDATE = 60.0  # notBefore this many seconds back, for clock skew
MIN_RSA_BITS = 2048

APPROVED_REASON = "AutoApproved"
DENIED_REASON = "KmeshMeshCADenied"
FAILED_REASON = "KmeshMeshCAFailed"

CSR_RESULTS = Counter(
    "kmesh_mesh_ca_csr", "CertificateSigningRequests of the kmesh.io/mesh signer handled, by result "
    "(issued, denied, failed).", ["result"], registry=CONTROLLER_MANAGER.registry)

Key = tuple[str, str]  # ("ns", namespace) or ("csr", name)


class Denial(Exception):
    """Why a request may not have the certificate it asks for (the message goes into the condition)."""


# ------------------------------------------------------------------ the root


@dataclass(frozen=True)
class MeshCA:
    """The mesh's root: certificate and key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def key_pem(self) -> str:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()

    @classmethod
    def generate(cls, *, now: dt.datetime | None = None) -> MeshCA:
        """A new self-signed root (EC P-256, ten years, CA, keyCertSign + cRLSign)."""
        now = now or dt.datetime.now(dt.timezone.utc)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ROOT_O),
                          x509.NameAttribute(NameOID.COMMON_NAME, ROOT_CN)])
        usage = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                              encipher_only=False, decipher_only=False)
        cert = (x509.CertificateBuilder()
                .subject_name(name).issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(seconds=BACKDATE))
                .not_valid_after(now + dt.timedelta(days=ROOT_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(usage, critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        return cls(cert, key)

    def to_secret(self) -> Obj:
        """The ``kubernetes.io/tls`` Secret ``kmesh-system/kmesh-ca-secret`` holding this root."""
        return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": CA_SECRET, "namespace": CA_NAMESPACE,
                             "annotations": {"kubernetes.io/description": "The kmesh service mesh's root CA "
                                             "(the mesh-ca controller signs workload certificates with it)."}},
                "data": {"tls.crt": _b64(self.cert_pem.encode()), "tls.key": _b64(self.key_pem.encode())}}

    @classmethod
    def from_secret(cls, secret: Obj) -> MeshCA:
        """The root held in ``secret``; ValueError when it holds none (or a certificate and key that differ)."""
        data = secret.get("data") or {}
        try:
            cert = x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"]))
            key = serialization.load_pem_private_key(base64.b64decode(data["tls.key"]), None)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"Secret {CA_NAMESPACE}/{CA_SECRET} holds no usable tls.crt/tls.key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or cert.public_key() != key.public_key():
            raise ValueError(f"Secret {CA_NAMESPACE}/{CA_SECRET}: tls.key is not the EC key of tls.crt")
        return cls(cert, key)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def ensure_root(client: Client) -> MeshCA:
    """The root kept in ``kmesh-system/kmesh-ca-secret``, created (with the namespace) when absent.

    Two managers starting together both try to create it; the loser reads the winner's back."""
    try:
        return MeshCA.from_secret(await client.get("Secret", CA_SECRET, CA_NAMESPACE))
    except E.APIError as exc:
        if exc.code != 404:
            raise
    try:
        await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CA_NAMESPACE}})
    except E.APIError as exc:
        if exc.code != 409:
            raise
    ca = MeshCA.generate()
    try:
        await client.create(ca.to_secret(), CA_NAMESPACE)
    except E.APIError as exc:
        if exc.code != 409:
            raise
        return MeshCA.from_secret(await client.get("Secret", CA_SECRET, CA_NAMESPACE))
    log.info("created the mesh root CA in Secret %s/%s", CA_NAMESPACE, CA_SECRET)
    return ca


def root_configmap(namespace: str, root_pem: str) -> Obj:
    """The ConfigMap ``kmesh-root-ca.crt`` of ``namespace``."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": ROOT_CONFIGMAP, "namespace": namespace,
                         "annotations": {"kubernetes.io/description": "The kmesh service mesh's root CA: workload "
                                         "certificates of meshed pods verify against it."}},
            "data": {ROOT_KEY: root_pem}}


# ------------------------------------------------------------------ reading a request


def trust_domain_ok(name: str) -> bool:
    """Whether ``name`` can be a SPIFFE trust domain (lower-case letters, digits, dots, dashes, underscores)."""
    return bool(re.fullmatch(r"[a-z0-9._-]+", name))


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    """The SPIFFE ID of a service account: ``spiffe://<td>/ns/<ns>/sa/<sa>``."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def state(csr: Obj) -> str:
    """``pending``, ``issued``, ``approved`` (not issued yet), ``denied`` or ``failed``."""
    types = {c.get("type") for c in (csr.get("status") or {}).get("conditions") or []
             if isinstance(c, dict) and c.get("status", "True") == "True"}
    if "Denied" in types:
        return "denied"
    if "Failed" in types:
        return "failed"
    if "Approved" in types:
        return "issued" if (csr.get("status") or {}).get("certificate") else "approved"
    return "pending"


def parse_request(csr: Obj) -> x509.CertificateSigningRequest:
    """The PKCS#10 request of ``spec.request`` (base64 of PEM), its signature checked and its key acceptable."""
    raw = (csr.get("spec") or {}).get("request") or ""
    try:
        req = x509.load_pem_x509_csr(base64.b64decode(raw, validate=True))
    except (TypeError, ValueError):
        raise Denial("spec.request is not a PEM certificate request (base64-encoded)") from None
    if not req.is_signature_valid:
        raise Denial("the request's signature does not verify")
    key = req.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise Denial(f"the request's RSA key has {key.key_size} bits, fewer than {MIN_RSA_BITS}")
    elif not isinstance(key, ec.EllipticCurvePublicKey):
        raise Denial("the request's key is neither EC nor RSA")
    return req


def requested_identity(req: x509.CertificateSigningRequest, trust_domain: str) -> tuple[str, str, str]:
    """``(namespace, service account, URI)`` of the request's only SAN, a SPIFFE ID of ``trust_domain``."""
    try:
        names = list(req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        raise Denial("the request has no subject alternative name: it needs exactly one, the URI "
                     f"spiffe://{trust_domain}/ns/<namespace>/sa/<service account>") from None
    except ValueError as exc:
        raise Denial(f"the request's extensions do not parse: {exc}") from None
    uris = [n.value for n in names if isinstance(n, x509.UniformResourceIdentifier)]
    others = [n for n in names if not isinstance(n, x509.UniformResourceIdentifier)]
    if others or len(uris) != 1:
        listed = ", ".join(_describe_san(n) for n in names)
        raise Denial(f"the request must have exactly one subject alternative name, a SPIFFE URI; it has {listed}")
    uri = uris[0]
    m = re.fullmatch(r"spiffe://([^/]+)/ns/([^/]+)/sa/([^/]+)", uri)
    if m is None:
        raise Denial(f"the URI {uri} is not a SPIFFE ID spiffe://<trust domain>/ns/<namespace>/sa/<service account>")
    if m.group(1) != trust_domain:
        raise Denial(f"the URI {uri} is not of this mesh's trust domain {trust_domain}")
    return m.group(2), m.group(3), uri


def _describe_san(name: x509.GeneralName) -> str:
    kind = {x509.DNSName: "DNS", x509.UniformResourceIdentifier: "URI", x509.IPAddress: "IP",
            x509.RFC822Name: "email"}.get(type(name), type(name).__name__)
    return f"{kind}:{name.value}"


def pod_reference(csr: Obj) -> tuple[str, str]:
    """``(namespace, name)`` of the annotation ``kmesh.io/pod: <ns>/<pod>``."""
    value = (podutil.md(csr).get("annotations") or {}).get(POD_ANNOTATION)
    if not value:
        raise Denial(f"the request has no annotation {POD_ANNOTATION}: <namespace>/<pod> naming the pod it is for")
    ns, sep, name = str(value).partition("/")
    if not sep or not ns or not name or "/" in name:
        raise Denial(f"annotation {POD_ANNOTATION}={value!r} is not <namespace>/<pod>")
    return ns, name


def check_pod(pod: Obj | None, ns: str, name: str, service_account: str, username: str) -> None:
    """Whether pod ``ns/name`` (None: it does not exist) may hold ``service_account``'s identity for ``username``."""
    if pod is None:
        raise Denial(f"pod {ns}/{name} does not exist")
    if podutil.is_terminating(pod):
        raise Denial(f"pod {ns}/{name} is terminating")
    spec = pod.get("spec") or {}
    running_as = spec.get("serviceAccountName") or "default"
    if running_as != service_account:
        raise Denial(f"pod {ns}/{name} runs as service account {running_as}, not {service_account}")
    if podutil.labels(pod).get(TLS_MODE_LABEL) != TLS_MODE:
        raise Denial(f"pod {ns}/{name} is not in the mesh (no label {TLS_MODE_LABEL}: {TLS_MODE})")
    if username.startswith("system:node:"):
        node = username.removeprefix("system:node:")
        if spec.get("nodeName") != node:
            raise Denial(f"node {node} asked for pod {ns}/{name}, which runs on "
                         f"{spec.get('nodeName') or 'no node yet'}")


@dataclass(frozen=True)
class Grant:
    """A request that may be signed: the parsed request, its SPIFFE URI, and the pod and account behind it."""

    request: x509.CertificateSigningRequest
    uri: str
    pod: str  # <namespace>/<name>
    service_account: str

    @property
    def message(self) -> str:
        return f"pod {self.pod} runs as service account {self.service_account}: {self.uri}"


def check_identity(csr: Obj, pod: Obj | None, trust_domain: str) -> Grant:
    """What may be signed for ``csr`` (``pod``: the pod it names, None when absent); else Denial saying why."""
    req = parse_request(csr)
    ns, sa, uri = requested_identity(req, trust_domain)
    pod_ns, pod_name = pod_reference(csr)
    if pod_ns != ns:
        raise Denial(f"the URI {uri} names namespace {ns}, but pod {pod_ns}/{pod_name} is in namespace {pod_ns}")
    check_pod(pod, pod_ns, pod_name, sa, (csr.get("spec") or {}).get("username") or "")
    return Grant(req, uri, f"{pod_ns}/{pod_name}", sa)


# ------------------------------------------------------------------ issuing


def lifetime(csr: Obj, max_ttl: float) -> float:
    """Seconds the certificate is valid: ``spec.expirationSeconds`` (default 24 h), at most ``max_ttl``."""
    asked = (csr.get("spec") or {}).get("expirationSeconds")
    ttl = float(asked) if isinstance(asked, (int, float)) and asked > 0 else DEFAULT_TTL
    return min(ttl, max_ttl)


def issue(ca: MeshCA, req: x509.CertificateSigningRequest, uri: str, ttl: float, *,
          now: dt.datetime | None = None) -> bytes:
    """The workload certificate (PEM) for the request's key and SPIFFE ``uri``, valid ``ttl`` seconds."""
    now = now or dt.datetime.now(dt.timezone.utc)
    not_after = min(now + dt.timedelta(seconds=ttl), ca.cert.not_valid_after_utc)
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    public_key = req.public_key()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(ca.cert.subject)
            .public_key(public_key)  # type: ignore[arg-type]  # EC or RSA: parse_request checked
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(seconds=BACKDATE))
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
            .sign(ca.key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def with_condition(csr: Obj, ctype: str, reason: str, message: str) -> Obj:
    """A copy of ``csr`` with condition ``ctype`` (status True) added."""
    out = copy.deepcopy(csr)
    now = podutil.format_time()
    status = out.setdefault("status", {})
    status["conditions"] = [*(status.get("conditions") or []),
                            {"type": ctype, "status": "True", "reason": reason, "message": message,
                             "lastUpdateTime": now, "lastTransitionTime": now}]
    return out


def decided_at(csr: Obj) -> float | None:
    """When the request was decided (its last condition's update time, else its creation)."""
    times = [podutil.parse_time(c.get("lastUpdateTime") or c.get("lastTransitionTime"))
             for c in (csr.get("status") or {}).get("conditions") or [] if isinstance(c, dict)]
    known = [t for t in times if t is not None]
    return max(known) if known else podutil.parse_time(podutil.md(csr).get("creationTimestamp"))


# ------------------------------------------------------------------ the controller


class MeshCAController(Controller[Key]):
    """Keeps the root published in every namespace and approves, denies and signs ``kmesh.io/mesh`` CSRs."""

    name = "mesh-ca"
    queue_name = "mesh_ca"

    def __init__(self, client: Client, factory: InformerFactory, *, trust_domain: str = DEFAULT_TRUST_DOMAIN,
                 max_ttl: float = DEFAULT_TTL, cleanup_after: float = CLEANUP_AFTER,
                 events: EventRecorder | None = None, workers: int = 2) -> None:
        super().__init__(workers=workers)
        if not trust_domain_ok(trust_domain):
            raise ValueError(f"mesh trust domain {trust_domain!r}: use lower-case letters, digits, '.', '-', '_'")
        self.client = client
        self.trust_domain = trust_domain
        self.max_ttl = max_ttl
        self.cleanup_after = cleanup_after
        self.events = events
        self.ca: MeshCA | None = None
        self._ca_lock = trio.Lock()
        self.namespaces = factory.informer("Namespace")
        self.configmaps = factory.informer("ConfigMap")
        self.csrs = factory.informer("CertificateSigningRequest")
        self.namespaces.add_handler(self._on_namespace)
        self.configmaps.add_handler(self._on_configmap)
        self.csrs.add_handler(self._on_csr)

    # -- handlers: keys only

    def _on_namespace(self, ch: Change) -> None:
        if ch.new is not None:
            self.queue.add(("ns", podutil.md(ch.new).get("name") or ""))

    def _on_configmap(self, ch: Change) -> None:
        m = podutil.md(ch.obj)
        if m.get("name") == ROOT_CONFIGMAP:
            self.queue.add(("ns", m.get("namespace") or ""))

    def _on_csr(self, ch: Change) -> None:
        if ch.new is not None and (ch.new.get("spec") or {}).get("signerName") == SIGNER_NAME:
            self.queue.add(("csr", podutil.md(ch.new).get("name") or ""))

    # -- work

    async def root(self) -> MeshCA:
        """The root, read (or created) on first use."""
        async with self._ca_lock:
            if self.ca is None:
                self.ca = await ensure_root(self.client)
            return self.ca

    async def run(self) -> None:
        """Load the root (retrying while the API is away), then work the queue."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(super().run)
            nursery.start_soon(self._load_root)

    async def _load_root(self) -> None:
        delay = 0.1
        while True:
            try:
                await self.root()
                return
            except Exception as exc:  # noqa: BLE001 - API away or a broken Secret: say so and try again
                log.warning("mesh-ca: cannot load the root CA: %s", exc)
            await trio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def sync(self, key: Key) -> None:
        what, name = key
        if what == "ns":
            await self._publish(name)
        else:
            await self._handle(name)

    async def _publish(self, namespace: str) -> None:
        """Create or repair ``kmesh-root-ca.crt`` in ``namespace`` (if it is active)."""
        ns = self.namespaces.get(namespace)
        if ns is None or podutil.is_terminating(ns) or (ns.get("status") or {}).get("phase") == "Terminating":
            return
        pem = (await self.root()).cert_pem
        current = self.configmaps.get(ROOT_CONFIGMAP, namespace)
        try:
            if current is None:
                await self.client.create(root_configmap(namespace, pem), namespace)
            elif (current.get("data") or {}) != {ROOT_KEY: pem} or current.get("binaryData"):
                fixed = copy.deepcopy(current)
                fixed["data"] = {ROOT_KEY: pem}
                fixed.pop("binaryData", None)
                await self.client.update(fixed)
        except E.APIError as exc:
            if exc.code == 403 and "being terminated" in exc.message or exc.code == 404 and current is None:
                return  # the namespace is going away
            raise

    async def _handle(self, name: str) -> None:
        csr = self.csrs.get(name)
        if csr is None or (csr.get("spec") or {}).get("signerName") != SIGNER_NAME:
            return
        st = state(csr)
        if st in ("issued", "denied", "failed"):
            await self._clean_up(csr)
            return
        pod = await self._pod(csr)
        try:
            grant = check_identity(csr, pod, self.trust_domain)
        except Denial as d:
            await self._refuse(csr, st, str(d))
            return
        if st == "pending":
            csr = await self.client.update(with_condition(csr, "Approved", APPROVED_REASON, grant.message),
                                           subresource="approval")
        cert = issue(await self.root(), grant.request, grant.uri, lifetime(csr, self.max_ttl))
        signed = copy.deepcopy(csr)
        signed.setdefault("status", {})["certificate"] = _b64(cert)
        await self.client.update(signed, subresource="status")
        CSR_RESULTS.labels("issued").inc()
        log.info("mesh-ca: issued %s for pod %s (CertificateSigningRequest %s)", grant.uri, grant.pod, name)
        if self.events:
            self.events.event(csr, "Normal", "CertificateIssued", f"issued {grant.uri} for pod {grant.pod}")

    async def _pod(self, csr: Obj) -> Obj | None:
        """The pod the request names, read from the API (not a cache that may not have seen it yet)."""
        try:
            ns, name = pod_reference(csr)
        except Denial:
            return None  # check_identity says why
        try:
            return await self.client.get("Pod", name, ns)
        except E.APIError as exc:
            if exc.code == 404:
                return None
            raise

    async def _refuse(self, csr: Obj, st: str, why: str) -> None:
        """Deny a pending request (``/approval``), or fail an approved one (``/status``)."""
        name = podutil.md(csr).get("name")
        if st == "pending":
            await self.client.update(with_condition(csr, "Denied", DENIED_REASON, why), subresource="approval")
            CSR_RESULTS.labels("denied").inc()
            log.info("mesh-ca: denied CertificateSigningRequest %s: %s", name, why)
        else:
            await self.client.update(with_condition(csr, "Failed", FAILED_REASON, why), subresource="status")
            CSR_RESULTS.labels("failed").inc()
            log.info("mesh-ca: did not sign approved CertificateSigningRequest %s: %s", name, why)
        if self.events:
            self.events.event(csr, "Warning", DENIED_REASON if st == "pending" else FAILED_REASON, why)

    async def _clean_up(self, csr: Obj) -> None:
        """Delete a decided request ``cleanup_after`` seconds after the decision (look again then)."""
        m = podutil.md(csr)
        at = decided_at(csr)
        left = self.cleanup_after - (time.time() - at) if at is not None else 0.0
        if left > 0:
            self.queue.add_after(("csr", m.get("name") or ""), left + 0.5)
            return
        try:
            await self.client.delete("CertificateSigningRequest", m.get("name") or "", uid=m.get("uid"))
        except E.APIError as exc:
            if exc.code not in (404, 409):
                raise
