"""The ServiceAccounts controller against a real API server: ``default`` in every namespace, back when deleted."""

from __future__ import annotations

from collections.abc import Callable

from kmesh.api import errors as E
from kmesh.client.informer import Informer
from tests.controllers.conftest import Env


def has_default(namespace: str) -> Callable[[Informer], bool]:
    """A predicate for ``Informer.wait_for``: namespace ``namespace`` has its ``default`` account."""
    return lambda inf: inf.get("default", namespace) is not None


async def test_default_account_everywhere_and_recreated(env: Env) -> None:
    accounts = env.informer("ServiceAccount")
    for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
        await accounts.wait_for(has_default(ns))
    c = env.client
    await c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    await accounts.wait_for(has_default("team-a"))
    first = accounts.get("default", "team-a")["metadata"]["uid"]

    await c.delete("ServiceAccount", "default", "team-a")
    await accounts.wait_for(lambda inf: (inf.get("default", "team-a") or {}).get("metadata", {}).get("uid")
                            not in (None, first))
    # other accounts are the user's business: deleted, they stay deleted
    await c.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "mine", "namespace": "team-a"}})
    await accounts.wait_for(lambda inf: inf.get("mine", "team-a") is not None)
    await c.delete("ServiceAccount", "mine", "team-a")
    await accounts.wait_for(lambda inf: inf.get("mine", "team-a") is None)

    # a namespace being deleted gets no new account; once gone, nothing is left of it
    await c.delete("Namespace", "team-a")
    await accounts.wait_for(lambda inf: inf.get("default", "team-a") is None)
    namespaces = env.informer("Namespace")
    await namespaces.wait_for(lambda inf: inf.get("team-a") is None)
    try:
        await c.get("ServiceAccount", "default", "team-a")
    except E.APIError as exc:
        assert exc.code == 404
    else:
        raise AssertionError("the account of a deleted namespace came back")
