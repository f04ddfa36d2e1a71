"""The NetworkPolicy benchmark's traffic, run by ``nsenter`` inside a pod namespace: a server or a prober.

Stdlib only, so it starts fast and shares nothing (no GIL, no event loop)
with the process that runs the API server and the agents.

``serve PORT``: accept every connection and close it at once (the kernel
completes the handshake; accepting keeps the backlog from filling).

``probe``: read one JSON command per line on stdin, answer one JSON line:

- ``{"op": "latency", "dst": [ip, port], "count": N}`` → ``{"samples": [s, ...]}``:
  N connects one after the other, each timed around ``connect()`` alone, then
  closed with a reset (SO_LINGER 0: no TIME_WAIT, so the ports never run out);
- ``{"op": "flip", "dst": [ip, port], "want": bool, "interval": s, "timeout": s, "max": s}``:
  a new non-blocking connect every ``interval`` seconds, each answered (True:
  connected or refused) or dropped (False: no answer within ``timeout``,
  which is kept well under the kernel's first SYN retransmission at 1 s so
  an outcome always belongs to the SYN sent at its time). First
  ``{"ready": true}`` once three probes in a row showed the old behaviour
  (``not want``); then, after a probe shows ``want`` and ``timeout`` more
  seconds have passed, ``{"runs": [[first_sent, last_sent, ok, count], ...]}``:
  the outcomes by send time (``time.monotonic()``, which is CLOCK_MONOTONIC,
  the clock the caller reads too), collapsed into runs. ``{"runs": ..., "gave_up": true}``
  after ``max`` seconds without it.
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import struct
import sys
import time

RESET = struct.pack("ii", 1, 0)


def _close(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
    except OSError:
        pass
    sock.close()


def serve(port: int) -> None:
    """Accept and close, forever."""
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("0.0.0.0", port))
    lsock.listen(4096)
    print("serving", flush=True)
    while True:
        conn, _ = lsock.accept()
        conn.close()


def latency(dst: tuple[str, int], count: int) -> list[float]:
    """``count`` connect() durations in seconds (a failed connect is not a sample)."""
    out = []
    for _ in range(count):
        s = socket.socket()
        s.settimeout(2.0)
        t0 = time.perf_counter()
        try:
            s.connect(dst)
        except OSError:
            _close(s)
            continue
        out.append(time.perf_counter() - t0)
        _close(s)
    return out


def flip(dst: tuple[str, int], want: bool, interval: float, timeout: float, limit: float) -> None:
    """Probe until the behaviour is ``want``; print ``ready`` first, the runs at the end."""
    sel = selectors.DefaultSelector()
    outcomes: list[tuple[float, bool]] = []
    pending: dict[socket.socket, float] = {}
    start = time.monotonic()
    next_at = start
    ready = False
    seen_want: float | None = None
    old_streak = 0

    def record(sent: float, ok: bool) -> None:
        nonlocal ready, seen_want, old_streak
        outcomes.append((sent, ok))
        if not ready:
            old_streak = old_streak + 1 if ok != want else 0
            if old_streak >= 3:
                ready = True
                print(json.dumps({"ready": True}), flush=True)
        elif ok == want and seen_want is None:
            seen_want = time.monotonic()

    while True:
        now = time.monotonic()
        done = seen_want is not None and now - seen_want >= timeout
        if done or now - start > limit:  # no new probes; wait for the ones in flight
            if not pending:
                break
        elif now >= next_at:
            s = socket.socket()
            s.setblocking(False)
            sent = time.monotonic()
            err = s.connect_ex(dst)
            if err == errno.EINPROGRESS:
                pending[s] = sent
                sel.register(s, selectors.EVENT_WRITE)
            else:
                record(sent, err in (0, errno.ECONNREFUSED))
                _close(s)
            next_at = max(next_at + interval, now)
        for s, sent in list(pending.items()):  # expire the dropped ones
            if now - sent >= timeout:
                sel.unregister(s)
                del pending[s]
                record(sent, False)
                _close(s)
        wait = max(0.0, min([next_at] + [t + timeout for t in pending.values()]) - time.monotonic())
        if pending:
            for key, _ in sel.select(wait):
                s = key.fileobj  # type: ignore[assignment]
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                sel.unregister(s)
                record(pending.pop(s), err in (0, errno.ECONNREFUSED))
                _close(s)
        elif wait:
            time.sleep(wait)
    sel.close()
    outcomes.sort()
    runs: list[list] = []
    for sent, ok in outcomes:
        if runs and runs[-1][2] == ok:
            runs[-1][1] = sent
            runs[-1][3] += 1
        else:
            runs.append([sent, sent, ok, 1])
    answer: dict = {"runs": runs}
    if seen_want is None:
        answer["gave_up"] = True
        if not ready:
            print(json.dumps({"ready": True, "late": True}), flush=True)
    print(json.dumps(answer), flush=True)


def probe() -> None:
    """Answer commands from stdin until it closes."""
    print("probing", flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        dst = (cmd["dst"][0], int(cmd["dst"][1]))
        if cmd["op"] == "latency":
            print(json.dumps({"samples": latency(dst, int(cmd["count"]))}), flush=True)
        elif cmd["op"] == "flip":
            flip(dst, bool(cmd["want"]), float(cmd.get("interval", 0.001)), float(cmd.get("timeout", 0.1)),
                 float(cmd.get("max", 15.0)))
        else:
            print(json.dumps({"error": f"unknown op {cmd['op']!r}"}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--cpu":  # pinned: one CPU for the client, the servers and their softirqs
        os.sched_setaffinity(0, {int(sys.argv[2])})
        del sys.argv[1:3]
    try:
        if sys.argv[1:2] == ["serve"]:
            serve(int(sys.argv[2]))
        elif sys.argv[1:2] == ["probe"]:
            probe()
        else:
            raise SystemExit("usage: python -m kmesh.bench.netpolprobe [--cpu N] serve PORT | probe")
    except (KeyboardInterrupt, BrokenPipeError):  # Ctrl-C reaches the whole group; the bench says it
        sys.exit(130)
