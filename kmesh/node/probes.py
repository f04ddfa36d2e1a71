"""Readiness, liveness and startup probes with upstream's timing and threshold semantics.

One ``ProbeWorker`` per probe of a running container. It waits
``initialDelaySeconds``, then checks every ``periodSeconds`` (each check
bounded by ``timeoutSeconds``) and reports a result only when it flips after
``successThreshold`` consecutive successes or ``failureThreshold`` consecutive
failures. Initial results: readiness False (not ready until the first
success), liveness True, startup False. Liveness and startup workers stop
after reporting a failure (the container is restarted); a startup worker stops
after its first success (then liveness and readiness start). All waits use
trio's clock.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar

import httpx
import trio

from kmesh.api.obj import Obj
from kmesh.node.podspec import resolve_port
from kmesh.node.runtime import ExecResult

log = logging.getLogger("kmesh.node.probes")
USER_AGENT = "kube-probe/1.32"


@dataclass
class ProbeResult:
    """One check: success and a message saying why not."""

    ok: bool
    message: str = ""


@dataclass
class ProbeTarget:
    """Where and how a container is probed."""

    pod_ip: str
    container: Obj
    exec: Callable[[list[str], float], Awaitable[ExecResult]]
    http: httpx.AsyncClient


async def check(handler: Obj, target: ProbeTarget, timeout: float) -> ProbeResult:
    """Run one probe (or lifecycle hook) handler: httpGet, tcpSocket, exec or grpc (checked as a TCP connect)."""
    try:
        if "exec" in handler:
            argv = [str(a) for a in (handler["exec"] or {}).get("command") or []]
            res = await target.exec(argv, timeout)
            if res.timed_out:
                return ProbeResult(False, f"command timed out after {timeout:g}s")
            out = res.output.decode(errors="replace").strip()
            return ProbeResult(res.exit_code == 0, out if res.exit_code == 0 else f"exit code {res.exit_code}: {out}")
        if "httpGet" in handler:
            return await _http_get(handler["httpGet"] or {}, target, timeout)
        if "tcpSocket" in handler or "grpc" in handler:
            spec = handler.get("tcpSocket") or handler.get("grpc") or {}
            host = spec.get("host") or target.pod_ip
            port = resolve_port(target.container, spec.get("port"))
            with trio.fail_after(timeout):
                stream = await trio.open_tcp_stream(host, port)
            await stream.aclose()
            return ProbeResult(True)
        if "sleep" in handler:
            await trio.sleep(float((handler["sleep"] or {}).get("seconds") or 0))
            return ProbeResult(True)
    except trio.TooSlowError:
        return ProbeResult(False, f"timeout after {timeout:g}s")
    except (OSError, ValueError) as exc:
        return ProbeResult(False, str(exc))
    return ProbeResult(False, "probe has no handler kmesh knows")


async def _http_get(spec: Obj, target: ProbeTarget, timeout: float) -> ProbeResult:
    scheme = (spec.get("scheme") or "HTTP").lower()
    host = spec.get("host") or target.pod_ip
    port = resolve_port(target.container, spec.get("port"))
    path = spec.get("path") or "/"
    if not path.startswith("/"):
        path = "/" + path
    headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
    for h in spec.get("httpHeaders") or []:
        if h.get("name"):
            headers[h["name"]] = str(h.get("value", ""))
    url = f"{scheme}://{host}:{port}{path}"
    try:
        resp = await target.http.get(url, headers=headers, timeout=timeout)
    except httpx.TimeoutException:
        return ProbeResult(False, f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)')
    except httpx.HTTPError as exc:
        return ProbeResult(False, f'Get "{url}": {exc}')
    if 200 <= resp.status_code < 400:
        return ProbeResult(True)
    return ProbeResult(False, f"HTTP probe failed with statuscode: {resp.status_code}")


def new_http_client() -> httpx.AsyncClient:
    """The client probes share: no proxies from the environment, no keep-alive, TLS unverified (as upstream)."""
    return httpx.AsyncClient(
        trust_env=False, verify=False, follow_redirects=False,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


class ProbeWorker:
    """Runs one probe of one container run and reports result flips to ``on_result``."""

    INITIAL: ClassVar[dict[str, bool]] = {"readiness": False, "liveness": True, "startup": False}

    def __init__(self, kind: str, probe: Obj, target: ProbeTarget, on_result: Callable[[bool, str], None]) -> None:
        self.kind = kind
        self.probe = probe
        self.target = target
        self.on_result = on_result
        self.result = self.INITIAL[kind]
        self._ok_run = 0
        self._fail_run = 0

    def _int(self, key: str, default: int) -> int:
        try:
            value = int(self.probe.get(key) or 0)
        except (TypeError, ValueError):
            value = 0
        return value if value > 0 else default

    async def run(self) -> None:
        """Probe until cancelled (or, for liveness/startup, until a verdict that ends this run)."""
        period = self._int("periodSeconds", 10)
        timeout = self._int("timeoutSeconds", 1)
        success_threshold = 1 if self.kind != "readiness" else self._int("successThreshold", 1)
        failure_threshold = self._int("failureThreshold", 3)
        await trio.sleep(max(0, int(self.probe.get("initialDelaySeconds") or 0)))
        while True:
            started = trio.current_time()
            res = await check(self.probe, self.target, timeout)
            if res.ok:
                self._ok_run += 1
                self._fail_run = 0
                if self._ok_run >= success_threshold and not self.result:
                    self.result = True
                    self.on_result(True, res.message)
                    if self.kind == "startup":
                        return
            else:
                self._fail_run += 1
                self._ok_run = 0
                log.debug("%s probe failed: %s", self.kind, res.message)
                if self._fail_run >= failure_threshold and (self.result or self.kind != "readiness"):
                    self.result = False
                    self.on_result(False, res.message)
                    if self.kind in ("liveness", "startup"):
                        return
            await trio.sleep_until(started + period)
