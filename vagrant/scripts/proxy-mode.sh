#!/usr/bin/env bash
# Switch this machine's kube-proxy to another mode: rewrite --proxy-mode in kmesh.service's arguments and
# restart the unit (the server's `kmesh up` restarts on its store; a worker's `kmesh join` joins again).
# Run it on every machine of the lab, the first server first:
#
#   sudo vagrant/scripts/proxy-mode.sh ipvs        # iptables | ipvs | nftables | userspace
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
MODE=${1:?usage: proxy-mode.sh iptables|ipvs|nftables|userspace}
case $MODE in iptables|ipvs|nftables|userspace) ;; *) die "unknown proxy mode $MODE" ;; esac
need_root
env=/etc/kmesh/kmesh.env
[ -f "$env" ] || die "$env is missing: provision this machine first (server.sh or join.sh)"
if grep -q -- '--proxy-mode ' "$env"; then
  sed -i -E "s/--proxy-mode [a-z]+/--proxy-mode $MODE/" "$env"
else
  sed -i -E "s/^(KMESH_ARGS=.*)$/\1 --proxy-mode $MODE/" "$env"
fi
start=$(date +%s)
systemctl stop kmesh.service
start_unit_retrying kmesh $((start + 1800)) || die "kmesh did not come back in $MODE mode (journalctl -u kmesh)"
log "kube-proxy mode $MODE after $(($(date +%s) - start)) s"
