"""Well-known names and Kubernetes' network defaults that several parts of kmesh read.

The addresses are Kubernetes' own defaults (kubeadm, flannel, kubelet), kept
in one place so the API server, controllers, DNS, CNI, proxy and node agent
agree without importing each other (or the lab that wires them together).
"""

ZONE_LABEL = "topology.kubernetes.io/zone"  # the Node label that says which zone a node (and its pods) is in

CLUSTER_CIDR = "10.244.0.0/16"  # the pod network (flannel's default); a /24 per node
SERVICE_CIDR = "10.96.0.0/12"  # --service-cluster-ip-range; the `kubernetes` Service gets its first address
CLUSTER_DNS_IP = "10.96.0.10"  # the kubelet's --cluster-dns: Service kube-dns
CLUSTER_DOMAIN = "cluster.local"  # the kubelet's --cluster-domain
SIM_SERVICE_CIDR = "127.96.0.0/16"  # the sim runtime (no root): Services on loopback
SIM_CLUSTER_CIDR = "127.244.0.0/16"  # the sim runtime: pods on loopback
