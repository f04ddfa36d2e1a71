"""Run the API server: store, registry, compactor and the HTTPS listeners in one nursery."""

from __future__ import annotations

import ctypes
import logging
import platform
import resource
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import trio
from hypercorn.config import Config as HypercornConfig

from kmesh.api.kinds import get as kind_named
from kmesh.api.wellknown import SERVICE_CIDR
from kmesh.apiserver.authn import server_tls_context
from kmesh.apiserver.bootstrap import ensure_kubernetes_service
from kmesh.apiserver.http import APIApp
from kmesh.apiserver.listener import ConnectionLimits, serve
from kmesh.apiserver.pki import PKI, ensure_pki
from kmesh.apiserver.nodeaddresses import NodeAddressGuard
from kmesh.apiserver.nodebootstrap import NodeBootstrap
from kmesh.apiserver.ingressclass import DefaultIngressClass
from kmesh.apiserver.meshinject import MeshInjector
from kmesh.apiserver.registry import Admission, Registry
from kmesh.apiserver.service_ips import ServiceIPAllocator
from kmesh.store import open_store
from kmesh.store.compactor import run_compactor
from kmesh.store.etcd_api import EtcdTLS

log = logging.getLogger("kmesh.apiserver")


@dataclass
class ServerConfig:
    """What ``kmesh server`` needs to run."""

    data_dir: Path
    store_url: str = ""
    host: str = "127.0.0.1"
    port: int = 6443
    extra_sans: list[str] = field(default_factory=list)
    extra_sockets: list[socket.socket] = field(default_factory=list)
    compact_interval: float = 300.0
    loopback_ok: bool = False  # accept 127.x endpoint addresses (sim runtime)
    service_cidr: str = SERVICE_CIDR  # ClusterIPs; the sim runtime uses 127.96.0.0/16
    node_port_range: tuple[int, int] = (30000, 32767)
    advertise_address: str = ""  # where the kubernetes Service's endpoints point; default: host
    request_timeout: float = 60.0  # seconds a request body may take to arrive (kube-apiserver's --request-timeout)
    write_stall: float = 30.0  # seconds a client may read nothing before its connection (a watch) is dropped
    etcd_tls: EtcdTLS | None = None  # an https etcd's CA and our client certificate (--etcd-cafile/-certfile/-keyfile)
    endpoint_leases: bool = False  # several servers share the store: each keeps itself in the kubernetes endpoints
    mesh_injection: bool = True  # inject the mesh sidecars into new pods that ask (off in the sim runtime)

    def resolved_store_url(self) -> str:
        """The store URL, defaulting to SQLite in the data dir."""
        return self.store_url or f"sqlite://{self.data_dir / 'store.db'}"


@dataclass
class RunningServer:
    """Handed to the caller once the server listens."""

    url: str
    pki: PKI
    registry: Registry
    binds: list[str]


async def run_server(
    cfg: ServerConfig,
    *,
    admission: dict[str, list[Admission]] | None = None,
    task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API until cancelled; ``task_status`` gets the URL when ready.

    ``admission`` defaults to the Service IP/NodePort allocator for
    ``cfg.service_cidr``; hooks with a ``repair(store)`` method are repaired
    from the store before the server answers.
    """
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    if admission is None:
        admission = {"Service": [ServiceIPAllocator(cfg.service_cidr, cfg.node_port_range)]}
    allocator = next((h for h in admission.get("Service", []) if isinstance(h, ServiceIPAllocator)), None)
    if allocator is not None:
        allocator.shared = cfg.endpoint_leases  # other servers allocate on the same store
    pki = ensure_pki(cfg.data_dir, [cfg.host, *cfg.extra_sans])
    raise_open_files_limit()
    return_large_blocks()
    async with open_store(cfg.resolved_store_url(), etcd_tls=cfg.etcd_tls) as store, trio.open_nursery() as nursery:
        registry = Registry(store, admission=dict(admission or {}), nursery=nursery, loopback_ok=cfg.loopback_ok)
        registry.admission["Node"] = [*registry.admission.get("Node", []), NodeAddressGuard(store, kind_named("Node"))]
        registry.admission["Ingress"] = [DefaultIngressClass(store), *registry.admission.get("Ingress", [])]
        if cfg.mesh_injection:
            injector = MeshInjector(store, loopback_ok=cfg.loopback_ok)
            registry.admission["Pod"] = [*registry.admission.get("Pod", []), injector]
        for hooks in registry.admission.values():
            for hook in hooks:
                repair = getattr(hook, "repair", None)
                if repair is not None:
                    await repair(store)
        await registry.ensure_default_namespaces()
        await registry.resume_terminating_namespaces()
        nursery.start_soon(run_compactor, store, cfg.compact_interval)
        hc = _TLSConfig()
        hc.ca_certs = str(pki.ca_cert)  # client certificates: the cluster CA's only
        hc.bind = [f"{cfg.host}:{cfg.port}"] + [f"fd://{s.fileno()}" for s in cfg.extra_sockets]
        hc.certfile = str(pki.server_cert)
        hc.keyfile = str(pki.server_key)
        hc.accesslog = None
        hc.errorlog = log
        hc.keep_alive_timeout = 120
        hc.graceful_timeout = 1
        hc.backlog = 4096  # a burst of new connections waits in the queue instead of being dropped (Go: somaxconn)
        hc.h11_max_incomplete_size = 64 * 1024
        app = APIApp(registry, pki.token, f"{cfg.host}:{cfg.port}", nodes_dir=cfg.data_dir / "nodes",
                     client_ca_pem=pki.ca_pem(), request_timeout=cfg.request_timeout,
                     bootstrap=NodeBootstrap(pki, cfg.data_dir))
        binds = await nursery.start(serve, app, hc, ConnectionLimits(write_stall=cfg.write_stall))
        port = _port_of(binds[0]) if binds else cfg.port
        url = f"https://{cfg.host}:{port}"
        app.server_address = f"{cfg.host}:{port}"
        if allocator is not None:
            advertise = cfg.advertise_address or (cfg.host if cfg.host not in ("0.0.0.0", "") else "127.0.0.1")
            await ensure_kubernetes_service(registry, allocator.first_ip(), advertise, port)
            if cfg.endpoint_leases:
                from kmesh.apiserver.endpointleases import run_endpoint_leases

                await nursery.start(run_endpoint_leases, registry, advertise, port)
        log.info("API server listening on %s", ", ".join(binds))
        task_status.started(RunningServer(url, pki, registry, list(binds)))


class _TLSConfig(HypercornConfig):
    """Hypercorn's config with kmesh's TLS context: asks for client certificates and records them per connection."""

    def create_ssl_context(self) -> ssl.SSLContext | None:
        """The context of ``authn.server_tls_context`` (CA from ``ca_certs``)."""
        if self.certfile is None or self.keyfile is None or self.ca_certs is None:
            return super().create_ssl_context()
        return server_tls_context(Path(self.certfile), Path(self.keyfile), Path(self.ca_certs),
                                  alpn=self.alpn_protocols, ciphers=self.ciphers)


def raise_open_files_limit() -> int:
    """Raise this process's soft open-files limit to its hard limit (as Go programs do at start); return it.

    Every connection, watch and store file is a descriptor; the usual soft
    limit of 1024 is reached by a burst of short connections.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.info("cannot raise the open files limit from %d to %d: %s", soft, target, exc)
    return soft


def return_large_blocks(threshold: int = 128 * 1024) -> bool:
    """Make glibc give blocks of ``threshold`` bytes or more back to the system when they are freed.

    glibc raises its mmap threshold each time a large block is freed, after
    which request bodies, encoded objects and lists of a few hundred KiB come
    from the heap and stay in the RSS (the server's grew 57 -> 288 MiB over
    100 MB of 900 KiB ConfigMaps, for good). A fixed threshold keeps them
    mmap-ed. Returns whether it applied (False off glibc).
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError) as exc:
        log.info("cannot set malloc's mmap threshold: %s", exc)
        return False


_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def _port_of(bind: str) -> int:
    return int(bind.rsplit(":", 1)[1])
