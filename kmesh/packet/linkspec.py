"""What a shaped link does to each packet: delay, jitter, loss, rate — parsed from tc's units and checked.

The values mean what ``tc qdisc ... netem delay D J loss L`` and ``tbf rate
R`` mean, per direction of a link (Mininet's TCLink semantics): a link with
50 ms delay adds 50 ms each way, so 100 ms to a round trip through it.

Units are tc's: durations ``s``/``sec``/``secs``, ``ms``/``msec``/``msecs``,
``us``/``usec``/``usecs``, ``ns``/``nsec``/``nsecs``; rates ``bit``,
``kbit``, ``mbit``, ``gbit``, ``tbit`` (SI, bits per second), ``bps``,
``kbps``, ``mbps``, ``gbps``, ``tbps`` (bytes per second) and the IEC
``kibit``, ``mibit``... ``kibps``...; loss a percentage, with or without
``%``. Unlike tc, a bare number is refused: tc reads ``--delay 50`` as 50
microseconds and ``--rate 100`` as 100 *bytes* per second, which is never
what anyone meant.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

MAX_DELAY_NS = 10 * 10**9  # delay + jitter: packets held this long is memory (the delayer) or queue (netem)
MAX_RATE_BPS = 100 * 10**9
MIN_RATE_BPS = 8  # one byte per second

_TIME_UNITS = {
    "s": 10**9, "sec": 10**9, "secs": 10**9,
    "ms": 10**6, "msec": 10**6, "msecs": 10**6,
    "us": 10**3, "usec": 10**3, "usecs": 10**3,
    "ns": 1, "nsec": 1, "nsecs": 1,
}
_SI = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_IEC = {"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_RATE_UNITS: dict[str, float] = {}
for _p, _f in (*_SI.items(), *_IEC.items()):
    _RATE_UNITS[f"{_p}bit"] = _f
    _RATE_UNITS[f"{_p}bps"] = _f * 8  # tc: bps is bytes per second
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z%]*)\s*$")


class LinkSpecError(ValueError):
    """A bad value; ``param`` names the option it came from (``--delay``, ``--loss``...)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(f"{param}: {message}")
        self.message = message
        self.param = param


def _split(text: str, param: str, what: str) -> tuple[float, str]:
    t = text.strip()
    if t.startswith("-"):
        raise LinkSpecError(f"{text!r} is negative; a {what} is 0 or more", param)
    m = _NUMBER.match(t)
    if not m:
        raise LinkSpecError(f"{text!r} is not a {what} (e.g. {_EXAMPLE[what]})", param)
    value = float(m.group(1))
    if not math.isfinite(value):
        raise LinkSpecError(f"{text!r} is not a finite {what}", param)
    return value, m.group(2).lower()


_EXAMPLE = {"duration": "50ms, 500us, 1s", "rate": "100mbit, 1gbit, 10mbps", "percentage": "1%, 0.5%"}


def parse_duration(text: str, param: str = "--delay") -> int:
    """Nanoseconds of a tc duration (``50ms``, ``1.5s``, ``200us``)."""
    value, unit = _split(text, param, "duration")
    if not unit:
        raise LinkSpecError(f"{text!r} has no unit: write {text}ms, {text}us or {text}s "
                            "(tc would read a bare number as microseconds)", param)
    if unit not in _TIME_UNITS:
        raise LinkSpecError(f"unknown unit {unit!r} in {text!r} (units: s, ms, us, ns)", param)
    ns = round(value * _TIME_UNITS[unit])
    if ns > MAX_DELAY_NS:
        raise LinkSpecError(f"{text!r} is more than {format_duration(MAX_DELAY_NS)}", param)
    return ns


def parse_rate(text: str, param: str = "--rate") -> int:
    """Bits per second of a tc rate (``100mbit``, ``1gbit``, ``10mbps`` = 80 mbit)."""
    value, unit = _split(text, param, "rate")
    if not unit:
        raise LinkSpecError(f"{text!r} has no unit: write {text}mbit, {text}kbit or {text}gbit "
                            "(tc would read a bare number as bytes per second)", param)
    if unit not in _RATE_UNITS:
        raise LinkSpecError(f"unknown unit {unit!r} in {text!r} (units: bit, kbit, mbit, gbit, tbit; "
                            "bps, kbps, mbps, gbps = bytes per second; kibit, mibit... for powers of 2)", param)
    bps = round(value * _RATE_UNITS[unit])
    if bps < MIN_RATE_BPS:
        raise LinkSpecError(f"{text!r} is below {format_rate(MIN_RATE_BPS)} (for no limit, leave --rate out)", param)
    if bps > MAX_RATE_BPS:
        raise LinkSpecError(f"{text!r} is more than {format_rate(MAX_RATE_BPS)}", param)
    return bps


def parse_loss(text: str, param: str = "--loss") -> float:
    """A loss percentage (``1%``, ``0.5``, ``100%``)."""
    value, unit = _split(text, param, "percentage")
    if unit not in ("", "%"):
        raise LinkSpecError(f"{text!r} is not a percentage (e.g. 1% or 0.5%)", param)
    if value > 100:
        raise LinkSpecError(f"{text!r} is more than 100%", param)
    return value


def format_duration(ns: int) -> str:
    """``50ms``, ``1.5ms``, ``200us``, ``2s``: the largest unit that keeps the number at least 1."""
    for unit, factor in (("s", 10**9), ("ms", 10**6), ("us", 10**3)):
        if ns >= factor:
            return f"{ns / factor:.6g}{unit}"
    return f"{ns}ns"


def format_rate(bps: int) -> str:
    """``10mbit``, ``1.5gbit``, ``800kbit`` (SI bits per second, as the option takes them)."""
    for unit, factor in (("tbit", 10**12), ("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bps >= factor:
            return f"{bps / factor:.6g}{unit}"
    return f"{bps}bit"


def format_loss(pct: float) -> str:
    """``1%``, ``0.5%``."""
    return f"{pct:.6g}%"


@dataclass(frozen=True)
class LinkSpec:
    """One direction's settings (the same are applied to both directions of a link).

    ``delay_ns``/``jitter_ns``: each packet is held delay ± jitter (uniform,
    netem's default distribution); ``loss``: percent of packets dropped;
    ``rate_bps``: token bucket rate in bits per second, 0 for none."""

    delay_ns: int = 0
    jitter_ns: int = 0
    loss: float = 0.0
    rate_bps: int = 0

    @classmethod
    def parse(cls, delay: str | None = None, jitter: str | None = None, loss: str | None = None,
              rate: str | None = None) -> LinkSpec:
        """The spec the options give; ``LinkSpecError`` naming the option for a bad one (or for none)."""
        d = parse_duration(delay, "--delay") if delay is not None else 0
        j = parse_duration(jitter, "--jitter") if jitter is not None else 0
        if jitter is not None and j and not d:
            raise LinkSpecError("jitter varies a delay: give --delay too (e.g. --delay 50ms --jitter 5ms)", "--jitter")
        if d + j > MAX_DELAY_NS:
            raise LinkSpecError(f"delay + jitter is more than {format_duration(MAX_DELAY_NS)}", "--jitter")
        spec = cls(delay_ns=d, jitter_ns=j, loss=parse_loss(loss, "--loss") if loss is not None else 0.0,
                   rate_bps=parse_rate(rate, "--rate") if rate is not None else 0)
        if spec.empty:
            raise LinkSpecError("nothing to set: give at least one of --delay, --loss, --rate "
                                "(`kmesh link reset` removes settings)", "--delay/--loss/--rate")
        return spec

    @property
    def empty(self) -> bool:
        """True when the spec changes nothing."""
        return not (self.delay_ns or self.loss or self.rate_bps)

    @property
    def delays(self) -> bool:
        """True when packets are held or dropped (netem's part, or the delayer's)."""
        return bool(self.delay_ns or self.loss)

    def to_json(self) -> dict[str, int | float]:
        """The spec as stored in the delayer's config file."""
        return {"delayNs": self.delay_ns, "jitterNs": self.jitter_ns, "loss": self.loss, "rateBps": self.rate_bps}

    @classmethod
    def from_json(cls, doc: object) -> LinkSpec:
        """Read ``to_json``'s form; ``ValueError`` for anything else (a file is input too)."""
        if not isinstance(doc, dict):
            raise ValueError(f"a link spec is an object, not {type(doc).__name__}")
        try:
            spec = cls(delay_ns=int(doc.get("delayNs", 0)), jitter_ns=int(doc.get("jitterNs", 0)),
                       loss=float(doc.get("loss", 0.0)), rate_bps=int(doc.get("rateBps", 0)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad link spec {doc!r}: {exc}") from None
        if not (0 <= spec.delay_ns <= MAX_DELAY_NS and 0 <= spec.jitter_ns <= MAX_DELAY_NS
                and 0.0 <= spec.loss <= 100.0 and 0 <= spec.rate_bps <= MAX_RATE_BPS):
            raise ValueError(f"link spec out of bounds: {doc!r}")
        return spec

    def describe(self) -> str:
        """``delay 50ms ±5ms, loss 1%, rate 100mbit`` (the parts that are set)."""
        parts = []
        if self.delay_ns:
            parts.append(f"delay {format_duration(self.delay_ns)}"
                         + (f" ±{format_duration(self.jitter_ns)}" if self.jitter_ns else ""))
        if self.loss:
            parts.append(f"loss {format_loss(self.loss)}")
        if self.rate_bps:
            parts.append(f"rate {format_rate(self.rate_bps)}")
        return ", ".join(parts) or "nothing"

    def netem_args(self) -> list[str]:
        """The arguments after ``netem`` for the delay/jitter/loss part (tc units, exact)."""
        args: list[str] = []
        if self.delay_ns:
            args += ["delay", _tc_time(self.delay_ns)]
            if self.jitter_ns:
                args.append(_tc_time(self.jitter_ns))
        if self.loss:
            args += ["loss", f"{self.loss:.6g}%"]
        return args


def _tc_time(ns: int) -> str:
    """Microseconds: netem's delay is parsed with tc's ``get_time``, which has no ``ns``."""
    return f"{max(1, round(ns / 1000))}us"
