"""The status of HTTPRoutes attached to Services (GAMMA, GEP-1426): one ``status.parents`` entry per
``parentRef`` of kind Service, written under the mesh's controller name.

A Service parent is accepted when the Service exists (in the route's namespace, a producer route, or in
another one, a consumer route; GAMMA needs no ReferenceGrant for either) and has the ``port`` the
reference names, if it names one; the route's filters must all be supported. ``ResolvedRefs`` says
whether its backendRefs resolved, as for Gateway parents. Pure: objects in, statuses out.
"""

from __future__ import annotations

from kmesh.gateway.conditions import condition
from kmesh.gateway.httproute import compile_route
from kmesh.gateway.world import Obj, World, meta

MESH_CONTROLLER_NAME = "kmesh.io/mesh-controller"
"""The ``controllerName`` of the route statuses kmesh's mesh writes (Istio: ``istio.io/mesh-controller``)."""


def is_service_ref(ref: Obj) -> bool:
    """Whether a parentRef names a Service (a GAMMA parent) rather than a Gateway."""
    return ref.get("kind") == "Service" and (ref.get("group") or "") in ("", "core")


def service_parent_ref(ref: Obj, route_ns: str) -> Obj:
    """A Service parentRef as it is written in the status: group, kind and namespace filled in."""
    out: Obj = {"group": "", "kind": "Service", "namespace": ref.get("namespace") or route_ns,
                "name": ref.get("name") or ""}
    if ref.get("port") is not None:
        out["port"] = ref["port"]
    return out


def mesh_parents(world: World, route: Obj) -> list[Obj]:
    """The ``status.parents`` entries of ``route``'s Service parents (none: no work)."""
    refs = [ref for ref in (route.get("spec") or {}).get("parentRefs") or [] if is_service_ref(ref)]
    if not refs:
        return []
    compiled = compile_route(route, world, mesh=True)
    route_ns = meta(route).get("namespace") or ""
    gen = int(meta(route).get("generation") or 1)
    old_parents = [p for p in (route.get("status") or {}).get("parents") or []
                   if p.get("controllerName") == MESH_CONTROLLER_NAME]
    out: list[Obj] = []
    for ref in refs:
        parent = service_parent_ref(ref, route_ns)
        svc = world.services.get((parent["namespace"], parent["name"]))
        ports = [int(p.get("port") or 0) for p in ((svc or {}).get("spec") or {}).get("ports") or []]
        if svc is None:
            accepted = (False, "NoMatchingParent", f"Service {parent['namespace']}/{parent['name']} not found")
        elif ref.get("port") is not None and int(ref["port"]) not in ports:
            accepted = (False, "NoMatchingParent",
                        f"Service {parent['namespace']}/{parent['name']} has no port {ref['port']}")
        elif compiled.unsupported:
            accepted = (False, "UnsupportedValue", compiled.unsupported)
        else:
            accepted = (True, "Accepted", "Route is accepted")
        problem = compiled.problems[0] if compiled.problems else None
        resolved = (False, problem.reason, problem.message) if problem else \
            (True, "ResolvedRefs", "All references resolved")
        old = next((p.get("conditions") or [] for p in old_parents if p.get("parentRef") == parent), [])
        out.append({
            "parentRef": parent,
            "controllerName": MESH_CONTROLLER_NAME,
            "conditions": [condition("Accepted", *accepted, gen, old),
                           condition("ResolvedRefs", *resolved, gen, old)],
        })
    return out
