"""A pod's /etc/resolv.conf and /etc/hosts, composed the way the kubelet does.

The rules follow upstream's ``pkg/kubelet/network/dns``: the ``dnsPolicy``
picks a base (``ClusterFirst``: the cluster DNS server, the pod's search
path before the node's, ``ndots:5``; ``Default``: the node's resolv.conf;
``None``: nothing), ``spec.dnsConfig`` is appended to it (duplicates dropped,
options of the same name replaced), and the result is cut to the limits
(3 nameservers, 32 search domains of at most 253 characters, 2048 characters
in the search line). A ``hostNetwork`` pod with ``ClusterFirst`` falls back to
``Default``; ``ClusterFirstWithHostNet`` keeps the cluster DNS.

The hosts file is the kubelet's managed one: localhost lines, the pod IP with
its hostname (and ``<hostname>.<subdomain>.<ns>.svc.<domain>`` when the pod
has a subdomain), then ``hostAliases``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kmesh.api.obj import Obj


MAX_NAMESERVERS = 3
MAX_SEARCH_PATHS = 32
MAX_SEARCH_CHARS = 2048
MAX_DOMAIN_LEN = 253
DEFAULT_OPTIONS = ("ndots:5",)
MANAGED_HOSTS_HEADER = "# Kubernetes-managed hosts file.\n"
MANAGED_HOSTS_HEADER_HOST_NET = "# Kubernetes-managed hosts file (host network).\n"


@dataclass
class DNSConfig:
    """Nameservers, search domains and options of one resolv.conf."""

    servers: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    def render(self) -> str:
        """The resolv.conf text (search, nameserver, options lines, as containerd writes them)."""
        out = ""
        if self.searches:
            out += "search " + " ".join(self.searches) + "\n"
        for s in self.servers:
            out += f"nameserver {s}\n"
        if self.options:
            out += "options " + " ".join(self.options) + "\n"
        return out


def parse_resolv_conf(text: str) -> DNSConfig:
    """Nameservers accumulate; the last ``search`` and ``options`` lines win (upstream's parser)."""
    cfg = DNSConfig()
    for line in text.splitlines():
        fields = line.strip().split()
        if not fields or fields[0].startswith("#") or fields[0].startswith(";"):
            continue
        if fields[0] == "nameserver" and len(fields) >= 2:
            cfg.servers.append(fields[1])
        elif fields[0] == "search":
            cfg.searches = [s.removesuffix(".") for s in fields[1:] if s != "."]
        elif fields[0] == "options":
            cfg.options = fields[1:]
    return cfg


def read_host_config(path: Path | None) -> DNSConfig | None:
    """The node's resolv.conf (the kubelet's ``--resolv-conf``); None when ``path`` is None."""
    if path is None:
        return None
    try:
        return parse_resolv_conf(path.read_text())
    except FileNotFoundError:
        return DNSConfig()


def omit_duplicates(items: list[str]) -> list[str]:
    """``items`` in order without repeats."""
    return list(dict.fromkeys(items))


def merge_options(existing: list[str], extra: list[Obj]) -> list[str]:
    """``existing`` ("name" or "name:value") with ``dnsConfig.options`` added; the pod's win by name."""
    opts: dict[str, str | None] = {}
    for op in existing:
        name, sep, value = op.partition(":")
        opts[name] = value if sep else None
    for op in extra:
        name = str(op.get("name") or "")
        if not name:
            continue
        value = op.get("value")
        opts[name] = None if value is None or value == "" else str(value)
    return [name if value is None or value == "" else f"{name}:{value}" for name, value in opts.items()]


def dns_policy(pod: Obj) -> str:
    """The effective policy: ``cluster``, ``host`` or ``none``."""
    spec = pod.get("spec") or {}
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "None":
        return "none"
    if policy == "ClusterFirstWithHostNet":
        return "cluster"
    if policy == "ClusterFirst" and not spec.get("hostNetwork"):
        return "cluster"
    if policy in ("ClusterFirst", "Default"):
        return "host"
    return "cluster"  # the API server rejects other values; the kubelet falls back to ClusterFirst


def _fit_searches(searches: list[str], warnings: list[str]) -> list[str]:
    cut = False
    if len(searches) > MAX_SEARCH_PATHS:
        searches, cut = searches[:MAX_SEARCH_PATHS], True
    kept = [s for s in searches if len(s) <= MAX_DOMAIN_LEN]
    cut = cut or len(kept) != len(searches)
    while kept and len(" ".join(kept)) > MAX_SEARCH_CHARS:
        kept.pop()
        cut = True
    if cut:
        warnings.append(
            "Search Line limits were exceeded, some search paths have been omitted, "
            f"the applied search line is: {' '.join(kept)}"
        )
    return kept


def pod_dns_config(
    pod: Obj, *, cluster_dns: list[str], cluster_domain: str, host: DNSConfig | None,
) -> tuple[DNSConfig, list[str]]:
    """The pod's DNS config and the warnings the kubelet would post as ``DNSConfigForming`` events.

    ``host`` is the node's resolv.conf (None: the kubelet has ``--resolv-conf=""``).
    """
    warnings: list[str] = []
    base = host if host is not None else DNSConfig()
    cfg = DNSConfig(list(base.servers), list(base.searches), list(base.options))
    policy = dns_policy(pod)
    if policy == "cluster" and not cluster_dns:
        warnings.append(
            'kubelet does not have ClusterDNS IP configured and cannot create Pod using "ClusterFirst" policy. '
            'Falling back to "Default" policy.'
        )
        policy = "host"
    if policy == "none":
        cfg = DNSConfig()
    elif policy == "cluster":
        cfg.servers = list(cluster_dns)
        if cluster_domain:
            ns = (pod.get("metadata") or {}).get("namespace") or "default"
            cluster_search = [f"{ns}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain]
            cfg.searches = omit_duplicates(cluster_search + cfg.searches)
        cfg.options = list(DEFAULT_OPTIONS)
    elif host is None:
        # --resolv-conf="": upstream points the pod at the local machine and disables search.
        cfg.servers, cfg.searches = ["127.0.0.1"], ["."]
    extra = (pod.get("spec") or {}).get("dnsConfig")
    if extra:
        cfg.servers = omit_duplicates(cfg.servers + [str(s) for s in extra.get("nameservers") or []])
        cfg.searches = omit_duplicates(cfg.searches + [str(s) for s in extra.get("searches") or []])
        cfg.options = merge_options(cfg.options, list(extra.get("options") or []))
    if len(cfg.servers) > MAX_NAMESERVERS:
        cfg.servers = cfg.servers[:MAX_NAMESERVERS]
        warnings.append(
            "Nameserver limits were exceeded, some nameservers have been omitted, "
            f"the applied nameserver line is: {' '.join(cfg.servers)}"
        )
    cfg.searches = _fit_searches(cfg.searches, warnings)
    return cfg, warnings


def pod_resolv_conf(pod: Obj, *, cluster_dns: list[str], cluster_domain: str, host: DNSConfig | None) -> tuple[str, list[str]]:
    """The text of the pod's resolv.conf and the warnings (see ``pod_dns_config``)."""
    cfg, warnings = pod_dns_config(pod, cluster_dns=cluster_dns, cluster_domain=cluster_domain, host=host)
    return cfg.render(), warnings


def pod_domain(pod: Obj, cluster_domain: str) -> str:
    """``<subdomain>.<ns>.svc.<domain>`` when the pod has a subdomain, else ""."""
    spec = pod.get("spec") or {}
    sub = spec.get("subdomain") or ""
    if not sub:
        return ""
    ns = (pod.get("metadata") or {}).get("namespace") or "default"
    return f"{sub[:63]}.{ns}.svc.{cluster_domain}"


def _aliases(pod: Obj) -> str:
    aliases = (pod.get("spec") or {}).get("hostAliases") or []
    if not aliases:
        return ""
    out = "\n# Entries added by HostAliases.\n"
    for a in aliases:
        names = [str(h) for h in a.get("hostnames") or []]
        if a.get("ip") and names:
            out += f"{a['ip']}\t" + "\t".join(names) + "\n"
    return out


def pod_hosts_file(pod: Obj, pod_ip: str, hostname: str, cluster_domain: str) -> str:
    """The kubelet's managed /etc/hosts of a pod with its own network namespace."""
    out = MANAGED_HOSTS_HEADER
    out += "127.0.0.1\tlocalhost\n"
    out += "::1\tlocalhost ip6-localhost ip6-loopback\n"
    out += "fe00::0\tip6-localnet\n"
    out += "fe00::0\tip6-mcastprefix\n"
    out += "fe00::1\tip6-allnodes\n"
    out += "fe00::2\tip6-allrouters\n"
    domain = pod_domain(pod, cluster_domain)
    if pod_ip:
        out += f"{pod_ip}\t{hostname}.{domain}\t{hostname}\n" if domain else f"{pod_ip}\t{hostname}\n"
    return out + _aliases(pod)


def host_network_hosts_file(pod: Obj, node_hosts: str) -> str:
    """The /etc/hosts of a ``hostNetwork`` pod: the node's own, plus ``hostAliases``."""
    return MANAGED_HOSTS_HEADER_HOST_NET + node_hosts.rstrip("\n") + "\n" + _aliases(pod)
