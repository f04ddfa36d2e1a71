"""`kmesh link` in a 2-node netns lab, driven as a user would: ping and iperf3 between pods on the two nodes.

Pods ``client-1`` (node-1) and ``client-2`` (node-2) are agnhost pause pods;
iperf3's server runs in ``client-2`` for one
measurement at a time (``kmesh exec client-2 -- iperf3 -s -1``). Each test measures a baseline and
puts the lab back with ``kmesh link reset``. The lab goes with
``kmesh down``, which must leave no namespace, process (the delayer
included) or file behind.

On this kernel there is no netem, so delay and loss are served by kmesh's
delayer; on a kernel with netem the same commands use netem, and
``show --json`` says which (``delayBy``).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kmesh.lab.topology import LabNames
from kmesh.net import netns
from kmesh.packet.shaping import MECH_DELAYER, MECH_NETEM, netem_available
from tests.conftest import require_binary
from tests.e2e.labdriver import KMESH, Lab, client_pods, running_lab

pytestmark = [pytest.mark.netns, pytest.mark.slow]

def _shaper_processes(root: Path) -> list[int]:
    """PIDs of `kmesh link shaper` processes of the lab in ``root``."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"shaper" in cmd and any(str(root).encode() in c for c in cmd):
            out.append(int(p.name))
    return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_binary("iperf3")
    require_binary("ping")
    root = tmp_path_factory.mktemp("links")
    with running_lab(root, LabNames(f"l{uuid.uuid4().hex[:5]}"), "iptables", nodes=2) as lab:
        try:
            lab.kubectl("apply", "-f", "-", stdin=client_pods(1, 2))
            lab.kubectl("wait", "--for=condition=Ready", "pod", "client-1", "client-2", "--timeout=120s")
            yield lab
        finally:
            lab.kmesh("link", "reset")
    # `kmesh down` (running_lab) checked the namespaces and processes in them; the delayers and files too:
    assert _shaper_processes(root) == []
    assert not (root / "run").exists() and not (root / "logs").exists()


def pod_ip(lab: Lab, pod: str) -> str:
    return lab.kubectl("get", "pod", pod, "-o", "jsonpath={.status.podIP}")


def ping(lab: Lab, pod: str, ip: str, count: int = 10, interval: float = 0.1, wait: int = 2) -> tuple[int, float | None]:
    """(replies, average RTT in ms) of pings from ``pod`` to ``ip``."""
    out = lab.exec(pod, f"ping -n -q -c {count} -i {interval} -W {wait} {ip}")
    m = re.search(r"(\d+) received", out)
    assert m, out
    avg = re.search(r"= [\d.]+/([\d.]+)/", out)
    return int(m.group(1)), float(avg.group(1)) if avg else None


def iperf_mbit(lab: Lab, server_ip: str, seconds: int = 3) -> float:
    """Megabits per second an iperf3 server in ``client-2`` (one test, then it exits) received from
    ``client-1``. Nothing says when the server listens: a refused connection is tried again, a bounded
    number of times."""
    server = subprocess.Popen([*KMESH, "exec", "--data-dir", str(lab.dd.root), "client-2", "--", "iperf3", "-s", "-1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(40):
            out = lab.exec("client-1", f"iperf3 -J -c {server_ip} -t {seconds}")
            doc = json.loads(out[out.index("{"):])
            if "Connection refused" not in doc.get("error", ""):
                break
            time.sleep(0.25)
        assert "error" not in doc, doc["error"]
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return float(doc["end"]["sum_received"]["bits_per_second"]) / 1e6


def link(lab: Lab, *args: str) -> Any:
    out = lab.kmesh("link", *args)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def show(lab: Lab) -> dict[str, Any]:
    return {e["target"]: e for e in json.loads(link(lab, "show", "--json").stdout)["links"]}


def test_delay_toward_a_peer_adds_twice_to_the_round_trip(lab: Lab) -> None:
    target = pod_ip(lab, "client-2")
    got, base = ping(lab, "client-1", target)
    assert got == 10 and base is not None
    _, cp_base = ping(lab, "client-1", "192.168.56.10", count=5)
    link(lab, "set", "node-1", "--to", "node-2", "--delay", "50ms")
    try:
        got, avg = ping(lab, "client-1", target)
        assert got == 10 and avg is not None and abs(avg - (base + 100.0)) <= 20.0, (base, avg)
        got, cp = ping(lab, "client-1", "192.168.56.10", count=5)  # the control plane is not node-2
        assert got == 5 and cp is not None and cp_base is not None and cp < cp_base + 20.0, (cp_base, cp)
        entry = show(lab)["node-1"]
        [rule] = entry["rules"]
        assert rule["peer"] == "node-2" and set(rule["addresses"]) >= {"192.168.56.12"}
        mech = MECH_NETEM if netem_available() else MECH_DELAYER
        for way in ("out", "in"):
            assert rule[way]["delay"] == "50ms" and rule[way]["delayBy"] == mech, rule
        assert entry["state"] == "up"
        if mech == MECH_DELAYER:  # both ways on the underlay bridge, in and out of node-1's port
            assert [d["namespace"] for d in entry["delayers"]] == [lab.names.underlay]
            assert all(d["running"] and d["pid"] for d in entry["delayers"])
            assert sum(q["received"] for d in entry["delayers"] for q in d["queues"].values()) >= 20
    finally:
        link(lab, "reset")
    got, avg = ping(lab, "client-1", target)
    assert got == 10 and avg is not None and avg < base + 20.0, (base, avg)
    assert show(lab)["node-1"]["rules"] == []


def test_a_pod_link_with_delay_and_loss(lab: Lab) -> None:
    target = pod_ip(lab, "client-2")
    _, base = ping(lab, "client-1", target)
    assert base is not None
    link(lab, "set", "client-1", "--delay", "20ms", "--jitter", "2ms")  # a bare name that is no node: a pod
    try:
        got, avg = ping(lab, "client-1", target)
        assert got == 10 and avg is not None and abs(avg - (base + 40.0)) <= 20.0, (base, avg)
        entry = show(lab)["default/client-1"]
        assert entry["kind"] == "pod" and entry["node"] == "node-1"
        if not netem_available():  # both ways in node-1, from and to the pod's address
            assert [d["namespace"] for d in entry["delayers"]] == [lab.names.node("node-1")]
        [rule] = entry["rules"]
        assert rule["peer"] is None and rule["out"]["delay"] == "20ms" and rule["out"]["jitter"] == "2ms"
        link(lab, "set", "default/client-1", "--loss", "100%")  # replaces: no delay, every packet lost
        got, _ = ping(lab, "client-1", target, count=5, interval=0.05, wait=1)
        assert got == 0
        [rule] = show(lab)["default/client-1"]["rules"]
        assert rule["out"]["loss"] == 100.0 and rule["out"]["delayNs"] == 0
    finally:
        link(lab, "reset", "default/client-1")
    got, avg = ping(lab, "client-1", target)
    assert got == 10 and avg is not None and avg < base + 20.0
    assert "default/client-1" not in show(lab)


def test_rate_caps_iperf3_throughput(lab: Lab) -> None:
    server = pod_ip(lab, "client-2")
    link(lab, "set", "node-1", "--to", "node-2", "--rate", "10mbit")
    try:
        shaped = iperf_mbit(lab, server)
        assert 5.0 <= shaped <= 11.0, shaped
        [rule] = show(lab)["node-1"]["rules"]
        assert rule["out"]["rate"] == "10mbit" and rule["out"]["rateBy"] == "htb" and rule["in"]["rate"] == "10mbit"
        link(lab, "set", "node-1", "--rate", "10mbit")  # all of node-1's traffic, and --to node-2 stays
        rules = show(lab)["node-1"]["rules"]
        assert [(r["peer"], r["out"]["rate"]) for r in rules] == [("node-2", "10mbit"), (None, "10mbit")]
    finally:
        link(lab, "reset", "node-1")
    assert iperf_mbit(lab, server) > 1.5 * 10.0


def test_down_cuts_a_node_off_and_up_brings_it_back(lab: Lab) -> None:
    target = pod_ip(lab, "client-2")
    assert ping(lab, "client-1", target, count=3)[0] == 3
    link(lab, "down", "node-2")
    try:
        assert ping(lab, "client-1", target, count=3, wait=1)[0] == 0
        assert show(lab)["node-2"]["state"] == "down"
        assert "down (cut off)" in link(lab, "show").stdout
    finally:
        link(lab, "up", "node-2")
    assert show(lab)["node-2"]["state"] == "up"
    got, _ = ping(lab, "client-1", target, count=10, interval=0.2, wait=2)  # neighbours come back within a second
    assert got >= 5


@pytest.mark.parametrize("args, code, words", [
    (("set", "node-9", "--delay", "5ms"), 2, "TARGET"),
    (("set", "default/nobody", "--delay", "5ms"), 2, "no pod 'nobody'"),
    (("set", "node-1", "--to", "node-7", "--delay", "5ms"), 2, "--to"),
    (("set", "node-1", "--to", "node-1", "--delay", "5ms"), 2, "the target itself"),
    (("set", "node-1", "--delay", "5"), 2, "--delay"),
    (("set", "node-1", "--loss", "150%"), 2, "more than 100%"),
    (("set", "node-1", "--jitter", "5ms"), 2, "--jitter"),
    (("set", "node-1", "--rate", "-1mbit"), 2, "negative"),
    (("down", "node-5"), 2, "NODE"),
    (("reset", "kube-system/nobody"), 2, "TARGET"),
])
def test_bad_input_is_named_and_changes_nothing(lab: Lab, args: tuple[str, ...], code: int, words: str) -> None:
    before = show(lab)
    saved = {n: _mangle(lab, n) for n in ("node-1", "node-2")}
    out = lab.kmesh("link", *args)
    assert out.returncode == code, out.stdout + out.stderr
    assert words in out.stderr, out.stderr
    assert show(lab) == before
    assert {n: _mangle(lab, n) for n in saved} == saved


def _mangle(lab: Lab, node: str) -> list[str]:
    """The rules of the mangle table in a node's namespace."""
    argv = netns.nsenter_argv(lab.names.node(node), ["iptables-save", "-t", "mangle"])
    return [line for line in subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()
            if line.startswith("-A")]
