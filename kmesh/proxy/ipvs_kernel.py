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

import socket
from typing import Any

from kmesh.lab import netns as nsmod
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
    if ":" not in vs.ip:
        fields["netmask"] = "255.255.255.255"
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
        except Exception:
            return False
        sock.close()
        return True

    try:
        return nsmod.call_in(netns, probe)
    except nsmod.NetnsError:
        return False


class KernelIPVS:
    """The kernel's IPVS table in one namespace, kept equal to an ``IPVSTable``."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self._sock: Any = None

    def _socket(self) -> Any:
        if self._sock is None:
            from pyroute2 import IPVS

            self._sock = nsmod.call_in(self.netns, IPVS)
        return self._sock

    def _dump(self) -> dict[VSKey, tuple[Any, dict[str, Any]]]:
        from pyroute2 import IPVSService

        out: dict[VSKey, tuple[Any, dict[str, Any]]] = {}
        for msg in self._socket().service("dump"):
            parsed = parse_service(msg)
            if parsed is not None:
                out[parsed[0]] = (IPVSService.from_message(msg), parsed[1])
        return out

    def _sync(self, table: IPVSTable) -> None:
        sock = self._socket()
        have = self._dump()
        for key, (svc, _) in have.items():
            if key not in table.services:
                sock.service("del", service=svc)
        for key, vs in table.services.items():
            want = service_message(vs)
            if key not in have:
                sock.service("add", service=want)
                current: dict[tuple[str, int], dict[str, Any]] = {}
            else:
                a = have[key][1]
                flags = (a.get("IPVS_SVC_ATTR_FLAGS") or {}).get("flags", 0) & IP_VS_SVC_F_PERSISTENT
                if (a.get("IPVS_SVC_ATTR_SCHED_NAME") != vs.scheduler or int(a.get("IPVS_SVC_ATTR_TIMEOUT", 0)) != vs.persistent
                        or bool(flags) != bool(vs.persistent)):
                    sock.service("set", service=want)
                current = {}
                for msg in sock.dest("dump", service=want):
                    d = parse_dest(msg)
                    current[(d["IPVS_DEST_ATTR_ADDR"], int(d["IPVS_DEST_ATTR_PORT"]))] = d
            wanted = {rs.key: rs for rs in vs.dests}
            for k, d in current.items():
                if k not in wanted:
                    from pyroute2 import IPVSDest

                    sock.dest("del", service=want, dest=IPVSDest(addr=k[0], port=k[1]))
            for k, rs in wanted.items():
                if k not in current:
                    sock.dest("add", service=want, dest=dest_message(rs))
                elif int(current[k].get("IPVS_DEST_ATTR_WEIGHT", -1)) != rs.weight:
                    sock.dest("set", service=want, dest=dest_message(rs))

    async def sync(self, table: IPVSTable) -> None:
        """Make the kernel's virtual and real servers equal ``table``'s."""
        await nsmod.run_sync_in(None, self._sync, table)

    def _counters(self) -> dict[tuple[VSKey, tuple[str, int]], tuple[int, int]]:
        sock = self._socket()
        out: dict[tuple[VSKey, tuple[str, int]], tuple[int, int]] = {}
        for key, (svc, _) in self._dump().items():
            for msg in sock.dest("dump", service=svc):
                d = parse_dest(msg)
                dk = (d["IPVS_DEST_ATTR_ADDR"], int(d["IPVS_DEST_ATTR_PORT"]))
                out[(key, dk)] = (int(d.get("IPVS_DEST_ATTR_ACTIVE_CONNS", 0)), int(d.get("IPVS_DEST_ATTR_INACT_CONNS", 0)))
        return out

    async def read_counters(self, table: IPVSTable) -> None:
        """Copy the kernel's ActiveConn/InActConn into ``table``'s real servers."""
        counts = await nsmod.run_sync_in(None, self._counters)
        for vs in table.services.values():
            for rs in vs.dests:
                rs.active, rs.inactive = counts.get((vs.key, rs.key), (0, 0))

    def _flush(self) -> None:
        sock = self._socket()
        for _, (svc, _) in self._dump().items():
            sock.service("del", service=svc)

    async def flush(self) -> None:
        """Delete every virtual server kmesh made (all non-fwmark ones in the namespace)."""
        await nsmod.run_sync_in(None, self._flush)

    def close(self) -> None:
        """Close the netlink socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
