"""The ``kmesh/dns`` built-in image: the agent's app registry runs the server with the pod's sockets."""

from __future__ import annotations

from pathlib import Path

import dns.asyncquery
import dns.message
import trio

from kmesh.node.apps import AppContext, lookup
from kmesh.node.runtime import Sandbox
from tests.dns.conftest import service
from tests.support.cluster import Cluster


async def test_image_runs_the_dns_server_in_the_pod(cluster: Cluster, nursery: trio.Nursery, tmp_path: Path) -> None:
    app = lookup("kmesh/dns:1.0")
    assert app is not None
    main = app.resolve()
    svc = await cluster.client.create(service("web"))
    sandbox = Sandbox("uid", "kube-system", "coredns-x", "127.0.0.1", "127.0.0.1", tmp_path, "coredns-x")
    # Port 0: a free port (the real pod uses 53); metrics off.
    ctx = AppContext(pod={}, container={}, args=[f"--kubeconfig={cluster.kubeconfig}", "--port=0", "--upstream=none",
                                                 "--metrics-port=-1"],
                     env={}, sandbox=sandbox, log_path=tmp_path / "dns.log", hostname="coredns-x")
    done = trio.Event()
    code: list[int | None] = []

    async def run() -> None:
        code.append(await main(ctx))
        done.set()

    nursery.start_soon(run)
    with trio.fail_after(10):
        while not (tmp_path / "dns.log").exists() or "kmesh dns:" not in (tmp_path / "dns.log").read_text():
            await trio.sleep(0.01)  # the app reports its address only through its log, like a container
    line = (tmp_path / "dns.log").read_text()
    port = int(line.split("('127.0.0.1', ")[1].split(")")[0])
    with trio.fail_after(5):
        while True:
            msg = await dns.asyncquery.udp(dns.message.make_query("web.default.svc.cluster.local", "A"), "127.0.0.1", port=port, timeout=2)
            if msg.answer:
                break
            await trio.sleep(0.02)  # SERVFAIL until its informers listed
    assert [rd.to_text() for r in msg.answer for rd in r] == [svc["spec"]["clusterIP"]]
    ctx.sigterm.set()
    with trio.fail_after(5):
        await done.wait()
    assert code == [0]
    ctx.close()


async def test_image_without_kubeconfig_exits_2(tmp_path: Path) -> None:
    main = lookup("kmesh/dns").resolve()  # type: ignore[union-attr]
    sandbox = Sandbox("uid", "kube-system", "coredns-x", "127.0.0.1", "127.0.0.1", tmp_path, "coredns-x")
    ctx = AppContext(pod={}, container={}, args=[], env={}, sandbox=sandbox, log_path=tmp_path / "dns.log", hostname="x")
    assert await main(ctx) == 2
    assert "kubeconfig" in (tmp_path / "dns.log").read_text()
    ctx.close()
