"""coordination.k8s.io/v1: Leases.
"""

from __future__ import annotations

from kmesh.api.errors import Cause
from kmesh.api.obj import Obj
from kmesh.api.validation.common import IS_NEGATIVE, Opts, _d, _num, _s, forbidden, invalid, not_supported
from kmesh.api.validation.meta import name_is_dns_subdomain, validate_object_meta


def validate_lease(obj: Obj, opts: Opts) -> list[Cause]:
    """The problems that stop a new Lease from being created."""
    errs = validate_object_meta(obj.get("metadata"), True, name_is_dns_subdomain, kube_finalizers=False)
    spec = _d(obj.get("spec"))
    lds = spec.get("leaseDurationSeconds")
    if lds is not None and _num(lds) <= 0:
        errs.append(invalid("spec.leaseDurationSeconds", _num(lds), "must be greater than 0"))
    lt = spec.get("leaseTransitions")
    if lt is not None and _num(lt) < 0:
        errs.append(invalid("spec.leaseTransitions", _num(lt), IS_NEGATIVE))
    strategy = spec.get("strategy")
    if strategy is not None and strategy != "OldestEmulationVersion":
        errs.append(not_supported("spec.strategy", _s(strategy), ("OldestEmulationVersion",)))
    if spec.get("preferredHolder") and strategy is None:
        errs.append(forbidden("spec.preferredHolder", "may only be specified if `strategy` is defined"))
    return errs
