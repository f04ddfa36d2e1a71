"""Secret, ConfigMap and downwardAPI volumes on the sim runtime: files on the node, updates, FailedMount, HTTPS
from a Secret volume through echo-basic."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import trio

from kmesh.client.informer import Informer
from kmesh.node.mounts import Mount, container_mounts, host_path
from kmesh.node.podvolumes import pod_volumes_dir
from kmesh.node.volumefiles import read_current, write_atomic
from tests.node.conftest import agnhost, cstatus, create_bound, pod, running_ready, wait_pod
from tests.node.test_echo_basic import curl, echo_container
from tests.support.certs import CA


def b64(data: bytes | str) -> str:
    """Base64 of a Secret's ``data`` value."""
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def secret(name: str, data: dict[str, bytes | str], ns: str = "default", **kw: object) -> dict[str, object]:
    """A Secret manifest."""
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
            "data": {k: b64(v) for k, v in data.items()}, **kw}


async def wait_content(path: Path, want: bytes, timeout: float = 10) -> None:
    """Wait until the agent has written ``want`` to ``path`` (a file change has no event to await)."""
    with trio.fail_after(timeout):
        while not (path.exists() and path.read_bytes() == want):
            await trio.sleep(0.02)


def volume_dir(node_dir: Path, p: dict, plugin: str, vol: str) -> Path:
    """Where the node keeps one volume of a pod."""
    return pod_volumes_dir(node_dir, p["metadata"]["uid"]) / plugin / vol


def test_atomic_writer_swaps_the_whole_set(tmp_path: Path) -> None:
    d = tmp_path / "vol"
    assert write_atomic(d, {"a": (b"1", 0o644), "sub/b": (b"2", 0o400)})
    assert (d / "a").read_bytes() == b"1" and (d / "sub" / "b").read_bytes() == b"2"
    assert os.readlink(d / "a") == "..data/a" and (d / "..data").is_symlink()
    assert (d / "sub" / "b").stat().st_mode & 0o777 == 0o400
    first = os.readlink(d / "..data")
    assert not write_atomic(d, {"a": (b"1", 0o644), "sub/b": (b"2", 0o400)})  # unchanged: nothing written
    assert write_atomic(d, {"a": (b"new", 0o644)})
    assert (d / "a").read_bytes() == b"new" and not (d / "sub").exists()
    assert not (d / first).exists() and read_current(d) == {"a": (b"new", 0o644)}


async def test_host_path_volume_is_the_machine_path(tmp_path: Path) -> None:
    from kmesh.node.podvolumes import PodVolumes

    pv = PodVolumes({"metadata": {"uid": "u1", "namespace": "default"},
                     "spec": {"volumes": [{"name": "h", "hostPath": {"path": str(tmp_path / "shared")}}]}}, tmp_path / "node", None)
    await pv.mount()
    assert pv.dirs == {"h": tmp_path / "shared"} and not (tmp_path / "shared").exists()
    mounts = container_mounts({"volumeMounts": [{"name": "h", "mountPath": "/data"}]}, pv.dirs)
    assert host_path(mounts, "/data/x") == tmp_path / "shared" / "x"
    pv.remove()
    assert not (tmp_path / "node" / "volumes" / "u1").exists()


def test_container_paths_map_through_mounts(tmp_path: Path) -> None:
    c = {"volumeMounts": [{"name": "s", "mountPath": "/etc/secret-volume"}, {"name": "c", "mountPath": "/etc/secret-volume/x/"},
                          {"name": "f", "mountPath": "/app/conf.yaml", "subPath": "conf.yaml"}, {"name": "none", "mountPath": "/n"}]}
    mounts = container_mounts(c, {"s": tmp_path / "s", "c": tmp_path / "c", "f": tmp_path / "f"})
    assert Mount("/etc/secret-volume", tmp_path / "s") in mounts and len(mounts) == 3
    assert host_path(mounts, "/etc/secret-volume/crt") == tmp_path / "s" / "crt"
    assert host_path(mounts, "/etc/secret-volume/x/y") == tmp_path / "c" / "y"  # the longest mountPath wins
    assert host_path(mounts, "/etc/secret-volume/../passwd") == Path("/etc/passwd")  # no mount holds it
    assert host_path(mounts, "/app/conf.yaml") == tmp_path / "f" / "conf.yaml"
    assert host_path(mounts, "/etc/secret-volume-2/a") == Path("/etc/secret-volume-2/a")


async def test_secret_and_configmap_volumes_on_disk_and_updated(api, node1, pods, tmp_path) -> None:
    node_dir = node1.agent.cfg.data_dir
    await api.client.create(secret("creds", {"user": "admin", "pass": "s3cret"}))
    await api.client.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "conf", "namespace": "default"},
                             "data": {"app.conf": "x=1\n", "other": "o"}})
    volumes = [
        {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400,
                                     "items": [{"key": "pass", "path": "db/password", "mode": 0o600}]}},
        {"name": "conf", "configMap": {"name": "conf"}},
        {"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
        {"name": "scratch", "emptyDir": {}},
    ]
    c = agnhost("app", "pause", volumeMounts=[{"name": "creds", "mountPath": "/etc/creds"}])
    await create_bound(api.client, pod("vols", c, volumes=volumes))
    p = await wait_pod(pods, "vols", running_ready)
    creds = volume_dir(node_dir, p, "kubernetes.io~secret", "creds")
    assert (creds / "db" / "password").read_bytes() == b"s3cret"
    assert (creds / "db" / "password").stat().st_mode & 0o777 == 0o600 and not (creds / "user").exists()
    conf = volume_dir(node_dir, p, "kubernetes.io~configmap", "conf")
    assert (conf / "app.conf").read_text() == "x=1\n" and (conf / "other").stat().st_mode & 0o777 == 0o644
    assert (volume_dir(node_dir, p, "kubernetes.io~downward-api", "info") / "name").read_text() == "vols"
    assert volume_dir(node_dir, p, "kubernetes.io~empty-dir", "scratch").is_dir()

    # Updates reach the running pod's volume.
    s = await api.client.get("Secret", "creds", "default")
    s["data"]["pass"] = b64("rotated")
    await api.client.update(s)
    await wait_content(creds / "db" / "password", b"rotated")
    await api.client.patch("ConfigMap", "conf", {"data": {"app.conf": "x=2\n"}}, "default")
    await wait_content(conf / "app.conf", b"x=2\n")

    # Deleting the pod removes its volumes.
    await api.client.delete("Pod", "vols", "default", grace_period=1)
    with trio.fail_after(15):
        await pods.wait_for(lambda i: i.get("vols", "default") is None)
    assert not pod_volumes_dir(node_dir, p["metadata"]["uid"]).exists()


async def test_missing_secret_fails_mount_until_created(api, node1, pods, nursery) -> None:
    events = Informer(api.client, "Event", namespace="default")
    await nursery.start(events.run)
    vol = {"name": "secret-volume", "secret": {"secretName": "later"}}
    optional = {"name": "maybe", "secret": {"secretName": "never", "optional": True}}
    await create_bound(api.client, pod("waits", agnhost("app", "pause"), volumes=[vol, optional]))

    def failed_mount(i: Informer) -> bool:
        return any(e.get("reason") == "FailedMount" and e["involvedObject"]["name"] == "waits" for e in i.list())

    with trio.fail_after(15):
        await events.wait_for(failed_mount)
    ev = next(e for e in events.list() if e.get("reason") == "FailedMount")
    assert ev["type"] == "Warning"
    assert ev["message"] == 'MountVolume.SetUp failed for volume "secret-volume" : secret "later" not found'
    p = await wait_pod(pods, "waits", lambda p: bool(cstatus(p, "app")))
    assert cstatus(p, "app")["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert p["status"]["phase"] == "Pending" and not p["status"].get("podIP")

    await api.client.create(secret("later", {"k": "v"}))
    p = await wait_pod(pods, "waits", running_ready)
    node_dir = node1.agent.cfg.data_dir
    assert (volume_dir(node_dir, p, "kubernetes.io~secret", "secret-volume") / "k").read_text() == "v"
    maybe = volume_dir(node_dir, p, "kubernetes.io~secret", "maybe")
    assert [e.name for e in maybe.iterdir() if not e.name.startswith("..")] == []  # optional and missing: empty


async def test_echo_basic_serves_https_from_a_secret_volume_with_sni(api, node1, pods, tmp_path) -> None:
    ca = CA.new("echo-test-ca")
    crt, key = server_cert(ca, "abc.example.com")
    await api.client.create(secret("tls-checks-certificate", {"tls.crt": crt, "tls.key": key},
                                   type="kubernetes.io/tls"))
    await api.client.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "client-ca", "namespace": "default"},
                             "data": {"ca.crt": ca.pem().decode()}})
    env = [{"name": "TLS_SERVER_CERT", "value": "/etc/secret-volume/crt"},
           {"name": "TLS_SERVER_PRIVKEY", "value": "/etc/secret-volume/key"},
           {"name": "TLS_CLIENT_CACERTS", "value": "/etc/client-ca/ca.crt"}]
    c = echo_container("tls-backend", env=env, volumeMounts=[{"name": "secret-volume", "mountPath": "/etc/secret-volume"},
                                                             {"name": "ca", "mountPath": "/etc/client-ca", "readOnly": True}])
    vol = {"name": "secret-volume", "secret": {"secretName": "tls-checks-certificate",
                                               "items": [{"key": "tls.crt", "path": "crt"}, {"key": "tls.key", "path": "key"}]}}
    await create_bound(api.client, pod("tls-backend", c, volumes=[vol, {"name": "ca", "configMap": {"name": "client-ca"}}]))
    p = await wait_pod(pods, "tls-backend", running_ready)
    ip = p["status"]["podIP"]
    (tmp_path / "ca.crt").write_bytes(ca.pem())
    base = ["--cacert", str(tmp_path / "ca.crt"), "--resolve", f"abc.example.com:8443:{ip}"]

    code, body, head = await curl(*base, "https://abc.example.com:8443/tls?x=1")
    assert code == 0, head
    doc = json.loads(body)
    assert doc["proto"] == "HTTP/2.0" and doc["host"] == "abc.example.com:8443" and doc["pod"] == "tls-backend"
    tls = doc["tls"]
    assert tls["serverName"] == "abc.example.com" and tls["negotiatedProtocol"] == "h2"
    assert tls["version"] in ("TLSv1.2", "TLSv1.3") and tls["cipherSuite"].startswith("TLS_")
    assert "peerCertificates" not in tls

    code, body, head = await curl(*base, "--http1.1", "--tlsv1.2", "--tls-max", "1.2", "https://abc.example.com:8443/")
    doc = json.loads(body)
    assert doc["proto"] == "HTTP/1.1" and doc["tls"]["negotiatedProtocol"] == "http/1.1"
    assert doc["tls"]["version"] == "TLSv1.2" and doc["tls"]["cipherSuite"].startswith("TLS_ECDHE_")
    # TLS_CLIENT_CACERTS: a client certificate is verified and reported, PEM.
    client_crt, client_key = ca.issue("a-client")
    (tmp_path / "client.crt").write_bytes(client_crt)
    (tmp_path / "client.key").write_bytes(client_key)
    code, body, head = await curl(*base, "--cert", str(tmp_path / "client.crt"), "--key", str(tmp_path / "client.key"),
                                  "https://abc.example.com:8443/")
    peers = json.loads(body)["tls"]["peerCertificates"]
    assert len(peers) == 1 and peers[0].replace("\n", "") == client_crt.decode().replace("\n", "")
    # The plain port still answers, without "tls".
    code, body, head = await curl(f"http://{ip}:3000/")
    assert "tls" not in json.loads(body)


def server_cert(ca: CA, dns: str) -> tuple[bytes, bytes]:
    """A serving certificate for ``dns`` signed by ``ca`` (PEM cert, PEM key)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    k = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns)]))
        .issuer_name(ca.cert.subject).public_key(k.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return (cert.public_bytes(serialization.Encoding.PEM),
            k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


async def test_env_from_secrets_and_configmaps(api, node1, pods, tmp_path) -> None:
    out = tmp_path / "env.txt"
    await api.client.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "default"},
                             "data": {"LEVEL": "debug", "1st": "x"}})  # "CFG_1st" is a fine name
    env = [{"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "password"}}},
           {"name": "LVL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LEVEL"}}},
           {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
           {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    c = {"name": "app", "image": "busybox", "command": ["sh", "-c", f'echo "$PASS $LVL ${{OPT-unset}} $POD_NAME $CFG_LEVEL" > {out}; exec sleep 3600'],
         "env": env, "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}]}
    await create_bound(api.client, pod("envs", c))
    p = await wait_pod(pods, "envs", lambda p: cstatus(p, "app").get("state", {}).get("waiting", {}).get("reason")
                       == "CreateContainerConfigError")
    assert cstatus(p, "app")["state"]["waiting"]["message"] == 'secret "env-secret" not found'
    await api.client.create(secret("env-secret", {"password": "hunter2"}))
    await wait_pod(pods, "envs", running_ready)
    await wait_content(out, b"hunter2 debug unset envs debug\n")


async def test_projected_volume_and_leftovers_of_a_previous_agent(api, node1, pods, nursery, tmp_path) -> None:
    from tests.node.conftest import agent_config, start_agent

    await api.client.create(secret("proj-s", {"token": "t"}))
    await api.client.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "proj-c", "namespace": "default"},
                             "data": {"ca.crt": "CA"}})
    vol = {"name": "all", "projected": {"defaultMode": 0o440, "sources": [
        {"secret": {"name": "proj-s"}},
        {"configMap": {"name": "proj-c", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
    ]}}
    plain = {"name": "plain", "configMap": {"name": "proj-c"}}
    await create_bound(api.client, pod("proj", agnhost("app", "pause"), volumes=[vol, plain]))
    p = await wait_pod(pods, "proj", running_ready)
    d = volume_dir(node1.agent.cfg.data_dir, p, "kubernetes.io~projected", "all")
    assert read_current(d) == {"token": (b"t", 0o440), "ca.crt": (b"CA", 0o440), "namespace": (b"default", 0o440)}
    await api.client.patch("ConfigMap", "proj-c", {"data": {"ca.crt": "CA2"}}, "default")
    await wait_content(d / "ca.crt", b"CA2")
    # A Secret deleted under a running pod: the volume that reads it stays as it was (upstream's kubelet
    # cannot set it up again either), while the other volume still follows its ConfigMap.
    await api.client.delete("Secret", "proj-s", "default")
    await api.client.patch("ConfigMap", "proj-c", {"data": {"ca.crt": "CA3"}}, "default")
    await wait_content(volume_dir(node1.agent.cfg.data_dir, p, "kubernetes.io~configmap", "plain") / "ca.crt", b"CA3")
    assert (d / "token").read_bytes() == b"t" and (d / "ca.crt").read_bytes() == b"CA2"

    # Volumes left by an agent that died are removed when the node's agent starts again.
    cfg = agent_config(tmp_path, "node-2", ip="127.0.0.2")
    stale = pod_volumes_dir(cfg.data_dir, "0000-gone") / "kubernetes.io~secret" / "x"
    stale.mkdir(parents=True)
    with trio.fail_after(15):
        ra = await start_agent(nursery, api.client, cfg)
    try:
        assert not pod_volumes_dir(cfg.data_dir, "0000-gone").exists()
    finally:
        await ra.stop()
