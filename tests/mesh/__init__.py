"""Tests of the service mesh (kmesh/mesh)."""
