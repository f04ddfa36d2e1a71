"""The lab's etcd, as kubeadm runs it: TLS with client certificates from its own CA in the data dir.

etcd is started when the lab needs one and none was given (``--store etcd``,
or ``--subnet-manager etcd`` in the netns runtime; not with ``--etcd URL``).
It listens only where its clients are:

- on 127.0.0.1 of the namespace the lab runs in (the sim lab: the machine's
  loopback; the netns lab: the control plane's own loopback, where the API
  server is);
- with ``--subnet-manager etcd`` in the netns runtime, also on the control
  plane's underlay address, for the node agents' subnet managers.

Every client must present a certificate of etcd's CA (``D/pki/etcd/ca.crt``):
the API server ``D/pki/apiserver-etcd-client``, the agents
``D/pki/flannel-etcd-client``; the keys are 0600 in the 0700 data dir, so a
local user or a pod has none. On the underlay, pods reach the control
plane's address through their node, and a node masquerades their traffic to
its own address: the certificate is what keeps them out. Beyond it, each
node namespace rejects forwarded traffic (pods') to etcd's port, and the
control plane accepts that port on the underlay from node addresses only
(``guard``), so a pod cannot even open a connection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kmesh.lab.datadir import DataDir
from kmesh.lab.topology import CONTROL_PLANE_IP, node_ip
from kmesh.net import netns
from kmesh.store.etcd_api import EtcdTLS

if TYPE_CHECKING:
    from kmesh.lab.netnslab import NetnsLab
    from kmesh.lab.supervisor import UpOptions

GUARD_TABLE = "kmesh-etcd-guard"


@dataclass(frozen=True)
class LabEtcd:
    """Where the API server and the node agents find etcd, and the TLS each presents (None: plain http)."""

    api_url: str | None = None
    api_tls: EtcdTLS | None = None
    agents_url: str | None = None
    agents_tls: EtcdTLS | None = None


def given_tls(opts: UpOptions) -> EtcdTLS | None:
    """The TLS files given with ``--etcd`` (``--etcd-cafile/-certfile/-keyfile``), if any."""
    if not (opts.etcd_cafile or opts.etcd_certfile or opts.etcd_keyfile):
        return None
    return EtcdTLS(opts.etcd_cafile, opts.etcd_certfile, opts.etcd_keyfile)


def needs_own_etcd(opts: UpOptions, netns_runtime: bool) -> bool:
    """Whether the lab starts an etcd of its own."""
    return not opts.etcd and (opts.store == "etcd" or (opts.subnet_manager == "etcd" and netns_runtime))


async def start_lab_etcd(
    stack: AsyncExitStack, opts: UpOptions, dd: DataDir, lab: NetnsLab | None, progress: Callable[[str], None],
) -> LabEtcd:
    """The etcd the lab's components use: the user's (``--etcd``), or one started here (stopped with ``stack``)."""
    if opts.etcd:
        tls = given_tls(opts)
        return LabEtcd(opts.etcd, tls, opts.etcd, tls)
    if not needs_own_etcd(opts, lab is not None):
        return LabEtcd()
    from kmesh.apiserver.pki import ensure_etcd_pki
    from kmesh.store.etcd_server import EtcdServer

    progress("etcd")
    underlay = lab is not None and opts.subnet_manager == "etcd"  # the agents' subnet managers need it there
    extra = (CONTROL_PLANE_IP,) if underlay else ()
    pki = ensure_etcd_pki(dd.root, extra)
    etcd = await stack.enter_async_context(
        EtcdServer(dd.root / "etcd" / "data", die_with_parent=True, extra_hosts=extra, tls=pki.server_tls()))
    if not underlay:
        return LabEtcd(etcd.url, pki.apiserver_client())
    assert lab is not None
    await guard(lab, etcd.client_port, [node_ip(i) for i in range(len(lab.node_names))])
    return LabEtcd(etcd.url, pki.apiserver_client(), f"https://{CONTROL_PLANE_IP}:{etcd.client_port}",
                   pki.flannel_client())


def node_guard_rules(port: int) -> str:
    """nft script for a node namespace: forwarded traffic (its pods') to etcd is reset."""
    return f"""table inet {GUARD_TABLE} {{
  chain forward {{
    type filter hook forward priority -10; policy accept;
    ip daddr {CONTROL_PLANE_IP} tcp dport {port} counter reject with tcp reset
  }}
}}
"""


def control_plane_guard_rules(port: int, node_ips: Sequence[str]) -> str:
    """nft script for the control plane: etcd's port on the underlay answers node addresses only."""
    allowed = ", ".join(node_ips)
    return f"""table inet {GUARD_TABLE} {{
  chain input {{
    type filter hook input priority -10; policy accept;
    iifname "eth0" tcp dport {port} ip saddr != {{ {allowed} }} counter reject with tcp reset
  }}
}}
"""


async def guard(lab: NetnsLab, port: int, node_ips: Sequence[str]) -> None:
    """Keep pods off etcd's underlay port (an nft table in each node namespace and in the control plane's).

    The tables live in namespaces the lab made and go with them."""
    for name in lab.node_names:
        await netns.run(lab.names.node(name), ["nft", "-f", "-"], input=node_guard_rules(port).encode())
    await netns.run(lab.names.control_plane, ["nft", "-f", "-"],
                    input=control_plane_guard_rules(port, node_ips).encode())
