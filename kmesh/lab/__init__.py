"""kmesh.lab."""
