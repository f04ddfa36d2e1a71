"""Pieces of the node agent that need no API server: IPAM, crash backoff, phases, env."""

from __future__ import annotations

import pytest
import trio

from kmesh.node.ipam import HostLocalIPAM, IPExhausted
from kmesh.node.podspec import container_env, expand, resolve_port
from kmesh.node.runner import CrashBackoff
from kmesh.node.status import ContainerState, pod_phase


def test_ipam_round_robin_reserved_addresses_and_persistence(tmp_path) -> None:
    ipam = HostLocalIPAM(tmp_path, "127.244.1.0/29")
    got = [ipam.allocate(f"pod-{i}") for i in range(5)]
    assert got == [f"127.244.1.{i}" for i in range(2, 7)]  # .0 network, .1 gateway, .7 broadcast never
    assert ipam.allocate("pod-0") == "127.244.1.2"  # idempotent per owner
    with pytest.raises(IPExhausted):
        ipam.allocate("pod-5")
    assert ipam.release("pod-1") == "127.244.1.3"
    assert ipam.allocate("pod-5") == "127.244.1.3"
    # Another instance over the same directory (an agent restart) sees every reservation.
    again = HostLocalIPAM(tmp_path, "127.244.1.0/29")
    assert again.lookup("pod-3") == "127.244.1.5"
    assert sorted(again.gc({"pod-0", "pod-5"})) == ["127.244.1.4", "127.244.1.5", "127.244.1.6"]
    assert again.allocate("new") == "127.244.1.4"  # continues after the last reserved (.3)


async def test_crash_backoff_doubles_to_the_max_and_resets_after_a_long_run() -> None:
    b = CrashBackoff(10, 40)
    now = trio.current_time()
    assert b.delay(now) == 0  # first restart: at once
    b.restarted()
    assert 9.9 < b.delay(trio.current_time()) <= 10
    b.restarted()
    assert 19.9 < b.delay(trio.current_time()) <= 20
    b.restarted()
    b.restarted()
    assert 39.9 < b.delay(trio.current_time()) <= 40  # capped
    assert b.delay(trio.current_time() + 81) == 0  # ran longer than twice the max: start over


def test_pod_phase_follows_upstream() -> None:
    def term(code: int) -> ContainerState:
        c = ContainerState("c", "i")
        c.set_terminated(code, None)
        return c

    running = ContainerState("r", "i")
    running.set_running("kmesh://x", "t")
    waiting = ContainerState("w", "i")
    crashloop = ContainerState("b", "i")
    crashloop.last_state = {"terminated": {"exitCode": 1}}
    crashloop.set_waiting("CrashLoopBackOff")
    assert pod_phase({}, [waiting], True, False) == "Pending"
    assert pod_phase({}, [running, waiting], True, False) == "Pending"
    assert pod_phase({}, [running], True, False) == "Running"
    assert pod_phase({}, [crashloop], True, False) == "Running"
    assert pod_phase({"restartPolicy": "Never"}, [term(0)], True, False) == "Succeeded"
    assert pod_phase({"restartPolicy": "Never"}, [term(0), term(1)], True, False) == "Failed"
    assert pod_phase({"restartPolicy": "OnFailure"}, [term(1)], True, False) == "Running"
    assert pod_phase({"restartPolicy": "Always"}, [term(0)], True, False) == "Running"
    assert pod_phase({}, [running], False, False) == "Pending"
    assert pod_phase({}, [waiting], False, True) == "Failed"


def test_env_expansion_and_named_ports() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns", "labels": {"app": "x"}}, "spec": {"nodeName": "n1"}}
    c = {"env": [
        {"name": "A", "value": "1"}, {"name": "B", "value": "$(A)-$(MISSING)-$$(A)"},
        {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
    ], "ports": [{"name": "web", "containerPort": 8080}]}
    env = container_env(pod, c, "127.244.1.2", "127.0.0.1")
    assert env["B"] == "1-$(MISSING)-$(A)" and env["L"] == "x" and env["S"] == "" and env["HOSTNAME"] == "p"
    assert expand("$(A)", {"A": "z"}) == "z"
    assert resolve_port(c, "web") == 8080 and resolve_port(c, 81) == 81 and resolve_port(c, "82") == 82
    with pytest.raises(ValueError):
        resolve_port(c, "nope")
