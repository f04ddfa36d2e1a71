"""kmesh: a Kubernetes networking lab on one Linux machine."""

__version__ = "0.1.0"
