"""The one type every layer passes API objects around as.

Objects travel as Kubernetes wire JSON (``apiVersion``, ``kind``,
``metadata``...), decoded into plain dicts; small typed views elsewhere read
them, but what is stored, watched and served stays this dict.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
"""A Kubernetes object (or a part of one) as decoded wire JSON."""
