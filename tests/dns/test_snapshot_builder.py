"""SnapshotBuilder: records of unchanged Services are reused, changed and deleted ones are not."""

from __future__ import annotations

from typing import Any

from kmesh.dns.model import SnapshotBuilder, build_snapshot
from tests.dns.conftest import endpoint_slice, ep, service


def stored(obj: dict[str, Any], rv: str, uid: str) -> dict[str, Any]:
    """``obj`` as the API server hands it out (uid, resourceVersion, a ClusterIP for Services)."""
    out = {**obj, "metadata": {**obj["metadata"], "uid": uid, "resourceVersion": rv}}
    if out["kind"] == "Service" and "clusterIP" not in out["spec"]:
        out["spec"] = {**out["spec"], "clusterIP": f"10.96.0.{rv}"}
    return out


def test_unchanged_records_are_reused_and_changed_ones_rebuilt() -> None:
    b = SnapshotBuilder()
    web, db = stored(service("web"), "1", "u-web"), stored(service("db"), "2", "u-db")
    hl = stored(service("hl", cluster_ip="None"), "3", "u-hl")
    sl = stored(endpoint_slice("hl", endpoints=[ep("10.244.1.5")]), "4", "u-sl")
    ns = [{"metadata": {"name": "default"}}]
    first = b.build([web, db, hl], [sl], ns)
    assert first == build_snapshot([web, db, hl], [sl], ns)

    sl2 = stored(endpoint_slice("hl", endpoints=[ep("10.244.1.5"), ep("10.244.2.6")]), "5", "u-sl")
    db2 = stored(service("db", ports=[{"name": "grpc", "port": 9090}]), "6", "u-db")
    second = b.build([web, db2, hl], [sl2], ns)
    assert second.service("default", "web") is first.service("default", "web")
    assert [p.port for p in second.service("default", "db").ports] == [9090]
    assert [e.ip for e in second.service("default", "hl").endpoints] == ["10.244.1.5", "10.244.2.6"]
    assert second == build_snapshot([web, db2, hl], [sl2], ns)

    # A Service deleted and made again under the same name (new uid) is a new record.
    web_again = stored(service("web"), "1", "u-web-2")
    third = b.build([web_again, db2, hl], [sl2], ns)
    assert third.service("default", "web") is not first.service("default", "web")
    assert third.service("default", "db") is second.service("default", "db")


def test_objects_without_resource_version_are_built_every_time() -> None:
    b = SnapshotBuilder()
    svc = {**service("web", cluster_ip="10.96.0.10")}
    one, two = b.build([svc], [], []), b.build([svc], [], [])
    assert one == two and one.service("default", "web") is not two.service("default", "web")
