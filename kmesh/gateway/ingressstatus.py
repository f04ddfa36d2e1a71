"""Ingress ``status.loadBalancer``: the address of the ingress controller's own LoadBalancer Service.

As ingress-nginx's ``--publish-service``: every Ingress the controller serves
reports where it is reachable, and reports it again when that address changes.
"""

from __future__ import annotations

import copy
import logging

from kmesh.api.errors import APIError
from kmesh.client.api import APIUnavailable, Client
from kmesh.gateway.controller import service_addresses
from kmesh.gateway.ingress import class_names, selected
from kmesh.gateway.world import Obj, World

log = logging.getLogger("kmesh.gateway.ingress")


def desired(world: World, publish: tuple[str, str]) -> list[Obj]:
    """The ``status.loadBalancer.ingress`` list every served Ingress should show."""
    return [{"ip": ip} for ip in service_addresses(world.services.get(publish))]


class IngressStatusWriter:
    """Writes ``status.loadBalancer`` of the Ingresses of its classes when it differs from the published address."""

    def __init__(self, client: Client, publish: tuple[str, str], classes: set[str] | None = None) -> None:
        self.client = client
        self.publish = publish
        self.classes = classes

    async def __call__(self, world: World, _config: object) -> None:
        classes = class_names(world) if self.classes is None else self.classes
        want = desired(world, self.publish)
        for ing in world.ingresses.values():
            if not selected(world, ing, classes):
                continue
            have = ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if have == want:
                continue
            new = copy.deepcopy(ing)
            new["status"] = {"loadBalancer": {"ingress": want} if want else {}}
            try:
                await self.client.update_status(new)
            except (APIError, APIUnavailable) as exc:  # a newer version is on its way: the next change writes it
                log.info("ingress status %s: %s", (ing.get("metadata") or {}).get("name"), exc)
