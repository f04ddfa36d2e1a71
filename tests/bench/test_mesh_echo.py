"""The flaky endpoint of the retries experiment: kmesh/echo ``--fail-ratio`` / ``--fail-code`` (sim runtime, no
root: the node tests' in-process cluster and agent)."""

from __future__ import annotations

import httpx

from tests.node.conftest import api, create_bound, cstatus, node1, pod, pods, running_ready, wait_pod  # noqa: F401

PORTS = [{"containerPort": 8080}]


async def test_fail_ratio_answers_the_code_that_often(api, node1, pods) -> None:  # noqa: F811
    await create_bound(api.client, pod("flaky", {"name": "echo", "image": "kmesh/echo", "ports": PORTS,
                                                 "args": ["--fail-ratio=0.5"]}))
    p = await wait_pod(pods, "flaky", running_ready)
    async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
        codes = [(await c.get(f"http://{p['status']['podIP']}:8080/")).status_code for _ in range(200)]
    assert set(codes) == {200, 503}
    assert 60 <= codes.count(503) <= 140  # binomial(200, 0.5): mean 100, sd 7.1


async def test_fail_code_and_ratio_one(api, node1, pods) -> None:  # noqa: F811
    await create_bound(api.client, pod("down", {"name": "echo", "image": "kmesh/echo", "ports": PORTS,
                                                "args": ["--fail-ratio=1", "--fail-code=500"]}))
    p = await wait_pod(pods, "down", running_ready)
    async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
        codes = {(await c.get(f"http://{p['status']['podIP']}:8080/x")).status_code for _ in range(10)}
    assert codes == {500}


async def test_bad_fail_ratio_is_a_usage_error(api, node1, pods) -> None:  # noqa: F811
    await create_bound(api.client, pod("bad", {"name": "echo", "image": "kmesh/echo", "args": ["--fail-ratio=2"]},
                                       restartPolicy="Never"))
    p = await wait_pod(pods, "bad", lambda p: (p or {}).get("status", {}).get("phase") == "Failed")
    assert cstatus(p, "echo")["state"]["terminated"]["exitCode"] == 2
