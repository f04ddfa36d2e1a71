"""A joined node's API balancer (``kmesh.node.apilb``): TLS to the API passes through it untouched, and its list
of servers follows the ``kubernetes`` Endpoints (read through the balancer itself).

The ``api`` fixture's server allows loopback endpoints, so its ``kubernetes`` Endpoints hold 127.0.0.1 and
the server's port: the server the balancer was started with. Other API servers are then added to (and taken
from) those Endpoints as other servers' endpoint leases would; nothing listens on 127.0.0.2/3, and the
balancer only has to list them."""

from __future__ import annotations

import copy
import functools
from urllib.parse import urlsplit

import pytest
import trio

from kmesh.client.api import Client
from kmesh.client.kubeconfig import Credentials
from kmesh.net.portforward import Failover
from kmesh.node.apilb import RunningBalancer, endpoint_servers, run_api_balancer
from tests.support.certs import CA
from tests.support.cluster import Cluster


def test_endpoint_servers_reads_ready_addresses_with_the_first_port() -> None:
    endpoints = {"subsets": [
        {"addresses": [{"ip": "192.168.56.10"}, {"ip": "192.168.56.11"}],
         "notReadyAddresses": [{"ip": "192.168.56.12"}],
         "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}, {"name": "other", "port": 9999}]},
        {"addresses": [{"ip": "192.168.56.13"}], "ports": [{"name": "https", "port": 7443}]},
        {"addresses": [{"ip": "192.168.56.14"}], "ports": []},  # no port: nowhere to connect
    ]}
    assert endpoint_servers(endpoints) == [("192.168.56.10", 6443), ("192.168.56.11", 6443), ("192.168.56.13", 7443)]
    assert endpoint_servers(None) == []
    assert endpoint_servers({}) == []
    assert endpoint_servers({"subsets": None}) == []


async def _set_addresses(api: Cluster, addresses: list[str]) -> None:
    """Point the ``kubernetes`` Endpoints at ``addresses`` (same port), through the API."""
    ep = await api.client.get("Endpoints", "kubernetes", "default")
    new = copy.deepcopy(ep)
    new["subsets"][0]["addresses"] = [{"ip": a} for a in addresses]
    await api.client.update(new)


async def _until(servers: Failover, changed: list[trio.Event], want: list[tuple[str, int]]) -> None:
    """Wait until the balancer's servers are ``want`` (each ``replace`` sets the current event)."""
    with trio.fail_after(30):
        while servers.order() != want:
            await changed[0].wait()
            changed[0] = trio.Event()


async def test_the_balancer_carries_the_api_and_follows_the_kubernetes_endpoints(
        api: Cluster, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    url = urlsplit(api.server.url)
    first = (str(url.hostname), int(url.port or 0))
    ca_pem = api.server.pki.ca_pem()
    ep = await api.client.get("Endpoints", "kubernetes", "default")
    assert endpoint_servers(ep) == [first]  # the fixture's server publishes itself

    # The balancer's own client authenticates as a node does: with a client certificate.
    cert, key = CA.load(api.server.pki.ca_cert, api.server.pki.ca_key).issue("system:node:n1", ("system:nodes",))
    creds = Credentials(api.server.url, ca_pem, client_cert_pem=cert, client_key_pem=key)
    lb: RunningBalancer = await nursery.start(functools.partial(run_api_balancer, first, creds, port=0))
    assert lb.port != 0 and lb.url == f"https://127.0.0.1:{lb.port}"
    changed = [trio.Event()]
    real_replace = lb.servers.replace

    def noting(targets: list[tuple[str, int]]) -> None:
        real_replace(targets)
        changed[0].set()

    monkeypatch.setattr(lb.servers, "replace", noting)

    async with Client(Credentials(lb.url, ca_pem, api.server.pki.token)) as through:
        names = [n["metadata"]["name"] for n in (await through.list("Namespace"))["items"]]
        assert {"default", "kube-system"} <= set(names)

        second, third = ("127.0.0.2", first[1]), ("127.0.0.3", first[1])
        await _set_addresses(api, [first[0], second[0]])
        await _until(lb.servers, changed, [first, second])  # known keep their place, new at the back
        await _set_addresses(api, [third[0], first[0]])
        await _until(lb.servers, changed, [first, third])  # gone (127.0.0.2) leave
        await _set_addresses(api, [second[0]])  # the server joined through stays, though not published
        await _until(lb.servers, changed, [first, second])
        assert (await through.get("Namespace", "default"))["metadata"]["name"] == "default"
