"""`kmesh link` without a netns lab: bad values, no lab, a sim lab — each named, exit 2 (no lab: 1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

KMESH = [sys.executable, "-m", "kmesh.cli"]


def kmesh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KMESH, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, words", [
    (("--delay", "50"), "--delay"),
    (("--loss", "101%"), "more than 100%"),
    (("--jitter", "5ms"), "--jitter"),
    (("--rate", "fast"), "--rate"),
    ((), "nothing to set"),
])
def test_bad_values_are_refused_before_the_lab_is_looked_at(tmp_path: Path, args: tuple[str, ...], words: str) -> None:
    out = kmesh("link", "set", "--data-dir", str(tmp_path / "none"), "node-1", *args)
    assert out.returncode == 2, out.stdout + out.stderr
    assert words in out.stderr
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("args", [("show",), ("set", "node-1", "--delay", "5ms"), ("reset",), ("down", "node-1"),
                                  ("up", "node-1")])
def test_no_lab_is_exit_1(tmp_path: Path, args: tuple[str, ...]) -> None:
    out = kmesh("link", args[0], "--data-dir", str(tmp_path / "none"), *args[1:])
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"no lab is running in {tmp_path / 'none'}" in out.stderr
    assert not (tmp_path / "none").exists()


@pytest.mark.slow
def test_a_sim_lab_has_no_links_to_shape_capture_or_trace(tmp_path: Path) -> None:
    """link, capture and trace refuse a sim lab (its pods share the machine's loopback), naming --data-dir."""
    d = tmp_path / "sim"
    up = kmesh("up", "--data-dir", str(d), "--port", "0", "--runtime", "sim")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        out = kmesh("link", "set", "--data-dir", str(d), "node-1", "--delay", "5ms")
        assert out.returncode == 2 and "--data-dir" in out.stderr and "sim runtime" in out.stderr, out.stderr
        assert not (d / "run" / "links").exists()
        out = kmesh("capture", "--data-dir", str(d), "node-1", "-w", str(tmp_path / "f.pcapng"))
        assert out.returncode == 2 and "--data-dir" in out.stderr and "sim runtime" in out.stderr, out.stderr
        assert "kmesh capture works on netns labs" in out.stderr
        assert not (tmp_path / "f.pcapng").exists()
        out = kmesh("trace", "--data-dir", str(d), "node-1", "svc/kubernetes")
        assert out.returncode == 2 and "--data-dir" in out.stderr and "kmesh trace works on netns labs" in out.stderr
    finally:
        kmesh("down", "--data-dir", str(d))


def test_trace_without_a_lab_is_exit_1(tmp_path: Path) -> None:
    out = kmesh("trace", "--data-dir", str(tmp_path / "none"), "node-1", "svc/web")
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"no lab is running in {tmp_path / 'none'}" in out.stderr
