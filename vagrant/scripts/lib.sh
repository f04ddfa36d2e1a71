# Shared by common.sh, server.sh and join.sh (sourced, not run).
# shellcheck shell=bash

KMESH_VENV=${KMESH_VENV:-/opt/kmesh/venv}
KMESH_BIN=/usr/local/bin/kmesh

log() { echo "kmesh-provision[$(hostname) $(date -u +%H:%M:%S.%3N)]: $*"; }
die() { echo "kmesh-provision[$(hostname)]: error: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "run me as root (sudo $0 ...)"; }

# write_unit NAME DESCRIPTION IFACE TIMEOUT ARGS...
# The systemd unit that runs `kmesh ARGS` at every boot (so the lab survives `vagrant reload` and
# reboots), once the lab's interface has its address. The arguments (a join token among them) live in
# /etc/kmesh/NAME.env, readable by root only, with the lines of $UNIT_ENV; $UNIT_POST, if set, runs after
# kmesh has returned (its failure is only logged).
write_unit() {
  local name=$1 desc=$2 iface=$3 timeout=$4
  shift 4
  install -d -m 0700 /etc/kmesh
  umask 077
  printf 'KMESH_IFACE=%s\nKMESH_ARGS=%s\n%s\n' "$iface" "$*" "${UNIT_ENV:-}" >"/etc/kmesh/$name.env"
  umask 022
  local post="" unit="/etc/systemd/system/$name.service" text existed=0
  [ -n "${UNIT_POST:-}" ] && post="ExecStartPost=-$UNIT_POST"
  text=$(cat <<UNIT
# Written by kmesh's vagrant/scripts (docs/vagrant.md). The arguments: /etc/kmesh/$name.env
[Unit]
Description=$desc
After=network.target systemd-networkd.service
Wants=network.target

[Service]
Type=oneshot
RemainAfterExit=yes
EnvironmentFile=/etc/kmesh/$name.env
# the lab's address must be there first (no wait-online in the box: it would slow every boot)
ExecStartPre=/bin/sh -c 'until ip -4 -o addr show dev "\$KMESH_IFACE" | grep -q inet; do sleep 1; done'
ExecStart=$KMESH_BIN \$KMESH_ARGS
$post
Restart=on-failure
RestartSec=10
TimeoutStartSec=$timeout
TimeoutStopSec=120

[Install]
WantedBy=multi-user.target
UNIT
)
  [ -f "$unit" ] && existed=1
  if [ "$existed" = 0 ] || [ "$(cat "$unit")" != "$text" ]; then
    printf '%s\n' "$text" >"$unit"
    # systemd reads a unit it has never loaded when it is first started; only a changed one needs a reload
    # (seconds on an emulated VM, and `enable` would do another unless told not to)
    [ "$existed" = 1 ] && systemctl daemon-reload
  fi
  systemctl enable --quiet --no-reload "$name.service"
}

# start_unit NAME [--no-block]: start it (a oneshot: returns when `kmesh up`/`join` has returned, unless
# --no-block); on failure show its log
start_unit() {
  local name=$1
  if systemctl is-active --quiet "$name.service"; then
    log "$name.service is already running"
    return 0
  fi
  if [ "${2:-}" = "--no-block" ]; then
    systemctl start --no-block "$name.service"
    return 0
  fi
  if ! systemctl start "$name.service"; then
    journalctl -u "$name.service" --no-pager -n 60 >&2 || true
    systemctl stop "$name.service" 2>/dev/null || true
    systemctl reset-failed "$name.service" 2>/dev/null || true
    return 1
  fi
}

# start_unit_retrying NAME DEADLINE: start_unit until it succeeds or the clock passes DEADLINE (seconds since
# the epoch). Under emulation (TCG) a busy machine can miss one of kmesh's own waits; a failed start keeps the
# lab's state, and the next start carries on from it.
start_unit_retrying() {
  local name=$1 deadline=$2 tries=1
  until start_unit "$name"; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    tries=$((tries + 1))
    log "$name.service failed; trying again ($tries) in 10 s"
    sleep 10
  done
}

# write_private FILE: stdin to FILE (0600), atomically (readers never see half a file)
write_private() {
  local tmp
  tmp=$(mktemp "$1.XXXXXX")
  cat >"$tmp"
  chmod 0600 "$tmp"
  mv -f "$tmp" "$1"
}
