"""The service mesh in a netns lab, as a user drives it: injection, the redirect rules, the sidecar's path.

One lab (iptables mode, two nodes, no ingress/gateway add-ons) for the module. Namespace ``mesh`` is
annotated ``kmesh.io/inject: enabled``; in it a Deployment ``v1`` (agnhost netexec, two replicas) and a
client pod; in ``default`` an un-meshed client. What is checked:
- the injected init container and native sidecar, in ``kubectl get pod -o json`` and the init container's log;
- ``kmesh proxy rules --pod`` shows the KMESH_ chains of istio-init's shape;
- requests on ONE keep-alive connection from the meshed client to the Service reach both replicas (the
  sidecar balances per request; kube-proxy alone would pin the connection to one pod);
- a request to a pod IP goes to that pod (the original destination, passed through);
- an un-meshed client still reaches the meshed pods (permissive), through their inbound sidecar;
- a Service port named neither http nor tcp is recognised as HTTP by its first bytes;
- between sidecars the bytes on the wire are TLS records, never the HTTP inside (a capture on the server
  pod's eth0); the mesh CA's certificates carry the pods' SPIFFE identities and are renewed (the lab caps
  their lifetime at CERT_TTL seconds) with no failed request while they turn over;
- a namespace annotated ``kmesh.io/mtls: strict`` refuses the un-meshed client, still serves the meshed
  one, and its pods stay Ready (the kubelet's probes come from the node, which strict mode lets in).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from kmesh.lab.topology import LabNames
from tests.e2e.labdriver import AGNHOST, KMESH, Lab, running_lab

pytestmark = [pytest.mark.netns, pytest.mark.slow]

CERT_TTL = 10  # seconds: the mesh CA's cap on certificate lifetimes in this lab (renewed at half of it)

MANIFESTS = f"""
apiVersion: v1
kind: Namespace
metadata:
  name: mesh
  annotations: {{kmesh.io/inject: enabled}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: v1, namespace: mesh}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: v1}}}}
  template:
    metadata: {{labels: {{app: v1}}}}
    spec:
      containers:
      - name: main
        image: {AGNHOST}
        args: [netexec, --http-port=8080, --udp-port=-1]
        ports: [{{containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: v1, namespace: mesh}}
spec:
  selector: {{app: v1}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: v1-undeclared, namespace: mesh}}
spec:
  selector: {{app: v1}}
  ports: [{{name: web, port: 8000, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: mesh, labels: {{app: client}}}}
spec:
  nodeName: node-1
  containers:
  - {{name: c, image: {AGNHOST}, args: [pause]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: outsider, namespace: default, labels: {{app: outsider}}}}
spec:
  nodeName: node-2
  containers:
  - {{name: c, image: {AGNHOST}, args: [pause]}}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("mesh-lab")
    names = LabNames(f"km{uuid.uuid4().hex[:4]}")
    with running_lab(Path(root), names, "iptables", nodes=2,
                     flags=["--disable", "ingress,gateway", "--mesh-cert-ttl", str(CERT_TTL)]) as lab:
        lab.kubectl("apply", "-f", "-", stdin=MANIFESTS)
        lab.kubectl("-n", "mesh", "wait", "--for=condition=Ready", "pod", "-l", "app=v1", "--timeout=120s")
        for ns, pod in (("mesh", "client"), ("default", "outsider")):
            lab.kubectl("-n", ns, "wait", "--for=condition=Ready", f"pod/{pod}", "--timeout=120s")
        yield lab


def _exec(lab: Lab, namespace: str, pod: str, script: str) -> str:
    out = lab.kmesh("exec", "-n", namespace, pod, "--", "sh", "-c", script)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _rules(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KMESH, "proxy", "rules", "--data-dir", str(lab.dd.root), *args], capture_output=True,
                          text=True, timeout=60)


def _pods(lab: Lab, namespace: str, selector: str) -> list[dict]:
    return json.loads(lab.kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "json"))["items"]


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_pods_of_an_annotated_namespace_get_the_sidecar(lab: Lab) -> None:
    for pod in _pods(lab, "mesh", "app=v1") + _pods(lab, "mesh", "app=client"):
        inits = pod["spec"]["initContainers"]
        assert [c["name"] for c in inits[:2]] == ["kmesh-init", "kmesh-proxy"]
        assert inits[0]["image"] == "kmesh/proxy-init" and inits[1]["image"] == "kmesh/proxy"
        assert inits[1]["restartPolicy"] == "Always"  # a native sidecar: it runs beside the app
        assert pod["metadata"]["labels"]["security.kmesh.io/tlsMode"] == "kmesh"
        states = {s["name"]: s for s in pod["status"]["initContainerStatuses"]}
        assert states["kmesh-init"]["state"]["terminated"]["exitCode"] == 0
        assert states["kmesh-proxy"]["ready"] is True
    outsider = _pods(lab, "default", "app=outsider")[0]
    assert not outsider["spec"].get("initContainers")
    log = lab.kubectl("-n", "mesh", "logs", "client", "-c", "kmesh-init")
    assert "-A KMESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in log


def test_proxy_rules_show_the_redirect(lab: Lab) -> None:
    out = _rules(lab, "--pod", "client", "-n", "mesh")
    assert out.returncode == 0, out.stderr
    for line in ("-A PREROUTING -p tcp -j KMESH_INBOUND", "-A OUTPUT -p tcp -j KMESH_OUTPUT",
                 "-A KMESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
                 "-A KMESH_OUTPUT -m mark --mark 0x539 -j RETURN"):
        assert line in out.stdout
    plain = _rules(lab, "--pod", "outsider")
    assert plain.returncode != 0 and "not meshed" in plain.stderr


def _answers(lab: Lab, url: str, n: int = 12) -> list[tuple[str, int]]:
    """(hostname, new connections) of ``n`` GETs of ``url`` by one curl in the meshed client (curl keeps one
    connection for one host: without a sidecar every answer would come from the same pod)."""
    out = _exec(lab, "mesh", "client", f"curl -s --max-time 10 -w ' %{{num_connects}}\\n' {' '.join([url] * n)}")
    answers = [(name, int(connects)) for name, connects in (line.split() for line in out.splitlines())]
    assert len(answers) == n and sum(c for _, c in answers) == 1, out  # one TCP connection for all
    return answers


def test_one_connection_is_balanced_per_request(lab: Lab) -> None:
    answers = _answers(lab, "http://v1.mesh/hostname")
    assert {name for name, _ in answers} == {p["metadata"]["name"] for p in _pods(lab, "mesh", "app=v1")}
    metrics = _exec(lab, "mesh", "client", "curl -s http://127.0.0.1:15020/metrics")
    assert _metric(metrics, "kmesh_proxy_tcp_connections_opened_total", direction="outbound", mode="http", tls="true") >= 1


def test_a_pod_ip_is_passed_through(lab: Lab) -> None:
    for pod in _pods(lab, "mesh", "app=v1"):
        ip = pod["status"]["podIP"]
        out = _exec(lab, "mesh", "client", f"curl -s --max-time 10 http://{ip}:8080/hostname")
        assert out == pod["metadata"]["name"]


def test_an_unmeshed_client_reaches_meshed_pods(lab: Lab) -> None:
    pods = _pods(lab, "mesh", "app=v1")
    before = {p["metadata"]["name"]: _metric(_exec(lab, "mesh", p["metadata"]["name"],
                                                   "curl -s http://127.0.0.1:15020/metrics"),
                                             "kmesh_proxy_tcp_connections_opened_total", direction="inbound")
              for p in pods}
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while seen != set(before) and time.monotonic() < deadline:  # kube-proxy picks per connection: try until both
        seen.add(_exec(lab, "default", "outsider", "curl -s --max-time 10 http://v1.mesh/hostname"))
    assert seen == set(before)
    for name, count in before.items():
        after = _metric(_exec(lab, "mesh", name, "curl -s http://127.0.0.1:15020/metrics"),
                        "kmesh_proxy_tcp_connections_opened_total", direction="inbound")
        assert after > count  # it came in through the pod's sidecar


def test_http_is_recognised_by_its_first_bytes(lab: Lab) -> None:
    answers = _answers(lab, "http://v1-undeclared.mesh:8000/hostname")  # port "web": neither http nor tcp
    assert {name for name, _ in answers} == {p["metadata"]["name"] for p in _pods(lab, "mesh", "app=v1")}


def test_between_sidecars_the_wire_carries_tls_only(lab: Lab, tmp_path: Path) -> None:
    from scapy.layers.inet import TCP

    from tests.packet.test_capture_lab import finish, read, start

    server = _pods(lab, "mesh", "app=v1")[0]
    client_ip = _pods(lab, "mesh", "app=client")[0]["status"]["podIP"]
    pcap = tmp_path / "mesh.pcapng"
    # The client's traffic only: the kubelet's readiness probes come from the node, in plaintext, as upstream.
    proc = start(lab, f"mesh/{server['metadata']['name']}", "-w", str(pcap), "--duration", "4",
                 "--filter", f"tcp port 8080 and host {client_ip}")
    _answers(lab, "http://v1.mesh/hostname", n=20)
    finish(proc)
    payloads = [bytes(p[TCP].payload) for p in read(pcap)[0] if TCP in p and len(p[TCP].payload)]
    assert payloads, "no request reached the server pod"
    assert any(p[:3] == b"\x17\x03\x03" for p in payloads)  # TLS application data records
    assert not any(b"GET /hostname" in p or b"HTTP/1.1 200" in p for p in payloads)


def test_certificates_name_the_pods_identity_and_turn_over_without_failures(lab: Lab) -> None:
    from cryptography import x509

    pem = lab.kubectl("-n", "mesh", "get", "configmap", "kmesh-root-ca.crt", "-o", "jsonpath={.data.root-cert\\.pem}")
    root = x509.load_pem_x509_certificate(pem.encode())
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    log = lab.kubectl("-n", "mesh", "logs", "client", "-c", "kmesh-proxy")
    assert "identity spiffe://cluster.local/ns/mesh/sa/default" in log
    before = _metric(_exec(lab, "mesh", "client", "curl -s http://127.0.0.1:15020/metrics"),
                     "kmesh_proxy_certificate_renewals_total")
    # Requests for longer than a certificate lives: every one must succeed while certificates turn over.
    script = (f"end=$(( $(date +%s) + {CERT_TTL + 4} )); n=0; "
              "while [ $(date +%s) -lt $end ]; do curl -sf --max-time 5 http://v1.mesh/hostname >/dev/null "
              "|| { echo FAIL; exit 1; }; n=$((n+1)); done; echo ok $n")
    out = _exec(lab, "mesh", "client", script)
    assert out.startswith("ok "), out
    after = _metric(_exec(lab, "mesh", "client", "curl -s http://127.0.0.1:15020/metrics"),
                    "kmesh_proxy_certificate_renewals_total")
    assert after >= before + 1


def test_strict_mode_refuses_plaintext_but_not_the_mesh(lab: Lab) -> None:
    lab.kubectl("annotate", "namespace", "mesh", "kmesh.io/mtls=strict", "--overwrite")
    try:
        deadline = time.monotonic() + 30
        while True:  # every sidecar learns the annotation from its watch: wait until the outsider is refused
            out = lab.kmesh("exec", "-n", "default", "outsider", "--", "curl", "-s", "--max-time", "5",
                            "http://v1.mesh/hostname")
            if out.returncode != 0:
                break
            assert time.monotonic() < deadline, "plaintext still accepted in strict mode"
        for _ in range(5):  # kube-proxy picks a pod per connection: every one must refuse
            out = lab.kmesh("exec", "-n", "default", "outsider", "--", "curl", "-s", "--max-time", "5",
                            "http://v1.mesh/hostname")
            assert out.returncode != 0, out.stdout
        _answers(lab, "http://v1.mesh/hostname")  # the meshed client still gets through, over mTLS
        lab.kubectl("-n", "mesh", "wait", "--for=condition=Ready", "pod", "-l", "app=v1", "--timeout=30s")
    finally:
        lab.kubectl("annotate", "namespace", "mesh", "kmesh.io/mtls-")


def test_disable_sends_plaintext_between_sidecars(lab: Lab) -> None:
    """``kmesh.io/mtls=disable`` on the server's namespace: the client's sidecar stops originating TLS (its
    pooled TLS connections are not reused), requests still go through both sidecars."""
    def outbound_plain() -> float:
        metrics = _exec(lab, "mesh", "client", "curl -s http://127.0.0.1:15020/metrics")
        return _metric(metrics, "kmesh_requests_total", direction="outbound", destination_workload="v1", tls="false")

    before = outbound_plain()
    lab.kubectl("annotate", "namespace", "mesh", "kmesh.io/mtls=disable", "--overwrite")
    try:
        deadline = time.monotonic() + 30
        while outbound_plain() == before:  # the sidecar learns the annotation from its watch
            _answers(lab, "http://v1.mesh/hostname", n=4)
            assert time.monotonic() < deadline, "the client's sidecar still sends mTLS"
        n = outbound_plain()
        _answers(lab, "http://v1.mesh/hostname", n=8)
        assert outbound_plain() == n + 8  # every request now plaintext, still balanced over both pods
    finally:
        lab.kubectl("annotate", "namespace", "mesh", "kmesh.io/mtls-")


def test_stat_agrees_with_what_the_client_counted(lab: Lab) -> None:
    from kmesh.lab.meshstat import stat_rows

    info = lab.dd.read_cluster()

    def v1() -> dict:
        rows = [r for r in stat_rows(info, "svc", "mesh") if r["name"] == "v1"]
        return rows[0] if rows else {"requests": 0, "success": 1.0}

    before = v1()
    script = ("for i in $(seq 40); do curl -s -o /dev/null -w '%{http_code}\\n' http://v1.mesh/hostname; done; "
              "for i in $(seq 10); do curl -s -o /dev/null -w '%{http_code}\\n' 'http://v1.mesh/echo?code=503'; done")
    codes = _exec(lab, "mesh", "client", script).split()
    assert codes.count("200") == 40 and codes.count("503") == 10
    after = v1()
    assert after["requests"] - before["requests"] == 50  # exactly what the client sent
    failed = round(after["requests"] * (1 - after["success"])) - round(before["requests"] * (1 - before["success"]))
    assert failed == 10
    assert after["latency_p99_ms"] is not None and after["latency_p50_ms"] <= after["latency_p99_ms"]
    deploy = {r["name"]: r for r in stat_rows(info, "deploy", "mesh")}
    assert deploy["v1"]["meshed"] == 2 and deploy["v1"]["requests"] >= after["requests"]  # + the probes, inbound


def test_tap_streams_requests_as_they_happen(lab: Lab) -> None:
    import threading

    proc = subprocess.Popen([*KMESH, "mesh", "tap", "--data-dir", str(lab.dd.root), "deploy/v1", "-n", "mesh",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 30
        seen: list[dict] = []
        while len(seen) < 3:  # the tap connects while we send: send until three marked requests were streamed
            assert time.monotonic() < deadline, f"tap showed no marked request: {lines[-5:]}"
            _exec(lab, "mesh", "client", "curl -s -o /dev/null 'http://v1.mesh/echo?msg=tap-marker'")
            seen = [e for e in map(json.loads, list(lines)) if "tap-marker" in e["path"]]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr.read()  # type: ignore[union-attr]
    event = seen[0]
    assert event["direction"] == "inbound" and event["method"] == "GET" and event["status"] == 200
    assert event["tls"] is True and event["source"]["workload"] == "client"
    assert event["destination"]["workload"] == "v1" and event["latency_ms"] > 0
