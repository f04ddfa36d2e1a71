"""Discovery documents: what kubectl reads to learn which kinds and verbs exist."""

from __future__ import annotations

from typing import Any

from kmesh import __version__
from kmesh.api.kinds import GROUPS, KINDS, Kind

KUBE_MAJOR, KUBE_MINOR = "1", "32"

SUBRESOURCE_VERBS = {
    "status": ["get", "patch", "update"],
    "scale": ["get", "patch", "update"],
    "approval": ["get", "patch", "update"],
    "binding": ["create"],
    "log": ["get"],
}


def version() -> dict[str, Any]:
    """The /version document (the Kubernetes API level kmesh serves)."""
    return {
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": f"v{KUBE_MAJOR}.{KUBE_MINOR}.0-kmesh.{__version__}",
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "python",
        "compiler": "cpython",
        "platform": "linux/amd64",
    }


def api_versions(server_address: str) -> dict[str, Any]:
    """The /api document."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group_version(group: str, version: str) -> dict[str, str]:
    return {"groupVersion": f"{group}/{version}", "version": version}


def api_group(group: str) -> dict[str, Any] | None:
    """The /apis/<group> document, or None for an unknown group."""
    versions = [_group_version(g, v) for g, v in GROUPS if g == group]
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions,
            "preferredVersion": versions[0]}


def api_group_list() -> dict[str, Any]:
    """The /apis document."""
    groups = []
    for g in dict.fromkeys(g for g, _ in GROUPS):
        doc = api_group(g)
        assert doc is not None
        doc.pop("kind")
        doc.pop("apiVersion")
        groups.append(doc)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _resource(k: Kind) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": k.plural,
        "singularName": k.singular,
        "namespaced": k.namespaced,
        "kind": k.kind,
        "verbs": list(k.verbs),
        "storageVersionHash": "",
    }
    if k.short_names:
        out["shortNames"] = list(k.short_names)
    if k.categories:
        out["categories"] = list(k.categories)
    return out


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    """The /api/v1 or /apis/<group>/<version> document, or None if not served."""
    kinds = [k for k in KINDS if k.group == group and k.version == version]
    if not kinds:
        return None
    resources: list[dict[str, Any]] = []
    for k in kinds:
        resources.append(_resource(k))
        for sub in k.subresources:
            if sub == "scale":
                resources.append(
                    {
                        "name": f"{k.plural}/scale",
                        "singularName": "",
                        "namespaced": k.namespaced,
                        "group": "autoscaling",
                        "version": "v1",
                        "kind": "Scale",
                        "verbs": SUBRESOURCE_VERBS["scale"],
                    }
                )
            else:
                resources.append(
                    {
                        "name": f"{k.plural}/{sub}",
                        "singularName": "",
                        "namespaced": k.namespaced,
                        "kind": {"binding": "Binding", "log": "Pod"}.get(sub, k.kind),
                        "verbs": SUBRESOURCE_VERBS[sub],
                    }
                )
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}
