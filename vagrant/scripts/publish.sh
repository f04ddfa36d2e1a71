#!/usr/bin/env bash
# Run by kmesh.service on the first server after `kmesh up` returned (ExecStartPost), at provisioning and at
# every boot: the join token and command, the command for further servers and the host's kubeconfig go to the shared
# folder (KMESH_SHARED in /etc/kmesh/kmesh.env), each 0600 and written whole. No shared folder: nothing.
set -euo pipefail
: "${KMESH_SHARED:=}" "${KMESH_ADDR:?}" "${KMESH_DATA:?}"
[ -n "$KMESH_SHARED" ] && [ -d "$KMESH_SHARED" ] || exit 0
put() {
  local tmp
  tmp=$(mktemp "$1.XXXXXX")
  cat >"$tmp"
  chmod 0600 "$tmp"
  mv -f "$tmp" "$1"
}
put "$KMESH_SHARED/join-token" <"$KMESH_DATA/join-token"  # first: the workers wait for it
put "$KMESH_SHARED/kubeconfig.yaml" <"$KMESH_DATA/kubeconfig.yaml"
if [ -f "$KMESH_DATA/server-token" ]; then
  echo "kmesh up --server https://$KMESH_ADDR:6443 --token $(cat "$KMESH_DATA/server-token")" | put "$KMESH_SHARED/server-command"
fi
echo "kmesh join https://$KMESH_ADDR:6443 --token $(cat "$KMESH_DATA/join-token")" | put "$KMESH_SHARED/join-command"
