"""The HTTP proxy engine: listeners, a routing table, per-request balancing, TLS (used by gateway/ and mesh/).

``kmesh.l7.engine.Engine`` serves a ``kmesh.l7.model.Config``; ``kmesh.l7.metrics.Metrics`` holds its
counters and access log hook. Nothing is imported here, so controllers that only build a Config
(``kmesh.l7.model``) do not load the engine's HTTP stack.
"""
