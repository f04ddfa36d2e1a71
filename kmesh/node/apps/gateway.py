"""The ``kmesh/gateway``, ``kmesh/ingress-controller`` and ``kmesh/gateway-controller`` images as built-in apps.

- ``kmesh/gateway --gateway=NS/NAME``: the proxy of one Gateway (the Gateway
  controller's Deployments run it).
- ``kmesh/ingress-controller [--ingress-class=kmesh] [--publish-service=NS/NAME]``:
  the proxy serving every Ingress of the class, writing their
  ``status.loadBalancer`` from the published Service's address.
- ``kmesh/gateway-controller``: GatewayClass/Gateway/HTTPRoute statuses and a
  proxy Deployment and Service per Gateway.

All read the API with ``--kubeconfig`` (else ``$KUBECONFIG``, else the node's
in-cluster credentials) and listen in the pod's network.
"""

from __future__ import annotations

import trio

from kmesh.client.api import Client
from kmesh.gateway.controller import GatewayController
from kmesh.gateway.dataplane import GATEWAY_KINDS, INGRESS_KINDS, Feeder, gateway_builder, ingress_builder
from kmesh.gateway.ingressstatus import IngressStatusWriter
from kmesh.l7.engine import Engine
from kmesh.node.apps import AppContext
from kmesh.node.apps.apiclient import setup_client
from kmesh.node.apps.flags import FlagError


def _setup(ctx: AppContext, defaults: dict[str, object]) -> tuple[dict[str, object], Client] | None:
    """The app's flags and an API client, or None (the error logged) when the command line is wrong."""

    def check(flags: dict[str, object]) -> None:
        for name in ("gateway", "publish-service"):
            if flags.get(name):
                _nsname(str(flags[name]), name)

    return setup_client(ctx, defaults, check)


def _nsname(value: str, flag: str) -> tuple[str, str]:
    ns, sep, name = value.partition("/")
    if not sep or not ns or not name:
        raise FlagError(f"--{flag}: want NAMESPACE/NAME, got {value!r}")
    return ns, name


async def _serve(ctx: AppContext, client: Client, feeder_args: dict[str, object]) -> int:
    engine = Engine(open_socket=ctx.sandbox.open_socket, host=ctx.host)
    try:
        async with trio.open_nursery() as n:
            await n.start(engine.serve)
            feeder = Feeder(client, engine=engine, **feeder_args)  # type: ignore[arg-type]
            await n.start(feeder.run)
            ctx.log(f"kmesh proxy serving {len(feeder.config.listeners) if feeder.config else 0} listener(s)")
            await ctx.sigterm.wait()
            n.cancel_scope.cancel()
    finally:
        await client.aclose()
    return 0


async def gateway_main(ctx: AppContext) -> int | None:
    """Serve one Gateway until stopped."""
    setup = _setup(ctx, {"gateway": ""})
    if setup is None or not setup[0]["gateway"]:
        if setup is not None:
            ctx.log("Error: --gateway=NAMESPACE/NAME is required")
            await setup[1].aclose()
        return 2
    flags, client = setup
    gateway = _nsname(str(flags["gateway"]), "gateway")
    return await _serve(ctx, client, {"kinds": GATEWAY_KINDS, "build": gateway_builder(gateway)})


async def ingress_main(ctx: AppContext) -> int | None:
    """Serve the Ingresses of a class until stopped."""
    setup = _setup(ctx, {"ingress-class": "", "publish-service": ""})
    if setup is None:
        return 2
    flags, client = setup
    publish = _nsname(str(flags["publish-service"]), "publish-service") if flags["publish-service"] else None
    classes = {str(flags["ingress-class"])} if flags["ingress-class"] else None
    writer = IngressStatusWriter(client, publish, classes) if publish else None
    return await _serve(ctx, client, {"kinds": INGRESS_KINDS, "build": ingress_builder(classes), "on_world": writer})


async def controller_main(ctx: AppContext) -> int | None:
    """Run the Gateway API controller until stopped."""
    setup = _setup(ctx, {})
    if setup is None:
        return 2
    flags, client = setup
    try:
        async with trio.open_nursery() as n:
            await n.start(GatewayController(client, kubeconfig=str(flags["kubeconfig"])).run)
            ctx.log("kmesh gateway controller: running")
            await ctx.sigterm.wait()
            n.cancel_scope.cancel()
    finally:
        await client.aclose()
    return 0
