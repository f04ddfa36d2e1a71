"""The sim runtime's userspace proxy without the right to bind ports below 1024 (a plain user's lab)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import require_binary

SCRIPT = r'''
import trio
from kmesh.proxy.model import Endpoint, NodeContext, ProxyState, ServicePort, ServicePortName
from kmesh.proxy.userspace import UserspaceProxy

async def main():
    ctx = NodeContext(node="", node_ips=("127.1.250.1",), cluster_cidr="127.244.0.0/16")
    proxy = UserspaceProxy(ctx, runtime="sim")
    low = ServicePort(ServicePortName("default", "low", "http"), "127.96.250.1", 80,
                      endpoints=(Endpoint("127.244.250.1", 9376),))
    high = ServicePort(ServicePortName("default", "high", "http"), "127.96.250.2", 18080,
                       endpoints=(Endpoint("127.244.250.1", 9376),))
    state = ProxyState({low.name: low, high.name: high})
    async with trio.open_nursery() as n:
        await proxy.start(n)
        await proxy.sync(state, frozenset(state.services), True)   # must not raise
        print(sorted(str(k) for k in proxy.unbound))
        print(sorted(str(k) for k in proxy.services))
        print(proxy.table())
        await proxy.cleanup()
        n.cancel_scope.cancel()

trio.run(main)
'''


def test_low_ports_are_reported_and_the_rest_served() -> None:
    setpriv = require_binary("setpriv")
    out = subprocess.run([setpriv, "--bounding-set", "-net_bind_service", "--inh-caps", "-net_bind_service",
                          sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "['default/low:http']"
    assert lines[1] == "['default/high:http']"
    assert "<not served: cannot bind: Permission denied (ports below 1024 need root)>" in out.stdout
