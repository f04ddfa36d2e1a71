#!/usr/bin/env bash
# `make vagrant-box`: build the kmesh box once per content and add it to Vagrant as kmesh/debian12.
#
#   vagrant/box/make.sh [--no-add]      prints the path of the .box file last
#
# The box is cached as ~/.cache/kmesh/vagrant/kmesh-debian12-<key>.box ($KMESH_BOX_CACHE), where <key> is a
# hash of what goes into it: build.sh, the box's Vagrantfile and files, scripts/packages.txt and kmesh's
# dependency list. A box with the same key is reused; a new key builds a new box (~3 min) and adds it with a
# newer version, so `vagrant up` takes the new one and the libvirt storage pool gets a fresh image.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
VDIR=$(cd "$HERE/.." && pwd)
NAME=${KMESH_BOX_NAME:-kmesh/debian12}
CACHE=${KMESH_BOX_CACHE:-$HOME/.cache/kmesh/vagrant}
ADD=1
[ "${1:-}" = "--no-add" ] && ADD=0
mkdir -p "$CACHE"

deps=$(mktemp -d)
trap 'rm -rf "$deps"' EXIT
"$VDIR/scripts/host-wheels.sh" --requirements-only "$deps" >/dev/null   # the key needs no index
KEY=$( (cd "$VDIR" && cat box/build.sh box/Vagrantfile.box scripts/packages.txt &&
        find box/files -type f | LC_ALL=C sort | xargs cat && cat "$deps/requirements.txt") | sha256sum | cut -c1-16)
BOX=$CACHE/kmesh-debian12-$KEY.box

exec 9>"$CACHE/.lock"
flock 9
if [ ! -s "$BOX" ]; then
  echo "building the box (key $KEY); log: $BOX.log"
  # the version is the build time: a later build is always the newer box for Vagrant
  date -u +0.%Y%m%d%H%M%S >"$BOX.version"
  "$VDIR/scripts/host-wheels.sh" --deps-only "$deps" >/dev/null
  if ! KMESH_BOX_KEY=$KEY "$HERE/build.sh" "$BOX" "$deps" >"$BOX.log" 2>&1; then
    tail -n 40 "$BOX.log" >&2
    rm -f "$BOX" "$BOX.version"
    exit 1
  fi
  grep '^== ' "$BOX.log" | tail -n 1
  # boxes of other contents are not used again: only the newest stays in the cache
  for old in "$CACHE"/kmesh-debian12-*.box; do
    [ "$old" = "$BOX" ] || rm -f "$old" "$old.log" "$old.version" "${old%.box}.json"
  done
fi
VERSION=$(cat "$BOX.version")

if [ "$ADD" = 1 ]; then
  command -v vagrant >/dev/null || { echo "make.sh: vagrant is not installed (apt-get install vagrant vagrant-libvirt)" >&2; exit 1; }
  home=${VAGRANT_HOME:-$HOME/.vagrant.d}
  if [ ! -d "$home/boxes/${NAME//\//-VAGRANTSLASH-}/$VERSION/libvirt" ]; then
    # a catalog names the version (a plain `box add FILE` makes every build version 0)
    cat >"$CACHE/kmesh-debian12-$KEY.json" <<EOF
{"name": "$NAME", "versions": [{"version": "$VERSION",
  "providers": [{"name": "libvirt", "url": "file://$BOX"}]}]}
EOF
    vagrant box add --force "$CACHE/kmesh-debian12-$KEY.json" >&2
  fi
  echo "box $NAME version $VERSION (libvirt) is in $home" >&2
fi
echo "$BOX"
