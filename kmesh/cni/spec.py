"""CNI spec types shared by the plugin and the runtime side: error codes, error and version JSON.

Stdlib only: the ``kmesh-cni`` plugin imports this module on every pod start.
"""

from __future__ import annotations

import json
import os
TYPE_CHECKING = False  # not typing's: its import costs the plugin a few ms on every pod start
if TYPE_CHECKING:  # annotations only
    from collections.abc import Iterable
    from typing import Any

# Error codes of the CNI spec (1.0/1.1); 100+ are plugin-specific, 999 is libcni's "internal".
CODE_INCOMPATIBLE_VERSION = 1
CODE_UNSUPPORTED_FIELD = 2
CODE_UNKNOWN_CONTAINER = 3
CODE_INVALID_ENV = 4
CODE_IO = 5
CODE_DECODE = 6
CODE_INVALID_CONFIG = 7
CODE_TRY_AGAIN_LATER = 11
CODE_INTERNAL = 999

SUPPORTED_VERSIONS: list[str] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
DEFAULT_VERSION = "1.0.0"
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION")


class CNIError(Exception):
    """A CNI failure as the spec reports it: a code, a short message and details.

    Raised by the runtime side when a plugin fails, and turned into the error
    JSON on stdout by the plugin."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(
            f"CNI error {code}: {msg}" + (f" ({details})" if details else "")
        )
        self.code = int(code)
        self.msg = msg
        self.details = details

    def to_dict(self, cni_version: str = DEFAULT_VERSION) -> dict[str, Any]:
        """The spec's error object."""
        out: dict[str, Any] = {
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        }
        if self.details:
            out["details"] = self.details
        return out

    def to_json(self, cni_version: str = DEFAULT_VERSION) -> str:
        """The spec's error object as JSON text (what a plugin prints on stdout)."""
        return json.dumps(self.to_dict(cni_version))

    @classmethod
    def from_dict(cls, data: Any, fallback_details: str = "") -> CNIError:
        """Rebuild an error from a plugin's error JSON; a malformed one becomes code 999."""
        if isinstance(data, dict) and isinstance(data.get("code"), int):
            return cls(
                data["code"], str(data.get("msg", "")), str(data.get("details") or "")
            )
        return cls(
            CODE_INTERNAL, "plugin failed without a valid CNI error", fallback_details
        )

    @classmethod
    def from_output(cls, stdout: str, fallback_details: str = "") -> CNIError:
        """The error a failed plugin printed on stdout (its error JSON); anything else becomes code 999."""
        try:
            parsed: Any = json.loads(stdout) if stdout else None
        except ValueError:
            parsed = None
        return cls.from_dict(parsed, fallback_details)


def find_executable(name: str, dirs: Iterable[str]) -> str | None:
    """The first executable file ``name`` in ``dirs`` (a plugin lookup in CNI_PATH), else None."""
    for d in dirs:
        cand = os.path.join(d, name)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def version_result(cni_version: str = DEFAULT_VERSION) -> dict[str, Any]:
    """The answer to the VERSION command."""
    return {"cniVersion": cni_version, "supportedVersions": list(SUPPORTED_VERSIONS)}


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def version_at_least(version: str, minimum: str) -> bool:
    """True when semantic version ``version`` is ``minimum`` or later (e.g. prevResult on DEL needs 0.4.0)."""
    try:
        return _version_key(version) >= _version_key(minimum)
    except ValueError:
        return False


def check_version(version: Any) -> str:
    """``version`` when this package speaks it, else a code 1 (incompatible version) error."""
    if not isinstance(version, str) or not version:
        raise CNIError(
            CODE_INVALID_CONFIG,
            "cniVersion must be a non-empty string",
            f"got {version!r}",
        )
    if version not in SUPPORTED_VERSIONS:
        raise CNIError(
            CODE_INCOMPATIBLE_VERSION,
            f"incompatible CNI versions: config is {version!r}",
            f"supported: {', '.join(SUPPORTED_VERSIONS)}",
        )
    return version
