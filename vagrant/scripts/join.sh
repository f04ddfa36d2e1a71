#!/usr/bin/env bash
# Make this machine a node of a kmesh lab: `kmesh join` as a systemd unit (kmesh.service, so the node
# comes back after a reboot). The join command comes from the first server, through the shared folder
# (server.sh writes it) or on the command line.
#
#   sudo vagrant/scripts/join.sh --shared DIR [--node-name node01] [--iface eth1 | --node-ip IP]
#        [--proxy-mode iptables] [--backend vxlan] [--data-dir /var/lib/kmesh] [--timeout 1800]
#   sudo vagrant/scripts/join.sh --server https://192.168.56.10:6443 --token TOKEN [...]
#
# With --shared, waits (up to --timeout s) for DIR/join-command and retries the join until it succeeds:
# the first server may still be coming up, and a stale file from an earlier lab fails until it is replaced.
# Gives up at once when the first server reports its failure there (DIR/server-failed).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"

NAME=$(hostname) IFACE="" NODE_IP="" MODE="" BACKEND="" DATA=/var/lib/kmesh SHARED="" TIMEOUT=1800 SERVER="" TOKEN=""
while [ $# -gt 0 ]; do
  case $1 in
    --node-name) NAME=$2 ;;
    --iface) IFACE=$2 ;;
    --node-ip) NODE_IP=$2 ;;
    --proxy-mode) MODE=$2 ;;
    --backend) BACKEND=$2 ;;
    --data-dir) DATA=$2 ;;
    --shared) SHARED=$2 ;;
    --timeout) TIMEOUT=$2 ;;
    --server) SERVER=$2 ;;
    --token) TOKEN=$2 ;;
    *) die "unknown argument $1" ;;
  esac
  shift 2
done
need_root
[ -n "$SHARED" ] || { [ -n "$SERVER" ] && [ -n "$TOKEN" ]; } || die "give --shared DIR, or --server URL --token TOKEN"

extra=(--node-name "$NAME" --data-dir "$DATA")
[ -n "$IFACE" ] && extra+=(--iface "$IFACE")
[ -n "$NODE_IP" ] && extra+=(--node-ip "$NODE_IP")
[ -n "$MODE" ] && extra+=(--proxy-mode "$MODE")
[ -n "$BACKEND" ] && extra+=(--backend "$BACKEND")
unit_iface=${IFACE:-$(ip -o -4 addr show | awk -v a="$NODE_IP" '{split($4, p, "/"); if (p[1] == a) print $2}' | head -n 1)}
unit_iface=${unit_iface:-lo}

deadline=$(($(date +%s) + TIMEOUT))
start=$(date +%s)
tries=0
while :; do
  if [ -n "$SHARED" ]; then
    [ -f "$SHARED/server-failed" ] && die "the first server failed: $(cat "$SHARED/server-failed")"
    if [ ! -s "$SHARED/join-command" ]; then
      [ "$(date +%s)" -lt "$deadline" ] || die "no $SHARED/join-command after $TIMEOUT s (did the first server's provisioning fail?)"
      sleep 2
      continue
    fi
    read -r _ _ SERVER _ TOKEN _ <"$SHARED/join-command"
  fi
  [ "$tries" = 0 ] && log "the join command was there after $(($(date +%s) - start)) s"
  join_start=$(date +%s)
  tries=$((tries + 1))
  write_unit kmesh "kmesh node ($NAME)" "$unit_iface" "$TIMEOUT" join "$SERVER" --token "$TOKEN" "${extra[@]}"
  log "kmesh join $SERVER --token *** ${extra[*]} (try $tries)"
  if start_unit kmesh; then
    break
  fi
  [ -n "$SHARED" ] && [ "$(date +%s)" -lt "$deadline" ] || die "kmesh join failed (journalctl -u kmesh)"
  "$KMESH_BIN" down --data-dir "$DATA" >/dev/null 2>&1 || true
  sleep 10
done
log "kmesh join returned after $(($(date +%s) - join_start)) s (joined $SERVER as $NAME, $(($(date +%s) - start)) s in all)"
