"""``kmesh trace FROM TO``: parse, trace (``kmesh.packet.trace`` on a plan from ``kmesh.lab.tracing``), show.

The terminal view is a rich tree (the verdict, the proxy's decision, the way
there hop by hop with the rules each node applied where it applied them, the
way back, the conntrack entry); ``--json`` prints the same as one document;
``--png`` draws the hops over the lab's nodes and pods. Exit 0 when the probe
was delivered, 1 when it was rejected or dropped (as ping and curl do) or
the trace failed, 2 for bad input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.tree import Tree

from kmesh.lab.linkcmd import _data_dir_option

console = Console(soft_wrap=True)  # whole lines, as kubectl prints them: a pipe or grep sees each on one line

_HELP = """Follow one probe from FROM to TO and show what happened to it, hop by hop.

FROM is a node or a pod ([NS/]NAME). TO is a pod ([NS/]NAME), a Service (svc/NAME, svc/NS/NAME, NAME.NS, or its
ClusterIP), or NODE:NODEPORT. The probe is a real TCP connection (or UDP datagram) from FROM's namespace; kmesh
captures it on every interface of every node and on the pods at both ends, traces it through each node's
netfilter rules (nft monitor trace), and reads the conntrack entry it made. Nothing is left behind.

Exit status: 0 delivered, 1 rejected or dropped (or the trace failed), 2 bad input."""


def to_json(result: Any, plan: Any, target: Any, source: str, mode: str) -> dict[str, Any]:
    """The ``--json`` document."""
    t0 = result.hops[0].ts_ns if result.hops else 0
    ep = None
    if result.endpoint:
        owner = str(result.endpoint.get("pod") or "")
        ns, _, pod = owner.partition("/") if "/" in owner and not owner.startswith("node ") else ("", "", "")
        ep = {"ip": result.endpoint["ip"], "port": result.endpoint["port"], "pod": pod or None,
              "namespace": ns or None}
        if owner.startswith("node "):
            ep["node"] = owner.removeprefix("node ")
    node_of = {ns: node for node, ns in plan.node_netns.items()}
    rules = []
    for ev in result.rules:
        d = ev.to_json()
        d["node"] = node_of.get(ev.netns, ev.netns)
        rules.append(d)
    return {
        "from": source, "to": target.text, "proxyMode": mode,
        "probe": {"protocol": "udp" if plan.udp else "tcp", "dst": plan.dst_ip, "dport": plan.dst_port,
                  "sport": result.sport},
        "verdict": result.verdict, "reason": result.reason, "where": result.where or None,
        "outcome": result.outcome, "decision": result.decision or None, "endpoint": ep,
        "answer": result.answer or None,
        "hops": [h.to_json(t0) for h in result.hops],
        "rules": rules, "conntrack": result.conntrack,
    }


def _rule_text(ev: Any) -> str:
    body = ev.iptables or f"{ev.text}" if ev.kind == "rule" else f"policy {ev.verdict}"
    verdict = f" [dim]→ {ev.verdict}[/dim]" if ev.verdict and ev.kind == "rule" else ""
    return f"[cyan]{ev.table} {ev.chain}[/cyan] {_esc(body)}{verdict}"


def _esc(text: str) -> str:
    return text.replace("[", "\\[")


def render(doc: dict[str, Any], result: Any, plan: Any) -> Tree:
    """The rich tree of a trace."""
    color = {"delivered": "green", "rejected": "red", "dropped": "yellow"}[doc["verdict"]]
    proto = doc["probe"]["protocol"].upper()
    head = (f"[bold]trace[/bold] {doc['from']} → {doc['to']} ({doc['probe']['dst']}:{doc['probe']['dport']}/{proto}, "
            f"source port {doc['probe']['sport']}, proxy mode {doc['proxyMode']}): [bold {color}]{doc['verdict']}"
            f"[/bold {color}]")
    tree = Tree(head)
    ep = doc["endpoint"]
    if ep:
        who = f"{ep['namespace']}/{ep['pod']}" if ep.get("pod") else ep.get("node") or "?"
        tree.add(f"endpoint: [bold]{who}[/bold] {ep['ip']}:{ep['port']}")
    at = f" (at {doc['where']})" if doc["where"] and not doc["reason"].startswith(doc["where"]) else ""
    tree.add(f"why: {_esc(doc['reason'])}{at}")
    if doc["decision"]:
        tree.add(f"proxy: {_esc(doc['decision'])}")
    if doc["answer"]:
        first = doc["answer"].strip().splitlines()
        tree.add(f"answer: {_esc(first[0] if first else '')}" + (f" … {_esc(first[-1])}" if len(first) > 1 else ""))
    node_of = {ns: node for node, ns in plan.node_netns.items()}
    titles = {"there": "the way there", "relay": "the proxy's own connection to the endpoint",
              "back": "the way back"}
    for leg in ("there", "relay", "back"):
        hops = [h for h in doc["hops"] if h["leg"] == leg]
        if not hops:
            continue
        branch = tree.add(f"[bold]{titles[leg]}[/bold]")
        pending: dict[str, list[Any]] = {}
        if leg != "relay":
            for ev in result.rules:
                if ev.leg == leg:
                    pending.setdefault(node_of.get(ev.netns, ev.netns), []).append(ev)
        for h in hops:
            if h["direction"] == "out" and h["at"] == h["node"] and h["node"] in pending:
                rb = branch.add(f"[magenta]rules on {h['node']}[/magenta]")
                for ev in pending.pop(h["node"]):
                    rb.add(_rule_text(ev))
            arrow = "→" if h["direction"] == "out" else "←"
            branch.add(f"{h['us']:>9.1f} µs  [bold]{h['at']}[/bold]/{h['interface']} {arrow} {h['direction']:<3}  "
                       f"{_esc(h['what'])}")
        for node, evs in pending.items():
            rb = branch.add(f"[magenta]rules on {node}[/magenta]")
            for ev in evs:
                rb.add(_rule_text(ev))
    if doc["conntrack"]:
        ct = tree.add("[bold]conntrack[/bold]")
        for e in doc["conntrack"]:
            ct.add(f"{e['node']}: " + _esc(str(e["line"])))
    return tree


def plot(doc: dict[str, Any], path: Path, nodes: list[str]) -> None:
    """Draw the hops over the lab: one lane per node and per pod at the ends, the legs as arrows between them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lanes: list[str] = []
    for h in doc["hops"]:
        if h["at"] not in lanes and h["at"] not in nodes:
            lanes.append(h["at"])
    src_pods = [lane for lane in lanes if doc["hops"] and lane == doc["hops"][0]["at"]]
    rows = src_pods + [n for n in nodes] + [lane for lane in lanes if lane not in src_pods]
    y = {name: len(rows) - i for i, name in enumerate(rows)}
    colors = {"there": "tab:blue", "relay": "tab:purple", "back": "tab:orange"}
    fig, ax = plt.subplots(figsize=(max(8, len(doc["hops"]) * 0.7), 1.2 + 0.8 * len(rows)))
    for leg, color in colors.items():
        xs = [i for i, h in enumerate(doc["hops"]) if h["leg"] == leg]
        ys = [y[doc["hops"][i]["at"]] for i in xs]
        if not xs:
            continue
        ax.plot(xs, ys, "-o", color=color, label={"there": "way there", "relay": "proxy → endpoint",
                                                    "back": "way back"}[leg])
        for i in xs:
            h = doc["hops"][i]
            label = h["interface"] + (f"\nVNI {h['vxlan']['vni']}" if h.get("vxlan") else "")
            ax.annotate(label, (i, y[h["at"]]), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=7)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_yticks(list(y.values()), list(y.keys()))
    ax.set_xlabel("hop")
    ax.set_ylim(0.3, len(rows) + 0.9)
    ep = doc["endpoint"]
    where = f" → {ep['namespace']}/{ep['pod']}" if ep and ep.get("pod") else ""
    ax.set_title(f"kmesh trace {doc['from']} → {doc['to']} ({doc['proxyMode']} mode)\n{doc['verdict']}{where}",
                 fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@click.command("trace", help=_HELP, short_help="Follow one probe hop by hop through a netns lab.",
               context_settings={"help_option_names": ["-h", "--help"]})
@_data_dir_option
@click.argument("source", metavar="FROM")
@click.argument("to", metavar="TO")
@click.option("--port", "-p", type=int, default=None, help="The port to probe (default: the Service's first port "
              "of the protocol, the pod's first containerPort).")
@click.option("--udp", is_flag=True, help="Probe with a UDP datagram instead of a TCP connection: to port 53 a DNS "
              "query for kubernetes.default.svc.cluster.local, else 'hostname' (agnhost netexec answers it).")
@click.option("--namespace", "-n", default="default", show_default=True, help="Namespace of FROM and TO when "
              "they do not say.")
@click.option("--http", "http_path", default=None, metavar="PATH", help="Once connected, send GET PATH and show the "
              "answer (which pod answered /hostname, say).")
@click.option("--timeout", type=click.FloatRange(0.2, 60), default=3.0, show_default=True,
              help="Seconds to wait for the connection or an answer.")
@click.option("--json", "json_out", is_flag=True, help="Print the trace as JSON.")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Draw the path over the lab's nodes into this PNG.")
def trace(data_dir: Path | None, source: str, to: str, port: int | None, udp: bool, namespace: str,
          http_path: str | None, timeout: float, json_out: bool, png: Path | None) -> None:
    """``kmesh trace``."""
    import trio

    from kmesh.lab.datadir import DataDir, default_data_dir
    from kmesh.lab.links import LinkUsage, NoLab, open_lab
    from kmesh.lab.tracing import TraceUsage, plan, snapshot
    from kmesh.packet.trace import TraceFailure, run

    dd = DataDir((data_dir or default_data_dir()).expanduser().absolute())
    try:
        lab = open_lab(dd, "kmesh trace", "interfaces and rules")
    except NoLab as exc:
        raise click.ClickException(str(exc)) from None
    except LinkUsage as exc:
        raise click.BadParameter(exc.message, param_hint=exc.param) from None

    async def go() -> tuple[Any, Any, Any]:
        snap = await snapshot(lab)
        pl, target = plan(lab, snap, source, to, namespace=namespace, port=port, udp=udp, timeout=timeout,
                          http_path=http_path)
        return pl, target, await run(pl)

    try:
        pl, target, result = trio.run(go)
    except TraceUsage as exc:
        raise click.BadParameter(exc.message, param_hint=exc.param) from None
    except (NoLab, TraceFailure) as exc:
        raise click.ClickException(str(exc)) from None
    doc = to_json(result, pl, target, source, lab.info.proxyMode)
    if png is not None:
        plot(doc, png, list(lab.nodes))
    if json_out:
        click.echo(json.dumps(doc, indent=2))
    else:
        console.print(render(doc, result, pl))
        if png is not None:
            console.print(f"path drawn in {png}")
    raise SystemExit(0 if result.verdict == "delivered" else 1)
