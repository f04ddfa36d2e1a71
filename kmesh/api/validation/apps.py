"""apps/v1: Deployments and ReplicaSets.
"""

from __future__ import annotations

from typing import Any

from kmesh.api.errors import Cause
from kmesh.api.formats import is_valid_percent
from kmesh.api.obj import Obj
from kmesh.api.validation.common import (
    FIELD_IMMUTABLE,
    GoExpr,
    Opts,
    _d,
    _int,
    _l,
    _num,
    _s,
    forbidden,
    go_label_selector,
    go_quote,
    go_string_map,
    intstr,
    invalid,
    nonnegative,
    not_supported,
    required,
)
from kmesh.api.validation.meta import (
    _selector_empty,
    _selector_parses,
    name_is_dns_subdomain,
    selector_matches,
    validate_annotations,
    validate_label_selector,
    validate_labels,
    validate_object_meta,
    validate_object_meta_update,
)
from kmesh.api.validation.pod import validate_pod_spec


def _validate_pod_template(template: Any, selector: Obj | None, path: str, owner: str) -> list[Cause]:
    """``ValidatePodTemplateSpecForReplicaSet``; ``selector`` None is upstream's ``labels.Nothing()``."""
    template = _d(template)
    md = _d(template.get("metadata"))
    tlabels = {str(k): _s(v) for k, v in _d(md.get("labels")).items()}
    errs: list[Cause] = []
    if selector is None or not _selector_empty(selector):
        if selector is None or not selector_matches(selector, tlabels):
            raw = md.get("labels")
            errs.append(
                invalid(path + ".metadata.labels", GoExpr(go_string_map(raw if isinstance(raw, dict) else None)), "`selector` does not match template `labels`")
            )
    errs += validate_labels(md.get("labels"), path + ".labels")
    errs += validate_annotations(md.get("annotations"), path + ".annotations")
    spec = _d(template.get("spec"))
    errs += validate_pod_spec(spec, path + ".spec", is_pod=False)
    if _l(spec.get("ephemeralContainers")):
        errs.append(forbidden(path + ".spec.ephemeralContainers", "ephemeral containers not allowed in pod template"))
    rp = _s(spec.get("restartPolicy"))
    if rp != "Always":
        errs.append(not_supported(path + ".spec.restartPolicy", rp, ("Always",)))
    if spec.get("activeDeadlineSeconds") is not None:
        errs.append(forbidden(path + ".spec.activeDeadlineSeconds", f"activeDeadlineSeconds in {owner} is not Supported"))
    return errs


def _validate_selector_and_template(spec: Obj, owner: str) -> list[Cause]:
    errs: list[Cause] = []
    sel = spec.get("selector")
    if sel is None:
        errs.append(required("spec.selector"))
    else:
        errs += validate_label_selector(sel, "spec.selector")
        if _selector_empty(_d(sel)):
            errs.append(invalid("spec.selector", go_label_selector(sel), "empty selector is invalid for deployment"))
    if sel is not None and not _selector_parses(_d(sel)):
        errs.append(invalid("spec.selector", go_label_selector(sel), "invalid label selector"))
    else:
        errs += _validate_pod_template(spec.get("template"), _d(sel) if sel is not None else None, "spec.template", owner)
    return errs


def _validate_int_or_percent(value: Any, path: str) -> list[Cause]:
    if isinstance(value, str):
        return [invalid(path, intstr(value), m) for m in is_valid_percent(value)]
    n = _int(value)
    if n is None:
        return [invalid(path, intstr(value), "must be an integer or percentage (e.g '5%')")]
    return nonnegative(path, n)


def _int_or_percent_value(value: Any) -> int:
    if isinstance(value, str):
        if not is_valid_percent(value):
            return int(value[:-1])
        return int(value) if value.lstrip("-").isdigit() else 0
    return _num(value)


def _validate_deployment_spec(spec: Obj) -> list[Cause]:
    errs = nonnegative("spec.replicas", spec.get("replicas"))
    errs += _validate_selector_and_template(spec, "ReplicaSet")
    strategy = _d(spec.get("strategy"))
    stype = _s(strategy.get("type"))
    if stype == "Recreate":
        if strategy.get("rollingUpdate") is not None:
            errs.append(forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'"))
    elif stype == "RollingUpdate":
        ru = strategy.get("rollingUpdate")
        if ru is None:
            errs.append(required("spec.strategy.rollingUpdate", "this should be defaulted and never be nil"))
        else:
            ru = _d(ru)
            rp = "spec.strategy.rollingUpdate"
            mu, ms = ru.get("maxUnavailable"), ru.get("maxSurge")
            errs += _validate_int_or_percent(mu, rp + ".maxUnavailable")
            errs += _validate_int_or_percent(ms, rp + ".maxSurge")
            if _int_or_percent_value(mu) == 0 and _int_or_percent_value(ms) == 0:
                errs.append(invalid(rp + ".maxUnavailable", intstr(mu), "may not be 0 when `maxSurge` is 0"))
            if isinstance(mu, str) and not is_valid_percent(mu) and int(mu[:-1]) > 100:
                errs.append(invalid(rp + ".maxUnavailable", intstr(mu), "must not be greater than 100%"))
    else:
        ru = strategy.get("rollingUpdate")
        shown = GoExpr(
            "apps.DeploymentStrategy{Type:"
            + go_quote(stype)
            + ", RollingUpdate:(*apps.RollingUpdateDeployment)("
            + ("nil" if ru is None else "0xc000000000")
            + ")}"
        )
        errs.append(not_supported("spec.strategy", shown, ("Recreate", "RollingUpdate")))
    errs += nonnegative("spec.minReadySeconds", spec.get("minReadySeconds"))
    if spec.get("revisionHistoryLimit") is not None:
        errs += nonnegative("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    if spec.get("progressDeadlineSeconds") is not None:
        pds = _num(spec.get("progressDeadlineSeconds"))
        errs += nonnegative("spec.progressDeadlineSeconds", pds)
        if pds <= _num(spec.get("minReadySeconds")):
            errs.append(invalid("spec.progressDeadlineSeconds", pds, "must be greater than minReadySeconds"))
    return errs


def validate_deployment(obj: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a new Deployment from being created."""
    errs = validate_object_meta(obj.get("metadata"), True, name_is_dns_subdomain)
    return errs + _validate_deployment_spec(_d(obj.get("spec")))


def validate_replicaset(obj: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a new ReplicaSet from being created."""
    errs = validate_object_meta(obj.get("metadata"), True, name_is_dns_subdomain)
    spec = _d(obj.get("spec"))
    errs += nonnegative("spec.replicas", spec.get("replicas"))
    errs += nonnegative("spec.minReadySeconds", spec.get("minReadySeconds"))
    return errs + _validate_selector_and_template(spec, "ReplicaSet")


def _selector_immutable(new: Obj, old: Obj) -> list[Cause]:
    sel, old_sel = _d(new.get("spec")).get("selector"), _d(old.get("spec")).get("selector")
    if sel != old_sel:
        return [invalid("spec.selector", go_label_selector(sel), FIELD_IMMUTABLE)]
    return []


def validate_deployment_update(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop an update of a Deployment."""
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    errs += _validate_deployment_spec(_d(new.get("spec")))
    return errs + _selector_immutable(new, old)


def validate_replicaset_update(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop an update of a ReplicaSet."""
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    spec = _d(new.get("spec"))
    errs += nonnegative("spec.replicas", spec.get("replicas"))
    errs += nonnegative("spec.minReadySeconds", spec.get("minReadySeconds"))
    errs += _validate_selector_and_template(spec, "ReplicaSet")
    return errs + _selector_immutable(new, old)


def validate_workload_status_update(new: Obj, old: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop an update of a Deployment or ReplicaSet's status."""
    errs = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    status = _d(new.get("status"))
    keys = ("observedGeneration", "replicas", "updatedReplicas", "readyReplicas", "availableReplicas",
            "unavailableReplicas", "fullyLabeledReplicas", "collisionCount")
    for key in keys:
        errs += nonnegative(f"status.{key}", status.get(key))
    replicas = _num(status.get("replicas"))
    for key in ("updatedReplicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas"):
        if _num(status.get(key)) > replicas:
            errs.append(invalid(f"status.{key}", _num(status.get(key)), "cannot be greater than status.replicas"))
    if _num(status.get("availableReplicas")) > _num(status.get("readyReplicas")):
        errs.append(invalid("status.availableReplicas", _num(status.get("availableReplicas")), "cannot be greater than readyReplicas"))
    old_cc = _d(old.get("status")).get("collisionCount")
    if old_cc is not None and _num(status.get("collisionCount")) < _num(old_cc):
        errs.append(invalid("status.collisionCount", _num(status.get("collisionCount")), "cannot be decremented"))
    return errs
