"""Vagrant labs for the VM tests and benchmarks: the project's own Vagrantfile, the libvirt provider, libvirtd
confined to a namespace the test made (tests/support/libvirt.py).

Each lab has a private work dir: its settings.yaml (read by vagrant/Vagrantfile through
KMESH_VAGRANT_SETTINGS), VAGRANT_HOME (the box is added there), the .vagrant dir
(VAGRANT_DOTFILE_PATH), the synced folder (wheelhouse, join command, kubeconfig) and the VMs'
console logs. ``vagrant`` itself runs inside the namespace (``ip netns exec``), so its ssh to the VMs'
management addresses, and kubectl to 192.168.56.10, stay there too. The box comes from
``vagrant/box/make.sh`` (what ``make vagrant-box`` runs), cached under ~/.cache/kmesh/vagrant.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.libvirt import ConfinedLibvirt, confined_libvirt
from tests.support.libvirt import missing_programs as libvirt_missing

REPO = Path(__file__).resolve().parents[2]
VAGRANT_DIR = REPO / "vagrant"
BOX_NAME = "kmesh/debian12"
INSECURE_KEY_CANDIDATES = (
    Path("/usr/share/rubygems-integration/all/gems/vagrant-2.3.4/keys/vagrant"),
    Path("/usr/share/vagrant/keys/vagrant"),
    Path("/opt/vagrant/embedded/gems/gems/vagrant-2.3.4/keys/vagrant"),
)
SSH_OPTS = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=20", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes")


def missing_packages() -> list[str]:
    """The Debian packages a VM test needs and this machine lacks (``make test`` installs them as root)."""
    out = libvirt_missing()
    for prog, pkg in (("vagrant", "vagrant"), ("debootstrap", "debootstrap"), ("qemu-img", "qemu-utils"),
                      ("mkfs.ext4", "e2fsprogs"), ("ssh", "openssh-client")):
        if shutil.which(prog) is None:
            out.append(pkg)
    if shutil.which("vagrant") and not Path("/usr/share/vagrant-plugins/plugins.d/vagrant-libvirt.json").exists() \
            and "vagrant-libvirt" not in subprocess.run(["vagrant", "plugin", "list"], capture_output=True, text=True,
                                                        check=False).stdout:
        out.append("vagrant-libvirt")
    return out


def insecure_key() -> Path:
    """Vagrant's well-known private key (the box authorises its public half; Vagrant logs in with it)."""
    for p in INSECURE_KEY_CANDIDATES:
        if p.exists():
            return p
    found = list(Path("/usr/share").glob("rubygems-integration/all/gems/vagrant-*/keys/vagrant"))
    if not found:
        raise FileNotFoundError("Vagrant's insecure private key (keys/vagrant in the vagrant gem)")
    return found[0]


def build_box(log: Path | None = None) -> tuple[Path, float]:
    """The kmesh box file (``vagrant/box/make.sh --no-add``: cached, built when its inputs changed) and the
    seconds it took (a few when cached)."""
    t0 = time.monotonic()
    out = subprocess.run([str(VAGRANT_DIR / "box" / "make.sh"), "--no-add"], capture_output=True, text=True,
                         check=False, timeout=1800)
    if log is not None:
        log.write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        raise RuntimeError(f"vagrant/box/make.sh failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return Path(out.stdout.strip().splitlines()[-1]), time.monotonic() - t0


def default_settings(work: Path, *, workers: int = 1, proxy_mode: str = "iptables",
                     store: str = "sqlite", backend: str = "vxlan") -> dict[str, Any]:
    """settings.yaml for a test lab: vagrant/settings.yaml's, with the lab's folders under ``work``, TCG and
    ``workers`` workers. The management network is libvirt's NAT one, as users have it (each VM's default
    route goes through it, as through VirtualBox's NAT NIC): inside the test's namespace it leads nowhere."""
    s = yaml.safe_load((VAGRANT_DIR / "settings.yaml").read_text())
    s["box"] = BOX_NAME
    s["nodes"]["workers"] = workers
    s["nodes"]["server"].update(cpus=1, memory=1536)
    s["nodes"]["worker"].update(cpus=1, memory=1024)
    s["kmesh"].update(proxy_mode=proxy_mode, store=store, backend=backend, timeout=1800)
    s["synced_folder"]["host"] = str(work / "sync")
    s["libvirt"].update(accel="tcg", management_network_mode="nat", fast_boot=True,
                        console_log_dir=str(work / "console"))
    s["boot_timeout"] = 900
    return s


@dataclass
class Machine:
    name: str
    ip: str          # the lab network's (eth1)
    mgmt_ip: str     # libvirt's management network's (eth0): where ssh goes


@dataclass
class VagrantLab:
    """A Vagrant lab: its work dir, its confined libvirt and how to drive it."""

    lv: ConfinedLibvirt
    work: Path
    settings: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    machines: dict[str, Machine] = field(default_factory=dict)
    # the last vagrant command's output lines, each with the seconds since it started; the last `up`'s
    stamped: list[tuple[float, str]] = field(default_factory=list)
    up_stamped: list[tuple[float, str]] = field(default_factory=list)

    @property
    def sync(self) -> Path:
        return self.work / "sync"

    @property
    def kubeconfig(self) -> Path:
        return self.sync / "shared" / "kubeconfig.yaml"

    @property
    def log(self) -> Path:
        return self.work / "vagrant.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAGRANT_", "KMESH_"))}
        env.update(
            VAGRANT_HOME=str(self.work / "vagrant.d"),
            VAGRANT_DOTFILE_PATH=str(self.work / "dot-vagrant"),
            VAGRANT_CWD=str(VAGRANT_DIR),
            VAGRANT_DEFAULT_PROVIDER="libvirt",
            VAGRANT_CHECKPOINT_DISABLE="1",
            VAGRANT_NO_COLOR="1",
            LIBVIRT_DEFAULT_URI=self.lv.uri,
            KMESH_VAGRANT_SETTINGS=str(self.work / "settings.yaml"),
        )
        return env

    def vagrant(self, *args: str, timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``vagrant args`` inside the lab's namespace. Its output is appended to vagrant.log, each line
        with the seconds since the command started (what the benchmark splits into phases)."""
        t0 = time.monotonic()
        lines: list[str] = []
        self.stamped = []
        with open(self.log, "a") as f:
            f.write(f"\n===== vagrant {' '.join(args)}\n")
            f.flush()
            proc = subprocess.Popen(self.lv.in_netns("vagrant", *args), env=self.env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGTERM))
            timer.start()  # a vagrant that hangs silently is ended too (it and what it started: its session)
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    lines.append(line.rstrip("\n"))
                    self.stamped.append((time.monotonic() - t0, line.rstrip()))
                    stamped = f"[{time.monotonic() - t0:7.1f}] {line.rstrip()}"
                    f.write(stamped + "\n")
                    f.flush()
                rc = proc.wait()
            finally:
                timer.cancel()
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=60)
            if time.monotonic() - t0 >= timeout:
                raise subprocess.TimeoutExpired(["vagrant", *args], timeout)
            f.write(f"===== exit {rc} after {time.monotonic() - t0:.1f} s\n")
        out = subprocess.CompletedProcess(list(args), rc, "\n".join(lines) + "\n", "")
        if check and rc != 0:
            raise AssertionError(f"vagrant {' '.join(args)} failed ({rc}):\n{out.stdout[-6000:]}"
                                 f"{self.console_tail()}")
        return out

    def console_tail(self, lines: int = 30) -> str:
        text = ""
        for p in sorted((self.work / "console").glob("*.log")):
            tail = p.read_text(errors="replace").splitlines()[-lines:]
            text += f"\n--- {p.name}:\n" + "\n".join(tail)
        return text

    def add_box(self, box: Path) -> None:
        catalog = self.work / "box.json"
        catalog.write_text(json.dumps({"name": BOX_NAME, "versions": [{"version": "0.1", "providers": [
            {"name": "libvirt", "url": f"file://{box}"}]}]}))
        t0 = time.monotonic()
        self.vagrant("box", "add", "--force", str(catalog), timeout=600)
        self.timings["box add"] = time.monotonic() - t0

    def names(self) -> list[str]:
        s = self.settings["nodes"]
        servers = [s["server"]["name"] if i == 0 else f"{s['server']['name']}{i + 1}" for i in range(s["servers"])]
        workers = [f"{s['worker']['name']}{i + 1:02d}" for i in range(s["workers"])]
        return servers + workers

    def lab_ips(self) -> list[str]:
        first = self.settings["network"]["first_ip"]
        base, last = first.rsplit(".", 1)
        return [f"{base}.{int(last) + i}" for i in range(len(self.names()))]

    def up(self, *extra: str) -> float:
        t0 = time.monotonic()
        self.vagrant("up", "--provider", "libvirt", *extra)
        took = time.monotonic() - t0
        self.up_stamped = self.stamped
        self.timings["vagrant up"] = took
        self.read_machines()
        return took

    def read_machines(self) -> None:
        out = self.vagrant("ssh-config", timeout=300).stdout
        hosts = dict(re.findall(r"^Host (\S+)\n\s+HostName (\S+)", out, re.MULTILINE))
        for name, ip in zip(self.names(), self.lab_ips()):
            self.machines[name] = Machine(name, ip, hosts[name])

    @property
    def key(self) -> Path:
        """Vagrant's insecure private key, copied with the mode ssh insists on."""
        k = self.work / "insecure-key"
        if not k.exists():
            k.write_bytes(insecure_key().read_bytes())
            k.chmod(0o600)
        return k

    def ssh(self, machine: str, command: str, *, timeout: float = 600, check: bool = True,
            sudo: bool = True) -> subprocess.CompletedProcess[str]:
        """``command`` (a shell line) on ``machine``, over ssh from inside the namespace (no vagrant start-up)."""
        m = self.machines[machine]
        remote = f"sudo sh -c {shlex.quote(command)}" if sudo else command
        out = subprocess.run(self.lv.in_netns("ssh", "-i", str(self.key), *SSH_OPTS, f"vagrant@{m.mgmt_ip}",
                                              remote),
                             capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        if check and out.returncode != 0:
            raise AssertionError(f"{machine}: {command!r} failed ({out.returncode}):\n{out.stdout[-4000:]}\n"
                                 f"{out.stderr[-4000:]}")
        return out

    def host(self, *argv: str, timeout: float = 300, check: bool = True,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """``argv`` on "the host": this machine, inside the lab's namespace (where 192.168.56.1 is)."""
        out = subprocess.run(self.lv.in_netns(*argv), capture_output=True, text=True, check=False, timeout=timeout,
                             input=stdin)
        if check and out.returncode != 0:
            raise AssertionError(f"{argv} failed ({out.returncode}):\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
        return out

    def kubectl(self, *args: str, timeout: float = 300, check: bool = True,
                stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """The host's kubectl with the kubeconfig the first server left in the synced folder."""
        return self.host("kubectl", "--kubeconfig", str(self.kubeconfig), "--request-timeout", "120s", *args,
                         timeout=timeout, check=check, stdin=stdin)

    def destroy(self) -> float:
        t0 = time.monotonic()
        self.vagrant("destroy", "-f", timeout=900)
        took = time.monotonic() - t0
        self.timings["vagrant destroy"] = took
        return took


@contextmanager
def vagrant_lab(work: Path, netns: str, settings: dict[str, Any], box: Path) -> Iterator[VagrantLab]:
    """A lab's work dir, confined libvirt and the box added; on the way out ``vagrant destroy -f`` (if any VM
    was made), then the libvirt confinement's own teardown (which fails the block if anything is left)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "sync" / "shared").mkdir(parents=True, exist_ok=True)
    (work / "console").mkdir(exist_ok=True)
    (work / "settings.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    # kmesh's dependencies are downloaded here, outside the namespace (no index in there); the Vagrantfile's
    # trigger then only builds kmesh's own wheel, offline.
    wheels = subprocess.run([str(VAGRANT_DIR / "scripts" / "host-wheels.sh"), str(work / "sync" / ".wheelhouse")],
                            capture_output=True, text=True, timeout=600, check=False)
    if wheels.returncode != 0:
        raise RuntimeError(f"vagrant/scripts/host-wheels.sh failed:\n{wheels.stdout}\n{wheels.stderr}")
    with confined_libvirt(work / "libvirt", netns) as lv:
        lab = VagrantLab(lv, work, settings)
        try:
            lab.add_box(box)
            yield lab
        finally:
            if lv.domains() or (work / "dot-vagrant" / "machines").exists():
                lab.vagrant("destroy", "-f", timeout=900, check=False)

