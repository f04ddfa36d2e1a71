"""Ingresses of kmesh's IngressClass in the L7 engine's terms: one table served on port 80 and, with TLS, 443.

The order follows the Ingress documentation: rules for an exact host before
wildcard hosts (a wildcard stands for exactly one label) before rules without
a host; within a host the longest path wins, and an ``Exact`` path beats a
``Prefix`` path of the same length. kmesh treats ``ImplementationSpecific`` as
``Prefix`` (as ingress-nginx does without its regex annotation). Among equal
rules of different Ingresses the oldest Ingress wins. A host that has rules
is answered by them alone, as ingress-nginx gives each host a server block:
what they do not match goes to the default backend, not to the rules
without a host. An Ingress's ``defaultBackend`` (the oldest, when several
name one) serves what no rule matched; without one, 404. A backend
whose Service does not exist answers 503 (no endpoints), as ingress-nginx
does; a ``resource`` backend, which kmesh does not serve, 500.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kmesh.gateway import hostnames
from kmesh.gateway.tlscerts import tls_pair
from kmesh.gateway.world import INGRESS_CONTROLLER, Obj, World, meta, nsname
from kmesh.l7.model import Backend, Certificate, Config, Listener, Match, PathMatch, RouteEntry, Rule

DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"


@dataclass
class IngressTranslation:
    """The proxy config for every Ingress of one class, and what could not be used."""

    config: Config
    ingresses: list[tuple[str, str]] = field(default_factory=list)
    problems: dict[tuple[str, str], list[str]] = field(default_factory=dict)


def class_names(world: World) -> set[str]:
    """The IngressClasses handled by kmesh's ingress controller."""
    return {n for n, c in world.ingress_classes.items() if (c.get("spec") or {}).get("controller") == INGRESS_CONTROLLER}


def _default_class(world: World) -> str | None:
    defaults = [n for n, c in world.ingress_classes.items()
                if (meta(c).get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"]
    return defaults[0] if len(defaults) == 1 else None


def selected(world: World, ing: Obj, classes: set[str]) -> bool:
    """Whether an Ingress belongs to one of ``classes`` (by ``ingressClassName``, the legacy annotation, or the
    default class when it names none)."""
    name = (ing.get("spec") or {}).get("ingressClassName") or (meta(ing).get("annotations") or {}).get(
        LEGACY_CLASS_ANNOTATION)
    if name is None:
        name = _default_class(world)
    return name in classes


def _backend(world: World, ns: str, backend: Obj) -> Backend:
    svc = backend.get("service")
    if not svc:
        return Backend(ns, "", 0, invalid="UnsupportedBackend")
    name, port = svc.get("name") or "", svc.get("port") or {}
    number = port.get("number")
    if number is None:
        service = world.services.get((ns, name)) or {}
        number = next((p.get("port") for p in (service.get("spec") or {}).get("ports") or []
                       if p.get("name") == port.get("name")), 0)
    app_protocol = None
    for p in ((world.services.get((ns, name)) or {}).get("spec") or {}).get("ports") or []:
        if p.get("port") == number:
            app_protocol = p.get("appProtocol")
    return Backend(ns, name, int(number or 0), app_protocol=app_protocol)


def _path(p: Obj) -> tuple[PathMatch, int]:
    kind = p.get("pathType") or "ImplementationSpecific"
    value = p.get("path") or "/"
    if kind == "Exact":
        return PathMatch("Exact", value), 0
    return PathMatch("PathPrefix", value), 1


def translate(world: World, classes: set[str] | None = None) -> IngressTranslation:
    """The table of every Ingress of ``classes`` (default: the classes kmesh's controller owns)."""
    classes = class_names(world) if classes is None else classes
    keyed: list[tuple[Any, RouteEntry]] = []
    certs: list[tuple[Any, Certificate]] = []
    out = IngressTranslation(Config())
    for key, ing in sorted(world.ingresses.items(), key=lambda kv: ((meta(kv[1]).get("creationTimestamp") or ""),
                                                                     kv[0])):
        if not selected(world, ing, classes):
            continue
        out.ingresses.append(key)
        ns, name = nsname(ing)
        age = (meta(ing).get("creationTimestamp") or "", f"{ns}/{name}")
        spec = ing.get("spec") or {}
        for ri, rule in enumerate(spec.get("rules") or []):
            host = rule.get("host") or None
            for pi, p in enumerate(((rule.get("http") or {}).get("paths")) or []):
                pm, exact_rank = _path(p)
                b = _backend(world, ns, p.get("backend") or {})
                r = Rule(backends=(b,), name=f"Ingress {ns}/{name} rule {ri} path {pi}")
                k = (0, hostnames.specificity(host), 0, -len(pm.value.rstrip("/") or "/"), exact_rank, age, ri, pi)
                keyed.append((k, RouteEntry(hostnames.host_match(host, one_label=True), Match(path=pm), r)))
        if spec.get("defaultBackend"):
            b = _backend(world, ns, spec["defaultBackend"])
            keyed.append(((1, age), RouteEntry(hostnames.host_match(None), Match(),
                                               Rule(backends=(b,), name=f"Ingress {ns}/{name} defaultBackend"))))
        for tls in spec.get("tls") or []:
            secret_name = tls.get("secretName") or ""
            pair = tls_pair(world.secrets.get((ns, secret_name)), ns, secret_name)
            if isinstance(pair, str):
                out.problems.setdefault(key, []).append(f"tls: {pair}")
                continue
            crt, keypem = pair
            for h in tls.get("hosts") or [None]:
                certs.append(((hostnames.specificity(h), age),
                              Certificate(crt, keypem, hostnames.host_match(h, one_label=True))))
    # As ingress-nginx's server blocks: a host that has rules is answered only by them; what they do not match
    # goes to the default backend (or 404), not to the rules without a host.
    default = next((e.rule for k, e in sorted(keyed, key=lambda kv: kv[0]) if k[0] == 1), None)
    fence = default or Rule(name="no Ingress rule matched", direct=404)
    hosts = {(k[1], e.host) for k, e in keyed if k[0] == 0 and e.host.kind != "any"}
    for spec_key, host in hosts:
        keyed.append(((0, spec_key, 1), RouteEntry(host, Match(), fence)))
    keyed.sort(key=lambda kv: kv[0])
    routes = tuple(e for _, e in keyed)
    listeners = [Listener(80, routes, name="http")]
    if certs:
        certs.sort(key=lambda kv: kv[0])
        listeners.append(Listener(443, routes, tuple(c for _, c in certs), name="https"))
    out.config = Config(tuple(listeners))
    return out
