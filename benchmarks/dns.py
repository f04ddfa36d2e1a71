#!/usr/bin/env python3
"""Cluster DNS speed: dnsperf against kmesh's DNS server and against dnsmasq, same names, same run.

An in-process API server (memory store) gets N ClusterIP Services; the kmesh
DNS server runs as its own process (``python -m kmesh.dns``, 1 or more
SO_REUSEPORT workers) watching it; dnsmasq (the anchor) is started on another
loopback port with the same A records from an addn-hosts file and
``--local=/cluster.local/`` (so it answers the zone itself, never forwarding).
dnsperf sends the same query file to each for D seconds. Prints QPS, latency
and the ratio kmesh/dnsmasq. Then it times how long a change takes to reach
the answers: for kmesh from the API create/delete of a Service to the first
answer that shows it, for dnsmasq from rewriting its hosts file and SIGHUP to
the same. Both servers listen on 127.0.0.1 only and are stopped by their PIDs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
# This file is named dns.py: keep its directory off the path so ``import dns`` finds dnspython.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))

import dns.exception
import dns.message
import dns.query
import trio

from kmesh.apiserver.server import ServerConfig, run_server
from kmesh.client.api import Client
from kmesh.client.informer import Change, Informer
from kmesh.client.kubeconfig import Credentials, write_kubeconfig


@dataclass
class PerfResult:
    """What dnsperf reported."""

    qps: float
    avg_ms: float
    lost: str


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (for the servers we start)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                    return port
                except OSError:
                    continue


def run_dnsperf(port: int, queries: Path, seconds: int, clients: int) -> PerfResult:
    """One dnsperf run against 127.0.0.1:port."""
    out = subprocess.run(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l", str(seconds),
         "-c", str(clients), "-q", "200"],
        capture_output=True, text=True, check=True,
    ).stdout
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    avg = float(re.search(r"Average Latency \(s\):\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lost = re.search(r"Queries lost:\s+(.*)", out).group(1).strip()  # type: ignore[union-attr]
    return PerfResult(qps, avg * 1000, lost)


def wait_answers(port: int, name: str, timeout: float = 30.0) -> None:
    """Poll until ``name`` resolves on the server (startup of a separate process: no event to await)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=0.5)
            if r.answer:
                return
        except (dns.exception.Timeout, OSError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"no answer for {name} on port {port}")


def answered(port: int, name: str) -> bool:
    """The server has an A record for ``name`` now (a short UDP query; a timeout counts as no)."""
    try:
        r = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=0.2)
    except (dns.exception.Timeout, OSError):
        return False
    return bool(r.answer)


def time_until(port: int, name: str, present: bool, change: Callable[[], None], timeout: float = 10.0) -> tuple[float, float]:
    """When ``change()`` started, and the seconds until ``name`` is (or is no longer) answered on ``port``."""
    start = time.perf_counter()
    change()
    while answered(port, name) != present:
        if time.perf_counter() - start > timeout:
            raise SystemExit(f"{name} on port {port} never became {'present' if present else 'absent'}")
        time.sleep(0.0005)  # leave the GIL to the API server in this process
    return start, time.perf_counter() - start


def pct(xs: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of xs."""
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def propagation(kport: int, mport: int, hosts: Path, dnsmasq_pid: int, api: "ApiOps", rounds: int) -> None:
    """Time a create and a delete reaching answers, kmesh (via the API) against dnsmasq (hosts file + SIGHUP)."""
    base = hosts.read_text()
    got: dict[str, list[float]] = {"kmesh": [], "dnsmasq": [], "API watch": []}
    for i in range(rounds):
        name, fqdn = f"prop-{i}", f"prop-{i}.default.svc.cluster.local"
        for present, change in ((True, api.create), (False, api.delete)):
            start, took = time_until(kport, fqdn, present, lambda: change(name))
            got["kmesh"].append(took)
            got["API watch"].append(api.seen[("ADDED" if present else "DELETED", name)] - start)

        def rewrite(text: str) -> Callable[[], None]:
            def go() -> None:
                hosts.write_text(text)
                os.kill(dnsmasq_pid, signal.SIGHUP)
            return go
        got["dnsmasq"].append(time_until(mport, fqdn, True, rewrite(base + f"10.96.200.{i % 250 + 1} {fqdn}\n"))[1])
        got["dnsmasq"].append(time_until(mport, fqdn, False, rewrite(base))[1])
    print(f"change -> answer ({rounds} creates + {rounds} deletes each; kmesh from the API call, dnsmasq from the "
          "hosts-file write + SIGHUP; API watch: the event reaching a plain informer, the floor of any API-fed DNS)")
    for label, xs in got.items():
        print(f"{label:10} p50 {pct(xs, 0.5) * 1000:7.1f} ms  p95 {pct(xs, 0.95) * 1000:7.1f} ms  max {max(xs) * 1000:7.1f} ms")
    print(f"ratio kmesh/dnsmasq p50: {pct(got['kmesh'], 0.5) / pct(got['dnsmasq'], 0.5):.2f}; "
          f"kmesh/API watch p50: {pct(got['kmesh'], 0.5) / pct(got['API watch'], 0.5):.2f}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server we started, by its PID."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def measure(names: dict[str, str], kubeconfig: Path, work: Path, args: argparse.Namespace, api: "ApiOps") -> None:
    """Start both servers, run dnsperf against each, print the comparison."""
    queries = work / "queries.txt"
    queries.write_text("".join(f"{n} A\n" for n in names))
    hosts = work / "hosts"
    hosts.write_text("".join(f"{ip} {n}\n" for n, ip in names.items()))
    last = next(reversed(names))
    kport, mport = free_port(), free_port()
    kmesh = subprocess.Popen(
        [sys.executable, "-m", "kmesh.dns", "--kubeconfig", str(kubeconfig), "--listen", f"127.0.0.1:{kport}",
         "--no-forward", "--metrics-port", "-1", "--workers", str(args.workers)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=(work / "kmesh-dns.log").open("w"),
    )
    dnsmasq = subprocess.Popen(
        ["dnsmasq", "-k", f"--port={mport}", "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
         "--no-hosts", f"--addn-hosts={hosts}", "--local=/cluster.local/", "--cache-size=10000",
         f"--pid-file={work / 'dnsmasq.pid'}", "--log-facility=/dev/null", "--user=root"],
        stdout=subprocess.DEVNULL, stderr=(work / "dnsmasq.log").open("w"),
    )
    try:
        wait_answers(kport, last)
        wait_answers(mport, last)
        runs: dict[str, list[PerfResult]] = {"dnsmasq": [], "kmesh": []}
        for label, port in (("dnsmasq", mport), ("kmesh", kport)):
            run_dnsperf(port, queries, 1, args.clients)  # warm-up
        for rnd in range(args.rounds):  # alternate the order: other load on the machine hits both alike
            order = [("dnsmasq", mport), ("kmesh", kport)]
            for label, port in order if rnd % 2 == 0 else order[::-1]:
                runs[label].append(run_dnsperf(port, queries, args.seconds, args.clients))
        if args.changes:
            propagation(kport, mport, hosts, dnsmasq.pid, api, args.changes)
    finally:
        stop(kmesh)
        stop(dnsmasq)
    print(f"{len(names)} cluster names (A), dnsperf -c {args.clients} -l {args.seconds}, "
          f"{args.rounds} alternating rounds, kmesh workers={args.workers}")
    print(f"{'server':10} {'median QPS':>11} {'avg latency':>12}  per round")
    med: dict[str, PerfResult] = {}
    for label, rs in runs.items():
        med[label] = sorted(rs, key=lambda r: r.qps)[len(rs) // 2]
        rounds = " ".join(f"{r.qps:.0f}" for r in rs)
        print(f"{label:10} {med[label].qps:11.0f} {med[label].avg_ms:10.3f}ms  {rounds}")
    ratios = sorted(k.qps / d.qps for k, d in zip(runs["kmesh"], runs["dnsmasq"]))
    print(f"ratio kmesh/dnsmasq: median {ratios[len(ratios) // 2]:.2f} (per round {', '.join(f'{r:.2f}' for r in ratios)}; goal >= 1.0)")


class ApiOps:
    """Service creates and deletes on the API server, callable from the measuring thread, and when a watch saw them."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.seen: dict[tuple[str, str], float] = {}
        self.informer = Informer(client, "Service", handlers=[self._saw])

    def _saw(self, change: Change) -> None:
        obj = change.new or change.old or {}
        self.seen.setdefault((change.type, obj["metadata"]["name"]), time.perf_counter())

    def create(self, name: str) -> None:
        """Create ClusterIP Service ``name`` in default."""
        trio.from_thread.run(self.client.create, {"apiVersion": "v1", "kind": "Service",
                                                  "metadata": {"name": name, "namespace": "default"},
                                                  "spec": {"ports": [{"name": "http", "port": 80}]}})

    def delete(self, name: str) -> None:
        """Delete Service ``name`` in default."""
        trio.from_thread.run(self.client.delete, "Service", name, "default")


async def setup(args: argparse.Namespace, work: Path) -> None:
    """API server with N services; then the measurement (in a thread, so the API server keeps serving)."""
    async with trio.open_nursery() as n:
        srv = await n.start(run_server, ServerConfig(data_dir=work, store_url="memory://", port=0))
        creds = Credentials(srv.url, srv.pki.ca_pem(), srv.pki.token)
        kc = work / "kubeconfig.yaml"
        write_kubeconfig(kc, "bench", creds)
        names: dict[str, str] = {}
        async with Client(creds) as client:
            for i in range(args.services):
                svc = await client.create({"apiVersion": "v1", "kind": "Service",
                                           "metadata": {"name": f"svc-{i}", "namespace": "default"},
                                           "spec": {"ports": [{"name": "http", "port": 80}]}})
                names[f"svc-{i}.default.svc.cluster.local"] = svc["spec"]["clusterIP"]
            api = ApiOps(client)
            n.start_soon(api.informer.run)
            await api.informer.synced.wait()
            await trio.to_thread.run_sync(measure, names, kc, work, args, api)
        n.cancel_scope.cancel()


def main() -> None:
    """Parse flags and run."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1, help="kmesh processes (SO_REUSEPORT); on 2 vCPUs shared with dnsperf, 1 measured best")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--changes", type=int, default=20, help="creates+deletes timed from change to answer (0: skip)")
    args = ap.parse_args()
    for tool in ("dnsperf", "dnsmasq"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (apt install {tool})")
    with tempfile.TemporaryDirectory(prefix="kmesh-dns-bench-") as tmp:
        trio.run(setup, args, Path(tmp))


if __name__ == "__main__":
    main()
