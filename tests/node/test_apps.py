"""Built-in apps on the sim runtime: agnhost serve-hostname / netexec and kmesh/echo at the pod IP."""

from __future__ import annotations

import json

import httpx
import pytest

from kmesh.node.apps import app_args, image_name, lookup
from kmesh.node.apps.flags import FlagError, parse_flags
from tests.node.conftest import (
    agnhost,
    condition,
    create_bound,
    cstatus,
    pod,
    running_ready,
    wait_pod,
)
from tests.node.netutil import http_get, tcp_read_all, udp_ask


async def test_serve_hostname_answers_pod_name_over_tcp_udp_and_http(api, node1, pods) -> None:
    # Two containers share the pod IP: raw TCP+UDP on 9376, HTTP on the default flags but port 9377.
    await create_bound(api.client, pod(
        "hostnames",
        agnhost("raw", "serve-hostname", "--tcp", "--udp", "--http=false"),
        agnhost("http", "serve-hostname", "--port", "9377"),
    ))
    p = await wait_pod(pods, "hostnames", running_ready)
    ip = p["status"]["podIP"]
    assert await tcp_read_all(ip, 9376) == b"hostnames"
    assert await udp_ask(ip, 9376, b"anything") == b"hostnames"
    resp = await http_get(f"http://{ip}:9377/whatever")
    assert resp.status_code == 200 and resp.text == "hostnames"


async def test_serve_hostname_refuses_http_with_tcp_like_upstream(api, node1, pods) -> None:
    await create_bound(api.client, pod("bad-flags", agnhost("app", "serve-hostname", "--tcp"), restartPolicy="Never"))
    p = await wait_pod(pods, "bad-flags", lambda p: (p or {}).get("status", {}).get("phase") == "Failed")
    term = cstatus(p, "app")["state"]["terminated"]
    assert term["exitCode"] == 1 and term["reason"] == "Error"


async def test_netexec_endpoints(api, node1, pods) -> None:
    await create_bound(api.client, pod("netexec", agnhost("app", "netexec", "--http-port=8080", "--udp-port=8081")))
    p = await wait_pod(pods, "netexec", running_ready)
    ip = p["status"]["podIP"]
    base = f"http://{ip}:8080"
    assert (await http_get(base + "/hostname")).text == "netexec"
    assert (await http_get(base + "/echo?msg=hello%20there")).text == "hello there"
    assert (await http_get(base + "/echo?msg=x&code=418")).status_code == 418
    client_ip, _, port = (await http_get(base + "/clientip")).text.rpartition(":")
    assert client_ip == "127.0.0.1" and port.isdigit()
    assert (await http_get(base + "/healthz")).status_code == 200
    assert (await http_get(base + "/")).text.startswith("NOW: ")
    assert await udp_ask(ip, 8081, b"hostname") == b"netexec"
    assert await udp_ask(ip, 8081, b"echo ping") == b"ping"
    # /dial from the pod to itself: the source address is the pod IP.
    dial = await http_get(base + f"/dial?request=clientip&protocol=http&host={ip}&port=8080&tries=2")
    doc = dial.json()
    assert dial.status_code == 200 and len(doc["responses"]) == 2
    assert all(r.startswith(ip + ":") for r in doc["responses"])
    dial = await http_get(base + f"/dial?request=hostname&protocol=udp&host={ip}&port=8081")
    assert dial.json() == {"responses": ["netexec"]}

    # /exit ends the container with the code; restartPolicy Always brings it back.
    with pytest.raises(httpx.HTTPError):
        await http_get(base + "/exit?code=3")
    p = await wait_pod(pods, "netexec", lambda p: cstatus(p, "app").get("restartCount", 0) >= 1)
    last = cstatus(p, "app")["lastState"]["terminated"]
    assert last["exitCode"] == 3 and last["reason"] == "Error"
    await wait_pod(pods, "netexec", running_ready)
    assert (await http_get(base + "/hostname")).text == "netexec"


async def test_kmesh_echo_tcp_udp_http(api, node1, pods) -> None:
    ports = [{"containerPort": 7000, "protocol": "TCP"}, {"containerPort": 7000, "protocol": "UDP"}]
    await create_bound(api.client, pod("echo", {"name": "echo", "image": "kmesh/echo:latest", "ports": ports}))
    p = await wait_pod(pods, "echo", running_ready)
    ip = p["status"]["podIP"]
    assert await tcp_read_all(ip, 7000, b"raw bytes\n") == b"raw bytes\n"
    assert await udp_ask(ip, 7000, b"dgram") == b"dgram"
    doc = (await http_get(f"http://{ip}:7000/some/path?x=1")).json()
    assert doc["pod"] == "echo" and doc["podIP"] == ip and doc["node"] == "node-1"
    assert doc["path"] == "/some/path" and doc["query"] == {"x": ["1"]}
    assert doc["client"].startswith("127.0.0.1:")


async def test_unknown_image_waits_with_err_image_pull_and_agent_stays_healthy(api, node1, pods) -> None:
    await create_bound(api.client, pod("nginx", {"name": "web", "image": "nginx:1.27"}))
    p = await wait_pod(pods, "nginx", lambda p: cstatus(p, "web").get("state", {}).get("waiting", {}).get("reason") == "ErrImagePull")
    msg = cstatus(p, "web")["state"]["waiting"]["message"]
    assert "nginx:1.27" in msg and "registry.k8s.io/e2e-test-images/agnhost" in msg and "command" in msg
    assert p["status"]["phase"] == "Pending"
    assert condition(p, "Ready") == "False"
    # The agent goes on running other pods.
    await create_bound(api.client, pod("ok", agnhost("app", "pause")))
    await wait_pod(pods, "ok", running_ready)
    # Switching the image to a built-in one starts the container.
    await api.client.patch("Pod", "nginx", {"spec": {"containers": [{"name": "web", "image": "kmesh/echo"}]}}, "default",
                           patch_type="strategic")
    await wait_pod(pods, "nginx", running_ready)


def test_image_names_and_registry() -> None:
    assert image_name("registry.k8s.io/e2e-test-images/agnhost:2.52") == "registry.k8s.io/e2e-test-images/agnhost"
    assert image_name("registry.k8s.io/e2e-test-images/agnhost@sha256:abcd") == "registry.k8s.io/e2e-test-images/agnhost"
    assert image_name("docker.io/kmesh/echo:1") == "kmesh/echo"
    assert image_name("localhost:5000/x/y") == "localhost:5000/x/y"
    assert image_name("library/nginx") == "nginx"
    app = lookup("registry.k8s.io/e2e-test-images/agnhost:2.40")
    assert app is not None and lookup("nginx") is None and lookup("kmesh/dns") is not None
    assert app_args(app, {"args": ["netexec"]}) == ["netexec"]
    assert app_args(app, {"command": ["/agnhost", "serve-hostname"], "args": ["--port=1"]}) == ["serve-hostname", "--port=1"]
    assert app_args(app, {"command": ["sh", "-c", "true"]}) is None


def test_go_style_flags() -> None:
    defaults = {"port": 9376, "tcp": False, "http": True, "name": ""}
    assert parse_flags(["--port=1", "-tcp", "--http=false", "--name", "x", "rest"], defaults) == (
        {"port": 1, "tcp": True, "http": False, "name": "x"}, ["rest"])
    with pytest.raises(FlagError):
        parse_flags(["--nope"], defaults)
    with pytest.raises(FlagError):
        parse_flags(["--port=abc"], defaults)


async def test_echo_json_is_valid_for_post(api, node1, pods) -> None:
    await create_bound(api.client, pod("echo2", {"name": "echo", "image": "kmesh/echo"}))
    p = await wait_pod(pods, "echo2", running_ready)
    async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
        r = await c.post(f"http://{p['status']['podIP']}:8080/x", content=b"payload")
    assert json.loads(r.text)["body"] == "payload" and r.json()["method"] == "POST"
