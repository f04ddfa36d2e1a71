"""Go ``flag``-style argument parsing for built-in apps (``--port=80``, ``-port 80``, ``--tcp``, ``--http=false``)."""

from __future__ import annotations

from typing import Any


class FlagError(ValueError):
    """A bad command line (the app exits with code 2, as Go programs do)."""


def parse_flags(args: list[str], defaults: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Parse ``args`` against ``defaults`` (the type of each default is the flag's type); returns (flags, rest)."""
    values = dict(defaults)
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            rest.extend(args[i:])
            break
        if not arg.startswith("-") or arg == "-":
            rest.append(arg)
            continue
        name, eq, raw = arg.lstrip("-").partition("=")
        name = name.replace("_", "-")
        if name not in defaults:
            raise FlagError(f"flag provided but not defined: -{name}")
        kind = type(defaults[name])
        if kind is bool:
            if not eq:
                values[name] = True
                continue
            if raw.lower() not in ("1", "t", "true", "0", "f", "false"):
                raise FlagError(f"invalid boolean value {raw!r} for -{name}")
            values[name] = raw.lower() in ("1", "t", "true")
            continue
        if not eq:
            if i >= len(args):
                raise FlagError(f"flag needs an argument: -{name}")
            raw = args[i]
            i += 1
        try:
            values[name] = kind(raw)
        except ValueError:
            raise FlagError(f"invalid value {raw!r} for flag -{name}") from None
    return values, rest
