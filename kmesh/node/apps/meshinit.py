"""The ``kmesh/proxy-init`` image as a built-in app: the mesh's init container (like istio-init).

``kmesh/proxy-init [--inbound-port=15006] [--outbound-port=15001] [--mark=0x539]
[--exclude-inbound-ports=15021,...] [--exclude-outbound-ports=...]`` renders
the redirect rules (``kmesh.mesh.redirect``), writes them to its log (so
``kubectl logs POD -c kmesh-init`` shows them) and loads them into the pod's
network namespace. Exit codes: 0 done, 2 a bad command line, 1 nowhere (or
failed) to apply them — the sim runtime's pods have no namespace.
"""

from __future__ import annotations

from typing import Any

from kmesh.mesh.redirect import (INBOUND_PORT, OUTBOUND_PORT, PROXY_MARK, RedirectSpec, apply, check_port, parse_mark,
                                 parse_ports, render)
from kmesh.net.netns import NetnsError
from kmesh.node.apps import AppContext
from kmesh.node.apps.flags import FlagError, parse_flags

DEFAULTS: dict[str, Any] = {
    "inbound-port": INBOUND_PORT,
    "outbound-port": OUTBOUND_PORT,
    "mark": f"{PROXY_MARK:#x}",
    "exclude-inbound-ports": "",
    "exclude-outbound-ports": "",
}


def _flag(name: str, parse: Any, raw: Any) -> Any:
    try:
        return parse(raw)
    except ValueError as exc:
        raise FlagError(f"invalid value {raw!r} for flag --{name}: {exc}") from None


def spec_from_args(args: list[str]) -> RedirectSpec:
    """The redirect of a command line; FlagError names the flag that is wrong."""
    flags, rest = parse_flags(args, DEFAULTS)
    if rest:
        raise FlagError(f"unexpected arguments: {' '.join(rest)}")
    return RedirectSpec(
        inbound_port=_flag("inbound-port", check_port, flags["inbound-port"]),
        outbound_port=_flag("outbound-port", check_port, flags["outbound-port"]),
        mark=_flag("mark", parse_mark, flags["mark"]),
        exclude_inbound_ports=_flag("exclude-inbound-ports", parse_ports, flags["exclude-inbound-ports"]),
        exclude_outbound_ports=_flag("exclude-outbound-ports", parse_ports, flags["exclude-outbound-ports"]),
    )


def pod_namespace(ctx: AppContext) -> str | None:
    """The pod's own network namespace, None when the sandbox has none (sim runtime, hostNetwork pods)."""
    if getattr(ctx.sandbox, "host_network", False):
        return None
    name = getattr(ctx.sandbox, "netns", None)
    return name if isinstance(name, str) and name else None


async def main(ctx: AppContext) -> int:
    """Render, log and apply the redirect rules; the exit code says how it went."""
    try:
        spec = spec_from_args(ctx.args)
    except FlagError as exc:
        ctx.log(f"Error: {exc}")
        return 2
    rules = render(spec)
    ns = pod_namespace(ctx)
    if ns is None:
        ctx.log("Error: the pod has no network namespace of its own (sim runtime or hostNetwork): "
                "nowhere to put the redirect rules")
        return 1
    ctx.log(f"kmesh proxy-init: iptables-restore in network namespace {ns}:")
    ctx.log(rules)
    try:
        await apply(ns, rules)
    except NetnsError as exc:
        ctx.log(f"Error: applying the redirect rules failed: {exc}")
        return 1
    ctx.log("kmesh proxy-init: redirect rules applied")
    return 0
