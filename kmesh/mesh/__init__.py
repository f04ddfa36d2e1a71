"""The service mesh: sidecar injection, traffic redirect rules, the mesh CA, the sidecar proxy and its tooling."""
