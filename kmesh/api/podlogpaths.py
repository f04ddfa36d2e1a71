"""Where a pod's container output lives on its node: the kubelet's ``/var/log/pods`` layout.

The node agents write these files and the API server's ``pods/log``
subresource reads them, so the layout is defined here, below both:
``<node dir>/pods/<ns>_<name>_<uid>/<container>/<restart>.log``.
"""

from __future__ import annotations

from pathlib import Path

from kmesh.api.obj import Obj


def pod_log_dir(node_dir: Path, pod: Obj) -> Path:
    """The directory holding every log of one pod."""
    md = pod.get("metadata") or {}
    return node_dir / "pods" / f"{md.get('namespace')}_{md.get('name')}_{md.get('uid')}"


def container_log_file(node_dir: Path, pod: Obj, container: str, restart: int) -> Path:
    """The file of one run (``restart``) of one container."""
    return pod_log_dir(node_dir, pod) / container / f"{restart}.log"
