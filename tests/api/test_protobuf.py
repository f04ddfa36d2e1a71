"""Tests for kmesh.api.protobuf: Kubernetes protobuf request bodies decoded to JSON dicts.

The bodies here are built three ways: by hand with a tiny encoder whose field
numbers are written out independently of the decoder's table, by a table-driven
encoder for property tests of the wire mechanics, and by the real kubectl
talking to a throwaway plain-HTTP server, compared with what
``kubectl ... --dry-run=client -o json`` prints for the same command.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import subprocess
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmesh.api import protobuf
from kmesh.api.protobuf import MAGIC, MESSAGES, ROOTS, SPEC, decode
from tests.conftest import require_binary

# ---------------------------------------------------------------- a hand encoder


def varint(n: int) -> bytes:
    """Base-128 varint of ``n`` (negative numbers as 64-bit two's complement)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def tag(num: int, wire: int) -> bytes:
    """A field key."""
    return varint(num << 3 | wire)


def f_str(num: int, value: str | bytes) -> bytes:
    """A string or bytes field."""
    raw = value.encode() if isinstance(value, str) else value
    return tag(num, 2) + varint(len(raw)) + raw


def f_int(num: int, value: int) -> bytes:
    """A varint field (int32, int64, bool)."""
    return tag(num, 0) + varint(int(value))


def f_msg(num: int, *parts: bytes) -> bytes:
    """An embedded message built from its fields."""
    body = b"".join(parts)
    return tag(num, 2) + varint(len(body)) + body


def f_entry(num: int, key: str, value: str | bytes) -> bytes:
    """One map<string, string|bytes> entry."""
    return f_msg(num, f_str(1, key), f_str(2, value))


def f_qty(num: int, key: str, quantity: str) -> bytes:
    """One map<string, Quantity> entry."""
    return f_msg(num, f_str(1, key), f_msg(2, f_str(1, quantity)))


def f_time(num: int, when: datetime | None, nanos: int = 0) -> bytes:
    """A meta.v1.Time / MicroTime field (None: Go's zero time, an empty message)."""
    if when is None:
        return f_msg(num)
    return f_msg(num, f_int(1, int(when.timestamp())), f_int(2, nanos) if nanos else b"")


def f_ios(num: int, value: int | str) -> bytes:
    """An IntOrString field."""
    if isinstance(value, str):
        return f_msg(num, f_int(1, 1), f_int(2, 0), f_str(3, value))
    return f_msg(num, f_int(1, 0), f_int(2, value), f_str(3, ""))


def envelope(api_version: str, kind: str, raw: bytes, *extra: bytes) -> bytes:
    """A whole body: magic + runtime.Unknown{typeMeta, raw, ...}."""
    return MAGIC + f_msg(1, f_str(1, api_version), f_str(2, kind)) + f_str(2, raw) + b"".join(extra)


def meta(name: str, *more: bytes, namespace: str = "", created: datetime | None = None) -> bytes:
    """An ObjectMeta field (number 1) as Go writes it: every non-pointer field, empty or not."""
    return f_msg(
        1, f_str(1, name), f_str(2, ""), f_str(3, namespace), f_str(4, ""), f_str(5, ""),
        f_str(6, ""), f_int(7, 0), f_time(8, created), *more,
    )


WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
WHEN_S = "2026-01-02T03:04:05Z"
LATER = datetime(2026, 1, 2, 3, 5, 0, tzinfo=timezone.utc)
LATER_S = "2026-01-02T03:05:00Z"

# Real bodies kubectl v1.32 sent for `kubectl create namespace demo`,
# `kubectl create deployment web --image=nginx --replicas=3 --port=80` and
# `kubectl create service clusterip web --tcp=80:8080 --tcp=443:https`.
KUBECTL_NAMESPACE = bytes.fromhex(
    "6b3873000a0f0a02763112094e616d657370616365121c0a140a0464656d6f12001a0022002a00320038"
    "00420012001a020a001a002200"
)
KUBECTL_DEPLOYMENT = bytes.fromhex(
    "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412b8010a1f0a0377656212001a0022"
    "002a003200380042005a0a0a0361707012037765621286010803120c0a0a0a0361707012037765621a6c"
    "0a1c0a0012001a0022002a003200380042005a0a0a036170701203776562124c122e0a056e67696e7812"
    "056e67696e782a00320a0a001000185022002a0042006a007200800100880100900100a201001a003200"
    "42004a0052005800600068008201008a01009a0100c2010022020a00280038001a0c0800100018002000"
    "280038001a002200"
)
KUBECTL_SERVICE = bytes.fromhex(
    "6b3873000a0d0a027631120753657276696365128d010a1f0a0377656212001a0022002a003200380042"
    "005a0a0a03617070120377656212660a1b0a0738302d38303830120354435018502207080010903f1a00"
    "28000a220a093434332d6874747073120354435018bb03220b080110001a0568747470732800120a0a03"
    "61707012037765621a002209436c757374657249503a00420052005a00600068001a020a001a002200"
)


# ---------------------------------------------------------------- real kubectl bytes


def test_kubectl_namespace_bytes() -> None:
    assert decode(KUBECTL_NAMESPACE) == {
        "kind": "Namespace", "apiVersion": "v1",
        "metadata": {"name": "demo", "creationTimestamp": None},
        "spec": {}, "status": {},
    }


def test_kubectl_deployment_bytes() -> None:
    labels = {"app": "web"}
    assert decode(KUBECTL_DEPLOYMENT) == {
        "kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": "web", "creationTimestamp": None, "labels": labels},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"creationTimestamp": None, "labels": labels},
                "spec": {"containers": [
                    {"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}], "resources": {}},
                ]},
            },
            "strategy": {},
        },
        "status": {},
    }


def test_kubectl_service_bytes() -> None:
    assert decode(KUBECTL_SERVICE) == {
        "kind": "Service", "apiVersion": "v1",
        "metadata": {"name": "web", "creationTimestamp": None, "labels": {"app": "web"}},
        "spec": {
            "ports": [
                {"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080},
                {"name": "443-https", "protocol": "TCP", "port": 443, "targetPort": "https"},
            ],
            "selector": {"app": "web"},
            "type": "ClusterIP",
        },
        "status": {"loadBalancer": {}},
    }


# ---------------------------------------------------------------- hand-built objects


def test_object_meta_fields() -> None:
    raw = meta(
        "n",
        f_time(9, LATER, nanos=999_999_999),   # deletionTimestamp: nanos are dropped
        f_int(10, 0),                          # deletionGracePeriodSeconds: a pointer, 0 kept
        f_entry(11, "app", "web"), f_entry(11, "tier", "front"),
        f_entry(12, "note", ""),
        f_msg(13, f_str(5, "apps/v1"), f_str(1, "ReplicaSet"), f_str(3, "web-1"), f_str(4, "u-1"),
              f_int(6, 1), f_int(7, 0)),
        f_str(14, "a.example/f"), f_str(14, "b.example/f"),
        f_msg(17, f_str(1, "kubectl"), f_str(2, "Update"), f_str(3, "v1"), f_time(4, WHEN),
              f_str(6, "FieldsV1"), f_msg(7, f_str(1, b'{"f:metadata":{}}')), f_str(8, "")),
        namespace="ns", created=WHEN,
    )
    obj = decode(envelope("v1", "ConfigMap", raw + f_entry(2, "k", "v")))
    assert obj["metadata"] == {
        "name": "n", "namespace": "ns",
        "creationTimestamp": WHEN_S, "deletionTimestamp": LATER_S, "deletionGracePeriodSeconds": 0,
        "labels": {"app": "web", "tier": "front"},
        "annotations": {"note": ""},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1",
                             "uid": "u-1", "controller": True, "blockOwnerDeletion": False}],
        "finalizers": ["a.example/f", "b.example/f"],
        "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                           "time": WHEN_S, "fieldsType": "FieldsV1",
                           "fieldsV1": {"f:metadata": {}}}],
    }
    assert obj["data"] == {"k": "v"}


def test_configmap_binary_data_and_map_corners() -> None:
    raw = (
        meta("c") + f_int(4, 1)
        + f_entry(2, "a", "1") + f_entry(2, "a", "2")           # a repeated key: the last wins
        + f_msg(2, f_str(1, "only-key"))                         # an entry without a value
        + f_entry(3, "bin", b"\x00\x01\xff") + f_entry(3, "empty", b"")
    )
    assert decode(envelope("v1", "ConfigMap", raw)) == {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "creationTimestamp": None},
        "immutable": True,
        "data": {"a": "2", "only-key": ""},
        "binaryData": {"bin": base64.b64encode(b"\x00\x01\xff").decode(), "empty": ""},
    }


def test_secret_data_is_base64() -> None:
    raw = meta("s") + f_entry(2, "pw", b"hunter2") + f_entry(4, "plain", "text") + f_str(3, "Opaque")
    obj = decode(envelope("v1", "Secret", raw))
    assert obj["data"] == {"pw": "aHVudGVyMg=="}
    assert obj["stringData"] == {"plain": "text"}
    assert obj["type"] == "Opaque"


def _container_app() -> bytes:
    """The main container of the pod test, with every commonly used field."""
    name_ref = lambda name: f_msg(1, f_str(1, name))  # noqa: E731 - LocalObjectReference
    return f_msg(
        2,
        f_str(1, "app"), f_str(2, "nginx:1.27"), f_str(3, "nginx"), f_str(4, "-g"), f_str(4, "daemon off;"),
        f_str(5, "/srv"),
        f_msg(6, f_str(1, "http"), f_int(2, 0), f_int(3, 80), f_str(4, "TCP"), f_str(5, "")),
        f_msg(7, f_str(1, "A"), f_str(2, "1")),
        f_msg(7, f_str(1, "POD"), f_msg(3, f_msg(1, f_str(1, "v1"), f_str(2, "metadata.name")))),
        f_msg(7, f_str(1, "CM"), f_msg(3, f_msg(3, name_ref("cm"), f_str(2, "k")))),
        f_msg(7, f_str(1, "SEC"), f_msg(3, f_msg(4, name_ref("s"), f_str(2, "pw"), f_int(3, 1)))),
        f_msg(7, f_str(1, "MEM"), f_msg(3, f_msg(2, f_str(1, "app"), f_str(2, "limits.memory"),
                                                 f_msg(3, f_str(1, "1Mi"))))),
        f_msg(7, f_str(1, "EMPTY"), f_str(2, "")),
        f_msg(19, f_str(1, "CFG_"), f_msg(2, name_ref("cm"), f_int(2, 0))),
        f_msg(8, f_qty(1, "cpu", "500m"), f_qty(1, "memory", "128Mi"), f_qty(2, "cpu", "250m")),
        f_msg(9, f_str(1, "cfg"), f_int(2, 1), f_str(3, "/etc/app"), f_str(4, ""), f_str(6, "")),
        f_msg(10, f_msg(1, f_msg(2, f_str(1, "/healthz"), f_ios(2, 8080), f_str(3, ""), f_str(4, "HTTP"),
                                 f_msg(5, f_str(1, "X-Probe"), f_str(2, "1")))),
              f_int(2, 5), f_int(3, 0), f_int(4, 10), f_int(5, 0), f_int(6, 0)),
        f_msg(11, f_msg(1, f_msg(3, f_ios(1, "http"), f_str(2, ""))), f_int(6, 3)),
        f_msg(22, f_msg(1, f_msg(1, f_str(1, "cat"), f_str(1, "/tmp/ready"))), f_int(7, 0)),
        f_msg(12, f_msg(1, f_msg(1, f_str(1, "true"))), f_msg(2, f_msg(4, f_int(1, 5)))),
        f_str(13, "/dev/termination-log"), f_str(20, "File"), f_str(14, "IfNotPresent"),
        f_msg(15, f_msg(1, f_str(2, "ALL")), f_int(4, 0), f_int(7, 0), f_int(6, 1)),
        f_int(16, 0), f_int(17, 0), f_int(18, 1),
    )


def _pod_body() -> bytes:
    """A Pod using most of the table's core messages (checked by test_pod_with_everything)."""
    spec = f_msg(
        2,
        f_msg(1, f_str(1, "cfg"), f_msg(2, f_msg(19, f_msg(1, f_str(1, "app-config")),
                                                 f_msg(2, f_str(1, "k"), f_str(2, "p")), f_int(3, 420)))),
        f_msg(1, f_str(1, "scratch"), f_msg(2, f_msg(2, f_str(1, "")))),
        f_msg(1, f_str(1, "mem"), f_msg(2, f_msg(2, f_str(1, "Memory"), f_msg(2, f_str(1, "64Mi"))))),
        f_msg(1, f_str(1, "host"), f_msg(2, f_msg(1, f_str(1, "/var/log"), f_str(2, "")))),
        f_msg(1, f_str(1, "sec"), f_msg(2, f_msg(6, f_str(1, "s"), f_int(4, 0)))),
        f_msg(1, f_str(1, "data"), f_msg(2, f_msg(10, f_str(1, "claim"), f_int(2, 0)))),
        f_msg(1, f_str(1, "proj"), f_msg(2, f_msg(
            26,
            f_msg(1, f_msg(4, f_str(1, ""), f_int(2, 3600), f_str(3, "token"))),
            f_msg(1, f_msg(2, f_msg(1, f_str(1, "labels"), f_msg(2, f_str(2, "metadata.labels"))))),
            f_msg(1, f_msg(3, f_msg(1, f_str(1, "ca")), f_msg(2, f_str(1, "ca.crt"), f_str(2, "ca.crt")))),
            f_int(2, 420),
        ))),
        f_msg(20, f_str(1, "init"), f_str(2, "busybox"), f_str(3, "sh"), f_str(3, "-c"), f_str(3, "true"),
              f_str(24, "Always")),
        _container_app(),
        f_msg(2, f_str(1, "side"), f_str(2, "x"), f_msg(11, f_msg(1, f_msg(4, f_int(1, 9090), f_str(2, ""))))),
        f_str(3, "Always"), f_int(4, 0), f_str(6, "ClusterFirst"), f_entry(7, "disk", "ssd"),
        f_str(8, "default"), f_str(9, "default"), f_str(10, ""), f_int(11, 0), f_int(12, 0), f_int(13, 0),
        f_msg(14, f_int(5, 2000), f_msg(4, varint(1) + varint(2)), f_int(4, 3),
              f_msg(10, f_str(1, "RuntimeDefault"))),
        f_msg(15, f_str(1, "regcred")),
        f_str(16, "h"), f_str(17, "sub"),
        f_msg(18, f_msg(1, f_msg(1, f_msg(1, f_msg(1, f_str(1, "disk"), f_str(2, "In"), f_str(3, "ssd"))))),
              f_msg(3, f_msg(2, f_int(1, 100), f_msg(2, f_msg(1, f_entry(1, "app", "web")),
                                                      f_str(3, "kubernetes.io/hostname"))))),
        f_str(19, "default-scheduler"),
        f_msg(22, f_str(1, "node.kubernetes.io/not-ready"), f_str(2, "Exists"), f_str(3, ""),
              f_str(4, "NoExecute"), f_int(5, 300)),
        f_msg(23, f_str(1, "10.0.0.9"), f_str(2, "db"), f_str(2, "db.local")),
        f_int(25, -7), f_int(30, 0), f_str(31, "PreemptLowerPriority"),
        f_msg(33, f_int(1, 1), f_str(2, "zone"), f_str(3, "DoNotSchedule"),
              f_msg(4, f_entry(1, "app", "web"))),
        f_msg(36, f_str(1, "linux")),
    )
    status = f_msg(
        3,
        f_str(1, "Running"),
        f_msg(2, f_str(1, "PodScheduled"), f_str(2, "True"), f_time(3, None), f_time(4, WHEN),
              f_str(5, ""), f_str(6, "")),
        f_str(5, "10.1.0.1"), f_msg(16, f_str(1, "10.1.0.1")), f_str(6, "10.0.0.5"), f_msg(12, f_str(1, "10.0.0.5")),
        f_time(7, WHEN),
        f_msg(8, f_str(1, "app"), f_msg(2, f_msg(2, f_time(1, LATER))), f_msg(3), f_int(4, 0), f_int(5, 0),
              f_str(6, "nginx:1.27"), f_str(7, ""), f_str(8, "containerd://abc")),
        f_str(9, "Burstable"),
    )
    return envelope("v1", "Pod", meta("p", namespace="ns") + spec + status)


def test_pod_with_everything() -> None:
    assert decode(_pod_body()) == {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", "creationTimestamp": None},
        "spec": {
            "volumes": [
                {"name": "cfg", "configMap": {"name": "app-config", "items": [{"key": "k", "path": "p"}],
                                              "defaultMode": 420}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                {"name": "host", "hostPath": {"path": "/var/log", "type": ""}},
                {"name": "sec", "secret": {"secretName": "s", "optional": False}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "claim"}},
                {"name": "proj", "projected": {"sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3600, "path": "token"}},
                    {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                    {"configMap": {"name": "ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                ], "defaultMode": 420}},
            ],
            "initContainers": [{"name": "init", "image": "busybox", "command": ["sh", "-c", "true"],
                                "restartPolicy": "Always"}],
            "containers": [
                {
                    "name": "app", "image": "nginx:1.27", "command": ["nginx"], "args": ["-g", "daemon off;"],
                    "workingDir": "/srv",
                    "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                    "env": [
                        {"name": "A", "value": "1"},
                        {"name": "POD", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                        {"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                        {"name": "SEC", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw", "optional": True}}},
                        {"name": "MEM", "valueFrom": {"resourceFieldRef": {
                            "containerName": "app", "resource": "limits.memory", "divisor": "1Mi"}}},
                        {"name": "EMPTY"},
                    ],
                    "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "cm", "optional": False}}],
                    "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "250m"}},
                    "volumeMounts": [{"name": "cfg", "readOnly": True, "mountPath": "/etc/app"}],
                    "livenessProbe": {
                        "httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP",
                                    "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                        "initialDelaySeconds": 5, "periodSeconds": 10,
                    },
                    "readinessProbe": {"tcpSocket": {"port": "http"}, "failureThreshold": 3},
                    "startupProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "terminationGracePeriodSeconds": 0},
                    "lifecycle": {"postStart": {"exec": {"command": ["true"]}}, "preStop": {"sleep": {"seconds": 5}}},
                    "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent",
                    "securityContext": {"capabilities": {"drop": ["ALL"]}, "runAsUser": 0,
                                        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
                    "tty": True,
                },
                {"name": "side", "image": "x", "readinessProbe": {"grpc": {"port": 9090, "service": ""}}},
            ],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 0, "dnsPolicy": "ClusterFirst",
            "nodeSelector": {"disk": "ssd"}, "serviceAccountName": "default", "serviceAccount": "default",
            "securityContext": {"fsGroup": 2000, "supplementalGroups": [1, 2, 3],
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "imagePullSecrets": [{"name": "regcred"}],
            "hostname": "h", "subdomain": "sub",
            "affinity": {
                "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]}},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}},
                                                        "topologyKey": "kubernetes.io/hostname"}}]},
            },
            "schedulerName": "default-scheduler",
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                             "effect": "NoExecute", "tolerationSeconds": 300}],
            "hostAliases": [{"ip": "10.0.0.9", "hostnames": ["db", "db.local"]}],
            "priority": -7, "enableServiceLinks": False, "preemptionPolicy": "PreemptLowerPriority",
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                                           "labelSelector": {"matchLabels": {"app": "web"}}}],
            "os": {"name": "linux"},
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                            "lastTransitionTime": WHEN_S}],
            "hostIP": "10.1.0.1", "hostIPs": [{"ip": "10.1.0.1"}],
            "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}],
            "startTime": WHEN_S,
            "containerStatuses": [{"name": "app", "state": {"running": {"startedAt": LATER_S}}, "lastState": {},
                                   "ready": False, "restartCount": 0, "image": "nginx:1.27", "imageID": "",
                                   "containerID": "containerd://abc"}],
            "qosClass": "Burstable",
        },
    }


def test_deployment_strategy_and_pointers() -> None:
    spec = f_msg(
        2,
        f_int(1, 0),                                               # replicas 0: kept
        f_msg(2, f_msg(2, f_str(1, "tier"), f_str(2, "NotIn"), f_str(3, "db"), f_str(3, "cache"))),
        f_msg(3, f_msg(1, f_msg(8), f_entry(11, "app", "web")), f_msg(2, f_msg(2, f_str(1, "c"), f_str(2, "i")))),
        f_msg(4, f_str(1, "RollingUpdate"), f_msg(2, f_ios(1, 0), f_ios(2, "25%"))),
        f_int(5, 0), f_int(6, 0), f_int(7, 0), f_int(9, 600),
    )
    status = f_msg(3, f_int(1, 4), f_int(2, 3), f_int(7, 0),
                   f_msg(6, f_str(1, "Available"), f_str(2, "True"), f_time(6, WHEN), f_time(7, WHEN),
                         f_str(4, "MinimumReplicasAvailable"), f_str(5, "ok")))
    obj = decode(envelope("apps/v1", "Deployment", meta("web") + spec + status))
    assert obj["spec"] == {
        "replicas": 0,
        "selector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db", "cache"]}]},
        "template": {"metadata": {"creationTimestamp": None, "labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "c", "image": "i"}]}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
        "revisionHistoryLimit": 0,
        "progressDeadlineSeconds": 600,
    }
    assert obj["status"] == {
        "observedGeneration": 4, "replicas": 3,
        "conditions": [{"type": "Available", "status": "True", "lastUpdateTime": WHEN_S,
                        "lastTransitionTime": WHEN_S, "reason": "MinimumReplicasAvailable", "message": "ok"}],
    }


def test_replicaset() -> None:
    spec = f_msg(2, f_int(1, 2), f_int(4, 0), f_msg(2, f_entry(1, "app", "web")),
                 f_msg(3, f_msg(1), f_msg(2)))
    status = f_msg(3, f_int(1, 0), f_int(2, 0), f_int(4, 0), f_int(3, 7))
    obj = decode(envelope("apps/v1", "ReplicaSet", meta("web-1") + spec + status))
    assert obj["spec"] == {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                           "template": {"metadata": {}, "spec": {}}}
    assert obj["status"] == {"replicas": 0, "observedGeneration": 7}


def test_service_spec_and_status() -> None:
    spec = f_msg(
        2,
        f_msg(1, f_str(1, "http"), f_str(2, "TCP"), f_str(6, "kubernetes.io/h2c"), f_int(3, 80),
              f_msg(4), f_int(5, 0)),                             # an empty IntOrString is 0, as Go writes it
        f_entry(2, "app", "web"), f_str(3, "None"), f_str(18, "None"), f_str(4, "ClusterIP"),
        f_str(5, "192.0.2.10"), f_str(7, "ClientIP"), f_str(8, ""), f_str(9, "10.0.0.0/8"), f_str(10, ""),
        f_str(11, "Cluster"), f_int(12, 0), f_int(13, 1), f_msg(14, f_msg(1, f_int(1, 10800))),
        f_str(19, "IPv4"), f_str(17, "SingleStack"), f_int(20, 0), f_str(22, "Local"),
    )
    status = f_msg(3, f_msg(1, f_msg(1, f_str(1, "192.0.2.1"), f_str(2, ""),
                                     f_msg(4, f_int(1, 80), f_str(2, "TCP"), f_str(3, "Pending")))),
                   f_msg(2, f_str(1, "Ready"), f_str(2, "False"), f_int(3, 2), f_time(4, WHEN),
                         f_str(5, "NotYet"), f_str(6, "")))
    obj = decode(envelope("v1", "Service", meta("web") + spec + status))
    assert obj["spec"] == {
        "ports": [{"name": "http", "protocol": "TCP", "appProtocol": "kubernetes.io/h2c", "port": 80,
                   "targetPort": 0}],
        "selector": {"app": "web"}, "clusterIP": "None", "clusterIPs": ["None"], "type": "ClusterIP",
        "externalIPs": ["192.0.2.10"], "sessionAffinity": "ClientIP", "loadBalancerSourceRanges": ["10.0.0.0/8"],
        "externalTrafficPolicy": "Cluster", "publishNotReadyAddresses": True,
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
        "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "allocateLoadBalancerNodePorts": False,
        "internalTrafficPolicy": "Local",
    }
    assert obj["status"] == {
        "loadBalancer": {"ingress": [{"ip": "192.0.2.1", "ports": [{"port": 80, "protocol": "TCP",
                                                                     "error": "Pending"}]}]},
        "conditions": [{"type": "Ready", "status": "False", "observedGeneration": 2,
                        "lastTransitionTime": WHEN_S, "reason": "NotYet", "message": ""}],
    }


def test_endpoints() -> None:
    target = f_msg(2, f_str(1, "Pod"), f_str(2, "ns"), f_str(3, "p"), f_str(4, "u"), f_str(5, ""), f_str(6, ""),
                   f_str(7, ""))
    raw = meta("web") + f_msg(2, f_msg(1, f_str(1, "10.0.0.5"), f_str(3, ""), f_str(4, "n1"), target),
                              f_msg(2, f_str(1, "10.0.0.6")),
                              f_msg(3, f_str(1, "http"), f_int(2, 80), f_str(3, "TCP")))
    assert decode(envelope("v1", "Endpoints", raw))["subsets"] == [{
        "addresses": [{"ip": "10.0.0.5", "nodeName": "n1",
                       "targetRef": {"kind": "Pod", "namespace": "ns", "name": "p", "uid": "u"}}],
        "notReadyAddresses": [{"ip": "10.0.0.6"}],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
    }]


def test_endpointslice_pointer_fields() -> None:
    endpoint = f_msg(2, f_str(1, "10.0.0.5"), f_msg(2, f_int(1, 0), f_int(2, 1), f_int(3, 0)),
                     f_msg(4, f_str(1, "Pod"), f_str(3, "p")), f_str(6, "n1"), f_str(7, "z1"),
                     f_msg(8, f_msg(1, f_str(1, "z1"))))
    raw = meta("web-abc") + f_str(4, "IPv4") + endpoint + f_msg(3, f_str(1, ""), f_str(2, "TCP"), f_int(3, 80))
    obj = decode(envelope("discovery.k8s.io/v1", "EndpointSlice", raw))
    assert obj["addressType"] == "IPv4"
    assert obj["endpoints"] == [{
        "addresses": ["10.0.0.5"], "conditions": {"ready": False, "serving": True, "terminating": False},
        "targetRef": {"kind": "Pod", "name": "p"}, "nodeName": "n1", "zone": "z1",
        "hints": {"forZones": [{"name": "z1"}]},
    }]
    assert obj["ports"] == [{"name": "", "protocol": "TCP", "port": 80}]


def test_lease_micro_time() -> None:
    spec = f_msg(2, f_str(1, "node-1"), f_int(2, 40), f_time(3, WHEN, nanos=123_456_789), f_time(4, LATER),
                 f_int(5, 0))
    obj = decode(envelope("coordination.k8s.io/v1", "Lease", meta("node-1", namespace="kube-node-lease") + spec))
    assert obj["spec"] == {"holderIdentity": "node-1", "leaseDurationSeconds": 40,
                           "acquireTime": "2026-01-02T03:04:05.123456Z",
                           "renewTime": "2026-01-02T03:05:00.000000Z", "leaseTransitions": 0}


def test_event() -> None:
    ref = f_msg(2, f_str(1, "Pod"), f_str(2, "ns"), f_str(3, "p"), f_str(5, "v1"), f_str(7, "spec.containers{app}"))
    raw = (meta("p.1", namespace="ns") + ref + f_str(3, "Started") + f_str(4, "Started container app")
           + f_msg(5, f_str(1, "kubelet"), f_str(2, "n1")) + f_time(6, WHEN) + f_time(7, LATER) + f_int(8, 2)
           + f_str(9, "Normal") + f_time(10, None) + f_msg(11, f_int(1, 3), f_time(2, LATER))
           + f_str(12, "") + f_msg(13, f_str(1, "Node"), f_str(3, "n1")) + f_str(14, "") + f_str(15, "n1"))
    obj = decode(envelope("v1", "Event", raw))
    del obj["metadata"]
    assert obj == {
        "apiVersion": "v1", "kind": "Event",
        "involvedObject": {"kind": "Pod", "namespace": "ns", "name": "p", "apiVersion": "v1",
                           "fieldPath": "spec.containers{app}"},
        "reason": "Started", "message": "Started container app",
        "source": {"component": "kubelet", "host": "n1"},
        "firstTimestamp": WHEN_S, "lastTimestamp": LATER_S, "count": 2, "type": "Normal",
        "eventTime": None, "series": {"count": 3, "lastObservedTime": "2026-01-02T03:05:00.000000Z"},
        "related": {"kind": "Node", "name": "n1"},
        "reportingComponent": "", "reportingInstance": "n1",
    }


def test_binding() -> None:
    raw = meta("p", namespace="ns") + f_msg(2, f_str(1, "Node"), f_str(3, "n1"), f_str(5, "v1"))
    assert decode(envelope("v1", "Binding", raw))["target"] == {"kind": "Node", "name": "n1", "apiVersion": "v1"}


def test_node() -> None:
    spec = f_msg(2, f_str(1, "10.244.1.0/24"), f_str(7, "10.244.1.0/24"), f_str(3, ""), f_int(4, 1),
                 f_msg(5, f_str(1, "dedicated"), f_str(2, ""), f_str(3, "NoSchedule"), f_time(4, WHEN)))
    status = f_msg(
        3,
        f_qty(1, "cpu", "4"), f_qty(1, "pods", "110"), f_qty(2, "memory", "7Gi"), f_str(3, ""),
        f_msg(4, f_str(1, "Ready"), f_str(2, "True"), f_time(3, LATER), f_time(4, WHEN), f_str(5, "KubeletReady"),
              f_str(6, "kubelet is posting ready status")),
        f_msg(5, f_str(1, "InternalIP"), f_str(2, "10.0.0.2")),
        f_msg(6, f_msg(1, f_int(1, 10250))),
        f_msg(7, f_str(1, "m"), f_str(2, ""), f_str(7, "v1.32.0"), f_str(9, "linux"), f_str(10, "amd64")),
        f_msg(8, f_str(1, "nginx:1.27"), f_int(2, 1234)),
    )
    obj = decode(envelope("v1", "Node", meta("n1") + spec + status))
    assert obj["spec"] == {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"], "unschedulable": True,
                           "taints": [{"key": "dedicated", "effect": "NoSchedule", "timeAdded": WHEN_S}]}
    assert obj["status"] == {
        "capacity": {"cpu": "4", "pods": "110"}, "allocatable": {"memory": "7Gi"},
        "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": LATER_S,
                        "lastTransitionTime": WHEN_S, "reason": "KubeletReady",
                        "message": "kubelet is posting ready status"}],
        "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {"machineID": "m", "systemUUID": "", "kubeletVersion": "v1.32.0",
                     "operatingSystem": "linux", "architecture": "amd64"},
        "images": [{"names": ["nginx:1.27"], "sizeBytes": 1234}],
    }


def test_scale_keeps_zero_replicas() -> None:
    raw = meta("web", namespace="ns") + f_msg(2, f_int(1, 0)) + f_msg(3, f_int(1, 3), f_str(2, "app=web"))
    obj = decode(envelope("autoscaling/v1", "Scale", raw))
    assert obj["spec"] == {"replicas": 0}
    assert obj["status"] == {"replicas": 3, "selector": "app=web"}


@pytest.mark.parametrize("api_version", ["v1", "meta.k8s.io/v1", "apps/v1"])
def test_delete_options(api_version: str) -> None:
    raw = f_int(1, 0) + f_msg(2, f_str(1, "u-1"), f_str(2, "42")) + f_int(3, 0) + f_str(4, "Foreground") \
        + f_str(5, "All")
    assert decode(envelope(api_version, "DeleteOptions", raw)) == {
        "apiVersion": api_version, "kind": "DeleteOptions",
        "gracePeriodSeconds": 0, "preconditions": {"uid": "u-1", "resourceVersion": "42"},
        "orphanDependents": False, "propagationPolicy": "Foreground", "dryRun": ["All"],
    }


# ---------------------------------------------------------------- wire details


def test_time_edges() -> None:
    def created(*fields: bytes) -> Any:
        raw = f_msg(1, f_str(1, "x"), f_msg(8, *fields))
        return decode(envelope("v1", "Namespace", raw))["metadata"]["creationTimestamp"]

    assert created() is None                                          # Go's zero time
    assert created(f_int(1, 0)) == "1970-01-01T00:00:00Z"
    assert created(f_int(1, -1)) == "1969-12-31T23:59:59Z"            # negative: two's complement varint
    assert created(f_int(1, -62135596800)) == "0001-01-01T00:00:00Z"
    assert created(f_int(1, 1767323045), f_int(2, 999_999_999)) == WHEN_S
    with pytest.raises(ValueError, match="out of range"):
        created(f_int(1, 1 << 62))


def test_negative_and_large_integers() -> None:
    raw = meta("p") + f_msg(2, f_int(25, -2147483648), f_int(4, 9_223_372_036_854_775_807),
                            f_msg(14, f_int(2, -1)))
    spec = decode(envelope("v1", "Pod", raw))["spec"]
    assert spec["priority"] == -2147483648
    assert spec["terminationGracePeriodSeconds"] == 9_223_372_036_854_775_807
    assert spec["securityContext"] == {"runAsUser": -1}


def test_packed_and_unpacked_repeated_ints() -> None:
    ctx = f_msg(14, f_msg(4, varint(5) + varint(300) + varint(-1)), f_int(4, 7))
    spec = decode(envelope("v1", "Pod", meta("p") + f_msg(2, ctx)))["spec"]
    assert spec["securityContext"]["supplementalGroups"] == [5, 300, -1, 7]


def test_empty_packed_run_adds_no_list() -> None:
    spec = decode(envelope("v1", "Pod", meta("p") + f_msg(2, f_msg(14, f_msg(4)))))["spec"]
    assert spec == {"securityContext": {}}


def test_unknown_fields_are_skipped_at_every_level() -> None:
    junk = (f_int(99, 12345) + tag(98, 1) + b"\x01" * 8 + tag(97, 5) + b"\x02" * 4
            + f_str(96, b"\xff\x00garbage") + f_msg(95, f_msg(1, f_str(1, "deep"))))
    raw = (junk + f_msg(1, junk, f_str(1, "n"), f_msg(11, junk, f_str(1, "k"), f_str(2, "v")))
           + f_msg(2, junk, f_str(1, "kubernetes")) + f_msg(3, junk))
    body = MAGIC + f_msg(1, f_str(1, "v1"), junk, f_str(2, "Namespace")) + junk + f_str(2, raw) + f_str(3, "")
    assert decode(body) == {"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": "n", "labels": {"k": "v"}},
                            "spec": {"finalizers": ["kubernetes"]}, "status": {}}


def test_invalid_utf8_is_replaced() -> None:
    obj = decode(envelope("v1", "Namespace", f_msg(1, f_str(1, b"a\xffb"))))
    assert obj["metadata"]["name"] == "a\ufffdb"


def test_repeated_message_occurrences_merge() -> None:
    raw = f_msg(1, f_str(1, "n")) + f_msg(1, f_entry(11, "a", "b"))
    assert decode(envelope("v1", "Namespace", raw))["metadata"] == {"name": "n", "labels": {"a": "b"}}


def test_json_inside_the_envelope() -> None:
    body = envelope("v1", "Namespace", b'{"metadata":{"name":"j"}}', f_str(4, "application/json"))
    assert decode(body) == {"metadata": {"name": "j"}, "apiVersion": "v1", "kind": "Namespace"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "magic"),
        (b"k8s", "magic"),
        (b'{"kind":"Namespace"}', "magic"),
        (b"\x00k8s" + f_str(2, b""), "magic"),
        (MAGIC + b"\x0a", "truncated"),                             # a length that is missing
        (MAGIC + b"\x0a\x05ab", "truncated"),                       # a length past the end
        (MAGIC + b"\x08\xff\xff", "truncated"),                     # a varint cut short
        (MAGIC + b"\x08" + b"\xff" * 11 + b"\x01", "10 bytes"),
        (MAGIC + b"\x19\x01\x02", "truncated"),                     # fixed64 cut short
        (MAGIC + b"\x0b", "wire type 3"),                           # groups are not supported
        (MAGIC + b"\x00\x01", "field number 0"),
        (envelope("v1", "Widget", b""), "no protobuf decoder for v1, Kind=Widget"),
        (envelope("example.com/v1", "Pod", b""), "Kind=Pod"),
        (MAGIC + f_str(2, b""), "without a kind"),
        (envelope("v1", "Namespace", f_int(1, 5)), "Namespace.metadata: expected a message"),
        (envelope("v1", "Namespace", f_msg(1, f_int(1, 5))), "ObjectMeta.name: expected bytes"),
        (envelope("v1", "Pod", f_msg(2, f_str(4, "x"))), "PodSpec.terminationGracePeriodSeconds: expected a varint"),
        (envelope("v1", "Namespace", f_msg(1, f_int(11, 1))), "expected a map entry"),
        (envelope("v1", "Namespace", f_msg(1, f_str(11, b"\x0a\x09"))), "truncated"),
        (envelope("v1", "Namespace", b"", f_str(3, "gzip")), "content encoding"),
        (envelope("v1", "Namespace", b"", f_str(4, "application/yaml")), "content type"),
        (envelope("v1", "Namespace", b"[1]", f_str(4, "application/json")), "not an object"),
        (envelope("v1", "Namespace", b"{", f_str(4, "application/json")), "bad JSON"),
        (envelope("v1", "Namespace", meta("n", f_msg(17, f_msg(7, f_str(1, b"{"))))), "not JSON"),
        (envelope("v1", "Namespace", meta("n", f_msg(17, f_msg(7, f_str(1, b"[" * 100_000))))), "not JSON"),
        (envelope("v1", "Namespace", b"[" * 100_000, f_str(4, "application/json")), "bad JSON"),
    ],
)
def test_errors_are_value_errors(body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode(body)


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(ValueError):
        decode("k8s\x00")  # type: ignore[arg-type]


def test_every_prefix_of_a_real_body_decodes_or_raises_value_error() -> None:
    for cut in range(len(KUBECTL_DEPLOYMENT)):
        try:
            decode(KUBECTL_DEPLOYMENT[:cut])
        except ValueError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash(noise: bytes) -> None:
    for body in (MAGIC + noise, envelope("v1", "Pod", noise), envelope("apps/v1", "Deployment", noise)):
        try:
            result = decode(body)
        except ValueError:
            continue
        assert isinstance(result, dict)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([KUBECTL_SERVICE, KUBECTL_DEPLOYMENT, _pod_body()]), st.data())
def test_corrupted_bodies_never_crash(original: bytes, data: st.DataObject) -> None:
    body = bytearray(original)
    for _ in range(data.draw(st.integers(1, 3))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    try:
        assert isinstance(decode(bytes(body)), dict)
    except ValueError:
        pass


# ---------------------------------------------------------------- the table


def test_table_is_consistent() -> None:
    assert set(ROOTS.values()) <= set(MESSAGES)
    for message, fields in MESSAGES.items():
        names = [f.name for f in fields.values() if not f.inline]
        for f in fields.values():
            if f.inline:
                inner = [g.name for g in MESSAGES[f.kind].values()]
                assert not set(inner) & set(names), message
                names += inner
            assert not (f.map and f.repeated), f"{message}.{f.name}"
            if f.map:
                assert f.kind in ("s", "y", "Q"), f"{message}.{f.name}"
        assert len(names) == len(set(names)), f"{message}: a JSON name twice"
    assert all(isinstance(text, str) and text for text in SPEC.values())


def test_served_kinds_all_have_a_root() -> None:
    from kmesh.api.kinds import GATEWAY, KINDS

    for kind in KINDS:
        if kind.group == GATEWAY:  # CRDs upstream: no protobuf form, clients send JSON
            assert (kind.group, kind.kind) not in ROOTS
            continue
        assert (kind.group, kind.kind) in ROOTS, kind.kind


# ---------------------------------------------------------------- round trips through a table encoder


def _inline_names(kind: str) -> set[str]:
    return {f.name for f in MESSAGES[kind].values()}


def table_encode(message: str, obj: dict[str, Any], pack: bool = False) -> bytes:
    """Encode a JSON dict of ``message`` with the decoder's own table (for wire-mechanics tests)."""
    out = bytearray()
    for num, f in MESSAGES[message].items():
        if f.inline:
            sub = {k: v for k, v in obj.items() if k in _inline_names(f.kind)}
            if sub:
                out += f_msg(num, table_encode(f.kind, sub, pack))
            continue
        if f.name not in obj:
            continue
        value = obj[f.name]
        if f.map:
            for key, item in value.items():
                out += f_msg(num, f_str(1, key), _encode_value(2, f.kind, item, pack))
        elif f.repeated and pack and f.kind in "bi":
            out += tag(num, 2) + varint(len(b"".join(varint(int(v)) for v in value))) \
                + b"".join(varint(int(v)) for v in value)
        elif f.repeated:
            for item in value:
                out += _encode_value(num, f.kind, item, pack)
        else:
            out += _encode_value(num, f.kind, value, pack)
    return bytes(out)


def _encode_value(num: int, kind: str, value: Any, pack: bool) -> bytes:
    if kind == "s":
        return f_str(num, value)
    if kind in "bi":
        return f_int(num, int(value))
    if kind == "y":
        return f_str(num, base64.b64decode(value))
    if kind in "TM":
        if value is None:
            return f_msg(num)
        fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if kind == "M" else "%Y-%m-%dT%H:%M:%SZ"
        when = datetime.strptime(value, fmt).replace(tzinfo=timezone.utc)
        seconds = (when - datetime(1970, 1, 1, tzinfo=timezone.utc)) // _SECOND
        return f_msg(num, f_int(1, seconds), f_int(2, when.microsecond * 1000 + 7))
    if kind == "Q":
        return f_msg(num, f_str(1, value))
    if kind == "I":
        return f_ios(num, value)
    if kind == "J":
        return f_msg(num, f_str(1, json.dumps(value)))
    return f_msg(num, table_encode(kind, value, pack))


_SECOND = datetime(1970, 1, 1, 0, 0, 1) - datetime(1970, 1, 1)

_DATES = st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30))


def _scalar_strategy(kind: str) -> st.SearchStrategy[Any]:
    return {
        "s": st.text(max_size=8),
        "b": st.booleans(),
        "i": st.integers(-(1 << 63), (1 << 63) - 1),
        "y": st.binary(max_size=8).map(lambda b: base64.b64encode(b).decode()),
        "T": st.none() | _DATES.map(lambda d: f"{d:%Y-%m-%dT%H:%M:%S}Z".zfill(20)),
        "M": st.none() | _DATES.map(lambda d: f"{d:%Y-%m-%dT%H:%M:%S}.{d.microsecond:06d}Z".zfill(27)),
        "Q": st.sampled_from(["0", "1", "250m", "128Mi", "1.5", "2Gi", "100"]),
        "I": st.integers(-(1 << 31), (1 << 31) - 1) | st.text(max_size=6),
        "J": st.dictionaries(st.text(max_size=4), st.integers(0, 9), max_size=2),
    }[kind]


def _draw_message(data: st.DataObject, message: str, depth: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A random object of ``message``: (what to encode, what decode must give back)."""
    given_obj: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    for f in MESSAGES[message].values():
        nested = len(f.kind) > 1
        if nested and depth >= 3:
            continue
        if not data.draw(st.booleans()):
            continue
        if f.inline:
            sub_given, sub_expected = _draw_message(data, f.kind, depth + 1)
            given_obj.update(sub_given)
            expected.update(sub_expected)
            continue
        if f.map:
            items = data.draw(st.dictionaries(st.text(max_size=5), _scalar_strategy(f.kind), max_size=3))
            given_obj[f.name] = items
            if items:
                expected[f.name] = items
            continue
        count = data.draw(st.integers(0, 2)) if f.repeated else 1
        values = []
        for _ in range(count):
            if nested:
                values.append(_draw_message(data, f.kind, depth + 1))
            else:
                value = data.draw(_scalar_strategy(f.kind))
                values.append((value, value))
        if f.repeated:
            given_obj[f.name] = [g for g, _ in values]
            if values:
                expected[f.name] = [e for _, e in values]
        else:
            value, want = values[0]
            given_obj[f.name] = value
            zero = f.kind in "sbiy" and not isinstance(want, dict) and want in ("", 0)
            if not zero or f.keep_zero:
                expected[f.name] = want
    return given_obj, expected


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(sorted(MESSAGES)), st.booleans())
def test_table_round_trip(data: st.DataObject, message: str, pack: bool) -> None:
    given_obj, expected = _draw_message(data, message, 0)
    assert protobuf.decode_message(message, table_encode(message, given_obj, pack)) == expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(sorted(ROOTS.items())))
def test_envelope_round_trip(data: st.DataObject, root: tuple[tuple[str, str], str]) -> None:
    (group, kind), message = root
    api_version = f"{group}/v1" if group else "v1"
    given_obj, expected = _draw_message(data, message, 0)
    body = envelope(api_version, kind, table_encode(message, given_obj))
    assert decode(body) == {"apiVersion": api_version, "kind": kind, **expected}


# ---------------------------------------------------------------- the real kubectl


def _resource(plural: str, kind: str, namespaced: bool = True) -> dict[str, Any]:
    return {"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}


_DISCOVERY: dict[str, Any] = {
    "/api": {"kind": "APIVersions", "versions": ["v1"],
             "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
         "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]},
    "/api/v1": {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": [
        _resource("namespaces", "Namespace", False), _resource("configmaps", "ConfigMap"),
        _resource("services", "Service"), _resource("pods", "Pod"), _resource("secrets", "Secret"),
        _resource("serviceaccounts", "ServiceAccount")]},
    "/apis/apps/v1": {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1",
                      "resources": [_resource("deployments", "Deployment")]},
}


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers kubectl's discovery and records the bodies of its writes."""

    bodies: list[tuple[str, str, bytes]] = []

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, code: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        doc = _DISCOVERY.get(self.path.split("?")[0])
        if doc is None:
            self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                             "code": 404})
        else:
            self._send(200, doc)

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.bodies.append((self.path, self.headers.get("Content-Type", ""), body))
        self._send(201, {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201})


@pytest.fixture(scope="module")
def kubectl_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[str], dict[str, str], Path]]:
    """A kubectl pointed at a recording server on 127.0.0.1 (plain HTTP): (argv prefix, env, work dir)."""
    kubectl = require_binary("kubectl")
    work = tmp_path_factory.mktemp("kubectl")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        kubeconfig = work / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
            "users": [{"name": "u", "user": {}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "default"}}],
            "current-context": "x",
        }))
        (work / "bin.dat").write_bytes(b"\x00\x01\xfe\xff")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        env["KUBECONFIG"] = str(kubeconfig)
        env["HOME"] = str(work)
        yield [kubectl, f"--cache-dir={work / 'cache'}", "--request-timeout=20s"], env, work
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


KUBECTL_CREATES = [
    ["create", "namespace", "demo"],
    ["create", "namespace", "saved", "--save-config"],
    ["create", "configmap", "c", "--from-literal=a=b", "--from-literal=x=yz", "--from-file=bin={work}/bin.dat"],
    ["create", "deployment", "web", "--image=nginx", "--replicas=3", "--port=80"],
    ["create", "deployment", "multi", "--image=nginx", "--image=busybox", "--replicas=0"],
    ["create", "service", "clusterip", "web", "--tcp=80:8080", "--tcp=443:https"],
    ["create", "service", "clusterip", "headless", "--clusterip=None"],
    ["create", "service", "nodeport", "np", "--tcp=80:8080", "--node-port=30080"],
    ["create", "service", "loadbalancer", "lb", "--tcp=80"],
    ["create", "service", "externalname", "ext", "--external-name=example.com"],
    ["create", "secret", "generic", "s1", "--from-literal=k=v"],
    ["create", "serviceaccount", "sa1"],
]


@pytest.mark.parametrize("args", KUBECTL_CREATES, ids=lambda a: "-".join(a[1:4]))
def test_kubectl_create_bodies(kubectl_env: tuple[list[str], dict[str, str], Path], args: list[str]) -> None:
    argv, env, work = kubectl_env
    args = [a.replace("{work}", str(work)) for a in args]
    _Recorder.bodies.clear()
    sent = subprocess.run([*argv, *args, "--validate=false"], env=env, capture_output=True, timeout=60)
    assert sent.returncode == 0, sent.stderr.decode()
    posts = [b for b in _Recorder.bodies if b[1] == protobuf.CONTENT_TYPE]
    assert len(posts) == 1, _Recorder.bodies
    printed = subprocess.run([*argv, *args, "--dry-run=client", "-o", "json"], env=env, capture_output=True,
                             timeout=60)
    assert printed.returncode == 0, printed.stderr.decode()
    assert decode(posts[0][2]) == json.loads(printed.stdout)
