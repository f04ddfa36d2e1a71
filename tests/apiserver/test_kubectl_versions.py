"""Every kubectl a user may have: the one on PATH and Debian bookworm's 1.20, which validates and explains from /openapi/v2.

Each test runs once per binary. kubectl validates a ``kind: List`` file on the
client against ``/openapi/v2`` whatever its version (field validation is asked
of the server per kind, and List is no served kind); 1.20 validates every
manifest that way and explains from it, and both compute ``kubectl apply``'s
patch from its ``x-kubernetes-patch-*`` extensions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.support.cluster import Cluster
from tests.support.kubectl_versions import KUBECTLS, Kubectl

LIST = """\
apiVersion: v1
kind: List
metadata:
  resourceVersion: ""
items:
- apiVersion: apps/v1
  kind: Deployment
  metadata:
    name: web
    namespace: default
    labels: {app: web}
  spec:
    replicas: 2
    selector:
      matchLabels: {app: web}
    template:
      metadata:
        labels: {app: web}
      spec:
        containers:
        - name: web
          image: registry.k8s.io/e2e-test-images/agnhost:2.39
          args: ["serve-hostname"]
          ports:
          - containerPort: 9376
- apiVersion: v1
  kind: Service
  metadata:
    name: web
    namespace: default
    labels: {app: web}
  spec:
    selector: {app: web}
    ports:
    - name: http
      port: 80
      targetPort: 9376
"""

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
spec:
  containers:
  - name: c
    image: kmesh/echo
    {extra}
"""

TWO_CONTAINERS = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: two
  namespace: default
spec:
  selector:
    matchLabels: {app: two}
  template:
    metadata:
      labels: {app: two}
    spec:
      containers:
      - name: a
        image: kmesh/echo
        env:
        - {name: KEEP, value: "1"}
        - {name: DROP, value: "2"}
      - name: b
        image: kmesh/echo
"""


@pytest.fixture(params=sorted(KUBECTLS))
def kubectl(request: pytest.FixtureRequest) -> Kubectl:
    """Each kubectl in turn: the installed one, then Debian's 1.20."""
    return KUBECTLS[request.param]()


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


async def test_apply_a_list_file_and_the_list_get_prints(cluster: Cluster, kubectl: Kubectl, tmp_path: Path) -> None:
    out = await cluster.kubectl("apply", "-f", _write(tmp_path, "list.yaml", LIST), binary=kubectl.path)
    assert "deployment.apps/web created" in out.stdout and "service/web created" in out.stdout

    # kubectl get deploy,svc -o yaml > saved.yaml; kubectl apply -f saved.yaml
    saved = (await cluster.kubectl("get", "deploy,svc", "-l", "app=web", "-o", "yaml", binary=kubectl.path)).stdout
    doc = yaml.safe_load(saved)
    assert doc["kind"] == "List" and [i["kind"] for i in doc["items"]] == ["Deployment", "Service"]
    again = await cluster.kubectl("apply", "-f", _write(tmp_path, "saved.yaml", saved), binary=kubectl.path)
    assert "deployment.apps/web" in again.stdout and "service/web" in again.stdout

    dep = json.loads((await cluster.kubectl("get", "deploy", "web", "-o", "json")).stdout)
    assert dep["spec"]["replicas"] == 2
    svc = json.loads((await cluster.kubectl("get", "svc", "web", "-o", "json")).stdout)
    assert svc["spec"]["ports"][0]["targetPort"] == 9376


async def test_create_validates_and_refuses_a_misspelt_field(cluster: Cluster, kubectl: Kubectl, tmp_path: Path) -> None:
    good = _write(tmp_path, "good.yaml", POD.format(name="good", extra="ports: [{containerPort: 80}]"))
    assert "pod/good created" in (await cluster.kubectl("create", "-f", good, binary=kubectl.path)).stdout
    listed = LIST.replace("name: web", "name: made")
    out = await cluster.kubectl("create", "-f", _write(tmp_path, "list.yaml", listed), binary=kubectl.path)
    assert "deployment.apps/made created" in out.stdout and "service/made created" in out.stdout

    typo = _write(tmp_path, "typo.yaml", POD.format(name="typo", extra="imagee: nope"))
    for verb in ("create", "apply"):
        bad = await cluster.kubectl(verb, "-f", typo, binary=kubectl.path, check=False)
        assert bad.returncode != 0
        if kubectl.version < (1, 24):  # checked on the client, against /openapi/v2
            assert ('ValidationError(Pod.spec.containers[0]): unknown field "imagee" in '
                    "io.k8s.api.core.v1.Container") in bad.stderr
        else:  # checked by the server (fieldValidation=Strict)
            assert 'strict decoding error: unknown field "spec.containers[0].imagee"' in bad.stderr
    gone = await cluster.kubectl("get", "pod", "typo", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


async def test_a_list_with_a_misspelt_field_is_refused_before_anything_is_made(
    cluster: Cluster, kubectl: Kubectl, tmp_path: Path,
) -> None:
    typo = _write(tmp_path, "list.yaml", LIST.replace("    - name: http\n", "    - namee: http\n"))
    bad = await cluster.kubectl("apply", "-f", typo, binary=kubectl.path, check=False)
    assert bad.returncode != 0
    # Every kubectl checks a List on the client, against /openapi/v2.
    assert ('ValidationError(Service.spec.ports[0]): unknown field "namee" in '
            "io.k8s.api.core.v1.ServicePort") in bad.stderr
    for kind in ("deploy", "svc"):
        gone = await cluster.kubectl("get", kind, "web", check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr


async def test_a_typed_list_file_is_checked_and_applied(cluster: Cluster, kubectl: Kubectl, tmp_path: Path) -> None:
    """A ``kind: PodList`` has a schema but no PATCH operation: kubectl asks for CRDs, then checks it itself."""
    pods = "apiVersion: v1\nkind: PodList\nitems:\n" + "".join(
        "- " + "\n  ".join(POD.format(name=name, extra="").rstrip().splitlines()) + "\n" for name in ("p1", "p2"))
    bad = await cluster.kubectl("apply", "-f", _write(tmp_path, "typo.yaml", pods.replace("image:", "imagee:", 1)),
                                binary=kubectl.path, check=False)
    assert bad.returncode != 0
    assert ('ValidationError(PodList.items[0].spec.containers[0]): unknown field "imagee" in '
            "io.k8s.api.core.v1.Container") in bad.stderr
    out = await cluster.kubectl("apply", "-f", _write(tmp_path, "pods.yaml", pods), binary=kubectl.path)
    assert "pod/p1 created" in out.stdout and "pod/p2 created" in out.stdout


async def test_explain_pod_containers_ports(cluster: Cluster, kubectl: Kubectl) -> None:
    out = (await cluster.kubectl("explain", "pod.spec.containers.ports", binary=kubectl.path)).stdout
    assert "KIND:" in out and "Pod" in out
    assert "containerPort\t<integer> -required-" in out and "protocol\t<string>" in out
    out = (await cluster.kubectl("explain", "service.spec.ports.targetPort", binary=kubectl.path)).stdout
    assert "targetPort" in out
    bad = await cluster.kubectl("explain", "pod.spec.nope", binary=kubectl.path, check=False)
    assert bad.returncode != 0 and "nope" in bad.stderr


async def test_apply_drops_what_the_manifest_no_longer_has(cluster: Cluster, kubectl: Kubectl, tmp_path: Path) -> None:
    """kubectl computes the patch from the schema's merge keys; the server must merge it the same way."""
    await cluster.kubectl("apply", "-f", _write(tmp_path, "two.yaml", TWO_CONTAINERS), binary=kubectl.path)
    one = TWO_CONTAINERS.replace('        - {name: DROP, value: "2"}\n', "").replace(
        "      - name: b\n        image: kmesh/echo\n", "")
    await cluster.kubectl("apply", "-f", _write(tmp_path, "one.yaml", one), binary=kubectl.path)
    dep = json.loads((await cluster.kubectl("get", "deploy", "two", "-o", "json")).stdout)
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["a"]
    assert containers[0]["env"] == [{"name": "KEEP", "value": "1"}]
