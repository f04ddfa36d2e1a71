"""Boot a Debian kernel in qemu (TCG, no KVM needed) to run a command against kernel features this machine lacks.

The kernel comes from Debian's ``linux-image-*-amd64`` package, fetched with
``apt-get download`` and unpacked with ``dpkg -x`` (never installed) into a
cache dir (``$KMESH_QEMU_CACHE`` or ``~/.cache/kmesh/qemu``). A small
initramfs holds busybox-static and the modules asked for (with everything
they depend on, from ``modules.dep``); its ``/init`` loads them, mounts this
machine's root filesystem read-only over 9p, gives it fresh proc, sys, dev
and /run (a tmpfs; TMPDIR and HOME are /run/tmp, so /tmp stays this machine's
and a checkout under /tmp is still seen), copies in the shell script named on
the kernel command line (a path on this machine) and runs it chrooted, then
powers off. Nothing is
changed on this machine but the cache dir: all kernel state lives in the VM.

The console goes to a log file; ``boot`` returns it with the time taken.
"""

from __future__ import annotations

import gzip
import io
import lzma
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support import debcache

BUSYBOX = Path("/bin/busybox")
BASE_MODULES = ("virtio_pci", "9pnet_virtio", "9p")  # what the init needs to reach the host root

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for m in $(cat /modules.order); do insmod "$m" 2>/dev/null || echo "kmesh-init: insmod $m failed"; done
mkdir -p /host
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /host; then
  echo "kmesh-init: cannot mount the host root"; poweroff -f
fi
run=$(sed -n 's/.*kmesh_run=\([^ ]*\).*/\1/p' /proc/cmdline)
cp "/host$run" /run.sh
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mount -t tmpfs run /host/run
mkdir -p /host/run/tmp
cp /run.sh /host/run/kmesh-run.sh
echo "kmesh-init: running $run"
TMPDIR=/run/tmp HOME=/run/tmp chroot /host /bin/sh /run/kmesh-run.sh
echo "kmesh-init: exit $?"
sync
poweroff -f
"""


@dataclass
class Kernel:
    """An unpacked Debian kernel: its image, version and module tree."""

    vmlinuz: Path
    version: str
    modules: Path  # .../lib/modules/<version>


@dataclass
class Boot:
    """What one boot printed on its console, and how long it took."""

    console: str
    seconds: float
    returncode: int | None  # None: killed at the timeout


def cache_dir() -> Path:
    """Where the kernel and initramfs are kept (created if missing)."""
    return debcache.cache_dir("qemu", "KMESH_QEMU_CACHE")


def kernel_package() -> str:
    """The versioned image package ``linux-image-amd64`` depends on (e.g. linux-image-6.1.0-56-amd64)."""
    out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"Depends: (linux-image-[0-9][^\s]*-amd64)\b", out)
    if m is None:
        raise RuntimeError(f"apt-cache depends linux-image-amd64 names no kernel image (run apt-get update?): {out!r}")
    return m.group(1)


def fetch_kernel(cache: Path | None = None) -> Kernel:
    """Download (once) and unpack Debian's kernel image package; installs nothing."""
    cache = cache or cache_dir()
    with debcache.locked(cache):
        done = sorted(cache.glob("linux-image-*/.unpacked"))
        if done:
            return _kernel_in(done[-1].parent)
        # The package is named again after a refresh: the mirror may have moved on to a newer kernel ABI.
        dest = debcache.unpack_package(kernel_package, cache, lambda pkg: cache / pkg)
        (dest / ".unpacked").write_text(dest.name + "\n")
        return _kernel_in(dest)


def _kernel_in(root: Path) -> Kernel:
    vmlinuz = next((root / "boot").glob("vmlinuz-*"))
    version = vmlinuz.name.removeprefix("vmlinuz-")
    return Kernel(vmlinuz, version, root / "lib" / "modules" / version)


def module_order(kernel: Kernel, wanted: tuple[str, ...]) -> list[str]:
    """Module files (relative to the module tree) for ``wanted`` and their dependencies, dependencies first
    (read from each module's ``depends=``: the package ships no modules.dep). Built-in modules (``modules.builtin``) need no file and are left out."""
    by_name = {_mod_name(str(p)): str(p.relative_to(kernel.modules)) for p in (kernel.modules / "kernel").rglob("*.ko*")}
    builtin = {_mod_name(p) for p in (kernel.modules / "modules.builtin").read_text().split()}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for d in _depends(kernel.modules / path):
            if d in by_name:
                visit(by_name[d])
        order.append(path)

    for name in wanted:
        key = name.replace("-", "_")
        if key in by_name:
            visit(by_name[key])
        elif key not in builtin:
            raise KeyError(f"kernel {kernel.version} has no module {name!r}")
    return order


def _depends(path: Path) -> list[str]:
    """The ``depends=`` of a module's .modinfo section (what depmod would read; no kmod tools needed)."""
    m = re.search(rb"\0depends=([^\0]*)\0", _ko_bytes(path))
    return [d.replace("-", "_") for d in m.group(1).decode().split(",") if d] if m else []


def _mod_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    base = re.sub(r"\.ko(\.(xz|zst|gz))?$", "", base)
    return base.replace("-", "_")


def _ko_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    return data


class _Cpio:
    """A cpio "newc" archive, written by hand (the kernel unpacks it as the initramfs)."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        nameb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nameb), 0))
        self.ino += 1
        self.buf.write(hdr.encode() + nameb)
        self.buf.write(b"\0" * (-(110 + len(nameb)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def build_initramfs(kernel: Kernel, modules: tuple[str, ...], cache: Path | None = None) -> Path:
    """The initramfs (cached per kernel and module set) with busybox, the init and the modules' files."""
    cache = cache or cache_dir()
    wanted = tuple(dict.fromkeys(BASE_MODULES + modules))
    order = module_order(kernel, wanted)
    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{kernel.version}-{'-'.join(sorted(wanted))}")
    out = cache / f"initramfs-{tag}.cpio.gz"
    with debcache.locked(cache):
        if out.exists() and out.stat().st_mtime >= Path(__file__).stat().st_mtime:
            return out
        _write_initramfs(kernel, order, out)
    return out


def _write_initramfs(kernel: Kernel, order: list[str], out: Path) -> None:
    if not BUSYBOX.exists():
        raise FileNotFoundError(f"{BUSYBOX} (apt-get install busybox-static)")
    cpio = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "host", "run", "tmp", "mods"):
        cpio.dir(d)
    cpio.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    cpio.file("init", INIT.encode(), 0o755)
    names = []
    for i, rel in enumerate(order):
        name = f"mods/{i:02d}-{_mod_name(rel)}.ko"
        cpio.file(name, _ko_bytes(kernel.modules / rel))
        names.append("/" + name)
    cpio.file("modules.order", ("\n".join(names) + "\n").encode())
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(cpio.finish(), 6))
    tmp.replace(out)


def qemu_available() -> str | None:
    return shutil.which("qemu-system-x86_64")


def boot(script: Path, modules: tuple[str, ...], *, timeout: float = 240.0, memory_mb: int = 1024,
         log: Path | None = None) -> Boot:
    """Boot the Debian kernel with ``modules`` loaded and run shell ``script`` (a path on this machine,
    visible in the VM at the same path) chrooted into this machine's root filesystem (read-only)."""
    qemu = qemu_available()
    if qemu is None:
        raise FileNotFoundError("qemu-system-x86_64 (apt-get install qemu-system-x86)")
    kernel = fetch_kernel()
    initrd = build_initramfs(kernel, modules)
    script = script.resolve()
    if re.search(r"\s", str(script)):
        raise ValueError(f"script path has white space: {script}")
    log = log or script.with_suffix(".console")
    log.unlink(missing_ok=True)
    argv = [
        qemu, "-nodefaults", "-no-reboot", "-display", "none", "-machine", "accel=tcg", "-cpu", "max",
        "-m", str(memory_mb), "-smp", "1",
        "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd),
        "-append", f"console=ttyS0 panic=-1 quiet loglevel=3 kmesh_run={script}",
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-serial", f"file:{log}",
    ]
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        rc = None
    seconds = time.monotonic() - start
    console = log.read_text(errors="replace") if log.exists() else ""
    if out:
        console += "\n[qemu] " + out.decode(errors="replace")
    return Boot(console, seconds, rc)
