"""Ingress, Gateway API and LoadBalancer controllers that program the L7 engine and announce addresses."""
