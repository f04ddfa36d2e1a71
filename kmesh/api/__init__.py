"""kmesh.api."""
