"""``kmesh bench mesh`` on a 2-node netns lab, run as a user runs it (the CLI, ``--json``).

Kept short: one lab for the module; the canary experiment with 300 requests (an HTTPRoute attached to
Service canary splitting 90/10 over canary-v1 and canary-v2, requests from a meshed client). Checked: the
answers came from both Services and the chi-square verdict holds for the route's weights; the JSON's shape;
the run's namespace is gone afterwards. Never a time bound.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmesh.lab.topology import LabNames
from tests.e2e.labdriver import KMESH, Lab, running_lab

pytestmark = [pytest.mark.netns, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("bench-mesh-lab")
    with running_lab(Path(root), LabNames(f"km{uuid.uuid4().hex[:4]}"), "iptables", nodes=2,
                     flags=["--disable", "ingress,gateway"]) as lab:
        yield lab


def test_canary_split_passes_the_chi_square_test(lab: Lab, tmp_path: Path) -> None:
    png = tmp_path / "canary.png"
    out = subprocess.run([*KMESH, "bench", "mesh", "canary", "--data-dir", str(lab.dd.root), "--requests", "300",
                          "--json", "--plot", str(png)], check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    canary = doc["canary"]
    assert canary["experiment"] == "canary" and canary["cells"] == "services" and canary["passed"] is True
    counts = {s["name"]: s["count"] for s in canary["services"]}
    assert sum(counts.values()) == 300 and not canary["errors"]
    assert counts["canary-v1"] > counts["canary-v2"] > 0
    assert {s["name"]: s["expected"] for s in canary["services"]} == {"canary-v1": 0.9, "canary-v2": 0.1}
    assert canary["chi_square"]["df"] == 1 and canary["chi_square"]["p_value"] >= canary["alpha"]
    assert doc["passed"] is True and "retries" not in doc and "latency" not in doc
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (ns,) = doc["namespaces"]
    assert ns.startswith("bench-mesh-")
    assert ns not in lab.kubectl("get", "namespaces", "-o", "name")  # the run removed what it made
