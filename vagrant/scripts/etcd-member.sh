#!/usr/bin/env bash
# Make this machine a member of the lab's etcd cluster (Debian's etcd-server, plain HTTP on the lab
# network), for a control plane of several servers (docs/machines.md, "Three servers on one etcd").
#
#   sudo vagrant/scripts/etcd-member.sh --name controlplane --ip 192.168.56.10 \
#        --cluster controlplane=http://192.168.56.10:2380,controlplane2=http://192.168.56.11:2380,...
#
# The member is started without waiting: a new cluster answers once most of its members run, and on
# machines provisioned one after another (VirtualBox) the others are not up yet.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"

NAME="" IP="" CLUSTER=""
while [ $# -gt 0 ]; do
  case $1 in
    --name) NAME=$2 ;;
    --ip) IP=$2 ;;
    --cluster) CLUSTER=$2 ;;
    *) die "unknown argument $1" ;;
  esac
  shift 2
done
need_root
[ -n "$NAME" ] && [ -n "$IP" ] && [ -n "$CLUSTER" ] || die "give --name, --ip and --cluster"
command -v etcd >/dev/null || die "etcd is not installed (apt-get install etcd-server)"
cat >/etc/default/etcd <<CONF
# written by kmesh's vagrant/scripts/etcd-member.sh: one member of the lab's etcd cluster
ETCD_NAME=$NAME
ETCD_DATA_DIR=/var/lib/etcd/kmesh
ETCD_LISTEN_PEER_URLS=http://$IP:2380
ETCD_LISTEN_CLIENT_URLS=http://$IP:2379,http://127.0.0.1:2379
ETCD_ADVERTISE_CLIENT_URLS=http://$IP:2379
ETCD_INITIAL_ADVERTISE_PEER_URLS=http://$IP:2380
ETCD_INITIAL_CLUSTER=$CLUSTER
ETCD_INITIAL_CLUSTER_STATE=new
ETCD_INITIAL_CLUSTER_TOKEN=kmesh-lab
CONF
systemctl enable --quiet etcd.service
systemctl restart --no-block etcd.service
log "etcd member $NAME (http://$IP:2379) started; cluster $CLUSTER"
