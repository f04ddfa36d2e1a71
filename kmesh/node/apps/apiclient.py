"""Flags and an API client for the built-in apps that read the API (the L7 proxies, their controller, the sidecar)."""

from __future__ import annotations

import os
from collections.abc import Callable

from kmesh.client.api import Client
from kmesh.node.apps import IN_CLUSTER_KUBECONFIG, AppContext
from kmesh.node.apps.flags import FlagError, parse_flags


def setup_client(ctx: AppContext, defaults: dict[str, object],
                 check: Callable[[dict[str, object]], None] | None = None) -> tuple[dict[str, object], Client] | None:
    """The app's flags and an API client, or None (the error logged) when the command line is wrong.

    The kubeconfig is ``--kubeconfig``, else ``$KUBECONFIG``, else the node's in-cluster credentials;
    ``check`` may raise FlagError for flags that parse but do not make sense."""
    try:
        flags, _ = parse_flags(ctx.args, {"kubeconfig": "", **defaults})
        if check is not None:
            check(flags)
    except FlagError as exc:
        ctx.log(f"Error: {exc}")
        return None
    path = str(flags["kubeconfig"]) or ctx.env.get("KUBECONFIG", "") or os.environ.get(IN_CLUSTER_KUBECONFIG, "")
    if not path:
        ctx.log("Error: --kubeconfig (or $KUBECONFIG) is required: the app reads the API through it")
        return None
    return flags, Client.from_kubeconfig(path)
