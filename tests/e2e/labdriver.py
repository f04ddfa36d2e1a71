"""A netns lab for an end-to-end test module, driven as a user would: `kmesh up`, kubectl, `kmesh exec`.

``running_lab`` brings a lab up with the given `kmesh up` flags and, however
the tests end, takes it down and checks that no namespace or process of it
is left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kmesh.lab.datadir import DataDir
from kmesh.net.netns_check import netns_usable
from kmesh.lab.topology import LabNames, lab_namespaces, processes_in
from tests.conftest import require, require_binary

KMESH = [sys.executable, "-m", "kmesh.cli"]
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.39"


def client_pods(*nodes: int) -> str:
    """YAML for pods ``client-<n>`` (label app=client, agnhost pause) pinned to ``node-<n>``, one per node."""
    return "".join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: client-{n}, namespace: default, labels: {{app: client}}}}
spec:
  nodeName: node-{n}
  containers:
  - {{name: c, image: {AGNHOST}, args: [pause]}}
""" for n in nodes)


def app(name: str, image: str, args: list[str], port: int, *, replicas: int = 1, ready_path: str = "/",
        env: str = "") -> str:
    """YAML for Deployment and Service ``name`` (label app=NAME; Service port 80, named http, to ``port``) whose pods
    run ``image`` with ``args`` and are ready once ``GET ready_path`` on ``port`` answers; ``env``: extra container
    YAML lines (indented 8 spaces)."""
    return f"""---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: main
        image: {image}
        args: {json.dumps(args)}
        ports: [{{containerPort: {port}}}]
        readinessProbe: {{httpGet: {{path: {ready_path}, port: {port}}}, periodSeconds: 1}}
{env}---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: {port}}}]
"""


# Lab.get_many's client: argv URL N TIMEOUT; one JSON string per request (the body, "" on failure); no proxy
# from the environment, as a pod has none.
_GET_MANY = """
import json, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor
url, n, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def get(_):
    try:
        with opener.open(url, timeout=timeout) as r:
            return r.read().decode(errors="replace").strip()
    except Exception:
        return ""
with ThreadPoolExecutor(n) as pool:
    for body in pool.map(get, range(n)):
        print(json.dumps(body))
"""


class Lab:
    """A running lab and how to drive it."""

    def __init__(self, root: Path, names: LabNames, mode: str) -> None:
        self.dd = DataDir(root)
        self.names = names
        self.mode = mode

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        """``kubectl`` against the lab; its stdout (the test fails on a non-zero exit)."""
        env = dict(os.environ, KUBECONFIG=str(self.dd.kubeconfig))
        out = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def kmesh(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``kmesh <command> --data-dir <lab> args...``."""
        return subprocess.run([*KMESH, args[0], "--data-dir", str(self.dd.root), *args[1:]],
                              capture_output=True, text=True, timeout=180)

    def pods(self, selector: str) -> list[dict[str, Any]]:
        """The pods matching a label selector, as kubectl returns them."""
        return json.loads(self.kubectl("get", "pods", "-l", selector, "-o", "json"))["items"]

    def exec(self, pod: str, script: str) -> str:
        """stdout + stderr of ``sh -c script`` in ``pod``."""
        out = self.kmesh("exec", pod, "--", "sh", "-c", script)
        return out.stdout + out.stderr

    def get_many(self, pod: str, url: str, n: int, timeout: float = 2) -> list[str]:
        """The bodies of ``n`` GETs of ``url`` made at once from ``pod`` ("" for each that failed or timed out).

        One ``kmesh exec`` running one Python with ``n`` threads: a batch costs one round trip and one request
        timeout at worst, where ``n`` sequential curls cost ``n`` process starts (and ``n`` timeouts while a
        proxy is still syncing). Each request is its own connection, as each curl's is."""
        out = self.kmesh("exec", pod, "--", "python3", "-c", _GET_MANY, url, str(n), str(timeout))
        assert out.returncode == 0, out.stdout + out.stderr
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def cluster_ip(self, svc: str) -> str:
        """The ClusterIP of Service ``svc`` in the default namespace."""
        return self.kubectl("get", "svc", svc, "-o", "jsonpath={.spec.clusterIP}")


@contextmanager
def running_lab(root: Path, names: LabNames, mode: str, *, nodes: int = 3, flags: Sequence[str] = ()) -> Iterator[Lab]:
    """A netns lab of ``nodes`` nodes with kube-proxy in ``mode``, removed (and checked gone) afterwards."""
    require(netns_usable(), "root and network namespaces")
    require_binary("kubectl")
    require_binary("curl")
    lab = Lab(root, names, mode)
    try:
        up = subprocess.run([*KMESH, "up", "--runtime", "netns", "--nodes", str(nodes), "--proxy-mode", mode,
                             *flags, "--name", names.lab, "--data-dir", str(root), "--port", "0"],
                            capture_output=True, text=True, timeout=180)
        assert up.returncode == 0, up.stdout + up.stderr
        yield lab
    finally:
        subprocess.run([*KMESH, "down", "--data-dir", str(root)], capture_output=True, timeout=120)
        spaces = lab_namespaces(names)
        assert spaces == [] and processes_in(spaces) == []
