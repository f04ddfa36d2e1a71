"""Keep an L7 engine serving what the API says: translate on every change, hand it the backends' endpoints.

One feeder serves a Gateway (the Gateway API translation, one Gateway's
result) or an ingress controller (every Ingress of its classes). The
informers keep their caches when the API server goes away, so the proxy keeps
serving the last config and recovers by itself when the server returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from kmesh.client.api import Client
from kmesh.client.informer import Informer
from kmesh.gateway import gatewayapi, ingress
from kmesh.gateway.endpoints import SERVICE_NAME_LABEL, ready_endpoints
from kmesh.gateway.watch import WorldWatch
from kmesh.gateway.world import Obj, World
from kmesh.l7.model import Backend, Config, Endpoint, RequestMirror

log = logging.getLogger("kmesh.gateway")

GATEWAY_KINDS = ("GatewayClass", "Gateway", "HTTPRoute", "Service", "Secret", "ReferenceGrant", "Namespace",
                 "EndpointSlice")
INGRESS_KINDS = ("IngressClass", "Ingress", "Service", "Secret", "EndpointSlice")
COALESCE = 0.02  # seconds: changes arriving together are translated once


def backends(config: Config) -> set[tuple[str, str, int]]:
    """Every valid (namespace, service, port) a config sends requests (or mirrored copies) to."""
    out: set[tuple[str, str, int]] = set()

    def add(b: Backend) -> None:
        if b.invalid is None and b.service:
            out.add((b.namespace, b.service, b.port))
        for f in b.filters:
            if isinstance(f, RequestMirror):
                add(f.backend)

    for ls in config.listeners:
        for e in ls.routes:
            for b in e.rule.backends:
                add(b)
            for f in e.rule.filters:
                if isinstance(f, RequestMirror):
                    add(f.backend)
    return out


@dataclass
class Feeder:
    """Translates the informers' objects with ``build`` and keeps ``engine`` current.

    ``engine`` needs ``apply(Config)`` and ``set_endpoints(namespace, service,
    port, endpoints)``. ``on_world`` runs after each translation (the ingress
    controller writes Ingress statuses from it).
    """

    client: Client
    kinds: tuple[str, ...]
    build: Callable[[World], Config]
    engine: Any
    on_world: Callable[[World, Config], Any] | None = None
    config: Config | None = None
    watch: WorldWatch | None = None
    _endpoints: dict[tuple[str, str, int], list[Endpoint]] = field(default_factory=dict)

    @property
    def informers(self) -> dict[str, Informer]:
        """The informers by kind (empty before ``run`` starts them)."""
        return self.watch.informers if self.watch is not None else {}

    def world(self) -> World:
        """The objects the informers hold now."""
        return self.watch.world() if self.watch is not None else World()

    async def run(self, *, task_status: trio.TaskStatus[Feeder] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the informers and keep translating until cancelled; started once the first config is applied."""
        self.watch = WorldWatch(self.client, self.kinds, COALESCE)
        async with trio.open_nursery() as n:
            await self.watch.start(n)
            await self._sync()
            task_status.started(self)
            while True:
                await self.watch.changes()
                await self._sync()

    async def _sync(self) -> None:
        world = self.world()
        config = self.build(world)
        if config != self.config:
            result = self.engine.apply(config)
            if hasattr(result, "__await__"):
                await result
            self.config = config
        self._feed_endpoints(world, config)
        if self.on_world is not None:
            result = self.on_world(world, config)
            if hasattr(result, "__await__"):
                await result

    def _feed_endpoints(self, world: World, config: Config) -> None:
        slices: dict[tuple[str, str], list[Obj]] = {}
        for s in self.informers["EndpointSlice"].list():
            m = s.get("metadata") or {}
            svc = (m.get("labels") or {}).get(SERVICE_NAME_LABEL)
            if svc:
                slices.setdefault((m.get("namespace") or "", svc), []).append(s)
        wanted = backends(config)
        for key in wanted:
            ns, svc, port = key
            service = world.services.get((ns, svc))
            eps = ready_endpoints(service, port, slices.get((ns, svc), [])) if service else []
            if self._endpoints.get(key) != eps:
                self._endpoints[key] = eps
                self.engine.set_endpoints(ns, svc, port, eps)
        for key in set(self._endpoints) - wanted:
            del self._endpoints[key]


def gateway_builder(gateway: tuple[str, str]) -> Callable[[World], Config]:
    """The translation that serves one Gateway (nothing while it is not kmesh's or does not exist)."""

    def build(world: World) -> Config:
        result = gatewayapi.translate(world).gateways.get(gateway)
        return result.config if result else Config()

    return build


def ingress_builder(classes: set[str] | None = None) -> Callable[[World], Config]:
    """The translation that serves every Ingress of ``classes`` (default: those kmesh's controller owns)."""

    def build(world: World) -> Config:
        return ingress.translate(world, classes).config

    return build
