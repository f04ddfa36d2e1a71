"""The add-ons a lab ships (ingress and Gateway API controllers) and ``kmesh up --disable``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kmesh.lab.l7addons import l7_objects

KMESH = [sys.executable, "-m", "kmesh.cli"]


def _kinds(objs: list[dict]) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in objs]


def test_disable_leaves_out_each_addon() -> None:
    every = _kinds(l7_objects(None))
    assert ("IngressClass", "kmesh") in every and ("GatewayClass", "kmesh") in every
    assert ("Service", "kmesh-ingress-controller") in every and ("Deployment", "kmesh-gateway-controller") in every
    no_ingress = _kinds(l7_objects(None, disable=["ingress"]))
    assert not any(n.startswith("kmesh-ingress") or k == "IngressClass" for k, n in no_ingress)
    assert ("GatewayClass", "kmesh") in no_ingress
    no_gateway = _kinds(l7_objects(None, disable=["gateway"]))
    assert not any(k == "GatewayClass" or n == "kmesh-gateway-controller" for k, n in no_gateway)
    assert l7_objects(None, disable=["ingress", "gateway"]) == []  # not even the namespace


def test_pods_read_the_api_through_the_given_kubeconfig(tmp_path: Path) -> None:
    for obj in l7_objects(tmp_path / "kc.yaml"):
        if obj["kind"] == "Deployment":
            args = obj["spec"]["template"]["spec"]["containers"][0]["args"]
            assert f"--kubeconfig={tmp_path / 'kc.yaml'}" in args


def test_up_refuses_an_unknown_addon(tmp_path: Path) -> None:
    out = subprocess.run([*KMESH, "up", "--data-dir", str(tmp_path / "d"), "--runtime", "sim", "--name", "addons",
                          "--disable", "ingress,traefik"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "--disable" in out.stderr and "traefik" in out.stderr and "ingress, gateway" in out.stderr
    assert not (tmp_path / "d" / "cluster.json").exists()
