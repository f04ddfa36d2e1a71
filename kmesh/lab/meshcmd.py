"""``kmesh mesh stat`` and ``kmesh mesh tap``: the golden metrics and the live requests of a lab's mesh.

The click layer only: ``kmesh.lab.meshstat`` finds the sidecars, reads them
and adds up. Bad input is checked before the lab is looked at and named
after its argument (exit 2); no lab, no meshed pod or no sidecar answering is
a plain error (exit 1). Sidecars that cannot be reached are warned about on
stderr and left out.
"""

from __future__ import annotations

import json
import re
import signal
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from kmesh.lab import meshstat as M
from kmesh.lab.linkcmd import _data_dir_option

console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)?\s*$")


class Window(click.ParamType):
    """A time window: seconds (``10``, ``2.5``) or with a unit (``500ms``, ``10s``, ``1m``)."""

    name = "window"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        """Seconds as a float; a negative, non-numeric or over-a-day value fails naming the option."""
        if isinstance(value, (int, float)):
            seconds = float(value)
        else:
            if str(value).strip().startswith("-"):
                self.fail(f"{value!r}: the window must be 0 seconds or more", param, ctx)
            m = _DURATION.match(str(value))
            if m is None:
                self.fail(f"{value!r} is not a duration (seconds, or 500ms, 10s, 1m)", param, ctx)
            seconds = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
        if not 0 <= seconds <= 86400:
            self.fail(f"{value!r}: the window must be between 0 and 1 day", param, ctx)
        return seconds


def _info(data_dir: Path | None) -> Any:
    """The running lab's cluster.json (``--data-dir`` here or on the group)."""
    from kmesh.lab.datadir import DataDir, default_data_dir

    ctx = click.get_current_context(silent=True)
    if data_dir is None and ctx is not None and ctx.parent is not None:
        data_dir = ctx.parent.obj
    dd = DataDir((data_dir or default_data_dir()).expanduser().absolute())
    info = dd.read_cluster()
    if info is None:
        raise click.ClickException(f"no lab is running in {dd.root}")
    return info


def _warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {M._esc(message)}")


@click.group("mesh", context_settings={"help_option_names": ["-h", "--help"]},
             short_help="Golden metrics (stat) and live requests (tap) of the service mesh.")
@_data_dir_option
@click.pass_context
def mesh(ctx: click.Context, data_dir: Path | None) -> None:
    """What the mesh's sidecars see: per-workload, per-Service and per-route golden metrics (stat, as
    linkerd viz stat does) and each request as it happens (tap). Works on netns and host labs: every
    sidecar is asked on its admin port (15020) from inside its pod's network namespace."""
    ctx.obj = data_dir


@mesh.command("stat")
@_data_dir_option
@click.argument("resource", metavar="[deploy|svc|route]", required=False, default="deploy")
@click.argument("name", required=False, default=None)
@click.option("-n", "--namespace", default="default", show_default=True,
              help="The namespace of the Deployments or Services.")
@click.option("-A", "--all-namespaces", is_flag=True, help="Every namespace.")
@click.option("--window", type=Window(), default="0", show_default=True, metavar="SECONDS",
              help="Measure over this window (10, 10s, 1m): scrape, wait, scrape again, show the difference "
                   "and RPS. 0: everything since the sidecars started, no RPS.")
@click.option("--json", "json_out", is_flag=True, help="Print the rows as JSON (numbers; latencies in ms).")
def stat(data_dir: Path | None, resource: str, name: str | None, namespace: str, all_namespaces: bool,
         window: float, json_out: bool) -> None:
    """Success rate, requests per second, latency percentiles and request counts.

    deploy (default): one row per meshed Deployment, from what its pods' sidecars served (inbound).
    svc: one row per Service, from what every meshed client sent to it (outbound), wherever it runs.
    route: one row per Service and route (outbound); NAME is the Service. Failures are responses
    from 500 up, and requests that got no response."""
    try:
        resource = M.normalize_resource(resource)
    except M.MeshUsage as exc:
        raise click.BadParameter(exc.message, param_hint=exc.param) from None
    info = _info(data_dir)
    ns = None if all_namespaces else namespace
    try:
        rows = M.stat_rows(info, resource, ns, name, window, _warn)
    except M.MeshUsage as exc:
        raise click.BadParameter(exc.message, param_hint=exc.param) from None
    except M.MeshStatError as exc:
        raise click.ClickException(str(exc)) from None
    if json_out:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        err.print("no requests seen" + (f" to {name}" if name else ""))
        return
    console.print(render_stat(resource, rows, all_namespaces))


def render_stat(resource: str, rows: list[dict[str, Any]], all_namespaces: bool) -> Table:
    """The rich table of ``kmesh mesh stat``."""
    head, cells = M.table_rows(resource, rows, all_namespaces)
    t = Table(*head, box=None, pad_edge=False)
    numeric = {"SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "REQUESTS", "MESHED"}
    for col in t.columns:
        if str(col.header) in numeric:
            col.justify = "right"
    for row in cells:
        t.add_row(*(M._esc(c) for c in row))
    return t


@mesh.command("tap")
@_data_dir_option
@click.argument("target", metavar="deploy/NAME|pod/NAME|NAME")
@click.option("-n", "--namespace", default="default", show_default=True, help="The target's namespace.")
@click.option("--max", "max_events", type=click.IntRange(min=1), default=None, metavar="N",
              help="Stop after N requests in total.")
@click.option("--json", "json_out", is_flag=True, help="Print each request as the sidecar sent it (NDJSON).")
def tap(data_dir: Path | None, target: str, namespace: str, max_events: int | None, json_out: bool) -> None:
    """Show each request the target's sidecars handle, as it finishes: a pod, or every meshed pod of a
    Deployment (a bare NAME is a pod, else a Deployment). Ctrl-C ends it."""
    import trio

    try:
        M.parse_tap_target(target)
    except M.MeshUsage as exc:
        raise click.BadParameter(exc.message, param_hint=exc.param) from None
    info = _info(data_dir)
    seen = 0

    def show(event: M.TapEvent) -> None:
        nonlocal seen
        seen += 1
        if json_out:
            sys.stdout.write(event.raw + "\n")
            sys.stdout.flush()
        else:
            console.print(M.tap_text(event.data, event.pod))

    async def main() -> None:
        where = await M.prepare_tap(info, target, namespace, _warn)  # errors come before any connection
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                async def watch() -> None:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(watch)
                if not json_out:
                    err.print(f"tapping {M._esc(target)} in {namespace} (until "
                              f"{f'{max_events} requests or ' if max_events else ''}Ctrl-C)")
                await M.follow_tap(where, max_events, show, _warn)
                nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    except M.MeshUsage as exc:
        raise click.BadParameter(exc.message, param_hint=exc.param) from None
    except M.MeshStatError as exc:
        raise click.ClickException(str(exc)) from None
    except BrokenPipeError:  # `kmesh mesh tap ... | head`
        sys.stderr.close()
        raise SystemExit(0) from None
    if not json_out:
        err.print(f"{seen} request{'s' if seen != 1 else ''}")
