#!/usr/bin/env python3
"""kmesh's L7 proxy (the gateway's engine) beside nginx and haproxy, with wrk, in the same run.

    .venv/bin/python benchmarks/l7.py [--seconds 10] [--connections 64] [--workers 1] [--repeat 1]
                                      [--json] [--plot FILE.png]

Every run uses the same route (any host, path prefix ``/``) to the same
backend: an nginx that answers ``200 ok`` (the fastest backend at hand, so the
proxies are what is measured). wrk (keep-alive, one thread, ``--connections``
connections) loads in turn: the backend directly ("direct"), kmesh's engine,
nginx (Debian's) as a reverse proxy with upstream keep-alive, and haproxy in
HTTP mode. Each proxy gets the same number of workers (``--workers``, by
default one per CPU as Debian's nginx.conf has it: nginx ``worker_processes``,
haproxy ``nbthread``, kmesh engine processes sharing the port with
SO_REUSEPORT). All on 127.0.0.1 with free ports.

"trio floor" is a yardstick, not a proxy: a relay on trio that parses
nothing (read a request, pass it on, read the answer, pass it back). No HTTP
proxy on CPython and trio can beat it, so its own ratio to nginx bounds what
kmesh's can reach on the machine at hand.

Prints requests/s and p50/p99 latency for each and kmesh's ratios to nginx.
Goal (issue 16): kmesh ≥ 0.5× nginx's requests/s and p99 ≤ 2× nginx's; exit 0
when met, 1 when not, 2 on a usage error or a missing tool.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GOAL_RPS = 0.5
GOAL_P99 = 2.0
console = Console(stderr=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Return once something accepts on 127.0.0.1:port (the process just started it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)  # polling a process we do not control: no event to await
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def nginx_conf(tmp: Path, port: int, workers: int, body: str) -> Path:
    conf = tmp / f"nginx-{port}.conf"
    conf.write_text(f"""
worker_processes {workers};
pid {tmp}/nginx-{port}.pid;
error_log {tmp}/nginx-{port}.err warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/cb-{port}; proxy_temp_path {tmp}/pt-{port};
    fastcgi_temp_path {tmp}/ft-{port}; uwsgi_temp_path {tmp}/ut-{port}; scgi_temp_path {tmp}/st-{port};
    keepalive_requests 1000000;
    {body}
}}
""")
    return conf


def backend_conf(tmp: Path, port: int) -> Path:
    return nginx_conf(tmp, port, 1, f"server {{ listen 127.0.0.1:{port}; location / {{ return 200 'ok\\n'; }} }}")


def nginx_proxy_conf(tmp: Path, port: int, backend: int, workers: int) -> Path:
    return nginx_conf(tmp, port, workers, f"""
    upstream backend {{ server 127.0.0.1:{backend}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}""")


def haproxy_conf(tmp: Path, port: int, backend: int, workers: int) -> Path:
    conf = tmp / f"haproxy-{port}.cfg"
    conf.write_text(f"""
global
    nbthread {workers}
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    option forwardfor
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    http-reuse always
    server s1 127.0.0.1:{backend}
""")
    return conf


def serve_kmesh(port: int, backend: int) -> None:
    """One engine process on 127.0.0.1:port routing everything to the backend (SO_REUSEPORT: several may run)."""
    import trio

    from kmesh.l7.engine import Engine
    from kmesh.l7.model import Backend, Config, Endpoint, HostMatch, Listener, Match, RouteEntry, Rule

    async def run() -> None:
        engine = Engine("127.0.0.1", reuse_port=True)
        async with trio.open_nursery() as n:
            await n.start(engine.serve)
            rule = Rule(backends=(Backend("bench", "backend", 80),), name="bench")
            await engine.apply(Config((Listener(port, (RouteEntry(HostMatch(), Match(), rule),)),)))
            engine.set_endpoints("bench", "backend", 80, [Endpoint("127.0.0.1", backend)])
            await trio.sleep_forever()

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass


def serve_floor(port: int, backend: int) -> None:
    """What any proxy on trio costs at least: a relay that parses nothing (not kmesh; a yardstick).

    Per client connection one backend connection; it reads one request, passes it on, reads one answer
    and passes it back (enough for wrk's GETs with small answers, not for HTTP in general). It reads
    after a yield as kmesh's engine does, so the difference to kmesh is HTTP, routing and metrics."""
    import trio

    async def relay(tsock: trio.socket.SocketType) -> None:
        c = socket.socket(fileno=tsock.detach())
        u = socket.socket()
        with c, u:
            c.setblocking(False)
            u.setblocking(False)
            try:
                u.connect(("127.0.0.1", backend))
            except BlockingIOError:
                await trio.lowlevel.wait_writable(u)
            for s in (c, u):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            async def read(s: socket.socket) -> bytes:
                await trio.lowlevel.checkpoint()
                while True:
                    try:
                        return s.recv(65536)
                    except BlockingIOError:
                        await trio.lowlevel.wait_readable(s)

            try:
                while data := await read(c):
                    u.sendall(data)
                    c.sendall(await read(u))
            except OSError:
                pass

    async def run() -> None:
        listener = trio.socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        await listener.bind(("127.0.0.1", port))
        listener.listen(1024)
        async with trio.open_nursery() as n:
            while True:
                sock, _ = await listener.accept()
                n.start_soon(relay, sock)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    """Requests/s, p50 and p99 latency (seconds) and errors of one wrk run."""
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _seconds(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _seconds(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    n_err = (int(errors.group(1)) if errors else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
    return {"rps": rps, "p50": p50, "p99": p99, "errors": n_err}


def plot(path: Path, results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    from kmesh.bench.report import png

    names = list(results)
    with png(path, 1, 2, figsize=(11, 4.2)) as (fig, (ax1, ax2)):
        ax1.bar(names, [results[n]["rps"] for n in names], color=["#888", "#2a7", "#bbb", "#27a", "#a72"][:len(names)])
        ax1.set_ylabel("requests/s")
        ax1.set_title(f"wrk, {args.connections} keep-alive connections, {args.workers} worker(s)")
        x = range(len(names))
        ax2.bar([i - 0.2 for i in x], [results[n]["p50"] * 1e3 for n in names], 0.4, label="p50")
        ax2.bar([i + 0.2 for i in x], [results[n]["p99"] * 1e3 for n in names], 0.4, label="p99")
        ax2.set_xticks(list(x), names)
        ax2.set_ylabel("latency (ms)")
        ax2.legend()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="processes of each proxy (default: one per CPU, as nginx's worker_processes auto)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each (the best is kept)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--serve-kmesh", nargs=2, type=int, metavar=("PORT", "BACKEND"), help=argparse.SUPPRESS)
    ap.add_argument("--serve-floor", nargs=2, type=int, metavar=("PORT", "BACKEND"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_kmesh:
        serve_kmesh(*args.serve_kmesh)
        return 0
    if args.serve_floor:
        serve_floor(*args.serve_floor)
        return 0
    for name, value in (("--seconds", args.seconds), ("--connections", args.connections),
                        ("--workers", args.workers), ("--repeat", args.repeat)):
        if value < 1:
            console.print(f"[red]{name} must be at least 1")
            return 2
    missing = [t for t in ("wrk", "nginx", "haproxy") if shutil.which(t) is None]
    if missing:
        console.print(f"[red]missing: {', '.join(missing)} (make deps installs them)")
        return 2
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="kmesh-l7-bench-") as t:
        tmp = Path(t)
        try:
            def start(argv: list[str], port: int) -> None:
                p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
                procs.append(p)
                wait_port(port, p)

            backend = free_port()
            start(["nginx", "-p", str(tmp), "-c", str(backend_conf(tmp, backend)), "-g", "daemon off;"], backend)
            targets = {"direct": backend}
            kport = free_port()
            for _ in range(args.workers):
                start([sys.executable, __file__, "--serve-kmesh", str(kport), str(backend)], kport)
            targets["kmesh"] = kport
            fport = free_port()
            for _ in range(args.workers):
                start([sys.executable, __file__, "--serve-floor", str(fport), str(backend)], fport)
            targets["trio floor"] = fport
            nport = free_port()
            start(["nginx", "-p", str(tmp), "-c", str(nginx_proxy_conf(tmp, nport, backend, args.workers)),
                   "-g", "daemon off;"], nport)
            targets["nginx"] = nport
            hport = free_port()
            start(["haproxy", "-db", "-f", str(haproxy_conf(tmp, hport, backend, args.workers))], hport)
            targets["haproxy"] = hport
            with console.status("") as status:
                for name, port in targets.items():
                    best = None
                    for i in range(args.repeat):
                        status.update(f"wrk → {name} (run {i + 1}/{args.repeat}, {args.seconds} s)")
                        r = wrk(f"http://127.0.0.1:{port}/", args.seconds, args.connections)
                        if best is None or r["rps"] > best["rps"]:
                            best = r
                    assert best is not None
                    results[name] = best
        finally:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
    k, n = results["kmesh"], results["nginx"]
    ratio_rps, ratio_p99 = k["rps"] / n["rps"], k["p99"] / n["p99"]
    passed = ratio_rps >= GOAL_RPS and ratio_p99 <= GOAL_P99
    doc = {"connections": args.connections, "workers": args.workers, "seconds": args.seconds, "results": results,
           "kmesh_vs_nginx": {"rps": ratio_rps, "p99": ratio_p99},
           "floor_vs_nginx": {"rps": results["trio floor"]["rps"] / n["rps"],
                              "p99": results["trio floor"]["p99"] / n["p99"]},
           "goal": {"rps": GOAL_RPS, "p99": GOAL_P99}, "passed": passed}
    if args.plot:
        plot(args.plot, results, args)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        table = Table(title=f"HTTP/1.1 keep-alive, {args.connections} connections, {args.workers} worker(s)")
        for col in ("target", "requests/s", "p50", "p99", "errors", "vs nginx (req/s)"):
            table.add_column(col, justify="right" if col != "target" else "left")
        for name, r in results.items():
            table.add_row(name, f"{r['rps']:,.0f}", f"{r['p50'] * 1e3:.2f} ms", f"{r['p99'] * 1e3:.2f} ms",
                          str(int(r["errors"])), f"{r['rps'] / n['rps']:.2f}×")
        Console().print(table)
        Console().print(f"kmesh / nginx: requests/s {ratio_rps:.2f}× (goal ≥ {GOAL_RPS}), p99 {ratio_p99:.2f}× "
                        f"(goal ≤ {GOAL_P99}): {'PASS' if passed else 'FAIL'}")
        f = doc["floor_vs_nginx"]
        Console().print(f"trio floor / nginx (a relay parsing nothing): requests/s {f['rps']:.2f}×, "
                        f"p99 {f['p99']:.2f}×; kmesh reaches {k['rps'] / results['trio floor']['rps']:.0%} of it")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
