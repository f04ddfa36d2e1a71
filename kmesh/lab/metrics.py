"""Where a lab's components serve their Prometheus metrics: the ``metrics`` map of ``cluster.json``.

Keys name the component as upstream does: ``apiserver``,
``controller-manager``, ``scheduler``, ``coredns``, ``kubelet/<node>``,
``kube-proxy/<node>`` (the sim lab runs one proxy for all its nodes:
``kube-proxy``). Every URL is reachable from the machine that ran
``kmesh up``, on loopback, whatever the runtime:

- sim: everything runs in the supervisor's process on loopback; the kubelets
  listen on their node IPs (127.1.x.N), port 10250 when free.
- netns: the control plane (API server, controllers, DNS) opens its
  listeners in the root namespace, as for ``api`` and ``dns``. The kubelets
  (node IP:10250) and kube-proxies (127.0.0.1:10249) live inside their
  node's namespace; the supervisor relays a free port on 127.0.0.1 of the
  root namespace to each (``kmesh.net.portforward``), so no address, route or
  rule is added to the root namespace.

The API server's ``/metrics`` is the API port's, and asks for the
kubeconfig's credentials (``kubectl get --raw /metrics``); the others are
plain HTTP without authentication.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from kmesh.lab.datadir import NodeInfo
from kmesh.net.portforward import forward
from kmesh.net.sockets import NamespaceSockets, OpenSocket, tcp_listener
from kmesh.node.metrics import KUBELET_PORT
from kmesh.proxy.http import METRICS_PORT as PROXY_METRICS_PORT

if TYPE_CHECKING:
    from kmesh.lab.netnslab import NetnsLab


def http_url(port: int | None, host: str = "127.0.0.1") -> str:
    """The /metrics URL of a plain-HTTP endpoint (its port must be known)."""
    assert port, "the endpoint is not served"
    return f"http://{host}:{port}/metrics"


async def relay_into(
    open_root_socket: OpenSocket, netns_name: str, host: str, port: int,
    *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Relay a free port on 127.0.0.1 of the root namespace to ``host:port`` inside ``netns_name``
    until cancelled; ``task_status`` gets the local port."""
    listener = await tcp_listener("127.0.0.1", 0, open_root_socket, 64)
    sockets = NamespaceSockets(netns_name, batch=2)
    try:
        task_status.started(listener.getsockname()[1])
        await forward(listener, host, port, sockets)
    finally:
        sockets.close()


async def relay_node_metrics(nursery: trio.Nursery, lab: NetnsLab, nodes: list[NodeInfo]) -> dict[str, str]:
    """Start the relays to every netns node's kubelet and kube-proxy metrics; their ``cluster.json`` entries."""
    out: dict[str, str] = {}
    for n in nodes:
        assert n.netns is not None
        kubelet = await nursery.start(relay_into, lab.open_root_socket, n.netns, n.ip, KUBELET_PORT)
        proxy = await nursery.start(relay_into, lab.open_root_socket, n.netns, "127.0.0.1", PROXY_METRICS_PORT)
        out[f"kubelet/{n.name}"] = http_url(kubelet)
        out[f"kube-proxy/{n.name}"] = http_url(proxy)
    return out
