"""kmesh.cni."""
