"""kmesh.dns."""
