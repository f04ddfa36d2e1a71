"""kmesh.bench."""
