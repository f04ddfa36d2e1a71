"""``in_root_namespace`` tells the machine's own network namespace from the ones kmesh makes, also where
``/proc/1/ns/net`` cannot be read (as on these machines, even as root)."""

from __future__ import annotations

import sys
import uuid

import pytest
import trio

from kmesh.net import netns
from kmesh.net.netns_check import netns_usable
from tests.conftest import require

pytestmark = pytest.mark.netns


async def test_root_namespace_and_test_namespaces_told_apart() -> None:
    require(netns_usable(), "root and network namespaces")
    # The test process runs in this machine's own namespace, in every thread.
    assert netns.in_root_namespace()
    assert await trio.to_thread.run_sync(netns.in_root_namespace)
    name = f"kmt-{uuid.uuid4().hex[:6]}-root"
    try:
        netns.add(name)
        assert netns.call_in(name, netns.in_root_namespace) is False  # a named namespace
        assert await netns.run_sync_in(name, netns.in_root_namespace) is False
        # A whole process started there, as the netns lab starts each node's agent.
        probe = [sys.executable, "-c", "from kmesh.net.netns import in_root_namespace; print(in_root_namespace())"]
        with trio.fail_after(60):
            inside = await trio.run_process(netns.nsenter_argv(name, probe), capture_stdout=True)
            outside = await trio.run_process(probe, capture_stdout=True)
        assert (inside.stdout.strip(), outside.stdout.strip()) == (b"False", b"True")
    finally:
        netns.delete(name)
    assert netns.call_in_private(netns.in_root_namespace) is False  # an unnamed one
    assert netns.in_root_namespace()  # and back in this thread's own


def test_a_readable_reference_exists_here() -> None:
    """Where init's namespace cannot be read, kthreadd's (or the fixed inode) decides."""
    if netns._ns_id("/proc/1/ns/net") is None:
        own = netns._ns_id("/proc/thread-self/ns/net")
        assert own is not None
        assert netns._kthreadd_namespace() == own or own[1] == netns.INIT_NET_INO
