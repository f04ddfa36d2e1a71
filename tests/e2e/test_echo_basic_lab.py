"""The Gateway API conformance backends in a netns lab, applied with kubectl as the conformance base manifests
write them: echo-basic Deployments behind Services, one serving HTTPS from a Secret volume; asked with curl from
a pod and with an h11 client from a socket in the pod's namespace."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import h11
import pytest

from kmesh.lab.topology import LabNames
from kmesh.net import netns
from tests.e2e.labdriver import AGNHOST, Lab, running_lab
from tests.node.test_volumes import server_cert
from tests.support.certs import CA

pytestmark = [pytest.mark.netns, pytest.mark.slow]

NS = "gateway-conformance-infra"
IMAGE = "registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0"


def backend(name: str, replicas: int, *, tls_secret: str = "") -> str:
    """A Service + Deployment of echo-basic shaped like the conformance base manifests' backends."""
    if tls_secret:
        ports = "  - {protocol: TCP, port: 443, targetPort: 8443}\n"
    else:
        ports = ("  - {name: first-port, protocol: TCP, port: 8080, targetPort: 3000}\n"
                 "  - {name: second-port, protocol: TCP, appProtocol: kubernetes.io/h2c, port: 8081, targetPort: 3001}\n")
    tls_env = mounts = volumes = ""
    if tls_secret:
        tls_env = """
        - {name: TLS_SERVER_CERT, value: /etc/secret-volume/crt}
        - {name: TLS_SERVER_PRIVKEY, value: /etc/secret-volume/key}"""
        mounts = "\n        volumeMounts: [{name: secret-volume, mountPath: /etc/secret-volume}]"
        volumes = f"""
      volumes:
      - name: secret-volume
        secret:
          secretName: {tls_secret}
          items: [{{key: tls.crt, path: crt}}, {{key: tls.key, path: key}}]"""
    return f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {NS}}}
spec:
  selector: {{app: {name}}}
  ports:
{ports}---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {NS}, labels: {{app: {name}}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: {name}
        image: {IMAGE}{mounts}
        env:
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
        - name: NAMESPACE
          valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}{tls_env}
        resources: {{requests: {{cpu: 10m}}}}{volumes}
"""


CLIENT = f"""---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: default}}
spec:
  containers:
  - {{name: c, image: {AGNHOST}, args: [pause]}}
"""


def tls_secret_yaml(lab: Lab, name: str, crt: Path, key: Path) -> str:
    """``kubectl create secret tls`` rendered client-side (to create or to apply over an existing one)."""
    return lab.kubectl("create", "secret", "tls", name, "-n", NS, f"--cert={crt}", f"--key={key}",
                       "--dry-run=client", "-o", "yaml")


def write_cert(d: Path, tag: str) -> tuple[Path, Path, Path]:
    """A CA and a serving certificate for abc.example.com: (ca.crt, tls.crt, tls.key)."""
    ca = CA.new(f"echo-{tag}")
    crt, key = server_cert(ca, "abc.example.com")
    paths = d / f"{tag}-ca.crt", d / f"{tag}.crt", d / f"{tag}.key"
    for p, data in zip(paths, (ca.pem(), crt, key)):
        p.write_bytes(data)
    return paths


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("echo-basic")
    with running_lab(root, LabNames(f"kmeb{uuid.uuid4().hex[:4]}"), "iptables", nodes=1) as lab:
        lab.kubectl("create", "namespace", NS)
        ca, crt, key = write_cert(root, "first")
        lab.kubectl("apply", "-f", "-", stdin=tls_secret_yaml(lab, "tls-checks-certificate", crt, key))
        lab.kubectl("apply", "-f", "-", stdin=backend("infra-backend-v1", 2) + backend(
            "tls-backend", 1, tls_secret="tls-checks-certificate") + CLIENT)
        lab.kubectl("wait", "--for=condition=Available", "deployment", "--all", "-n", NS, "--timeout=120s")
        lab.kubectl("wait", "--for=condition=Ready", "pod/client", "--timeout=90s")
        yield lab


def curl_in(lab: Lab, *args: str) -> tuple[str, dict[str, str]]:
    """curl from the client pod: (body, response headers by lower-case name). A new Service answers once the
    node's proxy has programmed it: until then connections are retried."""
    out = lab.exec("client", "curl -sS --connect-timeout 2 --retry 30 --retry-connrefused --retry-delay 1 -D /tmp/kmeb-headers-$$ -o /tmp/kmeb-body-$$ "
                   + " ".join(f"'{a}'" for a in args) + " 2>/tmp/kmeb-err-$$"
                   + "; cat /tmp/kmeb-headers-$$ /tmp/kmeb-err-$$; echo ===; cat /tmp/kmeb-body-$$; rm -f /tmp/kmeb-*-$$")
    head, _, body = out.partition("===\n")
    headers = {}
    for line in head.splitlines()[1:]:
        name, _, value = line.partition(":")
        if value:
            headers[name.strip().lower()] = value.strip()
    return body, headers


def test_echo_through_the_service_from_a_pod(lab: Lab) -> None:
    names = {p["metadata"]["name"] for p in
             json.loads(lab.kubectl("get", "pods", "-n", NS, "-l", "app=infra-backend-v1", "-o", "json"))["items"]}
    url = f"http://infra-backend-v1.{NS}.svc.cluster.local:8080/conformance?x=1"
    body, headers = curl_in(lab, url, "-H", "X-Echo-Set-Header: X-Answer: yes")
    doc = json.loads(body)
    assert doc["pod"] in names and doc["namespace"] == NS and doc["proto"] == "HTTP/1.1"
    assert doc["path"] == "/conformance?x=1" and doc["host"] == f"infra-backend-v1.{NS}.svc.cluster.local:8080"
    assert doc["headers"]["X-Echo-Set-Header"] == ["X-Answer: yes"] and headers["x-answer"] == "yes"
    # The h2c port behind the Service's second port (appProtocol kubernetes.io/h2c).
    body, _ = curl_in(lab, "--http2-prior-knowledge", f"http://infra-backend-v1.{NS}:8081/h2c")
    assert json.loads(body)["proto"] == "HTTP/2.0"


def test_h11_client_in_the_pod_namespace(lab: Lab) -> None:
    """Exact header lines on the wire, from a socket the test opens inside the client pod's namespace."""
    pods = json.loads(lab.kubectl("get", "pods", "-n", NS, "-l", "app=infra-backend-v1", "-o", "json"))["items"]
    target_ip = pods[0]["status"]["podIP"]
    client = json.loads(lab.kubectl("get", "pod", "client", "-o", "json"))
    ns_name = lab.names.pod(client["spec"]["nodeName"], "client", client["metadata"]["uid"])
    sock = netns.socket_in(ns_name)
    sock.settimeout(10)
    try:
        sock.connect((target_ip, 3000))
        conn = h11.Connection(h11.CLIENT)
        sock.sendall(conn.send(h11.Request(method="GET", target="/h11", headers=[
            ("Host", "h11.example"), ("x-lower", "1"), ("X-Lower", "2")])) + conn.send(h11.EndOfMessage()))
        body = b""
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(ev, h11.Response):
                assert ev.status_code == 200 and ev.reason == b"OK"
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                break
    finally:
        sock.close()
    doc = json.loads(body)
    assert doc["host"] == "h11.example" and doc["headers"]["X-Lower"] == ["1", "2"]
    assert doc["pod"] == pods[0]["metadata"]["name"]


def test_https_from_the_secret_volume_with_sni_and_rotation(lab: Lab) -> None:
    root = lab.dd.root
    vip = lab.kubectl("get", "svc", "tls-backend", "-n", NS, "-o", "jsonpath={.spec.clusterIP}")
    body, _ = curl_in(lab, "--cacert", str(root / "first-ca.crt"), "--resolve", f"abc.example.com:443:{vip}",
                      "https://abc.example.com/tls")
    doc = json.loads(body)
    assert doc["tls"]["serverName"] == "abc.example.com" and doc["tls"]["negotiatedProtocol"] == "h2"
    assert doc["pod"].startswith("tls-backend-") and doc["proto"] == "HTTP/2.0"

    # A new certificate reaches the volume on the node; echo-basic reads it when it starts (as upstream's does).
    pod = json.loads(lab.kubectl("get", "pods", "-n", NS, "-l", "app=tls-backend", "-o", "json"))["items"][0]
    ca2, crt2, key2 = write_cert(root, "second")
    lab.kubectl("apply", "-f", "-", stdin=tls_secret_yaml(lab, "tls-checks-certificate", crt2, key2))
    on_disk = list(root.rglob(f"volumes/{pod['metadata']['uid']}/kubernetes.io~secret/secret-volume/crt"))
    assert len(on_disk) == 1
    want = crt2.read_bytes()
    subprocess.run(["timeout", "30", "sh", "-c", f"until cmp -s {on_disk[0]} {crt2}; do sleep 0.1; done"], check=True)
    assert on_disk[0].read_bytes() == want
    lab.kubectl("rollout", "restart", "deployment/tls-backend", "-n", NS)
    lab.kubectl("rollout", "status", "deployment/tls-backend", "-n", NS, "--timeout=90s")
    body, _ = curl_in(lab, "--cacert", str(ca2), "--resolve", f"abc.example.com:443:{vip}", "https://abc.example.com/")
    assert json.loads(body)["tls"]["serverName"] == "abc.example.com"


def test_missing_secret_holds_the_pod_until_created(lab: Lab) -> None:
    root = lab.dd.root
    lab.kubectl("apply", "-f", "-", stdin=backend("tls-backend-2", 1, tls_secret="tls-later"))
    subprocess.run(["timeout", "60", "sh", "-c",
                    f"until KUBECONFIG={lab.dd.kubeconfig} kubectl get events -n {NS} --field-selector reason=FailedMount "
                    f"-o name | grep -q .; do sleep 0.2; done"], check=True)
    events = json.loads(lab.kubectl("get", "events", "-n", NS, "--field-selector", "reason=FailedMount", "-o", "json"))
    assert any('secret "tls-later" not found' in e["message"] and e["type"] == "Warning" for e in events["items"])
    pods = json.loads(lab.kubectl("get", "pods", "-n", NS, "-l", "app=tls-backend-2", "-o", "json"))["items"]
    waiting = pods[0]["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "ContainerCreating"
    _, crt, key = write_cert(root, "later")
    lab.kubectl("apply", "-f", "-", stdin=tls_secret_yaml(lab, "tls-later", crt, key))
    lab.kubectl("wait", "--for=condition=Available", "deployment/tls-backend-2", "-n", NS, "--timeout=90s")
