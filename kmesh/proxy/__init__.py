"""kmesh.proxy."""
