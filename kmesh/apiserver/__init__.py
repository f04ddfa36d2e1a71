"""kmesh.apiserver."""
