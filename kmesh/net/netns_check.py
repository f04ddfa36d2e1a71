"""Whether this process can build network-namespace labs."""

from __future__ import annotations

import os
import shutil


def netns_usable() -> bool:
    """True when running as root with iproute2 and network namespaces available."""
    return os.geteuid() == 0 and shutil.which("ip") is not None and os.path.exists("/proc/self/ns/net")
