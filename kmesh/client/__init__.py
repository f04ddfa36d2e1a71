"""API client, kubeconfig handling and the shared informer."""

from kmesh.client.api import APIUnavailable, Client
from kmesh.client.informer import Change, Informer
from kmesh.client.kubeconfig import Credentials, load_kubeconfig, write_kubeconfig

__all__ = ["APIUnavailable", "Change", "Client", "Credentials", "Informer", "load_kubeconfig", "write_kubeconfig"]
