#!/usr/bin/env bash
# Build the kmesh Vagrant box for the libvirt provider: Debian bookworm with every system package a kmesh node
# needs and a Python venv holding kmesh's dependencies, so that guests without internet can run a lab.
# kmesh itself is not in the box (it changes every commit): provisioning installs it from a wheel.
#
#   sudo vagrant/box/build.sh OUT.box WHEELHOUSE
#
# OUT.box     the box to write (a tar of box.img, metadata.json, Vagrantfile, vmlinuz, initrd.img)
# WHEELHOUSE  a directory of wheels for kmesh's dependencies, for the guest's Python (scripts/host-wheels.sh)
#
# Needs root, debootstrap and qemu-img, and the Debian mirror ($KMESH_DEBIAN_MIRROR, default: the one apt
# uses here). Every command that runs inside the new root runs in its own mount and PID namespace: its
# mounts vanish and any daemon a package would start is killed when it ends, and policy-rc.d forbids
# starting services anyway. Nothing is mounted, started or configured on this machine.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:?usage: build.sh OUT.box WHEELHOUSE}
WHEELHOUSE=${2:?usage: build.sh OUT.box WHEELHOUSE}
SUITE=${KMESH_BOX_SUITE:-bookworm}
DISK_GB=${KMESH_BOX_DISK_GB:-8}
OUT=$(realpath -m "$OUT")
WHEELHOUSE=$(realpath "$WHEELHOUSE")

[ "$(id -u)" = 0 ] || { echo "build.sh: needs root (debootstrap, chroot)" >&2; exit 1; }
for p in debootstrap qemu-img mkfs.ext4 unshare chroot tar; do
  command -v "$p" >/dev/null || { echo "build.sh: needs $p (apt-get install debootstrap qemu-utils e2fsprogs util-linux)" >&2; exit 1; }
done

mirror() {
  if [ -n "${KMESH_DEBIAN_MIRROR:-}" ]; then echo "$KMESH_DEBIAN_MIRROR"; return; fi
  local m
  m=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -- '-security' | grep '/debian/*$' | head -n1 || true)
  [ -n "$m" ] || m=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep '/debian/*$' | head -n1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}
MIRROR=$(mirror)
SECURITY=${KMESH_DEBIAN_SECURITY:-${MIRROR%/debian}/debian-security}

WORK=$(mktemp -d "$(dirname "$OUT")/.box-build.XXXXXX")
ROOT=$WORK/rootfs
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

step_start=$(date +%s)
step() { local now; now=$(date +%s); echo "== [$((now - step_start))s] $*"; }

# A command in the new root, in private mount + PID namespaces (its mounts and processes end with it).
in_root() {
  unshare --mount --pid --fork --kill-child --propagation private sh -c '
    root=$1; shift
    mount -t proc proc "$root/proc"
    mount --bind /dev "$root/dev"
    mount -t devpts -o newinstance devpts "$root/dev/pts" 2>/dev/null || true
    mount -t sysfs -o ro sysfs "$root/sys"
    mount -t tmpfs tmpfs "$root/run"
    mount -t tmpfs tmpfs "$root/tmp"
    exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
      DEBIAN_FRONTEND=noninteractive "$@"' in_root "$ROOT" "$@"
}

step "debootstrap $SUITE from $MIRROR"
# debootstrap itself also runs in private namespaces: the proc/sys it mounts go away with it.
unshare --mount --pid --fork --kill-child --propagation private --mount-proc \
  debootstrap --variant=minbase --include=apt-utils,ca-certificates "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -n 30 "$WORK/debootstrap.log" >&2; exit 1; }

step "configure apt and dpkg"
printf '#!/bin/sh\n# kmesh box build: never start a service while building\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY $SUITE-security main
EOF
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/01-kmesh-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
EOF
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$ROOT/etc/apt/apt.conf.d/01-kmesh-norecommends"
# A small initramfs: only what a libvirt/virtio guest needs to mount its root (boots faster under TCG).
mkdir -p "$ROOT/etc/initramfs-tools/conf.d"
echo "MODULES=list" >"$ROOT/etc/initramfs-tools/conf.d/kmesh"
printf '%s\n' virtio_pci virtio_blk virtio_scsi virtio_net virtio_console ext4 crc32c_generic >>"$ROOT/etc/initramfs-tools/modules"
printf 'LABEL=kmesh-root / ext4 defaults,noatime 0 1\n' >"$ROOT/etc/fstab"

step "install the kernel and system packages"
PKGS=$(sed -e 's/#.*//' "$HERE/../scripts/packages.txt" | xargs)
BOX_PKGS="linux-image-amd64 initramfs-tools zstd systemd systemd-sysv udev dbus libnss-myhostname openssh-server sudo \
          e2fsprogs less"
in_root apt-get update -qq >"$WORK/apt.log" 2>&1 || { tail -n 30 "$WORK/apt.log" >&2; exit 1; }
# shellcheck disable=SC2086
in_root apt-get install -y -qq $BOX_PKGS $PKGS >>"$WORK/apt.log" 2>&1 || { tail -n 30 "$WORK/apt.log" >&2; exit 1; }

step "trim the kernel's modules to what a VM can use"
KVER=$(basename "$(ls -d "$ROOT"/lib/modules/* | sort -V | tail -n1)")
MODS=$ROOT/lib/modules/$KVER/kernel
for d in drivers/gpu drivers/media drivers/net/wireless drivers/net/ethernet drivers/infiniband drivers/staging \
         drivers/bluetooth drivers/iio drivers/input/touchscreen drivers/input/joystick drivers/hid drivers/usb \
         drivers/scsi/qla2xxx drivers/scsi/lpfc drivers/scsi/bfa drivers/scsi/qedf drivers/scsi/qedi drivers/scsi/mpt3sas \
         drivers/isdn drivers/mtd drivers/net/can drivers/net/usb drivers/platform drivers/thunderbolt drivers/hwmon \
         drivers/misc drivers/mfd drivers/w1 drivers/leds drivers/nfc drivers/atm drivers/firewire drivers/edac \
         drivers/power drivers/pinctrl drivers/gnss drivers/fpga sound net/bluetooth net/wireless net/mac80211 \
         net/nfc net/can fs/ocfs2 fs/gfs2 fs/nfs fs/nfsd fs/btrfs fs/xfs fs/f2fs fs/smb fs/ceph fs/ubifs; do
  rm -rf "${MODS:?}/$d"
done
in_root depmod -a "$KVER"

step "the vagrant user, ssh, network and first-boot settings"
install -D -m 0644 "$HERE/files/vagrant.pub" "$ROOT/home/vagrant/.ssh/authorized_keys"
in_root sh -c 'useradd -m -s /bin/bash -U vagrant 2>/dev/null || true
  chown -R vagrant:vagrant /home/vagrant; chmod 700 /home/vagrant/.ssh; chmod 600 /home/vagrant/.ssh/authorized_keys
  echo "vagrant:vagrant" | chpasswd; echo "root:vagrant" | chpasswd'
printf 'vagrant ALL=(ALL) NOPASSWD: ALL\nDefaults:vagrant !requiretty\n' >"$ROOT/etc/sudoers.d/vagrant"
chmod 0440 "$ROOT/etc/sudoers.d/vagrant"
cp -r "$HERE/files/rootfs/." "$ROOT/"
rm -f "$ROOT"/etc/ssh/ssh_host_*
# the host name comes from the kernel command line (systemd.hostname=); it must resolve for sudo
: >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
sed -i 's/^hosts:.*/hosts:          files myhostname dns/' "$ROOT/etc/nsswitch.conf"
: >"$ROOT/etc/resolv.conf"
# an empty machine-id: every VM makes its own at first boot (its own DHCP identity, its own journal)
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
in_root sh -c '
  systemctl enable systemd-networkd.service systemd-network-generator.service kmesh-ssh-hostkey.service
  systemctl mask systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    e2scrub_reap.service fstrim.timer systemd-timesyncd.service ipvsadm.service modprobe@drm.service \
    systemd-binfmt.service 2>/dev/null
  systemctl disable etcd.service 2>/dev/null || true
  systemctl set-default multi-user.target' >/dev/null 2>&1

step "the Python venv with kmesh's dependencies (offline, from $WHEELHOUSE)"
mkdir -p "$ROOT/opt/kmesh/wheelhouse"
cp "$WHEELHOUSE"/*.whl "$ROOT/opt/kmesh/wheelhouse/"
rm -f "$ROOT"/opt/kmesh/wheelhouse/kmesh-*.whl
in_root python3 -m venv /opt/kmesh/venv
DEPS=$(cat "$WHEELHOUSE/requirements.txt")
# shellcheck disable=SC2086
in_root /opt/kmesh/venv/bin/pip install -q --no-index --find-links /opt/kmesh/wheelhouse $DEPS
cp "$WHEELHOUSE/requirements.txt" "$ROOT/opt/kmesh/requirements.txt"
rm -rf "$ROOT/opt/kmesh/wheelhouse"

step "clean up"
in_root apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/log/*.log "$ROOT"/var/log/apt/* "$ROOT"/var/cache/debconf/*-old \
       "$ROOT"/tmp/* "$ROOT"/var/tmp/* "$ROOT/usr/sbin/policy-rc.d"
echo "kmesh box $(date -u +%Y-%m-%dT%H:%M:%SZ) $SUITE kernel $KVER" >"$ROOT/etc/kmesh-box"

step "make the disk image"
BOX=$WORK/box
mkdir -p "$BOX"
cp "$ROOT/boot/vmlinuz-$KVER" "$BOX/vmlinuz"
cp "$ROOT/boot/initrd.img-$KVER" "$BOX/initrd.img"
mkfs.ext4 -q -L kmesh-root -d "$ROOT" "$WORK/root.raw" "${DISK_GB}G"
qemu-img convert -O qcow2 "$WORK/root.raw" "$BOX/box.img"
rm -f "$WORK/root.raw"
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %s}\n' "$DISK_GB" >"$BOX/metadata.json"
cp "$HERE/Vagrantfile.box" "$BOX/Vagrantfile"
[ -n "${KMESH_BOX_KEY:-}" ] && echo "$KMESH_BOX_KEY" >"$BOX/kmesh-box-key"
tar -C "$BOX" -cf "$OUT.tmp" .
mv "$OUT.tmp" "$OUT"
step "wrote $OUT ($(du -h "$OUT" | cut -f1))"
