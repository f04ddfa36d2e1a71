"""Well-known label keys that several parts of kmesh read (the API's, the controllers', the proxy's)."""

ZONE_LABEL = "topology.kubernetes.io/zone"  # the Node label that says which zone a node (and its pods) is in
