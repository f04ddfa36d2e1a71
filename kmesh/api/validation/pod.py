"""Pods and pod templates (core/v1): containers, volumes, probes, DNS config, tolerations, updates.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from kmesh.api.errors import Cause
from kmesh.api.formats import (
    inclusive_range_error,
    is_config_map_key,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_http_header_name,
    is_label_value,
    is_qualified_name,
    is_relaxed_env_var_name,
    is_valid_port_name,
    is_valid_port_num,
)
from kmesh.api.meta import parse_quantity
from kmesh.api.obj import Obj
from kmesh.api.validation.common import (
    FILE_MODE_ERROR,
    IS_NEGATIVE,
    MAX_INT32,
    GoExpr,
    Opts,
    _d,
    _int,
    _l,
    _num,
    _s,
    duplicate,
    forbidden,
    immutable,
    invalid,
    nonnegative,
    not_found,
    not_supported,
    parse_ip,
    required,
    validate_ip,
)
from kmesh.api.validation.meta import (
    name_is_dns_subdomain,
    validate_label_name,
    validate_labels,
    validate_object_meta,
    validate_object_meta_update,
)

PROTOCOLS = ("SCTP", "TCP", "UDP")
RESTART_POLICIES = ("Always", "OnFailure", "Never")
DNS_POLICIES = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
TERMINATION_MESSAGE_POLICIES = ("File", "FallbackToLogsOnError")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
UPDATABLE_POD_SPEC_FIELDS = (
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
)
_STANDARD_CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
_QUANTITY_ERR = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
_VOLUME_SOURCES = (  # upstream's order: the first one set wins, later ones are "more than 1"
    "emptyDir", "hostPath", "gitRepo", "gcePersistentDisk", "awsElasticBlockStore", "secret", "nfs", "iscsi",
    "glusterfs", "flocker", "persistentVolumeClaim", "rbd", "cinder", "cephfs", "quobyte", "downwardAPI", "fc",
    "flexVolume", "configMap", "azureFile", "vsphereVolume", "photonPersistentDisk", "portworxVolume",
    "azureDisk", "storageos", "projected", "scaleIO", "csi", "ephemeral", "image",
)


def _int_or_string_port(value: Any, path: str) -> list[Cause]:
    """``ValidatePortNumOrName``."""
    if isinstance(value, str):
        return [invalid(path, value, m) for m in is_valid_port_name(value)]
    n = _int(value)
    return [invalid(path, 0 if n is None else n, m) for m in is_valid_port_num(n)]


def _path_no_backsteps(target: str, path: str) -> list[Cause]:
    parts = re.split(r"[/\\]", target)
    if ".." in parts:
        return [invalid(path, target, "must not contain '..'")]
    return []


def _local_descending_path(target: str, path: str) -> list[Cause]:
    errs = []
    if target.startswith("/"):
        errs.append(invalid(path, target, "must be a relative path"))
    return errs + _path_no_backsteps(target, path)


def _local_non_reserved_path(target: str, path: str) -> list[Cause]:
    errs = _local_descending_path(target, path)
    if len(target) > 1 and target.startswith(".."):
        errs.append(invalid(path, target, "must not start with '..'"))
    return errs


def _file_mode(value: Any, path: str) -> list[Cause]:
    n = _int(value)
    if value is not None and (n is None or n < 0 or n > 0o777):
        return [invalid(path, value if n is None else n, FILE_MODE_ERROR)]
    return []


def _key_to_paths(items: Any, path: str) -> list[Cause]:
    errs: list[Cause] = []
    for i, kp in enumerate(_l(items)):
        kp = _d(kp)
        ip = f"{path}[{i}]"
        if not kp.get("key"):
            errs.append(required(ip + ".key"))
        if not kp.get("path"):
            errs.append(required(ip + ".path"))
        errs += _local_non_reserved_path(_s(kp.get("path")), ip + ".path")
        errs += _file_mode(kp.get("mode"), ip + ".mode")
    return errs


def _volume_source(vol: Obj, path: str) -> list[Cause]:
    errs: list[Cause] = []
    count = 0
    for src in _VOLUME_SOURCES:
        if vol.get(src) is None:
            continue
        if count > 0:
            errs.append(forbidden(f"{path}.{src}", "may not specify more than 1 volume type"))
            continue
        count += 1
        body = _d(vol.get(src))
        sp = f"{path}.{src}"
        if src == "hostPath":
            if not body.get("path"):
                errs.append(required(sp + ".path"))
            else:
                errs += _path_no_backsteps(_s(body["path"]), sp + ".path")
        elif src == "emptyDir":
            limit = body.get("sizeLimit")
            if limit is not None and (parse_quantity(limit) or 0) < 0:
                errs.append(forbidden(sp + ".sizeLimit", "SizeLimit field must be a valid resource quantity"))
        elif src == "secret":
            if not body.get("secretName"):
                errs.append(required(sp + ".secretName"))
            errs += _file_mode(body.get("defaultMode"), sp + ".defaultMode")
            errs += _key_to_paths(body.get("items"), sp + ".items")
        elif src == "configMap":
            if not body.get("name"):
                errs.append(required(sp + ".name"))
            errs += _file_mode(body.get("defaultMode"), sp + ".defaultMode")
            errs += _key_to_paths(body.get("items"), sp + ".items")
        elif src == "persistentVolumeClaim":
            if not body.get("claimName"):
                errs.append(required(sp + ".claimName"))
        elif src == "nfs":
            if not body.get("server"):
                errs.append(required(sp + ".server"))
            if not body.get("path"):
                errs.append(required(sp + ".path"))
            elif not _s(body["path"]).startswith("/"):
                errs.append(invalid(sp + ".path", _s(body["path"]), "must be an absolute path"))
        elif src == "downwardAPI":
            errs += _file_mode(body.get("defaultMode"), sp + ".defaultMode")
            for i, item in enumerate(_l(body.get("items"))):
                item = _d(item)
                if not item.get("path"):
                    errs.append(required(f"{sp}.items[{i}].path"))
                errs += _local_non_reserved_path(_s(item.get("path")), f"{sp}.items[{i}].path")
        elif src == "projected":
            errs += _file_mode(body.get("defaultMode"), sp + ".defaultMode")
        elif src == "csi":
            if not body.get("driver"):
                errs.append(required(sp + ".driver"))
        elif src == "ephemeral":
            if body.get("volumeClaimTemplate") is None:
                errs.append(required(sp + ".volumeClaimTemplate"))
    if count == 0:
        errs.append(required(path, "must specify a volume type"))
    return errs


def _validate_volumes(volumes: Any, path: str) -> tuple[set[str], list[Cause]]:
    errs: list[Cause] = []
    names: set[str] = set()
    for i, vol in enumerate(_l(volumes)):
        vol = _d(vol)
        ip = f"{path}[{i}]"
        el = _volume_source(vol, ip)
        nm = _s(vol.get("name"))
        if not nm:
            el.append(required(ip + ".name"))
        else:
            el += [invalid(ip + ".name", nm, m) for m in is_dns1123_label(nm)]
        if nm in names:
            el.append(duplicate(ip + ".name", nm))
        if not el:
            names.add(nm)
        errs += el
    return names, errs


def _validate_container_ports(ports: Any, path: str) -> list[Cause]:
    errs: list[Cause] = []
    names: set[str] = set()
    for i, port in enumerate(_l(ports)):
        port = _d(port)
        ip = f"{path}[{i}]"
        nm = _s(port.get("name"))
        if nm:
            msgs = is_valid_port_name(nm)
            if msgs:
                errs += [invalid(ip + ".name", nm, m) for m in msgs]
            elif nm in names:
                errs.append(duplicate(ip + ".name", nm))
            else:
                names.add(nm)
        cp = _int(port.get("containerPort"))
        if not cp:
            errs.append(required(ip + ".containerPort"))
        else:
            errs += [invalid(ip + ".containerPort", cp, m) for m in is_valid_port_num(cp)]
        hp = _int(port.get("hostPort"))
        if hp:
            errs += [invalid(ip + ".hostPort", hp, m) for m in is_valid_port_num(hp)]
        proto = _s(port.get("protocol"))
        if not proto:
            errs.append(required(ip + ".protocol"))
        elif proto not in PROTOCOLS:
            errs.append(not_supported(ip + ".protocol", proto, PROTOCOLS))
    return errs


def _validate_env(env: Any, path: str) -> list[Cause]:
    errs: list[Cause] = []
    for i, ev in enumerate(_l(env)):
        ev = _d(ev)
        ip = f"{path}[{i}]"
        nm = _s(ev.get("name"))
        if not nm:
            errs.append(required(ip + ".name"))
        else:
            errs += [invalid(ip + ".name", nm, m) for m in is_relaxed_env_var_name(nm)]
        vf = ev.get("valueFrom")
        if vf is None:
            continue
        vf = _d(vf)
        vp = ip + ".valueFrom"
        sources = [k for k in ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef") if vf.get(k) is not None]
        if ev.get("value"):
            errs.append(invalid(vp, "", "may not be specified when `value` is not empty"))
        if not sources:
            errs.append(
                invalid(vp, "", "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`")
            )
        elif len(sources) > 1:
            errs.append(invalid(vp, "", "may not have more than one field specified at a time"))
        for ref in ("configMapKeyRef", "secretKeyRef"):
            body = vf.get(ref)
            if isinstance(body, dict):
                if not body.get("key"):
                    errs.append(required(f"{vp}.{ref}.key"))
                else:
                    errs += [invalid(f"{vp}.{ref}.key", _s(body["key"]), m) for m in is_config_map_key(_s(body["key"]))]
        fr = vf.get("fieldRef")
        if isinstance(fr, dict):
            if not fr.get("fieldPath"):
                errs.append(required(vp + ".fieldRef.fieldPath"))
            if not fr.get("apiVersion"):
                errs.append(required(vp + ".fieldRef.apiVersion"))
    return errs


def _validate_env_from(env_from: Any, path: str) -> list[Cause]:
    errs: list[Cause] = []
    for i, ef in enumerate(_l(env_from)):
        ef = _d(ef)
        ip = f"{path}[{i}]"
        prefix = _s(ef.get("prefix"))
        if prefix:
            errs += [invalid(ip + ".prefix", prefix, m) for m in is_relaxed_env_var_name(prefix)]
        refs = [r for r in ("configMapRef", "secretRef") if ef.get(r) is not None]
        for r in refs:
            if not _d(ef.get(r)).get("name"):
                errs.append(required(f"{ip}.{r}.name"))
        if not refs:
            errs.append(invalid(ip, "", "must specify one of: `configMapRef` or `secretRef`"))
        elif len(refs) > 1:
            errs.append(invalid(ip, "", "may not have more than one field specified at a time"))
    return errs


def _validate_volume_mounts(mounts: Any, volumes: set[str], path: str) -> list[Cause]:
    errs: list[Cause] = []
    points: set[str] = set()
    for i, m in enumerate(_l(mounts)):
        m = _d(m)
        ip = f"{path}[{i}]"
        nm = _s(m.get("name"))
        if not nm:
            errs.append(required(ip + ".name"))
        if nm not in volumes:
            errs.append(not_found(ip + ".name", nm))
        mp = _s(m.get("mountPath"))
        if not mp:
            errs.append(required(ip + ".mountPath"))
        if mp in points:
            errs.append(invalid(ip + ".mountPath", mp, "must be unique"))
        points.add(mp)
        if m.get("subPath"):
            errs += _local_descending_path(_s(m["subPath"]), path + ".subPath")
    return errs


def _container_resource_name(name: str, path: str) -> list[Cause]:
    errs = [invalid(path, name, m) for m in is_qualified_name(name)]
    if errs:
        return errs
    if "/" not in name:
        if name not in _STANDARD_CONTAINER_RESOURCES and not name.startswith("hugepages-"):
            return [invalid(path, name, "must be a standard resource for containers")]
    else:
        domain = name.split("/")[0]
        native = domain == "kubernetes.io" or domain.endswith(".kubernetes.io")
        if not native and is_qualified_name("requests." + name):
            return [invalid(path, name, "doesn't follow extended resource name standard")]
    return errs


def _validate_resources(res: Any, path: str) -> list[Cause]:
    res = _d(res)
    errs: list[Cause] = []
    limits, requests = _d(res.get("limits")), _d(res.get("requests"))
    parsed_limits = {}
    for name, raw in limits.items():
        rp = f"{path}.limits[{name}]"
        errs += _container_resource_name(_s(name), rp)
        q = parse_quantity(raw)
        if q is None:
            errs.append(invalid(rp, _s(raw), _QUANTITY_ERR))
        elif q < 0:
            errs.append(invalid(rp, _s(raw), IS_NEGATIVE))
        parsed_limits[name] = q
    for name, raw in requests.items():
        rp = f"{path}.requests[{name}]"
        errs += _container_resource_name(_s(name), rp)
        q = parse_quantity(raw)
        if q is None:
            errs.append(invalid(rp, _s(raw), _QUANTITY_ERR))
            continue
        if q < 0:
            errs.append(invalid(rp, _s(raw), IS_NEGATIVE))
        lim = parsed_limits.get(name)
        if lim is not None and q > lim:
            errs.append(
                invalid(path + ".requests", _s(raw), f"must be less than or equal to {name} limit of {_s(limits[name])}")
            )
    return errs


def _validate_security_context(sc: Any, path: str) -> list[Cause]:
    if not isinstance(sc, dict):
        return []
    errs: list[Cause] = []
    for key in ("runAsUser", "runAsGroup"):
        n = _int(sc.get(key))
        if n is not None and not 0 <= n <= 0xFFFFFFFF:
            errs.append(invalid(f"{path}.{key}", n, inclusive_range_error(0, 0xFFFFFFFF)))
    if sc.get("allowPrivilegeEscalation") is False and sc.get("privileged") is True:
        errs.append(invalid(path, GoExpr("&core.SecurityContext{...}"), "cannot set `allowPrivilegeEscalation` to false and `privileged` to true"))
    return errs


def _validate_handler(handler: Obj, path: str, grace: int | None, *, probe: bool) -> list[Cause]:
    errs: list[Cause] = []
    kinds = ("exec", "httpGet", "tcpSocket", "grpc") if probe else ("exec", "httpGet", "tcpSocket", "sleep")
    count = 0
    for k in kinds:
        if handler.get(k) is None:
            continue
        if count > 0:
            errs.append(forbidden(f"{path}.{k}", "may not specify more than 1 handler type"))
            continue
        count += 1
        body = _d(handler.get(k))
        hp = f"{path}.{k}"
        if k == "exec":
            if not _l(body.get("command")):
                errs.append(required(hp + ".command"))
        elif k == "httpGet":
            if not body.get("path"):
                errs.append(required(hp + ".path"))
            errs += _int_or_string_port(body.get("port"), hp + ".port")
            scheme = _s(body.get("scheme"))
            if scheme not in ("HTTP", "HTTPS"):
                errs.append(not_supported(hp + ".scheme", scheme, ("HTTP", "HTTPS")))
            for h in _l(body.get("httpHeaders")):
                hn = _s(_d(h).get("name"))
                errs += [invalid(hp + ".httpHeaders", hn, m) for m in is_http_header_name(hn)]
        elif k == "tcpSocket":
            errs += _int_or_string_port(body.get("port"), hp + ".port")
        elif k == "grpc":
            errs += _int_or_string_port(_num(body.get("port")), hp + ".port")
        elif k == "sleep":
            secs = _num(body.get("seconds"))
            if grace is not None and (secs <= 0 or secs > grace):
                errs.append(
                    invalid(
                        hp,
                        secs,
                        f"must be greater than 0 and less than terminationGracePeriodSeconds ({grace}). "
                        "Enable AllowPodLifecycleSleepActionZeroValue feature gate for zero sleep.",
                    )
                )
    if count == 0:
        errs.append(required(path, "must specify a handler type"))
    return errs


def _validate_probe(probe: Any, path: str, grace: int | None, which: str) -> list[Cause]:
    if probe is None:
        return []
    probe = _d(probe)
    errs = _validate_handler(probe, path, grace, probe=True)
    for key in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"):
        errs += nonnegative(f"{path}.{key}", probe.get(key))
    tg = probe.get("terminationGracePeriodSeconds")
    if tg is not None and _num(tg) <= 0:
        errs.append(invalid(path + ".terminationGracePeriodSeconds", _num(tg), "must be greater than 0"))
    if which in ("liveness", "startup") and _num(probe.get("successThreshold"), 1) != 1:
        errs.append(invalid(path + ".successThreshold", _num(probe.get("successThreshold")), "must be 1"))
    if which == "readiness" and tg is not None:
        errs.append(invalid(path + ".terminationGracePeriodSeconds", _num(tg), "must not be set for readinessProbes"))
    return errs


def _validate_lifecycle(lc: Any, path: str, grace: int | None) -> list[Cause]:
    lc = _d(lc)
    errs: list[Cause] = []
    for hook in ("postStart", "preStop"):
        if lc.get(hook) is not None:
            errs += _validate_handler(_d(lc[hook]), f"{path}.{hook}", grace, probe=False)
    return errs


def _validate_container_common(c: Obj, path: str, volumes: set[str]) -> list[Cause]:
    errs: list[Cause] = []
    nm = _s(c.get("name"))
    if not nm:
        errs.append(required(path + ".name"))
    else:
        errs += [invalid(path + ".name", nm, m) for m in is_dns1123_label(nm)]
    if not _s(c.get("image")):
        errs.append(required(path + ".image"))
    tmp = _s(c.get("terminationMessagePolicy"))
    if not tmp:
        errs.append(required(path + ".terminationMessagePolicy"))
    elif tmp not in TERMINATION_MESSAGE_POLICIES:
        errs.append(not_supported(path + ".terminationMessagePolicy", tmp, TERMINATION_MESSAGE_POLICIES))
    errs += _validate_container_ports(c.get("ports"), path + ".ports")
    errs += _validate_env(c.get("env"), path + ".env")
    errs += _validate_env_from(c.get("envFrom"), path + ".envFrom")
    errs += _validate_volume_mounts(c.get("volumeMounts"), volumes, path + ".volumeMounts")
    ipp = _s(c.get("imagePullPolicy"))
    if not ipp:
        errs.append(required(path + ".imagePullPolicy"))
    elif ipp not in PULL_POLICIES:
        errs.append(not_supported(path + ".imagePullPolicy", ipp, PULL_POLICIES))
    errs += _validate_resources(c.get("resources"), path + ".resources")
    errs += _validate_security_context(c.get("securityContext"), path + ".securityContext")
    return errs


def _validate_containers(containers: Any, volumes: set[str], grace: int | None, path: str) -> list[Cause]:
    containers = _l(containers)
    if not containers:
        return [required(path)]
    errs: list[Cause] = []
    names: set[str] = set()
    for i, c in enumerate(containers):
        c = _d(c)
        cp = f"{path}[{i}]"
        errs += _validate_container_common(c, cp, volumes)
        nm = _s(c.get("name"))
        if nm in names:
            errs.append(duplicate(cp + ".name", nm))
        else:
            names.add(nm)
        if c.get("lifecycle") is not None:
            errs += _validate_lifecycle(c["lifecycle"], cp + ".lifecycle", grace)
        errs += _validate_probe(c.get("livenessProbe"), cp + ".livenessProbe", grace, "liveness")
        errs += _validate_probe(c.get("readinessProbe"), cp + ".readinessProbe", grace, "readiness")
        errs += _validate_probe(c.get("startupProbe"), cp + ".startupProbe", grace, "startup")
        if c.get("restartPolicy") is not None:
            errs.append(forbidden(cp + ".restartPolicy", "may not be set for non-init containers"))
    errs += _host_port_conflicts(containers, path)
    return errs


def _host_port_conflicts(containers: list[Any], path: str) -> list[Cause]:
    errs: list[Cause] = []
    seen: set[str] = set()
    for ci, c in enumerate(containers):
        for pi, port in enumerate(_l(_d(c).get("ports"))):
            port = _d(port)
            hp = _num(port.get("hostPort"))
            if hp == 0:
                continue
            key = f"{_s(port.get('protocol'))}/{_s(port.get('hostIP'))}/{hp}"
            if key in seen:
                errs.append(duplicate(f"{path}[{ci}].ports[{pi}].hostPort", key))
            seen.add(key)
    return errs


def _validate_init_containers(
    inits: Any, regular: Any, volumes: set[str], grace: int | None, path: str
) -> list[Cause]:
    errs: list[Cause] = []
    names = {_s(_d(c).get("name")) for c in _l(regular)}
    for i, c in enumerate(_l(inits)):
        c = _d(c)
        cp = f"{path}[{i}]"
        errs += _validate_container_common(c, cp, volumes)
        restart_always = False
        if c.get("restartPolicy") is not None:
            rp = _s(c["restartPolicy"])
            if rp != "Always":
                errs.append(not_supported(cp + ".restartPolicy", rp, ("Always",)))
            restart_always = rp == "Always"
        nm = _s(c.get("name"))
        if nm in names:
            errs.append(duplicate(cp + ".name", nm))
        elif nm:
            names.add(nm)
        errs += _host_port_conflicts([c], path)
        if restart_always:
            if c.get("lifecycle") is not None:
                errs += _validate_lifecycle(c["lifecycle"], cp + ".lifecycle", grace)
            errs += _validate_probe(c.get("livenessProbe"), cp + ".livenessProbe", grace, "liveness")
            errs += _validate_probe(c.get("readinessProbe"), cp + ".readinessProbe", grace, "readiness")
            errs += _validate_probe(c.get("startupProbe"), cp + ".startupProbe", grace, "startup")
        else:
            for key in ("lifecycle", "livenessProbe", "readinessProbe", "startupProbe"):
                if c.get(key) is not None:
                    errs.append(forbidden(f"{cp}.{key}", "may not be set for init containers without restartPolicy=Always"))
    return errs


def validate_tolerations(tolerations: Any, path: str) -> list[Cause]:
    """``ValidateTolerations``."""
    errs: list[Cause] = []
    for i, t in enumerate(_l(tolerations)):
        t = _d(t)
        ip = f"{path}[{i}]"
        key, op, value, effect = _s(t.get("key")), _s(t.get("operator")), _s(t.get("value")), _s(t.get("effect"))
        if key:
            errs += validate_label_name(key, ip + ".key")
        if not key and op != "Exists":
            errs.append(
                invalid(ip + ".operator", op, 'operator must be Exists when `key` is empty, which means "match all values and all keys"')
            )
        if t.get("tolerationSeconds") is not None and effect != "NoExecute":
            errs.append(invalid(ip + ".effect", effect, "effect must be 'NoExecute' when `tolerationSeconds` is set"))
        if op in ("Equal", ""):
            msgs = is_label_value(value)
            if msgs:
                errs.append(invalid(ip + ".operator", value, ";".join(msgs)))
        elif op == "Exists":
            if value:
                errs.append(invalid(ip + ".operator", value, "value must be empty when `operator` is 'Exists'"))
        else:
            errs.append(not_supported(ip + ".operator", op, ("Equal", "Exists")))
        if effect and effect not in TAINT_EFFECTS:
            errs.append(not_supported(ip + ".effect", effect, TAINT_EFFECTS))
    return errs


def _validate_dns_config(spec: Obj, path: str) -> list[Cause]:
    cfg = spec.get("dnsConfig")
    errs: list[Cause] = []
    if spec.get("dnsPolicy") == "None":
        if cfg is None:
            return [required(path, "must provide `dnsConfig` when `dnsPolicy` is None")]
        if not _l(_d(cfg).get("nameservers")):
            return [required(path + ".nameservers", "must provide at least one DNS nameserver when `dnsPolicy` is None")]
    if cfg is None:
        return errs
    cfg = _d(cfg)
    ns = _l(cfg.get("nameservers"))
    if len(ns) > 3:
        errs.append(invalid(path + ".nameservers", [_s(n) for n in ns], "must not have more than 3 nameservers"))
    for i, n in enumerate(ns):
        errs += validate_ip(f"{path}.nameservers[{i}]", n)
    searches = [_s(s) for s in _l(cfg.get("searches"))]
    if len(searches) > 32:
        errs.append(invalid(path + ".searches", searches, "must not have more than 32 search paths"))
    if len(" ".join(searches)) > 2048:
        errs.append(invalid(path + ".searches", searches, "must not have more than 2048 characters (including spaces) in the search list"))
    for i, s in enumerate(searches):
        s = s[:-1] if s.endswith(".") else s
        errs += [invalid(f"{path}.searches[{i}]", s, m) for m in is_dns1123_subdomain(s)]
    for i, opt in enumerate(_l(cfg.get("options"))):
        if not _d(opt).get("name"):
            errs.append(required(f"{path}.options[{i}]", "must not be empty"))
    return errs


def validate_pod_spec(spec: Any, path: str = "spec", *, is_pod: bool = True) -> list[Cause]:
    """``ValidatePodSpec`` (plus the Pod-only container checks when ``is_pod``)."""
    spec = _d(spec)
    errs: list[Cause] = []
    tgps = spec.get("terminationGracePeriodSeconds")
    if tgps is None:
        errs.append(required(path + ".terminationGracePeriodSeconds"))
    grace = _int(tgps)
    volumes, verrs = _validate_volumes(spec.get("volumes"), path + ".volumes")
    errs += verrs
    errs += _validate_containers(spec.get("containers"), volumes, grace, path + ".containers")
    errs += _validate_init_containers(spec.get("initContainers"), spec.get("containers"), volumes, grace, path + ".initContainers")
    if spec.get("hostNetwork") is True:
        for ci, c in enumerate(_l(spec.get("containers"))):
            for pi, port in enumerate(_l(_d(c).get("ports"))):
                port = _d(port)
                hp, cp = _num(port.get("hostPort")), _num(port.get("containerPort"))
                if (is_pod or hp != 0) and hp != cp:
                    errs.append(
                        invalid(f"{path}.containers[{ci}].ports[{pi}].hostPort", hp, "must match `containerPort` when `hostNetwork` is true")
                    )
    rp = _s(spec.get("restartPolicy"))
    if not rp:
        errs.append(required(path + ".restartPolicy"))
    elif rp not in RESTART_POLICIES:
        errs.append(not_supported(path + ".restartPolicy", rp, RESTART_POLICIES))
    dp = _s(spec.get("dnsPolicy"))
    if not dp:
        errs.append(required(path + ".dnsPolicy"))
    elif dp not in DNS_POLICIES:
        errs.append(not_supported(path + ".dnsPolicy", dp, DNS_POLICIES))
    errs += validate_labels(spec.get("nodeSelector"), path + ".nodeSelector")
    sc = spec.get("securityContext")
    if isinstance(sc, dict):
        scp = path + ".securityContext"
        for key in ("fsGroup", "runAsUser", "runAsGroup"):
            n = _int(sc.get(key))
            if n is not None and not 0 <= n <= 0xFFFFFFFF:
                errs.append(invalid(f"{scp}.{key}", n, inclusive_range_error(0, 0xFFFFFFFF)))
        for g, gid in enumerate(_l(sc.get("supplementalGroups"))):
            n = _int(gid)
            if n is None or not 0 <= n <= 0xFFFFFFFF:
                errs.append(invalid(f"{scp}.supplementalGroups[{g}]", gid, inclusive_range_error(0, 0xFFFFFFFF)))
    for i, ref in enumerate(_l(spec.get("imagePullSecrets"))):
        if set(_d(ref)) - {"name"}:
            errs.append(invalid(f"{path}.imagePullSecrets[{i}]", GoExpr("core.LocalObjectReference{...}"), "only name may be set"))
    errs += _validate_dns_config(spec, path + ".dnsConfig")
    for i, gate in enumerate(_l(spec.get("readinessGates"))):
        ct = _s(_d(gate).get("conditionType"))
        errs += [invalid(f"{path}.readinessGates[{i}].conditionType", ct, m) for m in is_qualified_name(ct)]
    for key, fn in (("serviceAccountName", name_is_dns_subdomain), ("nodeName", name_is_dns_subdomain),
                    ("priorityClassName", name_is_dns_subdomain)):
        value = _s(spec.get(key))
        if value:
            errs += [invalid(f"{path}.{key}", value, m) for m in fn(value, False)]
    ads = spec.get("activeDeadlineSeconds")
    if ads is not None:
        n = _int(ads)
        if n is None or n < 1 or n > MAX_INT32:
            errs.append(invalid(path + ".activeDeadlineSeconds", ads, inclusive_range_error(1, MAX_INT32)))
    for key in ("hostname", "subdomain"):
        value = _s(spec.get(key))
        if value:
            errs += [invalid(f"{path}.{key}", value, m) for m in is_dns1123_label(value)]
    errs += validate_tolerations(spec.get("tolerations"), path + ".tolerations")
    for i, alias in enumerate(_l(spec.get("hostAliases"))):
        alias = _d(alias)
        errs += validate_ip(f"{path}.hostAliases[{i}].ip", _s(alias.get("ip")))
        for j, hn in enumerate(_l(alias.get("hostnames"))):
            errs += [invalid(f"{path}.hostAliases[{i}].hostnames[{j}]", _s(hn), m) for m in is_dns1123_subdomain(_s(hn))]
    pp = spec.get("preemptionPolicy")
    if pp is not None and pp not in ("PreemptLowerPriority", "Never"):
        if pp == "":
            errs.append(required(path + ".preemptionPolicy"))
        else:
            errs.append(not_supported(path + ".preemptionPolicy", _s(pp), ("PreemptLowerPriority", "Never")))
    if is_pod:
        for key in ("containers", "initContainers"):
            for i, c in enumerate(_l(spec.get(key))):
                image = _s(_d(c).get("image"))
                if image != image.strip():
                    errs.append(invalid(f"{path}.{key}[{i}].image", image, "must not have leading or trailing whitespace"))
    return errs


def _validate_pod_meta_and_spec(obj: Obj) -> list[Cause]:
    errs = validate_object_meta(obj.get("metadata"), True, name_is_dns_subdomain)
    return errs + validate_pod_spec(_d(obj.get("spec")), "spec", is_pod=True)


def validate_pod(obj: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a new Pod from being created."""
    errs = _validate_pod_meta_and_spec(obj)
    spec = _d(obj.get("spec"))
    if _l(spec.get("ephemeralContainers")):
        errs.append(forbidden("spec.ephemeralContainers", "cannot be set on create"))
    if spec.get("nodeName") and _l(spec.get("schedulingGates")):
        errs.append(forbidden("spec.nodeName", "cannot be set until all schedulingGates have been cleared"))
    return errs


def _only_added_tolerations(new: Any, old: Any, path: str) -> list[Cause]:
    new_list = [_d(t) for t in _l(new)]
    for o in _l(old):
        o = _d(o)
        found = False
        for n in new_list:
            clone = dict(o)
            if "tolerationSeconds" in n:
                clone["tolerationSeconds"] = n["tolerationSeconds"]
            else:
                clone.pop("tolerationSeconds", None)
            if clone == n:
                found = True
                break
        if not found:
            return [forbidden(path, "existing toleration can not be modified except its tolerationSeconds")]
    return []


def _spec_diff(old: Any, new: Any) -> str:
    a = json.dumps(old, indent=2, sort_keys=True).splitlines()
    b = json.dumps(new, indent=2, sort_keys=True).splitlines()
    lines = [ln for ln in difflib.unified_diff(a, b, "old", "new", lineterm="", n=1)][2:]
    return "\n".join(lines)


def validate_pod_update(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop an update of a Pod."""
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    errs += _validate_pod_meta_and_spec(new)
    spec, old_spec = _d(new.get("spec")), _d(old.get("spec"))
    for key in ("containers", "initContainers"):
        nc, oc = _l(spec.get(key)), _l(old_spec.get(key))
        if len(nc) != len(oc):
            errs.append(forbidden(f"spec.{key}", "pod updates may not add or remove containers"))
            return errs
    ads = spec.get("activeDeadlineSeconds")
    old_ads = old_spec.get("activeDeadlineSeconds")
    if ads is not None:
        n = _num(ads)
        if n < 0 or n > MAX_INT32:
            errs.append(invalid("spec.activeDeadlineSeconds", n, inclusive_range_error(0, MAX_INT32)))
            return errs
        if old_ads is not None and _num(old_ads) < n:
            errs.append(invalid("spec.activeDeadlineSeconds", n, "must be less than or equal to previous value"))
            return errs
    elif old_ads is not None:
        errs.append(invalid("spec.activeDeadlineSeconds", None, "must not update from a positive integer to nil value"))
    errs += _only_added_tolerations(spec.get("tolerations"), old_spec.get("tolerations"), "spec.tolerations")
    if spec == old_spec:
        return errs
    munged = json.loads(json.dumps(spec))
    for key in ("containers", "initContainers"):
        for c, oc in zip(_l(munged.get(key)), _l(old_spec.get(key))):
            if isinstance(c, dict):
                if "image" in _d(oc):
                    c["image"] = _d(oc)["image"]
                else:
                    c.pop("image", None)
    for key in ("activeDeadlineSeconds", "tolerations", "schedulingGates"):
        if key in old_spec:
            munged[key] = old_spec[key]
        else:
            munged.pop(key, None)
    old_tg = _int(old_spec.get("terminationGracePeriodSeconds"))
    if old_tg is not None and old_tg < 0 and _int(munged.get("terminationGracePeriodSeconds")) == 1:
        munged["terminationGracePeriodSeconds"] = old_spec["terminationGracePeriodSeconds"]
    if munged != old_spec:
        errs.append(
            forbidden(
                "spec",
                "pod updates may not change fields other than "
                + ",".join(UPDATABLE_POD_SPEC_FIELDS)
                + "\n"
                + _spec_diff(old_spec, munged),
            )
        )
    return errs


def validate_pod_status_update(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop an update of a Pod's status."""
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    if _d(new.get("spec")).get("nodeName") != _d(old.get("spec")).get("nodeName"):
        errs.append(forbidden("status.nodeName", "may not be changed directly"))
    status, old_status = _d(new.get("status")), _d(old.get("status"))
    for i, cond in enumerate(_l(status.get("conditions"))):
        ct = _s(_d(cond).get("type"))
        if ct not in ("PodScheduled", "Ready", "Initialized"):
            errs += [invalid(f"status.conditions[{i}].Type", ct, m) for m in is_qualified_name(ct)]
    if "qosClass" in old_status or "qosClass" in status:
        errs += immutable("status.qosClass", _s(status.get("qosClass")), _s(old_status.get("qosClass")))
    ips = [_s(_d(p).get("ip")) for p in _l(status.get("podIPs"))]
    for i, ip in enumerate(ips):
        errs += validate_ip(f"status.podIPs[{i}]", ip)
    if len(ips) > 1:
        parsed = [parse_ip(ip) for ip in ips]
        if len(ips) > 2 or None in parsed or len({p.version for p in parsed if p}) != len(ips):
            errs.append(invalid("status.podIPs", GoExpr("[]core.PodIP{...}"), "may specify no more than one IP for each IP family"))
    return errs
