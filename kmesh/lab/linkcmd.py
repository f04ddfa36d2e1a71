"""The ``kmesh link`` commands: parse, then call one function of ``kmesh.lab.links``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

console = Console(soft_wrap=True)  # whole lines, as kubectl prints them: a pipe or grep sees each on one line

_SEMANTICS = ("Every packet in each direction of the link gets the settings (Mininet's TCLink): a link with "
              "--delay 50ms adds 100 ms to a round trip through it.")


def _data_dir_option(f):  # type: ignore[no-untyped-def]
    return click.option(
        "--data-dir", type=click.Path(path_type=Path), default=None,
        help="The lab's data dir (default /var/lib/kmesh as root, else ~/.local/share/kmesh).",
    )(f)


def _lab(data_dir: Path | None):  # type: ignore[no-untyped-def]
    from kmesh.lab.datadir import DataDir, default_data_dir
    from kmesh.lab.links import LinkUsage, NoLab, open_lab

    ctx = click.get_current_context(silent=True)
    if data_dir is None and ctx is not None and ctx.parent is not None:
        data_dir = ctx.parent.obj  # `kmesh link --data-dir D show`
    dd = DataDir((data_dir or default_data_dir()).expanduser().absolute())
    try:
        return open_lab(dd)
    except NoLab as exc:
        raise click.ClickException(str(exc)) from None
    except LinkUsage as exc:
        raise click.BadParameter(exc.message, param_hint=exc.param) from None


def _call(fn, *args):  # type: ignore[no-untyped-def]
    """``fn(*args)``, its errors as click's: bad input exit 2, no lab or a refused change exit 1."""
    from kmesh.lab.links import LinkFailure, LinkUsage, NoLab

    try:
        return fn(*args)
    except LinkUsage as exc:
        raise click.BadParameter(exc.message, param_hint=exc.param) from None
    except (NoLab, LinkFailure) as exc:
        raise click.ClickException(str(exc)) from None


@click.group("link", context_settings={"help_option_names": ["-h", "--help"]},
             help="Shape a netns lab's links (delay, jitter, loss, rate) and cut nodes off the underlay.\n\n"
                  "A node's link is its underlay veth; a pod's, its eth0. " + _SEMANTICS,
             short_help="Shape a netns lab's links; cut nodes off the underlay.")
@_data_dir_option
@click.pass_context
def link(ctx: click.Context, data_dir: Path | None) -> None:
    """The ``kmesh link`` group (``--data-dir`` here or after the subcommand)."""
    ctx.obj = data_dir


@link.command("set", epilog=_SEMANTICS)
@_data_dir_option
@click.argument("target")
@click.option("--to", "peer", default=None, metavar="NODE",
              help="Only the traffic between TARGET and this node (its underlay address and pod subnet).")
@click.option("--delay", default=None, metavar="TIME", help="Added to every packet, each way (50ms, 500us, 1s).")
@click.option("--jitter", default=None, metavar="TIME", help="Delay varies by ± this, uniformly (needs --delay).")
@click.option("--loss", default=None, metavar="PERCENT", help="Packets dropped at random, each way (1%, 0.5%).")
@click.option("--rate", default=None, metavar="RATE",
              help="Bandwidth each way, tc units (100mbit, 1gbit; 10mbps = 10 megabytes/s).")
def link_set(data_dir: Path | None, target: str, peer: str | None, delay: str | None, jitter: str | None,
             loss: str | None, rate: str | None) -> None:
    """Shape TARGET's link: a node (its underlay link) or a pod ([NAMESPACE/]POD, its eth0).

    Setting a target (and --to peer) again replaces what it had."""
    from kmesh.lab.links import set_link
    from kmesh.packet.linkspec import LinkSpec, LinkSpecError

    try:
        spec = LinkSpec.parse(delay=delay, jitter=jitter, loss=loss, rate=rate)
    except LinkSpecError as exc:
        raise click.BadParameter(exc.message, param_hint=exc.param) from None
    lab = _lab(data_dir)
    t, rule, mech = _call(set_link, lab, target, peer, spec)
    where = f"{t.name} ({'underlay link' if t.kind == 'node' else 'eth0'})"
    toward = f" to {rule.peer}" if rule.peer else ""
    by = f" [dim](delay and loss: {mech})[/]" if mech else ""
    console.print(f"[green]✓[/] {where}{toward}: {spec.describe()} each way{by}", highlight=False)


@link.command("show")
@_data_dir_option
@click.option("--json", "json_out", is_flag=True, help="Print JSON (for scripts) instead of the table.")
def link_show(data_dir: Path | None, json_out: bool) -> None:
    """What is set on each link, read back from the kernel (qdiscs, rules) and the delayers."""
    from kmesh.lab.links import describe, show_links

    lab = _lab(data_dir)
    links = _call(show_links, lab)
    if json_out:
        click.echo(json.dumps({"lab": lab.info.name, "links": links}, indent=2))
        return
    t = Table("LINK", "STATE", "TO", "DELAY", "LOSS", "RATE", "BY")
    for entry in links:
        name = f"{entry['target']} {entry['device']}"
        state = entry["state"] if entry["kind"] == "pod" or entry["state"] != "down" else "down (cut off)"
        if not entry["rules"]:
            t.add_row(name, state, "", "-", "-", "-", "-")
        for rule in entry["rules"]:
            out, into = describe(rule["out"]), describe(rule["in"])
            cells = [o if o == i else f"out {o} / in {i}" for o, i in zip(out, into)]
            t.add_row(name, state, rule["peer"] or "all", *cells)
            name = state = ""
        for d in entry["delayers"]:
            if not d["running"]:
                t.add_row("", "", "", f"[red]its delayer in {d['namespace']} is not running[/]", "", "", "")
    console.print(t)


@link.command("reset")
@_data_dir_option
@click.argument("target", required=False)
def link_reset(data_dir: Path | None, target: str | None) -> None:
    """Remove TARGET's settings (without TARGET: every link's, and bring cut-off nodes back)."""
    from kmesh.lab.links import reset_links

    lab = _lab(data_dir)
    done = _call(reset_links, lab, target)
    for line in done:
        console.print(f"[green]✓[/] {line}", highlight=False)
    if not done:
        console.print(f"nothing was set{' on ' + target if target else ''}", highlight=False)


@link.command("down")
@_data_dir_option
@click.argument("node")
def link_down(data_dir: Path | None, node: str) -> None:
    """Cut NODE off the underlay (a partition): its port on the underlay bridge goes down."""
    from kmesh.lab.links import partition

    console.print(_call(partition, _lab(data_dir), node, False), highlight=False)


@link.command("up")
@_data_dir_option
@click.argument("node")
def link_up(data_dir: Path | None, node: str) -> None:
    """Bring NODE back onto the underlay."""
    from kmesh.lab.links import partition

    console.print(_call(partition, _lab(data_dir), node, True), highlight=False)


@link.command("shaper", hidden=True)
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option("--status", type=click.Path(path_type=Path, dir_okay=False), required=True)
def link_shaper(config: Path, status: Path) -> None:
    """The delayer of one namespace (started by `kmesh link set` inside it)."""
    import os
    import signal

    import trio

    from kmesh.packet.delayer import run_shaper

    os.umask(0o077)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until trio's receiver takes it over
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        trio.run(run_shaper, config, status)
    except KeyboardInterrupt:
        pass
