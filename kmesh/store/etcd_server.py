"""Run a throwaway single-member etcd on 127.0.0.1, for tests, benchmarks and labs.

    with EtcdServer() as etcd:            # pytest session fixtures
        ...etcd.url...
    async with EtcdServer() as etcd:      # from trio
        ...

It listens only on 127.0.0.1 (free ports picked at start), keeps its data
in ``data_dir`` (a fresh temporary directory, removed on stop, when none is
given), and is stopped by its PID: SIGTERM, then SIGKILL if it lingers.

With ``tls`` (``EtcdServerTLS``, e.g. from ``kmesh.apiserver.pki.ensure_etcd_pki``)
it runs as kubeadm runs etcd: client and peer URLs are https, and only
clients presenting a certificate of its CA get in (``--client-cert-auth``,
``--peer-client-cert-auth``); ``client_tls`` is the health-check client's.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx
import trio

from kmesh.store.etcd_api import EtcdTLS

_PR_SET_PDEATHSIG = 1


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class EtcdServerTLS:
    """etcd's certificates: the CA it trusts for clients and peers, its serving and peer key pairs,
    and the client key pair its start-up health check presents (kubeadm's healthcheck-client)."""

    ca: Path
    cert: Path
    key: Path
    peer_cert: Path
    peer_key: Path
    client_cert: Path
    client_key: Path

    def client(self) -> EtcdTLS:
        """TLS settings of a client holding the health-check certificate."""
        return EtcdTLS(str(self.ca), str(self.client_cert), str(self.client_key))

    def argv(self) -> list[str]:
        """etcd's TLS flags."""
        return [
            f"--cert-file={self.cert}",
            f"--key-file={self.key}",
            "--client-cert-auth=true",
            f"--trusted-ca-file={self.ca}",
            f"--peer-cert-file={self.peer_cert}",
            f"--peer-key-file={self.peer_key}",
            "--peer-client-cert-auth=true",
            f"--peer-trusted-ca-file={self.ca}",
        ]


class EtcdServer:
    """One local etcd process; ``url`` is its client URL once started."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        binary: str = "etcd",
        name: str = "kmesh",
        tmp_root: str | os.PathLike[str] | None = None,
        die_with_parent: bool = False,
        startup_timeout: float = 30.0,
        extra_hosts: tuple[str, ...] = (),
        tls: EtcdServerTLS | None = None,
    ) -> None:
        """``tmp_root``: where the temporary data dir goes when ``data_dir`` is None
        (e.g. /dev/shm for speed). ``die_with_parent``: etcd gets SIGTERM if the
        starting thread dies (for tests; not for a lab that outlives its CLI).
        ``extra_hosts``: more addresses clients may reach it on (a lab's
        control-plane address on the underlay), same port; they must be in
        the server certificate's SANs with ``tls``. ``tls``: https with client
        certificates (None: plain http, for tests and benchmarks)."""
        self.extra_hosts = tuple(extra_hosts)
        self.tls = tls
        self.binary = shutil.which(binary) or binary
        self.name = name
        self._given_dir = Path(data_dir) if data_dir is not None else None
        self._tmp_root = tmp_root
        self._tmp: Path | None = None
        self.data_dir: Path | None = self._given_dir
        self.die_with_parent = die_with_parent
        self.startup_timeout = startup_timeout
        self.client_port = 0
        self.peer_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    @property
    def scheme(self) -> str:
        """``https`` with TLS, else ``http``."""
        return "https" if self.tls is not None else "http"

    @property
    def url(self) -> str:
        """The client URL, e.g. ``https://127.0.0.1:40123``."""
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def client_tls(self) -> EtcdTLS | None:
        """What a client needs to get in (the health-check certificate); None for plain http."""
        return self.tls.client() if self.tls is not None else None

    @property
    def pid(self) -> int | None:
        """The etcd process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def _launch(self) -> None:
        if self._proc is not None:
            raise RuntimeError("etcd is already running")
        if self._given_dir is None:
            if self._tmp is None:  # else a restart after kill(): same data
                self._tmp = Path(tempfile.mkdtemp(prefix="kmesh-etcd-", dir=self._tmp_root))
            self.data_dir = self._tmp / "data"
            self._log = self._tmp / "etcd.log"
        else:
            self.data_dir = self._given_dir
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.data_dir.with_name(self.data_dir.name + ".log")
        if not self.client_port:  # keep the ports across a restart on the same data dir
            self.client_port, self.peer_port = free_ports(2)
        client = ",".join(f"{self.scheme}://{h}:{self.client_port}" for h in ("127.0.0.1", *self.extra_hosts))
        peer = f"{self.scheme}://127.0.0.1:{self.peer_port}"
        argv = [
            self.binary,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self.name}={peer}",
            "--initial-cluster-state=new",
            "--logger=zap",
            "--log-level=warn",
            *(self.tls.argv() if self.tls is not None else ()),
        ]
        with open(os.open(self._log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )

    def _verify(self) -> ssl.SSLContext | bool:
        """httpx's ``verify`` for the health check: the health-check client's TLS context."""
        return self.tls.client().ssl_context() if self.tls is not None else True

    def _check_alive(self) -> None:
        assert self._proc is not None
        if self._proc.poll() is not None:
            tail = self._log.read_text(errors="replace")[-2000:] if self._log and self._log.exists() else ""
            self._proc = None
            raise RuntimeError(f"etcd exited at start-up:\n{tail}")

    def _failed_start(self) -> RuntimeError:
        self.stop()
        return RuntimeError(f"etcd did not answer {self.url}/health within {self.startup_timeout}s")

    # -- sync -------------------------------------------------------------

    def start(self) -> EtcdServer:
        """Start etcd and wait until ``/health`` says true."""
        self._launch()
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=2.0, verify=self._verify()) as http:
            while time.monotonic() < deadline:
                self._check_alive()
                if _healthy(http, self.url):
                    return self
                time.sleep(0.05)  # start-up polling
        raise self._failed_start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop etcd by its PID (SIGTERM, SIGKILL after ``timeout``); remove a temp data dir."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _signal(proc, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                proc.wait()
        self._remove_tmp()

    def kill(self) -> None:
        """SIGKILL etcd (data dir and ports kept, so ``start`` brings it back)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _signal(proc, signal.SIGKILL)
            proc.wait()

    def _remove_tmp(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- trio -------------------------------------------------------------

    async def astart(self) -> EtcdServer:
        """``start`` for trio: waits without blocking the event loop."""
        self._launch()
        try:
            with trio.move_on_after(self.startup_timeout):
                async with httpx.AsyncClient(timeout=2.0, verify=self._verify()) as http:
                    while True:
                        self._check_alive()
                        if await _ahealthy(http, self.url):
                            return self
                        await trio.sleep(0.05)  # start-up polling
        except BaseException:
            self.kill()
            self._remove_tmp()
            raise
        raise self._failed_start()

    async def astop(self, timeout: float = 10.0) -> None:
        """``stop`` for trio (finishes even when cancelled)."""
        proc, self._proc = self._proc, None
        with trio.CancelScope(shield=True):
            if proc is not None:
                _signal(proc, signal.SIGTERM)
                with trio.move_on_after(timeout):
                    await trio.to_thread.run_sync(proc.wait, abandon_on_cancel=True)
                if proc.poll() is None:
                    _signal(proc, signal.SIGKILL)
                    await trio.to_thread.run_sync(proc.wait)
            self._remove_tmp()

    async def __aenter__(self) -> EtcdServer:
        return await self.astart()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.astop()


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass


def _healthy(http: httpx.Client, url: str) -> bool:
    try:
        resp = http.get(url + "/health")
        return resp.status_code == 200 and resp.json().get("health") == "true"
    except (httpx.HTTPError, ValueError):
        return False


async def _ahealthy(http: httpx.AsyncClient, url: str) -> bool:
    try:
        resp = await http.get(url + "/health")
        return resp.status_code == 200 and resp.json().get("health") == "true"
    except (httpx.HTTPError, ValueError):
        return False
