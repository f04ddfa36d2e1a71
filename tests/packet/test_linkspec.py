"""Parsing and checking link settings: tc's units, and every bad value named by its option."""

from __future__ import annotations

import pytest

from kmesh.packet.linkspec import (
    LinkSpec,
    LinkSpecError,
    format_duration,
    format_rate,
    parse_duration,
    parse_loss,
    parse_rate,
)


@pytest.mark.parametrize("text, ns", [
    ("50ms", 50_000_000), ("50msec", 50_000_000), ("1.5ms", 1_500_000), ("200us", 200_000), ("200usecs", 200_000),
    ("1s", 10**9), ("2sec", 2 * 10**9), ("0.25secs", 250_000_000), ("750ns", 750), ("0ms", 0), ("50MS", 50_000_000),
])
def test_durations_in_tc_units(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text, bps", [
    ("100mbit", 100_000_000), ("1gbit", 10**9), ("512kbit", 512_000), ("10mbps", 80_000_000), ("1kibit", 1024),
    ("2mibps", 2 * 2**20 * 8), ("1.5Gbit", 1_500_000_000), ("800bit", 800),
])
def test_rates_in_tc_units(text: str, bps: int) -> None:
    assert parse_rate(text) == bps


@pytest.mark.parametrize("text, pct", [("1%", 1.0), ("0.5%", 0.5), ("30", 30.0), ("100%", 100.0), ("0%", 0.0)])
def test_loss_is_a_percentage(text: str, pct: float) -> None:
    assert parse_loss(text) == pct


@pytest.mark.parametrize("kw, param, words", [
    ({"delay": "50"}, "--delay", "no unit"),
    ({"delay": "fifty"}, "--delay", "not a duration"),
    ({"delay": "-5ms"}, "--delay", "negative"),
    ({"delay": "5min"}, "--delay", "unknown unit"),
    ({"delay": "11s"}, "--delay", "more than 10s"),
    ({"delay": "nanms"}, "--delay", "not a duration"),
    ({"delay": "50ms", "jitter": "5"}, "--jitter", "no unit"),
    ({"delay": "50ms", "jitter": "-1ms"}, "--jitter", "negative"),
    ({"jitter": "5ms"}, "--jitter", "give --delay too"),
    ({"delay": "6s", "jitter": "5s"}, "--jitter", "delay + jitter"),
    ({"loss": "101%"}, "--loss", "more than 100%"),
    ({"loss": "-1%"}, "--loss", "negative"),
    ({"loss": "1ms"}, "--loss", "not a percentage"),
    ({"loss": "lots"}, "--loss", "not a percentage"),
    ({"rate": "100"}, "--rate", "no unit"),
    ({"rate": "-1mbit"}, "--rate", "negative"),
    ({"rate": "0mbit"}, "--rate", "below"),
    ({"rate": "100mbits"}, "--rate", "unknown unit"),
    ({"rate": "1000gbit"}, "--rate", "more than 100gbit"),
    ({}, "--delay/--loss/--rate", "nothing to set"),
    ({"delay": "0ms"}, "--delay/--loss/--rate", "nothing to set"),
])
def test_every_bad_value_names_its_option(kw: dict[str, str], param: str, words: str) -> None:
    with pytest.raises(LinkSpecError) as exc:
        LinkSpec.parse(**kw)
    assert exc.value.param == param
    assert words in exc.value.message, exc.value.message
    assert str(exc.value).startswith(param + ": ")


def test_a_spec_round_trips_through_its_file_form_and_describes_itself() -> None:
    spec = LinkSpec.parse(delay="50ms", jitter="5ms", loss="1%", rate="100mbit")
    assert LinkSpec.from_json(spec.to_json()) == spec
    assert spec.describe() == "delay 50ms ±5ms, loss 1%, rate 100mbit"
    assert spec.netem_args() == ["delay", "50000us", "5000us", "loss", "1%"]
    assert LinkSpec.parse(delay="750ns").netem_args() == ["delay", "1us"]  # netem's tc takes no ns
    assert spec.delays and not LinkSpec.parse(rate="1mbit").delays and LinkSpec.parse(loss="3%").delays


@pytest.mark.parametrize("doc", [[], {"delayNs": "x"}, {"loss": 101}, {"delayNs": -1}, {"rateBps": 10**15}])
def test_a_bad_file_form_is_refused(doc: object) -> None:
    with pytest.raises(ValueError):
        LinkSpec.from_json(doc)


def test_formats() -> None:
    assert [format_duration(n) for n in (50_000_000, 1_500_000, 200_000, 2 * 10**9, 750)] == \
        ["50ms", "1.5ms", "200us", "2s", "750ns"]
    assert [format_rate(n) for n in (10**7, 1_500_000_000, 800_000, 800)] == ["10mbit", "1.5gbit", "800kbit", "800bit"]
