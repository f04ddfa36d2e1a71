"""The controller-manager's and the scheduler's /metrics: upstream's names, and numbers that move with the work."""

from __future__ import annotations

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from kmesh.controllers import podutil
from tests.controllers.conftest import StartEnv
from tests.controllers.kubelet import add_node
from tests.controllers.test_workloads import deployment


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of http://127.0.0.1:<port>/metrics by (name, sorted labels)."""
    async with httpx.AsyncClient(trust_env=False) as http:
        resp = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert resp.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(resp.text) for s in fam.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric: str, **labels: str) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


async def test_workqueue_and_scheduler_metrics_move_with_a_deployment(start_env: StartEnv) -> None:
    env = await start_env(metrics_port=0, scheduler_metrics_port=0)
    cm, sched = env.mgr.metrics_port, env.mgr.scheduler_metrics_port
    assert cm and sched and cm != sched
    for i in range(2):
        await add_node(env.client, f"metrics-node-{i}")
    before_cm, before_s = await scrape(cm), await scrape(sched)
    names = {n for n, _ in before_cm}
    for want in ("workqueue_adds_total", "workqueue_depth", "workqueue_queue_duration_seconds_count",
                 "workqueue_work_duration_seconds_count", "workqueue_retries_total",
                 "workqueue_unfinished_work_seconds", "workqueue_longest_running_processor_seconds",
                 "process_cpu_seconds_total"):
        assert want in names, f"{want} missing from the controller-manager's /metrics"
    queues = {dict(labels).get("name") for n, labels in before_cm if n == "workqueue_depth"}
    assert {"deployment", "replicaset", "endpoint", "endpoint_slice", "garbage_collector_attempt_to_delete",
            "cidrallocator_node", "node_lifecycle_controller"} <= queues
    assert "scheduler" not in queues  # the scheduler's queue is on the scheduler's endpoint

    await env.client.create(deployment("metered", 3))
    pods = env.informer("Pod")
    with trio.fail_after(30):
        await pods.wait_for(lambda i: sum(1 for p in i.list("default")
                                          if podutil.labels(p).get("app") == "metered"
                                          and (p.get("spec") or {}).get("nodeName")) == 3)
    after_cm, after_s = await scrape(cm), await scrape(sched)
    for queue in ("deployment", "replicaset"):
        for metric in ("workqueue_adds_total", "workqueue_queue_duration_seconds_count",
                       "workqueue_work_duration_seconds_count"):
            assert value(after_cm, metric, name=queue) > value(before_cm, metric, name=queue), (queue, metric)
    scheduled = ("scheduler_schedule_attempts_total", {"result": "scheduled", "profile": "default-scheduler"})
    assert value(after_s, scheduled[0], **scheduled[1]) - value(before_s, scheduled[0], **scheduled[1]) >= 3
    assert value(after_s, "scheduler_pod_scheduling_attempts_count") - \
        value(before_s, "scheduler_pod_scheduling_attempts_count") >= 3
    assert value(after_s, "workqueue_adds_total", name="scheduler") >= 3
    for queue in ("active", "backoff", "unschedulable", "gated"):
        assert ("scheduler_pending_pods", (("queue", queue),)) in after_s
    assert value(after_s, "scheduler_scheduler_cache_size", type="nodes") >= 2
    assert ("scheduler_scheduling_attempt_duration_seconds_count",
            (("profile", "default-scheduler"), ("result", "scheduled"))) in after_s


async def test_an_unschedulable_pod_is_counted_and_pending(start_env: StartEnv) -> None:
    env = await start_env(scheduler_metrics_port=0)
    port = env.mgr.scheduler_metrics_port
    assert port and env.mgr.metrics_port is None
    before = await scrape(port)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nowhere", "namespace": "default"},
           "spec": {"nodeSelector": {"no": "such-node"},
                    "containers": [{"name": "c", "image": "registry.k8s.io/e2e-test-images/agnhost:2.39"}]}}
    await env.client.create(pod)
    pods = env.informer("Pod")
    with trio.fail_after(30):
        await pods.wait_for(lambda i: podutil.condition(i.get("nowhere", "default") or {}, "PodScheduled") is not None)
    unschedulable = {"result": "unschedulable", "profile": "default-scheduler"}
    counted = value(before, "scheduler_schedule_attempts_total", **unschedulable)
    with trio.fail_after(30):
        while True:  # the attempt is counted once its PodScheduled=False condition is written
            after = await scrape(port)
            if value(after, "scheduler_schedule_attempts_total", **unschedulable) > counted:
                break
            await trio.sleep(0.05)
    assert value(after, "scheduler_pending_pods", queue="unschedulable") >= 1
