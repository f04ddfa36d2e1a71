"""`kmesh up` checks what it needs before it makes anything, and says what is missing and how to install it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import trio

from kmesh.client.api import Client
from kmesh.lab import preflight
from kmesh.lab.datadir import DataDir
from kmesh.lab.procs import stop
from kmesh.lab.topology import LabNames, lab_namespaces
from kmesh.net import netns
from kmesh.net.netns_check import netns_usable
from tests.conftest import require, require_binary

KMESH = [sys.executable, "-m", "kmesh.cli"]
REPO = Path(__file__).resolve().parents[2]

# --- the table ----------------------------------------------------------------------------------------------

NETNS_BASE = {"ip", "nsenter", "unshare", "sh", "hostname", "mount", "iptables", "iptables-save", "iptables-restore",
              "nft"}
MODE_PROGRAMS = {
    "userspace": set(),
    "iptables": {"sysctl", "conntrack"},
    "ipvs": {"ipset"},
    "nftables": {"nft", "conntrack"},
}


def names(needs: Iterable[preflight.Need], kind: str) -> set[str]:
    return {n.name for n in needs if n.kind == kind}


def test_sim_needs_nothing_but_an_etcd_it_starts() -> None:
    assert preflight.lab_needs(runtime="sim", proxy_mode="userspace") == []
    assert preflight.lab_needs(runtime="sim", proxy_mode="userspace", subnet_manager="etcd", backend="udp") == []
    etcd = preflight.lab_needs(runtime="sim", proxy_mode="userspace", store="etcd")
    assert [(n.kind, n.name, n.package, n.why) for n in etcd] == [("program", "etcd", "etcd-server", ("--store etcd",))]
    assert preflight.lab_needs(runtime="sim", proxy_mode="userspace", store="etcd", etcd_url="http://h:2379") == []


@pytest.mark.parametrize("mode", sorted(MODE_PROGRAMS))
def test_netns_programs_per_proxy_mode(mode: str) -> None:
    needs = preflight.lab_needs(runtime="netns", proxy_mode=mode)
    assert names(needs, "program") == NETNS_BASE | MODE_PROGRAMS[mode]
    assert names(needs, "cni-plugin") == {"kmesh-cni", "bridge", "host-local", "portmap"}
    assert names(needs, "kernel") == {"netns", "veth", "bridge", "vxlan"}
    for n in needs:  # every row says who needs it, and where it comes from
        assert n.why
        assert n.package or n.kind == "kernel" or n.name == "kmesh-cni"
    assert {n.name: n.package for n in needs}["ip"] == "iproute2"


def test_backends_stores_and_subnet_managers() -> None:
    kernel = {b: names(preflight.lab_needs(runtime="netns", proxy_mode="iptables", backend=b), "kernel")
              for b in ("vxlan", "host-gw", "udp")}
    assert kernel == {"vxlan": {"netns", "veth", "bridge", "vxlan"}, "host-gw": {"netns", "veth", "bridge"},
                      "udp": {"netns", "veth", "bridge", "tun"}}
    both = preflight.lab_needs(runtime="netns", proxy_mode="iptables", store="etcd", subnet_manager="etcd")
    assert [n.why for n in both if n.name == "etcd"] == [("--store etcd", "--subnet-manager etcd")]
    given = preflight.lab_needs(runtime="netns", proxy_mode="iptables", store="etcd", subnet_manager="etcd",
                                etcd_url="http://192.168.56.1:2379")
    assert "etcd" not in names(given, "program")
    agent = preflight.agent_needs(runtime="netns", proxy_mode="none", backend="udp")
    assert names(agent, "program") == NETNS_BASE and "tun" in names(agent, "kernel")
    assert names(preflight.proxy_needs(mode="nftables", runtime="netns"), "program") == {"nft", "conntrack"}
    assert preflight.proxy_needs(mode="userspace", runtime="sim") == []


# Where kmesh runs a program, and which part of a lab that file belongs to.
OWNER = {
    "kmesh/net/netns.py": "netns", "kmesh/node/netns_runtime.py": "netns", "kmesh/cni/backends/masq.py": "netns",
    "kmesh/proxy/iptables.py": "iptables", "kmesh/proxy/ipvs.py": "ipvs", "kmesh/proxy/ipsets.py": "ipvs",
    "kmesh/proxy/nftables.py": "nftables", "kmesh/proxy/userspace.py": "userspace",
    "kmesh/lab/etcd.py": "etcd",  # the lab's own etcd on the underlay (netns, --subnet-manager etcd)
    "kmesh/policy/agent.py": "netns", "kmesh/policy/counters.py": "netns",
}
NOT_REQUIRED = {
    ("kmesh/node/containers.py", "setpriv"): "pods run without --pdeathsig when it is missing",
    ("kmesh/proxy/ipvs_kernel.py", "sysctl"): "only with the kernel's ip_vs, and its failure is ignored",
    ("kmesh/net/netns_check.py", "ip"): "the check whether namespaces can be used at all",
    ("kmesh/store/bench.py", "etcd"): "a benchmark, not a lab",
    ("kmesh/lab/hostlab.py", "modprobe"): "only when br_netfilter's sysctl is missing; a failure is logged",
    ("kmesh/lab/capturecmd.py", "tcpdump"): "only `kmesh capture --filter` (it compiles the expression); its error "
                                            "names the package",
}


def programs_in_source() -> dict[tuple[str, str], None]:
    """(file, program) for every argv literal (``["prog", ...``) or ``which("prog")`` naming a program."""
    found: dict[tuple[str, str], None] = {}
    for d in ("net", "proxy", "cni", "policy", "node", "lab", "store", "dns", "apiserver", "controllers", "client"):
        for f in sorted((REPO / "kmesh" / d).rglob("*.py")):
            text, rel = f.read_text(), str(f.relative_to(REPO))
            for m in re.finditer(r'\[\s*"([\w.+-]+)"\s*,|which\("([\w-]+)"\)', text):
                prog = m.group(1) or m.group(2)
                if m.group(2) or shutil.which(prog):
                    found[(rel, prog)] = None
    return found


def test_every_program_kmesh_runs_is_in_the_table() -> None:
    found = programs_in_source()
    assert ("kmesh/proxy/nftables.py", "nft") in found and ("kmesh/net/netns.py", "nsenter") in found  # the scan works
    conntrack_users = {OWNER[str(f.relative_to(REPO))] for f in (REPO / "kmesh" / "proxy").glob("*.py")
                       if "import conntrack" in f.read_text()}
    assert conntrack_users == {"iptables", "nftables"}
    for (where, prog) in found:
        if where == "kmesh/proxy/conntrack.py":
            owners = conntrack_users
        elif (where, prog) in NOT_REQUIRED:
            continue
        else:
            assert where in OWNER, f"{where} runs {prog!r}: add it to kmesh/lab/preflight.py (and OWNER here)"
            owners = {OWNER[where]}
        for owner in owners:
            rows = (preflight.runtime_rows("netns") if owner == "netns"
                    else preflight.etcd_rows("netns", "sqlite", "etcd", "") if owner == "etcd"
                    else preflight.proxy_rows(owner, "netns"))
            assert prog in {name for kind, name, _ in rows if kind == "program"}, f"{where} runs {prog!r} ({owner})"
            assert prog in preflight.PACKAGES
    used = {prog for _, prog in found} | {"etcd"}  # etcd: kmesh.store.etcd_server's EtcdServer(binary="etcd")
    assert 'binary: str = "etcd"' in (REPO / "kmesh/store/etcd_server.py").read_text()
    assert set(preflight.PACKAGES) <= used, "a program in the table that kmesh no longer runs"


def test_cni_plugins_are_the_chains(tmp_path: Path) -> None:
    from kmesh.cni.caller import write_conflist
    from kmesh.cni.plugin import build_delegate, read_subnet_env

    subnet_env = tmp_path / "subnet.env"
    subnet_env.write_text("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\n"
                          "FLANNEL_IPMASQ=true\n")
    conf = json.loads(write_conflist(tmp_path / "net.d", subnet_file=subnet_env, data_dir=tmp_path / "d").read_text())
    env = read_subnet_env(str(subnet_env))
    delegate = build_delegate({**conf["plugins"][0], "name": conf["name"], "cniVersion": conf["cniVersion"]}, env)
    types = {p["type"] for p in conf["plugins"]} | {delegate["type"], delegate["ipam"]["type"]}
    assert types == set(preflight.CNI_PLUGINS)


def test_report_names_every_program_and_one_install_line() -> None:
    needs = {n.name: n for n in preflight.lab_needs(runtime="netns", proxy_mode="nftables", store="etcd")}
    one = preflight.report([preflight.Missing(needs["nft"], "not on $PATH")], "kmesh up")
    assert one == ("kmesh up: the NetworkPolicy agent (kmesh.policy) and the nftables proxy mode need `nft` "
                   "(Debian package nftables); install it with: apt-get install nftables")
    many = preflight.report([preflight.Missing(needs[p], "not on $PATH") for p in ("iptables-save", "iptables", "etcd")]
                            + [preflight.Missing(needs["vxlan"], "Operation not supported")], "kmesh up")
    lines = many.splitlines()
    assert lines[0] == "kmesh up: cannot start, 4 things it needs are missing:"
    assert "`iptables-save` (Debian package iptables)" in lines[1] and "`etcd` (Debian package etcd-server)" in lines[3]
    assert "the vxlan backend needs the kernel's VXLAN links" in lines[4] and "--backend" in lines[4]
    assert lines[-1] == "install them with: apt-get install iptables etcd-server"


def test_programs_are_looked_up_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "nft").symlink_to(require_binary("true"))
    monkeypatch.setenv("PATH", str(tmp_path))
    missing = preflight.find_missing(preflight.lab_needs(runtime="netns", proxy_mode="nftables"), kernel=False)
    assert "nft" not in {m.need.name for m in missing} and "conntrack" in {m.need.name for m in missing}


# --- the kernel probe ---------------------------------------------------------------------------------------

def root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines() if ": " in line}


@pytest.mark.netns
def test_kernel_probe_leaves_nothing_and_agrees_with_ip() -> None:
    require(netns_usable(), "root and network namespaces")
    before, spaces = root_links(), set(netns.names())
    failed = preflight.probe_kernel(preflight.KERNEL)
    # other test files' labs run beside this one (make test runs two files at a time), so only what
    # the probe could have made is looked for: its links and any named namespace of its own
    assert not {n for n in root_links() - before if n.startswith("kmesh-pf")}
    assert not {n for n in set(netns.names()) - spaces if n.startswith("kmesh-pf")}
    # the probe's verdict on a link type matches what `ip` gets in a namespace of our own
    ns = f"kmt-pf-{uuid.uuid4().hex[:6]}"
    try:
        netns.add(ns)
        for kind in ("dummy", "vxlan", "bridge"):
            extra = ["id", "1", "dstport", "8472"] if kind == "vxlan" else []
            made = subprocess.run(["ip", "-n", ns, "link", "add", f"t-{kind}", "type", kind, *extra],
                                  check=False, capture_output=True, text=True)
            assert (made.returncode == 0) == (kind not in failed), (kind, made.stderr, failed.get(kind))
    finally:
        netns.delete(ns)


# --- `kmesh up` with something missing ----------------------------------------------------------------------

def path_without(tmp: Path, hidden: set[str]) -> str:
    """A directory of links to every program on $PATH except ``hidden`` (what a machine without them has)."""
    d = tmp / "bin"
    d.mkdir()
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if not entry or not os.path.isdir(entry):
            continue
        for name in sorted(os.listdir(entry)):
            target = os.path.join(entry, name)
            if name in hidden or (d / name).exists() or os.path.isdir(target) or not os.access(target, os.X_OK):
                continue
            (d / name).symlink_to(target)
    return str(d)


def kmesh_processes(marker: str) -> list[int]:
    """PIDs whose command line mentions ``marker`` (a test's own data dir)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            if marker.encode() in (p / "cmdline").read_bytes():
                out.append(int(p.name))
        except OSError:
            continue
    return out


@pytest.fixture
def lab_args(tmp_path: Path) -> Iterator[tuple[Path, LabNames]]:
    """A unique lab name and a data dir that does not exist yet; `kmesh down` afterwards, whatever happened."""
    names, d = LabNames(f"pf{uuid.uuid4().hex[:5]}"), tmp_path / "lab"
    try:
        yield d, names
    finally:
        subprocess.run([*KMESH, "down", "--data-dir", str(d)], check=False, capture_output=True, timeout=120)


def assert_nothing_made(d: Path, names: LabNames) -> None:
    assert not d.exists(), sorted(p.name for p in d.iterdir())
    if netns_usable():
        assert lab_namespaces(names) == []
        assert not {n for n in root_links() if names.lab in n or n.startswith("kmesh-pf")}
    assert kmesh_processes(str(d)) == []


CASES = [
    pytest.param({"iptables", "iptables-save", "iptables-restore"}, ["--proxy-mode", "iptables"],
                 ["`iptables` (Debian package iptables)", "`iptables-save` (Debian package iptables)",
                  "the iptables proxy mode", "flannel's masquerading", "apt-get install iptables"], id="iptables"),
    pytest.param({"nft"}, ["--proxy-mode", "nftables"],
                 [("kmesh up: the NetworkPolicy agent (kmesh.policy) and the nftables proxy mode need `nft` "
                   "(Debian package nftables); install it with: apt-get install nftables")], id="nft"),
    pytest.param({"etcd"}, ["--subnet-manager", "etcd", "--store", "etcd"],
                 ["--store etcd and --subnet-manager etcd need `etcd` (Debian package etcd-server)",
                  "apt-get install etcd-server"], id="etcd"),
]


@pytest.mark.netns
@pytest.mark.parametrize(("hidden", "flags", "expected"), CASES)
def test_netns_up_names_the_missing_program(lab_args: tuple[Path, LabNames], tmp_path: Path, hidden: set[str],
                                            flags: list[str], expected: list[str]) -> None:
    require(netns_usable(), "root and network namespaces")
    d, names = lab_args
    env = dict(os.environ, PATH=path_without(tmp_path, hidden), COLUMNS="200")
    out = subprocess.run([*KMESH, "up", "--runtime", "netns", "--name", names.lab, "--data-dir", str(d),
                          "--port", "0", *flags], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    for text in expected:
        assert text in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert_nothing_made(d, names)


@pytest.mark.netns
def test_netns_up_names_a_missing_cni_plugin(lab_args: tuple[Path, LabNames], tmp_path: Path) -> None:
    require(netns_usable(), "root and network namespaces")
    plugins = tmp_path / "cni"
    plugins.mkdir()
    for d in ("/usr/lib/cni", "/opt/cni/bin"):
        for name in ("bridge", "host-local"):
            if os.path.exists(f"{d}/{name}") and not (plugins / name).exists():
                (plugins / name).symlink_to(f"{d}/{name}")
    d, names = lab_args
    env = dict(os.environ, CNI_PATH=str(plugins), COLUMNS="200")
    out = subprocess.run([*KMESH, "up", "--runtime", "netns", "--name", names.lab, "--data-dir", str(d),
                          "--port", "0"], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"the CNI plugin `portmap` in $CNI_PATH ({plugins}) (Debian package containernetworking-plugins)" in out.stderr
    assert "apt-get install containernetworking-plugins" in out.stderr
    assert_nothing_made(d, names)


def test_sim_up_names_a_missing_etcd(lab_args: tuple[Path, LabNames], tmp_path: Path) -> None:
    d, names = lab_args
    env = dict(os.environ, PATH=path_without(tmp_path, {"etcd"}), COLUMNS="200")
    out = subprocess.run([*KMESH, "up", "--runtime", "sim", "--store", "etcd", "--name", names.lab,
                          "--data-dir", str(d), "--port", "0"], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.strip() == ("kmesh up: --store etcd needs `etcd` (Debian package etcd-server); "
                                  "install it with: apt-get install etcd-server")
    assert_nothing_made(d, names)


@pytest.mark.netns
@pytest.mark.slow
def test_netns_lab_runs_with_only_the_programs_the_table_lists(lab_args: tuple[Path, LabNames], tmp_path: Path) -> None:
    """The table is complete: a lab (iptables mode, vxlan, SQLite) comes up, runs the demo and a command in a pod
    with nothing but the listed programs on $PATH."""
    require(netns_usable(), "root and network namespaces")
    needs = preflight.lab_needs(runtime="netns", proxy_mode="iptables")
    only = tmp_path / "only"
    only.mkdir()
    for n in needs:
        if n.kind == "program":
            (only / n.name).symlink_to(require_binary(n.name))
    d, names = lab_args
    env = dict(os.environ, PATH=str(only), COLUMNS="200")
    up = subprocess.run([*KMESH, "up", "--runtime", "netns", "--nodes", "1", "--name", names.lab, "--data-dir", str(d),
                         "--port", "0", "--demo"], check=False, capture_output=True, text=True, env=env, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "is up:" in up.stdout
    pods = subprocess.run([require_binary("kubectl"), "get", "pods", "-l", "app=web", "-o", "json"], check=True,
                          capture_output=True, text=True, env=dict(os.environ, KUBECONFIG=str(d / "kubeconfig.yaml")))
    pod = json.loads(pods.stdout)["items"][0]["metadata"]["name"]
    ran = subprocess.run([*KMESH, "exec", "--data-dir", str(d), pod, "--", "hostname"], check=False, capture_output=True,
                         text=True, env=env, timeout=60)
    assert (ran.returncode, ran.stdout.strip()) == (0, pod), ran.stderr
    down = subprocess.run([*KMESH, "down", "--data-dir", str(d)], check=False, capture_output=True, text=True,
                          timeout=120)
    assert down.returncode == 0, down.stderr
    assert_nothing_made(d, names)


# --- `kmesh up --demo` when the demo does not become ready ----------------------------------------------------

async def test_demo_that_does_not_become_ready_is_a_warning_and_exit_1(lab_args: tuple[Path, LabNames]) -> None:
    """A Deployment `web` the store already holds (apply_demo leaves existing objects alone) whose image does not
    exist never becomes available: `kmesh up --demo` says so, names the pod, keeps the lab and exits 1."""
    d, names = lab_args
    base = [*KMESH, "up", "--runtime", "sim", "--name", names.lab, "--data-dir", str(d), "--port", "0"]
    env = dict(os.environ, COLUMNS="200")
    first = await trio.run_process(base, capture_stdout=True, capture_stderr=True, env=env, check=False)
    assert first.returncode == 0, first.stderr.decode()
    async with Client.from_kubeconfig(d / "kubeconfig.yaml") as c:
        await c.create({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "kmesh.invalid/no-such-image:1"}]}}},
        }, "default")
    sup = DataDir(d).supervisor()
    assert sup is not None and stop(sup, grace=30.0)  # the lab stops; its store stays
    again = await trio.run_process([*base, "--demo", "--demo-timeout", "3"], capture_stdout=True, capture_stderr=True,
                                   env=env, check=False)
    out, err = again.stdout.decode(), again.stderr.decode()
    assert again.returncode == 1, out + err
    assert "is up, but the demo is not ready" in out and "export KUBECONFIG=" in out
    assert "kmesh up: warning: demo: Deployment web has 0/1 available replicas after 3 s" in err
    assert re.search(r"^  pod web-[a-z0-9]+-[a-z0-9]+: ", err, re.MULTILINE), err
    assert "the lab stays up" in err and f"kmesh down --data-dir {d}" in err
    assert DataDir(d).supervisor_pid() is not None  # still running: the user can look at it
    status = await trio.run_process([*KMESH, "status", "--data-dir", str(d)], capture_stdout=True, env=env,
                                    check=False)
    assert status.returncode == 0
    down = await trio.run_process([*KMESH, "down", "--data-dir", str(d)], capture_stdout=True, check=False)
    assert down.returncode == 0
    assert not d.exists() and kmesh_processes(str(d)) == []
