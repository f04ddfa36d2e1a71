"""Service-mesh sidecar injection: an admission step that adds kmesh's proxy to new Pods.

kmesh does in the API server what Istio does with its mutating webhook
(``sidecar-injector``), following the same upstream facts:

- Opt-in by namespace (Istio: the label ``istio-injection=enabled``) or by pod
  (Istio: the label ``sidecar.istio.io/inject: "true"``); a pod's own opt-out
  wins over its namespace. kmesh reads one key, ``kmesh.io/inject``, with the
  values ``enabled``/``disabled``, as a label or an annotation.
- Two containers are prepended to ``spec.initContainers``: an init container
  that installs the traffic redirect rules (Istio's ``istio-init``), then the
  proxy itself as a *native sidecar* (an init container with
  ``restartPolicy: Always``, Kubernetes 1.28+; Istio does so with
  ``ENABLE_NATIVE_SIDECARS``), so it starts before and stops after the app.
- Pod annotations exclude ports from the redirect (Istio's
  ``traffic.sidecar.istio.io/excludeInboundPorts``/``excludeOutboundPorts``).
- An injected pod carries ``security.kmesh.io/tlsMode: kmesh`` (Istio:
  ``security.istio.io/tlsMode: istio``) so clients know the endpoint is meshed.
- Only CREATE is mutated: pods that existed before stay as they are; host-network
  pods and pods that already have the proxy are skipped.

The hook runs after the registry has defaulted and validated the pod, so it
defaults the pod again (the injected containers get the same defaults as the
user's) and validates it again before it is stored.
"""

from __future__ import annotations

import re
from typing import Any

from kmesh.api import defaults, meta, validation
from kmesh.api import errors as E
from kmesh.api.errors import Cause
from kmesh.api.kinds import Kind
from kmesh.api.kinds import get as kind_named
from kmesh.store.base import NotFound, Obj, Store

INBOUND_PORT = 15006  # the proxy's inbound capture port (Istio: 15006)
OUTBOUND_PORT = 15001  # the proxy's outbound capture port (Istio: 15001)
ADMIN_PORT = 15020  # admin and merged metrics (Istio: 15020)
HEALTH_PORT = 15021  # readiness: /healthz/ready (Istio: 15021)
MARK = 0x539  # packets the proxy sends carry this mark and are not redirected again (Istio: 1337)

INJECT_KEY = "kmesh.io/inject"
ENABLED = "enabled"
DISABLED = "disabled"
INJECTED_ANNOTATION = "kmesh.io/injected"
EXCLUDE_INBOUND_ANNOTATION = "kmesh.io/exclude-inbound-ports"
EXCLUDE_OUTBOUND_ANNOTATION = "kmesh.io/exclude-outbound-ports"
TLS_MODE_LABEL = "security.kmesh.io/tlsMode"
TLS_MODE = "kmesh"

INIT_NAME = "kmesh-init"
PROXY_NAME = "kmesh-proxy"
INIT_IMAGE = "kmesh/proxy-init"
PROXY_IMAGE = "kmesh/proxy"
METRICS_PORT_NAME = "kmesh-metrics"
READY_PATH = "/healthz/ready"

# The proxy's own ports never go through the inbound redirect.
PROXY_PORTS = (OUTBOUND_PORT, INBOUND_PORT, ADMIN_PORT, HEALTH_PORT)

_PORT = re.compile(r"[0-9]{1,5}")


def inject_value(md: Obj) -> str | None:
    """The ``kmesh.io/inject`` choice of one object's metadata: ``disabled`` if a label or an annotation says
    so, else ``enabled`` if one says that, else None."""
    values = {((md.get(where) or {}) if isinstance(md.get(where), dict) else {}).get(INJECT_KEY)
              for where in ("labels", "annotations")}
    if DISABLED in values:
        return DISABLED
    if ENABLED in values:
        return ENABLED
    return None


def wants_injection(pod: Obj, namespace: Obj | None) -> bool:
    """Whether ``pod`` asks for the sidecar: its own choice first, then its namespace's."""
    own = inject_value(pod.get("metadata") or {})
    if own is not None:
        return own == ENABLED
    return namespace is not None and inject_value(namespace.get("metadata") or {}) == ENABLED


def already_injected(spec: Obj) -> bool:
    """Whether a container or init container is already named ``kmesh-proxy``."""
    return any(isinstance(c, dict) and c.get("name") == PROXY_NAME
               for key in ("containers", "initContainers") for c in (spec.get(key) or []))


def port_list(text: str) -> tuple[int, ...]:
    """The ports of a comma list such as ``"15021, 15090"`` (``""``: none); ValueError names a bad item.

    The one parser of these lists: the annotations here, the proxy-init app's flags in ``kmesh.mesh``."""
    if not text.strip():
        return ()
    ports: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not _PORT.fullmatch(item) or not 1 <= int(item) <= 65535:
            raise ValueError(f"bad port {item!r} in {text!r}: want numbers 1-65535 separated by commas")
        ports.append(int(item))
    return tuple(ports)


def parse_ports(value: Any, annotation: str) -> tuple[list[int], list[Cause]]:
    """The ports of one exclusion annotation (duplicates dropped), or the cause naming it when it is not a
    non-empty comma list of port numbers 1-65535."""
    field = f"metadata.annotations[{annotation}]"
    try:
        ports = port_list(str(value))
    except ValueError:
        ports = ()
    if not ports:
        return [], [E.invalid(field, value, "must be a comma-separated list of port numbers between 1 and 65535")]
    return list(dict.fromkeys(ports)), []


def _joined(ports: list[int] | tuple[int, ...]) -> str:
    return ",".join(str(p) for p in ports)


def init_container(exclude_inbound: list[int], exclude_outbound: list[int] | None) -> Obj:
    """``kmesh-init``: installs the redirect rules, then exits (Istio's ``istio-init``)."""
    inbound = [*PROXY_PORTS, *(p for p in exclude_inbound if p not in PROXY_PORTS)]
    args = [f"--inbound-port={INBOUND_PORT}", f"--outbound-port={OUTBOUND_PORT}", f"--mark={MARK:#x}",
            f"--exclude-inbound-ports={_joined(inbound)}"]
    if exclude_outbound is not None:
        args.append(f"--exclude-outbound-ports={_joined(exclude_outbound)}")
    return {
        "name": INIT_NAME,
        "image": INIT_IMAGE,
        "args": args,
        "securityContext": {
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "runAsUser": 0,
            "runAsNonRoot": False,
        },
    }


def _field_env(name: str, path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def proxy_container() -> Obj:
    """``kmesh-proxy``: the sidecar, as a native sidecar (an init container that restarts Always)."""
    ready = {"path": READY_PATH, "port": HEALTH_PORT}
    return {
        "name": PROXY_NAME,
        "image": PROXY_IMAGE,
        "restartPolicy": "Always",
        "args": [f"--inbound-port={INBOUND_PORT}", f"--outbound-port={OUTBOUND_PORT}", f"--admin-port={ADMIN_PORT}",
                 f"--health-port={HEALTH_PORT}", f"--mark={MARK:#x}"],
        "ports": [{"name": METRICS_PORT_NAME, "containerPort": ADMIN_PORT, "protocol": "TCP"}],
        "env": [_field_env("POD_NAME", "metadata.name"), _field_env("POD_NAMESPACE", "metadata.namespace"),
                _field_env("SERVICE_ACCOUNT", "spec.serviceAccountName")],
        "startupProbe": {"httpGet": dict(ready), "periodSeconds": 1, "failureThreshold": 600},
        "readinessProbe": {"httpGet": dict(ready), "periodSeconds": 5},
    }


def sidecars(annotations: Obj) -> tuple[list[Obj], list[Cause]]:
    """The two containers to prepend, built from the pod's exclusion annotations, or why those are invalid."""
    inbound: list[int] = []
    outbound: list[int] | None = None
    causes: list[Cause] = []
    if EXCLUDE_INBOUND_ANNOTATION in annotations:
        inbound, bad = parse_ports(annotations[EXCLUDE_INBOUND_ANNOTATION], EXCLUDE_INBOUND_ANNOTATION)
        causes += bad
    if EXCLUDE_OUTBOUND_ANNOTATION in annotations:
        outbound, bad = parse_ports(annotations[EXCLUDE_OUTBOUND_ANNOTATION], EXCLUDE_OUTBOUND_ANNOTATION)
        causes += bad
    return [init_container(inbound, outbound), proxy_container()], causes


def inject(pod: Obj) -> list[Cause]:
    """Add the sidecars, the ``kmesh.io/injected`` annotation and the tlsMode label to ``pod``, in place.

    Returns the causes instead (and changes nothing) when an exclusion annotation is invalid."""
    md = pod.setdefault("metadata", {})
    annotations = md.get("annotations") if isinstance(md.get("annotations"), dict) else {}
    containers, causes = sidecars(annotations)
    if causes:
        return causes
    spec = pod.setdefault("spec", {})
    spec["initContainers"] = [*containers, *(spec.get("initContainers") or [])]
    md["annotations"] = {**annotations, INJECTED_ANNOTATION: ",".join(c["name"] for c in containers)}
    labels = md.get("labels") if isinstance(md.get("labels"), dict) else {}
    md["labels"] = {**labels, TLS_MODE_LABEL: TLS_MODE}
    return []


class MeshInjector:
    """Admission for Pods (see the module docstring)."""

    def __init__(self, store: Store, *, loopback_ok: bool = False) -> None:
        self.store = store
        self.loopback_ok = loopback_ok  # passed on to validation, as the registry does
        self.namespaces = kind_named("Namespace")

    async def _namespace(self, name: str) -> Obj | None:
        try:
            return await self.store.get(self.namespaces.key(None, name))
        except NotFound:
            return None

    async def on_create(self, kind: Kind, obj: Obj) -> None:
        """Inject the sidecars into a new pod that asks for them; 422 if its exclusion annotations are invalid."""
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        if spec.get("hostNetwork") is True or already_injected(spec):
            return
        namespace = await self._namespace(meta.namespace(obj) or "default")
        if not wants_injection(obj, namespace):
            return
        causes = inject(obj)
        if not causes:
            defaults.apply_defaults(kind, obj)  # the injected containers get the user containers' defaults
            status = obj.get("status")
            if isinstance(status, dict) and "qosClass" in status:
                status["qosClass"] = meta.pod_qos_class(obj["spec"])  # upstream computes it after admission
            causes = validation.validate(kind, obj, loopback_ok=self.loopback_ok)
        if causes:
            raise E.invalid_object(kind.kind, meta.name(obj), kind.group, causes)

    async def on_update(self, kind: Kind, new: Obj, old: Obj) -> None:
        """Updates are not injected."""

    async def on_delete(self, kind: Kind, obj: Obj) -> None:
        """Nothing to release."""

    async def on_create_failed(self, kind: Kind, obj: Obj) -> None:
        """Nothing to release."""
