"""``--nodeport-addresses`` on the command line: bad values are refused before anything starts; good ones
travel from ``kmesh up`` (up.json) to every node agent's command line and into the proxy's NodeContext."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kmesh.cli import agent, proxy_run, up
from kmesh.lab.datadir import DataDir
from kmesh.lab.netnslab import agent_argv
from kmesh.lab.supervisor import UpOptions
from tests.test_cli import kmesh


@pytest.mark.parametrize(("value", "why"), [
    ("bogus", "neither a CIDR"),
    ("10.1.2.3", "needs a prefix length"),
    ("primary,10.0.0.0/8", "cannot be combined"),
])
async def test_up_refuses_a_bad_value_and_starts_nothing(tmp_path: Path, value: str, why: str) -> None:
    out = await kmesh("up", "--data-dir", str(tmp_path), "--runtime", "sim", "--port", "0",
                      "--nodeport-addresses", value, check=False)
    assert out.returncode == 2
    assert "Invalid value for '--nodeport-addresses'" in out.stderr and why in out.stderr
    if value != "primary,10.0.0.0/8":
        assert repr(value) in out.stderr
    assert not (tmp_path / "up.json").exists() and not (tmp_path / "cluster.json").exists()


async def test_proxy_run_and_agent_refuse_a_bad_value(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_text("")
    out = await kmesh("proxy", "run", "--kubeconfig", str(kubeconfig), "--node", "n1", "--node-ip", "192.168.56.11",
                      "--nodeport-addresses", "192.168.56.0/24", "--nodeport-addresses", "300.1.1.0/24", check=False)
    assert out.returncode == 2 and "'--nodeport-addresses'" in out.stderr and "'300.1.1.0/24'" in out.stderr
    out = await kmesh("agent", "--kubeconfig", str(kubeconfig), "--node", "n1", "--node-ip", "127.1.0.1",
                      "--data-dir", str(tmp_path), "--nodeport-addresses", "nope", check=False)
    assert out.returncode == 2 and "'--nodeport-addresses'" in out.stderr and "'nope'" in out.stderr
    assert not (tmp_path / "nodes").exists()  # the agent made nothing


def test_values_are_parsed_into_the_parameters(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "k"
    kubeconfig.write_text("")
    ctx = proxy_run.make_context("run", ["--kubeconfig", str(kubeconfig), "--node", "n1", "--node-ip", "192.168.56.11",
                                         "--nodeport-addresses", "192.168.56.0/24, 10.0.0.1/32",
                                         "--nodeport-addresses", "10.9.0.0/16"])
    assert ctx.params["nodeport_addresses"] == ("192.168.56.0/24", "10.0.0.1/32", "10.9.0.0/16")
    ctx = up.make_context("up", ["--nodeport-addresses", "primary"])
    assert ctx.params["nodeport_addresses"] == ("primary",)
    assert up.make_context("up", []).params["nodeport_addresses"] == ()


def test_up_options_reach_every_agent(tmp_path: Path) -> None:
    (tmp_path / "kubeconfig.yaml").write_text("")
    opts = UpOptions(data_dir=str(tmp_path), runtime="netns", proxy_mode="ipvs",
                     nodeport_addresses=["192.168.56.0/24", "10.9.0.0/16"])
    opts.save(tmp_path / "up.json")
    loaded = UpOptions.load(tmp_path / "up.json")
    assert loaded.nodeport_addresses == ["192.168.56.0/24", "10.9.0.0/16"]
    for i in range(2):
        argv = agent_argv(loaded, DataDir(tmp_path), i, tmp_path / "kubeconfig.yaml", None)
        params = agent.make_context("agent", argv[argv.index("agent") + 1:]).params
        assert params["nodeport_addresses"] == ("192.168.56.0/24", "10.9.0.0/16")
        assert params["proxy_mode"] == "ipvs"
    # Without the flag the agents get none (and an up.json from before the flag still loads).
    (tmp_path / "old.json").write_text(json.dumps({"data_dir": str(tmp_path), "runtime": "netns"}))
    old = UpOptions.load(tmp_path / "old.json")
    assert "--nodeport-addresses" not in agent_argv(old, DataDir(tmp_path), 0, tmp_path / "k", None)
