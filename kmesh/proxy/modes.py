"""Pick a proxy mode by name (what `--proxy-mode` says)."""

from __future__ import annotations

from kmesh.proxy.base import ProxyMode
from kmesh.proxy.model import NodeContext

MODES = ("userspace", "iptables", "ipvs", "nftables")


def make_mode(name: str, ctx: NodeContext, *, runtime: str = "netns", scheduler: str = "rr") -> ProxyMode:
    """The mode ``name`` for the node ``ctx`` describes; ``runtime`` sim allows only userspace."""
    if runtime == "sim" and name != "userspace":
        raise ValueError(f"the sim runtime has only the userspace proxy mode, not {name!r}")
    if name == "userspace":
        from kmesh.proxy.userspace import UserspaceProxy

        return UserspaceProxy(ctx, runtime=runtime)  # type: ignore[return-value]
    if name == "iptables":
        from kmesh.proxy.iptables import IptablesProxy

        return IptablesProxy(ctx)  # type: ignore[return-value]
    if name == "ipvs":
        from kmesh.proxy.ipvs import IpvsProxy

        return IpvsProxy(ctx, scheduler=scheduler)  # type: ignore[return-value]
    if name == "nftables":
        from kmesh.proxy.nftables import NftablesProxy

        return NftablesProxy(ctx)  # type: ignore[return-value]
    raise ValueError(f"unknown proxy mode {name!r} (expected one of {', '.join(MODES)})")
