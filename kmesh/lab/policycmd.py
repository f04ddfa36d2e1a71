"""``kmesh policy explain`` and ``kmesh policy show``: why a connection is allowed or dropped, and the rules.

``explain FROM TO`` answers twice. From the policy model (``kmesh.policy.model``,
the API objects as the API documents them): which policies isolate the
source for egress and the destination for ingress, and which rule of which
policy allows the connection, or that none does. From the kernel: it sends
one connection attempt from FROM's network namespace and reads the policy
rules' packet counters on the nodes of both ends before and after, so it sees
which rule let the packet through or which pod's drop rule took it; it says
so when the two answers differ.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import trio

from kmesh.client.api import Client
from kmesh.lab.podns import PodNetnsError, pod_netns
from kmesh.policy import counters
from kmesh.policy.model import PolicyWorld, Side
from kmesh.policy.probe import reaches


class ExplainError(Exception):
    """The question cannot be answered as asked (the message says why, for the user)."""


@dataclass(frozen=True)
class End:
    """One end of the connection: a pod (with its network namespace and node) or a bare address."""

    label: str
    ip: str
    pod: dict[str, Any] | None = None
    netns: str | None = None
    node: str = ""


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _end(spec: str, pods: list[dict[str, Any]], info: Any, need_netns: bool) -> End:
    """``NS/POD``, ``POD`` (namespace default) or an address, resolved against ``pods``."""
    if _is_ip(spec):
        pod = next((p for p in pods if spec in [a.get("ip") for a in (p.get("status") or {}).get("podIPs") or []]
                    or (p.get("status") or {}).get("podIP") == spec), None)
        if pod is None:
            if need_netns:
                raise ExplainError(f"{spec}: no pod has this address; FROM must be a pod (explain sends from it)")
            return End(spec, spec)
    else:
        ns, _, name = spec.rpartition("/")
        ns = ns or "default"
        pod = next((p for p in pods if (p.get("metadata") or {}).get("namespace") == ns
                    and (p.get("metadata") or {}).get("name") == name), None)
        if pod is None:
            raise ExplainError(f"pod {ns}/{name} not found")
    md, status = pod.get("metadata") or {}, pod.get("status") or {}
    ip = status.get("podIP") or ""
    if not ip:
        raise ExplainError(f"pod {md.get('namespace')}/{md.get('name')} has no address yet")
    where = None
    if need_netns:
        try:
            where = pod_netns(info, pod).netns
        except PodNetnsError as exc:
            raise ExplainError(str(exc)) from None
    return End(f"{md.get('namespace')}/{md.get('name')}", ip, pod, where, (pod.get("spec") or {}).get("nodeName") or "")


def _side(side: Side) -> dict[str, Any]:
    return {"isolated": side.isolated, "policies": list(side.policies), "allowed_by": side.allowed_by,
            "allowed": side.allowed}


async def explain(info: Any, src: str, dst: str, port: int, protocol: str = "TCP", *, probe: bool = True,
                  timeout: float = 1.0) -> dict[str, Any]:
    """The model's and the kernel's answer for one connection (see the module docstring), as a dict."""
    async with Client.from_kubeconfig(info.kubeconfig) as c:
        pods = [p for p in (await c.list_all("Pod"))[0]
                if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        namespaces = (await c.list_all("Namespace"))[0]
        policies = (await c.list_all("NetworkPolicy"))[0]
    can_probe = probe and info.runtime in ("netns", "host")
    a, b = _end(src, pods, info, can_probe), _end(dst, pods, info, False)
    verdict = PolicyWorld(pods, namespaces, policies).evaluate(a.ip, b.ip, port, protocol)
    out: dict[str, Any] = {
        "from": a.label, "to": b.label, "fromIP": a.ip, "toIP": b.ip, "port": port, "protocol": protocol,
        "allowed": verdict.allowed,
        "model": {"allowed": verdict.allowed, "loopback": verdict.loopback, "egress": _side(verdict.egress),
                  "ingress": _side(verdict.ingress)},
    }
    if not can_probe:
        out["kernel"] = None
        return out
    node_ns = {n.name: n.netns for n in info.nodes}
    nodes = sorted({n for n in (a.node, b.node) if n in node_ns})
    before = {n: await counters.read(node_ns[n]) for n in nodes}
    reached = await reaches(a.netns, b.ip, port, protocol, timeout)
    dropped: list[dict[str, Any]] = []
    passed: list[dict[str, Any]] = []
    for n in nodes:
        after = await counters.read(node_ns[n])
        for (chain, comment), packets in after.since(before[n]).items():
            owner = after.owners.get(chain)
            if owner is None or owner[0] not in (a.label, b.label):
                continue
            entry = {"node": n, "pod": owner[0], "direction": owner[1], "packets": packets}
            if comment.endswith(counters.DROP_SUFFIX):
                dropped.append(entry)
            else:
                passed.append({**entry, "rule": comment})
    kernel_allowed = not dropped
    out["kernel"] = {"allowed": kernel_allowed, "answered": reached, "droppedBy": dropped, "passedBy": passed}
    out["agree"] = kernel_allowed == verdict.allowed
    return out


def explain_text(r: dict[str, Any]) -> str:
    """``explain``'s answer for people (rich markup)."""
    word = "[green]allowed[/]" if r["allowed"] else "[red]denied[/]"
    lines = [f"{r['from']} → {r['to']} {r['protocol']} {r['port']}: {word}"]
    if r["model"]["loopback"]:
        lines.append("  a pod's connection to itself never leaves it: no policy applies")
    for direction, end in (("egress", r["from"]), ("ingress", r["to"])):
        side = r["model"][direction]
        if not side["isolated"]:
            lines.append(f"  {direction:<7} ({end}): not isolated (no policy selects it for {direction})")
            continue
        pols = ", ".join(side["policies"])
        why = f"allowed by {side['allowed_by']}" if side["allowed_by"] else "[red]no rule of these allows it[/]"
        lines.append(f"  {direction:<7} ({end}): isolated by {pols}; {why}")
    k = r.get("kernel")
    if k is None:
        lines.append("  kernel: not asked (the sim runtime has no rules; --no-probe)")
    else:
        if k["droppedBy"]:
            seen = "; ".join(f"dropped by {d['pod']}'s {d['direction']} rules on {d['node']}" for d in k["droppedBy"])
        elif k["passedBy"]:
            seen = "; ".join(f"{p['rule']} on {p['node']}" for p in k["passedBy"])
            seen = f"passed by {seen}"
        else:
            seen = "no policy rule saw it (neither end isolated)"
        answered = "answered" if k["answered"] else "no answer"
        mark = "[green]agrees[/]" if r["agree"] else "[red]DISAGREES with the model[/]"
        lines.append(f"  kernel: {seen} ({answered}) — {mark}")
    return "\n".join(lines)


async def show(info: Any, node: str | None) -> str:
    """A node's policy table as ``nft list table`` prints it (with its counters)."""
    nodes = {n.name: n for n in info.nodes}
    if not nodes:
        raise ExplainError("the lab has no nodes")
    target = nodes.get(node) if node else info.nodes[0]
    if target is None:
        raise ExplainError(f"no node {node}; nodes: {', '.join(nodes)}")
    if info.runtime == "sim":
        raise ExplainError("the sim runtime enforces no network policy (its pods share this machine's network)")
    proc = await counters.list_table(target.netns)
    if proc.returncode != 0:
        raise ExplainError(f"node {target.name} has no policy table: {proc.stderr.decode().strip()}")
    return proc.stdout.decode()


def run_explain(info: Any, src: str, dst: str, port: int, protocol: str, probe: bool) -> dict[str, Any]:
    """``explain`` from synchronous code (the CLI)."""
    return trio.run(lambda: explain(info, src, dst, port, protocol, probe=probe))


def run_show(info: Any, node: str | None) -> str:
    """``show`` from synchronous code (the CLI)."""
    return trio.run(show, info, node)
