#!/usr/bin/env bash
# On the host: put kmesh's wheel and the wheels of its dependencies into a wheelhouse, for guests (or any
# machine) that install kmesh without internet (`pip install --no-index --find-links WHEELHOUSE kmesh`).
#
#   vagrant/scripts/host-wheels.sh [DEST]          (default DEST: vagrant/.wheelhouse)
#   vagrant/scripts/host-wheels.sh --deps-only DEST   (only the dependencies: what the box bakes in)
#   vagrant/scripts/host-wheels.sh --requirements-only DEST   (only DEST/requirements.txt, no download)
#
# The dependency wheels are for the guests' Python (CPython 3.11 on x86_64 glibc, Debian bookworm), whatever
# Python the host has. The kmesh wheel is built from a copy of the source (the work tree gets no build/).
# requirements.txt in DEST lists the dependencies as pyproject.toml states them; they are downloaded once per
# list, so a later run needs no index. Uses $PYTHON, else the repository's .venv, else python3 (with pip).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
DEPS_ONLY=0 REQS_ONLY=0
if [ "${1:-}" = "--deps-only" ]; then DEPS_ONLY=1; shift; fi
if [ "${1:-}" = "--requirements-only" ]; then REQS_ONLY=1; shift; fi
DEST=${1:-$REPO/vagrant/.wheelhouse}
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)

if [ -z "${PYTHON:-}" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
"$PYTHON" -m pip --version >/dev/null 2>&1 || { echo "host-wheels.sh: $PYTHON has no pip (apt-get install python3-pip, or make python-deps)" >&2; exit 1; }

# The dependencies as pyproject.toml lists them (tomllib: Python >= 3.11; else a plain reading of the list).
"$PYTHON" - "$REPO/pyproject.toml" >"$DEST/requirements.txt.tmp" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
try:
    import tomllib
    deps = tomllib.loads(text)["project"]["dependencies"]
except ImportError:
    block = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.S | re.M).group(1)
    deps = re.findall(r'"([^"]+)"', block)
print("\n".join(deps))
EOF
mv "$DEST/requirements.txt.tmp" "$DEST/requirements.txt"
[ "$REQS_ONLY" = 1 ] && exit 0

mapfile -t deps <"$DEST/requirements.txt"
# pip does not widen a --platform to the older glibc tags a wheel may carry: name them all (bookworm: 2.36)
platforms=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
for minor in $(seq 5 36); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
# The dependency wheels are fetched once per dependency list (.deps-done names it): later runs need no index.
want=$(sha256sum <"$DEST/requirements.txt" | cut -c1-16)
if [ "$(cat "$DEST/.deps-done" 2>/dev/null)" != "$want" ]; then
  "$PYTHON" -m pip download -q --disable-pip-version-check -d "$DEST" --only-binary=:all: \
      --implementation cp --python-version 3.11 --abi cp311 "${platforms[@]}" "${deps[@]}" 2>"$DEST/.download.log" \
    || { cat "$DEST/.download.log" >&2; echo "host-wheels.sh: could not download kmesh's dependencies" >&2; exit 1; }
  # what building kmesh's wheel needs (pyproject's build-system), so that later builds need no index either
  "$PYTHON" -m pip download -q --disable-pip-version-check -d "$DEST" --only-binary=:all: "setuptools>=64" wheel \
      2>>"$DEST/.download.log" || { cat "$DEST/.download.log" >&2; exit 1; }
  echo "$want" >"$DEST/.deps-done"
fi
[ "$DEPS_ONLY" = 1 ] && exit 0

# kmesh's own wheel, from a copy of the source tree
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -r "$REPO/kmesh" "$REPO/pyproject.toml" "$REPO/README.md" "$src/"
find "$src" -name __pycache__ -prune -exec rm -rf {} +
rm -f "$DEST"/kmesh-*.whl
PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS="" "$PYTHON" -m pip wheel -q --disable-pip-version-check --no-deps \
    --no-index --find-links "$DEST" -w "$DEST" "$src" >"$DEST/.wheel.log" 2>&1 || { cat "$DEST/.wheel.log" >&2; exit 1; }
ls "$DEST"/kmesh-*.whl
