"""flannel-like subnet managers: kube (the Node is the lease) and etcd (leases under /coreos.com/network)."""

from kmesh.cni.subnets.base import (
    DuplicatePublicIP,
    LeaseLost,
    PeerEvent,
    PeerHandler,
    SubnetError,
    SubnetManager,
    SubnetsExhausted,
)
from kmesh.cni.subnets.etcd import EtcdSubnetManager, ensure_config
from kmesh.cni.subnets.kube import KubeSubnetManager

__all__ = [
    "DuplicatePublicIP", "EtcdSubnetManager", "KubeSubnetManager", "LeaseLost", "PeerEvent", "PeerHandler",
    "SubnetError", "SubnetManager", "SubnetsExhausted", "ensure_config",
]
