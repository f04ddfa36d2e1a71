#!/usr/bin/env bash
# Make this machine a control-plane server of the lab (and a node): `kmesh up --runtime host` as the
# systemd unit kmesh.service (so the lab comes back after a reboot).
#
#   sudo vagrant/scripts/server.sh --advertise-address 192.168.56.10 [--node-name controlplane]
#        [--iface eth1] [--proxy-mode iptables] [--backend vxlan] [--store sqlite|etcd]
#        [--etcd URL,... [--etcd-cafile F --etcd-certfile F --etcd-keyfile F]]
#        [--data-dir /var/lib/kmesh] [--shared DIR] [--timeout 1800] [--no-wait]
#   sudo vagrant/scripts/server.sh --join --shared DIR --advertise-address 192.168.56.11 --store etcd --etcd URL,...
#
# The first server: once `kmesh up` has returned (and again at every boot) publish.sh writes into DIR
# join-command (what join.sh runs on the workers), server-command (for further servers) and kubeconfig.yaml
# (server https://ADDRESS:6443: kubectl on the host uses it as it is); they hold secrets (0600).
# --no-wait: start the unit and return at once (a first server whose etcd needs the other servers first).
# --join: a further server (--store etcd): waits for DIR/server-command, then `kmesh up ... --server URL
# --token SERVER-TOKEN` (docs/machines.md, "Three servers on one etcd").
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"

ADDR="" NAME=$(hostname) IFACE="" MODE=iptables BACKEND=vxlan STORE=sqlite ETCD="" DATA=/var/lib/kmesh SHARED=""
TIMEOUT=1800 JOIN=0 WAIT=1
ETCD_TLS=()
while [ $# -gt 0 ]; do
  case $1 in
    --join) JOIN=1; shift; continue ;;
    --no-wait) WAIT=0; shift; continue ;;
    --advertise-address) ADDR=$2 ;;
    --node-name) NAME=$2 ;;
    --iface) IFACE=$2 ;;
    --proxy-mode) MODE=$2 ;;
    --backend) BACKEND=$2 ;;
    --store) STORE=$2 ;;
    --etcd) ETCD=$2 ;;
    --etcd-cafile|--etcd-certfile|--etcd-keyfile) ETCD_TLS+=("$1" "$2") ;;
    --data-dir) DATA=$2 ;;
    --shared) SHARED=$2 ;;
    --timeout) TIMEOUT=$2 ;;
    *) die "unknown argument $1" ;;
  esac
  shift 2
done
need_root
[ -n "$ADDR" ] || die "--advertise-address is required (this machine's address on the lab network)"
if [ -z "$IFACE" ]; then
  IFACE=$(ip -o -4 addr show | awk -v a="$ADDR" '{split($4, p, "/"); if (p[1] == a) print $2}' | head -n 1)
  [ -n "$IFACE" ] || die "no interface here has the address $ADDR"
fi

args=(up --runtime host --advertise-address "$ADDR" --node-name "$NAME" --iface "$IFACE"
      --proxy-mode "$MODE" --backend "$BACKEND" --store "$STORE" --data-dir "$DATA")
[ -n "$ETCD" ] && args+=(--etcd "$ETCD")
[ ${#ETCD_TLS[@]} -eq 0 ] || args+=("${ETCD_TLS[@]}")
start=$(date +%s)

if [ "$JOIN" = 1 ]; then
  [ -n "$SHARED" ] || die "--join needs --shared DIR (where the first server writes server-command)"
  deadline=$((start + TIMEOUT))
  until [ -s "$SHARED/server-command" ]; do
    [ -f "$SHARED/server-failed" ] && die "the first server failed: $(cat "$SHARED/server-failed")"
    [ "$(date +%s)" -lt "$deadline" ] || die "no $SHARED/server-command after $TIMEOUT s"
    sleep 0.5
  done
  read -r _ _ _ URL _ TOKEN _ <"$SHARED/server-command"
  write_unit kmesh "kmesh control plane and node ($NAME)" "$IFACE" "$TIMEOUT" "${args[@]}" --server "$URL" --token "$TOKEN"
  log "kmesh ${args[*]} --server $URL --token ***"
  start_unit_retrying kmesh "$deadline" || die "kmesh up (a further server) failed (journalctl -u kmesh)"
  log "kmesh up returned after $(($(date +%s) - start)) s"
  exit 0
fi

if [ -n "$SHARED" ]; then
  mkdir -p "$SHARED"
  # a previous lab's: the workers must not use them
  rm -f "$SHARED/join-token" "$SHARED/join-command" "$SHARED/server-command" "$SHARED/kubeconfig.yaml" \
    "$SHARED/server-failed"
fi
install -m 0755 "$HERE/publish.sh" /usr/local/sbin/kmesh-publish
UNIT_ENV=$(printf 'KMESH_SHARED=%s\nKMESH_ADDR=%s\nKMESH_DATA=%s' "$SHARED" "$ADDR" "$DATA") \
UNIT_POST=/usr/local/sbin/kmesh-publish \
  write_unit kmesh "kmesh control plane and node ($NAME)" "$IFACE" "$TIMEOUT" "${args[@]}"
log "kmesh ${args[*]}"
if [ "$WAIT" = 0 ]; then
  start_unit kmesh --no-block
  log "kmesh.service started (not waiting: the others need to come up first)"
  exit 0
fi
early=""
if [ -n "$SHARED" ]; then
  # The join token goes out as soon as the API server listens (kmesh writes the token then), as a k3s
  # server's token is usable before its own node and CoreDNS are up: the workers join while this machine
  # finishes (a token left by an earlier start of this lab is the same one; `kmesh join` waits for the
  # server). publish.sh runs again when `kmesh up` has returned.
  (
    until [ -s "$DATA/join-token" ] && [ -s "$DATA/kubeconfig.yaml" ]; do
      sleep 0.2
    done
    KMESH_SHARED=$SHARED KMESH_ADDR=$ADDR KMESH_DATA=$DATA /usr/local/sbin/kmesh-publish
    log "the API server answers: wrote $SHARED/join-token and join-command (the workers join now)"
  ) &
  early=$!
fi
if ! start_unit_retrying kmesh $((start + TIMEOUT)); then
  [ -z "$early" ] || kill "$early" 2>/dev/null || true
  # the workers waiting for the join command give up at once instead of at their timeout
  [ -n "$SHARED" ] && echo "kmesh up failed on $NAME (journalctl -u kmesh there)" >"$SHARED/server-failed"
  die "kmesh up failed (journalctl -u kmesh)"
fi
log "kmesh up returned after $(($(date +%s) - start)) s"
if [ -n "$early" ]; then
  kill "$early" 2>/dev/null || true
  wait "$early" 2>/dev/null || true
fi
if [ -n "$SHARED" ]; then
  [ -s "$SHARED/join-command" ] || die "kmesh up returned but $SHARED/join-command is missing (journalctl -u kmesh)"
  log "wrote $SHARED/join-command and $SHARED/kubeconfig.yaml"
else
  log "join the other machines with: kmesh join https://$ADDR:6443 --token $(cat "$DATA/join-token")"
fi
