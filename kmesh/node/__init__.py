"""kmesh.node."""
