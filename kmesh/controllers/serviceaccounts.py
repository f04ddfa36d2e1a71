"""The ServiceAccounts controller: a ServiceAccount ``default`` in every active Namespace.

What kube-controller-manager's ``serviceaccount`` controller does: when a
Namespace appears (or becomes active), or when a ``default`` ServiceAccount is
deleted, it creates ``default`` again in that Namespace. A Namespace being
deleted is left alone. Pods name ``default`` when they name no account (the
API server's admission), so every Pod's account exists shortly after its
Namespace does.
"""

from __future__ import annotations

import logging

from kmesh.api import errors as E
from kmesh.client.api import Client
from kmesh.client.informer import Change
from kmesh.controllers.base import Controller
from kmesh.controllers.informers import InformerFactory

log = logging.getLogger("kmesh.controllers.serviceaccounts")

DEFAULT_ACCOUNTS = ("default",)


class ServiceAccountsController(Controller[str]):
    """Keeps the ServiceAccounts of ``DEFAULT_ACCOUNTS`` in every active Namespace (keys: namespace names)."""

    name = "serviceaccount"
    queue_name = "serviceaccount"

    def __init__(self, client: Client, factory: InformerFactory, *, workers: int = 1) -> None:
        super().__init__(workers=workers)
        self.client = client
        self.namespaces = factory.informer("Namespace")
        self.accounts = factory.informer("ServiceAccount")
        self.namespaces.add_handler(self._on_namespace)
        self.accounts.add_handler(self._on_account)

    def _on_namespace(self, ch: Change) -> None:
        if ch.new is not None:
            self.queue.add(ch.new["metadata"]["name"])

    def _on_account(self, ch: Change) -> None:
        md = ch.obj.get("metadata") or {}
        if ch.new is None and md.get("name") in DEFAULT_ACCOUNTS:
            self.queue.add(md.get("namespace") or "")

    async def sync(self, key: str) -> None:
        """Create the missing default accounts of Namespace ``key`` (if it is active)."""
        ns = self.namespaces.get(key)
        if ns is None or (ns.get("metadata") or {}).get("deletionTimestamp") or \
                (ns.get("status") or {}).get("phase") == "Terminating":
            return
        for name in DEFAULT_ACCOUNTS:
            if self.accounts.get(name, key) is not None:
                continue
            try:
                await self.client.create({"apiVersion": "v1", "kind": "ServiceAccount",
                                          "metadata": {"name": name, "namespace": key}}, key)
                log.debug("created ServiceAccount %s/%s", key, name)
            except E.APIError as exc:
                if exc.code == 409 or exc.code == 403 and "being terminated" in exc.message:
                    continue  # it exists already (the cache is behind), or the namespace is going away
                if exc.code == 404:
                    return  # the namespace is gone
                raise
