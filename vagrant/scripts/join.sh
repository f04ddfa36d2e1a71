#!/usr/bin/env bash
# Make this machine a node of a kmesh lab: `kmesh join` as a systemd unit (kmesh.service, so the node
# comes back after a reboot). The join token comes from the first server, through the shared folder
# (server.sh writes it) or on the command line.
#
#   sudo vagrant/scripts/join.sh --shared DIR [--server https://192.168.56.10:6443] [--node-name node01]
#        [--iface eth1 | --node-ip IP] [--proxy-mode iptables] [--backend vxlan] [--data-dir /var/lib/kmesh]
#        [--timeout 1800]
#   sudo vagrant/scripts/join.sh --server https://192.168.56.10:6443 --token TOKEN [...]
#
# With --shared and --server, `kmesh join --token-file DIR/join-token` starts at once and waits for the
# token and for the server (the machines of a lab start together); with --shared alone, this script waits
# (up to --timeout s) for DIR/join-command. Either way it retries the join until it succeeds (a stale token
# from an earlier lab fails until it is replaced) and gives up at once when the first server reports its
# failure there (DIR/server-failed).
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
# the first server's failure ends a join that waits for it (kmesh join would wait its --server-timeout)
watch_failed() {
  while sleep 1; do
    if [ -f "$SHARED/server-failed" ]; then
      systemctl stop --no-block kmesh.service
      return
    fi
  done
}
while :; do
  if [ -n "$SHARED" ]; then
    [ -f "$SHARED/server-failed" ] && die "the first server failed: $(cat "$SHARED/server-failed")"
  fi
  if [ -n "$SHARED" ] && [ -n "$SERVER" ] && [ -z "$TOKEN" ]; then
    how=(--token-file "$SHARED/join-token" --server-timeout "$TIMEOUT")
  else
    if [ -n "$SHARED" ]; then
      if [ ! -s "$SHARED/join-command" ]; then
        [ "$(date +%s)" -lt "$deadline" ] || die "no $SHARED/join-command after $TIMEOUT s (did the first server's provisioning fail?)"
        sleep 0.5
        continue
      fi
      read -r _ _ SERVER _ TOKEN _ <"$SHARED/join-command"
      [ "$tries" = 0 ] && log "the join command was there after $(($(date +%s) - start)) s"
    fi
    how=(--token "$TOKEN")
  fi
  join_start=$(date +%s)
  tries=$((tries + 1))
  write_unit kmesh "kmesh node ($NAME)" "$unit_iface" "$TIMEOUT" join "$SERVER" "${how[@]}" "${extra[@]}"
  log "kmesh join $SERVER ${how[0]} $([ "${how[0]}" = --token ] && echo '***' || echo "${how[1]}") ${extra[*]} (try $tries)"
  watcher=""
  if [ -n "$SHARED" ]; then
    watch_failed &
    watcher=$!
  fi
  ok=0
  start_unit kmesh && ok=1
  if [ -n "$watcher" ]; then
    kill "$watcher" 2>/dev/null || true
    wait "$watcher" 2>/dev/null || true
  fi
  [ "$ok" = 1 ] && break
  [ -n "$SHARED" ] && [ "$(date +%s)" -lt "$deadline" ] || die "kmesh join failed (journalctl -u kmesh)"
  "$KMESH_BIN" down --data-dir "$DATA" >/dev/null 2>&1 || true
  sleep 10
done
if [ "${how[0]}" = --token-file ]; then
  # at the next boot the shared folder is mounted only later (by Vagrant): the unit keeps the token itself
  write_unit kmesh "kmesh node ($NAME)" "$unit_iface" "$TIMEOUT" join "$SERVER" --token "$(cat "$SHARED/join-token")" \
    "${extra[@]}"
fi
log "kmesh join returned after $(($(date +%s) - join_start)) s (joined $SERVER as $NAME, $(($(date +%s) - start)) s in all)"
