#!/usr/bin/env bash
# Make a Debian/Ubuntu machine ready to be a kmesh node: the system packages it lacks (packages.txt),
# br_netfilter and the sysctls a node needs, a Python venv in /opt/kmesh/venv and kmesh itself, with
# `kmesh` on PATH. Idempotent.
#
#   sudo vagrant/scripts/common.sh [--wheelhouse DIR]
#
# --wheelhouse DIR  install kmesh (and any dependency the venv lacks) from the wheels in DIR, without
#                   internet (scripts/host-wheels.sh makes one). Without it: pip installs $KMESH_PIP_SPEC, by
#                   default the kmesh checkout this script is in, its dependencies from the package index.
# The kmesh box (make vagrant-box) has every package and dependency baked in: nothing is downloaded.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"

WHEELHOUSE=""
while [ $# -gt 0 ]; do
  case $1 in
    --wheelhouse) WHEELHOUSE=$2; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
need_root
export DEBIAN_FRONTEND=noninteractive

# 1. system packages: only the missing ones (none on the kmesh box)
missing=()
while read -r p; do
  [ -n "$p" ] || continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$HERE/packages.txt")
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq || die "apt-get update failed: this machine has no package mirror (offline? use the kmesh box, docs/vagrant.md)"
  avail=()
  for p in "${missing[@]}"; do
    if apt-cache show "$p" >/dev/null 2>&1; then avail+=("$p"); else log "no package $p here: skipped"; fi
  done
  apt-get install -y -qq --no-install-recommends "${avail[@]}" >/dev/null
  # a packaged etcd would start its own server on 2379; kmesh runs the lab's etcd itself
  systemctl disable --now etcd.service 2>/dev/null || true
fi

# 2. what the kernel must do for a node, now and at every boot (as for kubeadm): bridged pod traffic goes
# through iptables, so that a Service's reply from a pod on the same bridge is un-NATed (without it a pod
# that reaches a ClusterIP served by a pod of its own node, e.g. kube-dns, hears nothing back); and udev
# leaves the MACs of kmesh's links alone
cat >/etc/modules-load.d/kmesh-node.conf <<'CONF'
# kmesh node (vagrant/scripts/common.sh)
br_netfilter
CONF
cat >/etc/sysctl.d/60-kmesh-node.conf <<'CONF'
# kmesh node (vagrant/scripts/common.sh)
net.bridge.bridge-nf-call-iptables = 1
net.ipv4.ip_forward = 1
CONF
modprobe br_netfilter
sysctl -q -p /etc/sysctl.d/60-kmesh-node.conf
# udev's default MACAddressPolicy=persistent rewrites the MAC of every new virtual link a moment after it is
# made: flannel.1 would then not have the VtepMAC its node announced (read at creation), and its peers'
# neighbour and FDB entries would point at a MAC that no longer exists (flannel's known trouble on systemd)
if [ -d /etc/systemd/network ] || command -v udevadm >/dev/null; then
  mkdir -p /etc/systemd/network
  cat >/etc/systemd/network/10-kmesh-links.link <<'CONF'
# kmesh node (vagrant/scripts/common.sh): the links kmesh makes keep the MAC they were made with
[Match]
OriginalName=flannel* cni* veth* kube-ipvs* kmesh*

[Link]
MACAddressPolicy=none
CONF
  udevadm control --reload 2>/dev/null || true
fi

# 3. the venv
if [ ! -x "$KMESH_VENV/bin/python" ]; then
  log "creating $KMESH_VENV"
  python3 -m venv "$KMESH_VENV"
fi
pip=("$KMESH_VENV/bin/pip" install -q --disable-pip-version-check)

# 4. kmesh
start=$(date +%s)
if [ -n "$WHEELHOUSE" ]; then
  whl=$(ls "$WHEELHOUSE"/kmesh-*.whl 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$whl" ] || die "no kmesh wheel in $WHEELHOUSE (on the host: vagrant/scripts/host-wheels.sh $WHEELHOUSE)"
  if [ -f /opt/kmesh/requirements.txt ] && cmp -s /opt/kmesh/requirements.txt "$WHEELHOUSE/requirements.txt"; then
    # the venv holds exactly the dependencies this kmesh asks for (the kmesh box): kmesh alone
    "${pip[@]}" --no-index --no-deps --force-reinstall "$whl"
  else
    "${pip[@]}" --no-index --find-links "$WHEELHOUSE" --force-reinstall --no-deps "$whl"
    "${pip[@]}" --no-index --find-links "$WHEELHOUSE" "$whl"
  fi
else
  spec=${KMESH_PIP_SPEC:-}
  if [ -z "$spec" ]; then
    repo=$(cd "$HERE/../.." && pwd)
    [ -f "$repo/pyproject.toml" ] || die "give --wheelhouse DIR or KMESH_PIP_SPEC (no kmesh checkout around $HERE)"
    spec=$repo
  fi
  "${pip[@]}" --upgrade "$spec"
fi
ln -sf "$KMESH_VENV/bin/kmesh" "$KMESH_BIN"
[ -x "$KMESH_VENV/bin/kmesh-cni" ] && ln -sf "$KMESH_VENV/bin/kmesh-cni" /usr/local/bin/kmesh-cni
"$KMESH_BIN" --help >/dev/null || die "$KMESH_BIN does not run"
log "kmesh installed in $(($(date +%s) - start)) s: $KMESH_BIN -> $(readlink -f "$KMESH_BIN")"
