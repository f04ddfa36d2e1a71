"""Programming the kernel's ip_vs from an ``IPVSTable`` through pyroute2's IPVS generic-netlink socket.

Used only where the node's kernel has ip_vs (``kernel_has_ipvs``); elsewhere
the IPVS mode serves the table itself. The socket is created inside the node
namespace (a netlink socket keeps the namespace it was made in), and every
call runs in a worker thread so trio keeps going. ``sync`` diffs the kernel's
services and destinations against the table: virtual servers added, changed
(scheduler, persistence) or deleted; destinations added, re-weighted or
deleted. ``counters`` reads ActiveConn/InActConn back so graceful
termination can see when a draining destination is idle.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

import trio

from kmesh.net import netns as nsmod
from kmesh.proxy.ipvs_table import IPVSTable, RealServer, VirtualServer, VSKey, vs_key

IP_VS_SVC_F_PERSISTENT = 0x0001
IP_VS_CONN_F_MASQ = 0x0000
FWD_METHODS = {"Masq": 0, "Local": 1, "Tunnel": 2, "Route": 3}
PROTOCOLS = {"TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP, "SCTP": 132}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}


def service_fields(vs: VirtualServer) -> dict[str, Any]:
    """The IPVS_SVC_ATTR_* values for ``vs`` (what ``ipvsadm -A -t ip:port -s sched [-p timeout]`` sends)."""
    fields: dict[str, Any] = {
        "addr": vs.ip,
        "port": vs.port,
        "protocol": PROTOCOLS[vs.protocol],
        "sched_name": vs.scheduler,
        "flags": {"flags": IP_VS_SVC_F_PERSISTENT if vs.persistent else 0, "mask": 0xFFFFFFFF},
        "timeout": vs.persistent,
    }
    # the kernel wants a netmask on every full service entry: /32 for IPv4; for IPv6 the prefix length 128
    # as ipvsadm puts it, a host-order u32 (pyroute2's ip4addr type writes the address bytes as they are)
    fields["netmask"] = "255.255.255.255" if ":" not in vs.ip else str(ipaddress.IPv4Address((128).to_bytes(4, sys.byteorder)))
    return fields


def dest_fields(rs: RealServer) -> dict[str, Any]:
    """The IPVS_DEST_ATTR_* values for ``rs`` (``ipvsadm -a ... -r ip:port -m -w weight``)."""
    return {"addr": rs.ip, "port": rs.port, "weight": rs.weight, "fwd_method": FWD_METHODS[rs.forward]}


def service_message(vs: VirtualServer) -> Any:
    """A pyroute2 ``IPVSService`` for ``vs``."""
    from pyroute2 import IPVSService

    return IPVSService(**service_fields(vs))


def dest_message(rs: RealServer) -> Any:
    """A pyroute2 ``IPVSDest`` for ``rs``."""
    from pyroute2 import IPVSDest

    return IPVSDest(**dest_fields(rs))


def _attrs(msg: Any, nla: str) -> dict[str, Any]:
    part = msg.get(nla)
    return {k: v for k, v in part["attrs"]} if part else {}


def parse_service(msg: Any) -> tuple[VSKey, dict[str, Any]] | None:
    """(key, attrs) of a dumped kernel service; None for fwmark services (kmesh makes none)."""
    a = _attrs(msg, "IPVS_CMD_ATTR_SERVICE")
    if a.get("IPVS_SVC_ATTR_FWMARK"):
        return None
    proto = PROTOCOL_NAMES.get(int(a.get("IPVS_SVC_ATTR_PROTOCOL", 0)), "TCP")
    return vs_key(proto, a["IPVS_SVC_ATTR_ADDR"], a["IPVS_SVC_ATTR_PORT"]), a


def parse_dest(msg: Any) -> dict[str, Any]:
    """The IPVS_DEST_ATTR_* values of a dumped kernel destination."""
    return _attrs(msg, "IPVS_CMD_ATTR_DEST")


def kernel_has_ipvs(netns: str | None) -> bool:
    """Whether ip_vs is usable in ``netns``: its /proc file exists or the IPVS netlink family resolves."""
    def probe() -> bool:
        try:
            with open("/proc/thread-self/net/ip_vs"):
                return True
        except OSError:
            pass
        try:
            from pyroute2 import IPVS

            sock = IPVS()
        except Exception:  # noqa: BLE001 - any failure means: no usable ip_vs
            return False
        sock.close()
        return True

    try:
        return nsmod.call_in(netns, probe)
    except nsmod.NetnsError:
        return False


UPSTREAM_SYSCTLS = {  # what kube-proxy sets for the IPVS mode
    "net/ipv4/vs/conntrack": "1",
    "net/ipv4/vs/expire_nodest_conn": "1",
    "net/ipv4/vs/expire_quiescent_template": "1",
    "net/ipv4/vs/conn_reuse_mode": "0",
}


def _ipvs_socket() -> Any:
    from pyroute2 import IPVS

    return IPVS()


def _service_key_message(key: VSKey) -> Any:
    from pyroute2 import IPVSService

    return IPVSService(addr=key[1], port=key[2], protocol=PROTOCOLS[key[0]])


class KernelIPVS:
    """The kernel's IPVS table in one namespace, kept equal to an ``IPVSTable``.

    Every call opens its own netlink socket inside the namespace, in the
    worker thread that uses it, and closes it after (pyroute2's sync sockets
    should not hop between the threads trio hands out). ``socket_factory``
    makes that socket; tests hand in a stand-in since these machines have no
    ip_vs."""

    def __init__(self, netns: str | None, socket_factory: Callable[[], Any] = _ipvs_socket) -> None:
        self.netns = netns
        self._factory = socket_factory

    @contextlib.contextmanager
    def _session(self) -> Iterator[Any]:
        sock = nsmod.call_in(self.netns, self._factory)
        try:
            yield sock
        finally:
            sock.close()

    @staticmethod
    def _dump(sock: Any) -> dict[VSKey, dict[str, Any]]:
        out: dict[VSKey, dict[str, Any]] = {}
        for msg in sock.service("dump"):
            parsed = parse_service(msg)
            if parsed is not None:
                out[parsed[0]] = parsed[1]
        return out

    @staticmethod
    def _dests(sock: Any, key: VSKey) -> dict[tuple[str, int], dict[str, Any]]:
        out = {}
        for msg in sock.dest("dump", service=_service_key_message(key)):
            d = parse_dest(msg)
            out[(str(d["IPVS_DEST_ATTR_ADDR"]), int(d["IPVS_DEST_ATTR_PORT"]))] = d
        return out

    def sync_now(self, table: IPVSTable) -> None:
        """``sync`` in the calling thread."""
        from pyroute2 import IPVSDest

        with self._session() as sock:
            have = self._dump(sock)
            for key in have:
                if key not in table.services:
                    sock.service("del", service=_service_key_message(key))
            for key, vs in table.services.items():
                want = service_message(vs)
                current: dict[tuple[str, int], dict[str, Any]] = {}
                if key not in have:
                    sock.service("add", service=want)
                else:
                    a = have[key]
                    persistent = bool((a.get("IPVS_SVC_ATTR_FLAGS") or {}).get("flags", 0) & IP_VS_SVC_F_PERSISTENT)
                    timeout = int(a.get("IPVS_SVC_ATTR_TIMEOUT", 0)) if persistent else 0
                    if a.get("IPVS_SVC_ATTR_SCHED_NAME") != vs.scheduler or timeout != vs.persistent:
                        sock.service("set", service=want)
                    current = self._dests(sock, key)
                wanted = {rs.key: rs for rs in vs.dests}
                for k in current:
                    if k not in wanted:
                        sock.dest("del", service=want, dest=IPVSDest(addr=k[0], port=k[1]))
                for k, rs in wanted.items():
                    if k not in current:
                        sock.dest("add", service=want, dest=dest_message(rs))
                    elif int(current[k].get("IPVS_DEST_ATTR_WEIGHT", -1)) != rs.weight:
                        sock.dest("set", service=want, dest=dest_message(rs))

    async def sync(self, table: IPVSTable) -> None:
        """Make the kernel's virtual and real servers equal ``table``'s."""
        await trio.to_thread.run_sync(self.sync_now, table)

    def counters_now(self) -> dict[tuple[VSKey, tuple[str, int]], tuple[int, int]]:
        """(ActiveConn, InActConn) of every kernel destination, by (virtual server, destination)."""
        out: dict[tuple[VSKey, tuple[str, int]], tuple[int, int]] = {}
        with self._session() as sock:
            for key in self._dump(sock):
                for dk, d in self._dests(sock, key).items():
                    out[(key, dk)] = (int(d.get("IPVS_DEST_ATTR_ACTIVE_CONNS", 0)), int(d.get("IPVS_DEST_ATTR_INACT_CONNS", 0)))
        return out

    async def read_counters(self, table: IPVSTable) -> None:
        """Copy the kernel's ActiveConn/InActConn into ``table``'s real servers."""
        counts = await trio.to_thread.run_sync(self.counters_now)
        for vs in table.services.values():
            for rs in vs.dests:
                rs.active, rs.inactive = counts.get((vs.key, rs.key), (0, 0))

    def flush_now(self) -> None:
        """``flush`` in the calling thread."""
        with self._session() as sock:
            for key in self._dump(sock):
                sock.service("del", service=_service_key_message(key))

    async def flush(self) -> None:
        """Delete every virtual server (all non-fwmark ones in the namespace: kube-proxy owns the table)."""
        await trio.to_thread.run_sync(self.flush_now)

    async def set_sysctls(self) -> None:
        """Upstream's IPVS sysctls in the namespace (conntrack, expire_nodest_conn, expire_quiescent_template...)."""
        for key, value in UPSTREAM_SYSCTLS.items():
            await nsmod.run(self.netns, ["sysctl", "-q", "-w", f"{key.replace('/', '.')}={value}"], check=False)

    def close(self) -> None:
        """Nothing stays open between calls; here for symmetry with the rest of the mode."""
