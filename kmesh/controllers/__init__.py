"""kmesh.controllers."""
