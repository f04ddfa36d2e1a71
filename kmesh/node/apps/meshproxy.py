"""The ``kmesh/proxy`` image: the service mesh's sidecar (``kmesh.mesh.sidecar``) in its pod's network.

Flags (the injector sets them): ``--inbound-port`` (15006), ``--outbound-port``
(15001), ``--admin-port`` (15020, ``/metrics``), ``--health-port`` (15021,
``/healthz/ready``), ``--mark`` (0x539, the mark of the sidecar's own sockets),
``--kubeconfig`` (else ``$KUBECONFIG``, else the node's in-cluster credentials).
"""

from __future__ import annotations

import trio

from kmesh.mesh.redirect import check_port, parse_mark
from kmesh.mesh.sidecar import Sidecar, SidecarPorts
from kmesh.node.apps import AppContext
from kmesh.node.apps.apiclient import setup_client
from kmesh.node.apps.flags import FlagError

_D = SidecarPorts()
DEFAULTS: dict[str, object] = {"inbound-port": _D.inbound, "outbound-port": _D.outbound, "admin-port": _D.admin,
                               "health-port": _D.health, "mark": f"{_D.mark:#x}"}


def _ports(flags: dict[str, object]) -> SidecarPorts:
    """The ports and mark from the flags; FlagError naming the bad one."""
    values: dict[str, int] = {}
    try:
        for name in ("inbound-port", "outbound-port", "admin-port", "health-port"):
            values[name.removesuffix("-port")] = check_port(int(flags[name]), f"--{name}")  # type: ignore
    except ValueError as exc:
        raise FlagError(str(exc)) from None
    try:
        mark = parse_mark(flags["mark"])
    except ValueError as exc:
        raise FlagError(f"--mark: {exc}") from None
    if len(set(values.values())) != len(values):
        raise FlagError("--inbound-port, --outbound-port, --admin-port and --health-port must differ")
    return SidecarPorts(mark=mark, **values)


async def main(ctx: AppContext) -> int | None:
    """Run the sidecar until stopped."""
    setup = setup_client(ctx, DEFAULTS, lambda flags: _ports(flags) and None)
    if setup is None:
        return 2
    flags, client = setup
    try:
        async with trio.open_nursery() as n:
            sidecar = await n.start(Sidecar(client, ctx.sandbox.open_socket, _ports(flags), pod=ctx.pod).run)
            ident = sidecar.identity.current if sidecar.identity is not None else None
            ctx.log(f"kmesh proxy: outbound on {sidecar.ports.outbound}, inbound on {sidecar.ports.inbound}, "
                    f"{len(sidecar.table.by_address)} Service address(es) known; identity "
                    f"{ident.spiffe if ident else '(none: plaintext)'}")
            await ctx.sigterm.wait()
            n.cancel_scope.cancel()
    finally:
        await client.aclose()
    return 0
