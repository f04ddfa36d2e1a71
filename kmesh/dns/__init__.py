"""kmesh.dns: the cluster DNS server (CoreDNS ``kubernetes`` plugin behaviour, dnsmasq-class speed).

Public API: ``DNSConfig`` (what to serve and where), ``run_dns(client, cfg,
*, task_status)`` (the server as a trio task; ``task_status`` gets a
``RunningDNS``). ``python -m kmesh.dns`` runs it from the command line;
the image ``kmesh/dns`` runs it in a pod (``kmesh.node.apps.dns:main``).
"""

from kmesh.dns.config import DNSConfig
from kmesh.dns.server import RunningDNS, run_dns

__all__ = ["DNSConfig", "RunningDNS", "run_dns"]
