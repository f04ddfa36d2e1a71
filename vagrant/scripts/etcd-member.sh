#!/usr/bin/env bash
# Make this machine a member of the lab's etcd cluster (Debian's etcd-server), for a control plane of several
# servers (docs/machines.md, "Three servers on one etcd"), as kubeadm runs etcd: TLS on the client and peer
# URLs, client certificates of the lab's etcd CA required on both.
#
#   sudo vagrant/scripts/etcd-member.sh --name controlplane --ip 192.168.56.10 --shared /vagrant/shared \
#        --cluster controlplane=https://192.168.56.10:2380,controlplane2=https://192.168.56.11:2380,... \
#        [--make-ca] [--pki /etc/kmesh-pki] [--timeout 1800]
#
# The etcd CA is DIR/etcd-ca/ca.{crt,key} (0600) in the folder every machine shares (--shared DIR): the
# member given --make-ca (the first server) makes it unless it is there, the others wait for it (up to
# --timeout s). Each member then makes its own pairs from it with `kmesh certs etcd` (common.sh installs
# kmesh first), in kubeadm's layout under --pki (kubeadm's /etc/kubernetes/pki):
#   PKI/etcd/{ca.crt,server.*,peer.*,healthcheck-client.*}   etcd's, owned by the user etcd runs as
#   PKI/apiserver-etcd-client.{crt,key}                      this server's `kmesh up --etcd https://...
#       --etcd-cafile PKI/etcd/ca.crt --etcd-certfile PKI/apiserver-etcd-client.crt
#       --etcd-keyfile PKI/apiserver-etcd-client.key` (root's, 0600)
#
# The member is started without waiting: a new cluster answers once most of its members run, and on
# machines provisioned one after another (VirtualBox) the others are not up yet.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"

NAME="" IP="" CLUSTER="" SHARED="" PKI=/etc/kmesh-pki TIMEOUT=1800 MAKE_CA=0
while [ $# -gt 0 ]; do
  case $1 in
    --make-ca) MAKE_CA=1; shift; continue ;;
    --name) NAME=$2 ;;
    --ip) IP=$2 ;;
    --cluster) CLUSTER=$2 ;;
    --shared) SHARED=$2 ;;
    --pki) PKI=$2 ;;
    --timeout) TIMEOUT=$2 ;;
    *) die "unknown argument $1" ;;
  esac
  shift 2
done
need_root
[ -n "$NAME" ] && [ -n "$IP" ] && [ -n "$CLUSTER" ] || die "give --name, --ip and --cluster"
[ -n "$SHARED" ] || die "give --shared DIR (the folder every server shares: the etcd CA is made there)"
case ",$CLUSTER" in
  *=http://*) die "--cluster: the peer URLs are https:// (the members speak TLS to each other)" ;;
esac
command -v etcd >/dev/null || die "etcd is not installed (apt-get install etcd-server)"
[ -x "$KMESH_BIN" ] || die "kmesh is not installed ($KMESH_BIN): run common.sh first"

CA="$SHARED/etcd-ca"
existing=()
if [ "$MAKE_CA" = 1 ]; then
  mkdir -p "$SHARED"
else
  deadline=$(($(date +%s) + TIMEOUT))
  until [ -s "$CA/ca.crt" ] && [ -s "$CA/ca.key" ]; do  # the key is written first, each file whole
    [ "$(date +%s)" -lt "$deadline" ] || die "no etcd CA in $CA after $TIMEOUT s (the first server makes it)"
    sleep 1
  done
  existing=(--existing-ca)
fi
"$KMESH_BIN" certs etcd --out "$PKI" --ca-dir "$CA" "${existing[@]}" --member "$NAME" --ip "$IP" \
  --client apiserver-etcd-client --client healthcheck-client >/dev/null || die "kmesh certs etcd failed"
# etcd reads its pairs as its own user (Debian's unit: etcd); the API server's pair stays root's
user=$(systemctl show -p User --value etcd.service 2>/dev/null || true)
chmod 0711 "$PKI"
chown -R "${user:-root}:" "$PKI/etcd"

cat >/etc/default/etcd <<CONF
# written by kmesh's vagrant/scripts/etcd-member.sh: one member of the lab's etcd cluster
ETCD_NAME=$NAME
ETCD_DATA_DIR=/var/lib/etcd/kmesh
ETCD_LISTEN_PEER_URLS=https://$IP:2380
ETCD_LISTEN_CLIENT_URLS=https://$IP:2379,https://127.0.0.1:2379
ETCD_ADVERTISE_CLIENT_URLS=https://$IP:2379
ETCD_INITIAL_ADVERTISE_PEER_URLS=https://$IP:2380
ETCD_INITIAL_CLUSTER=$CLUSTER
ETCD_INITIAL_CLUSTER_STATE=new
ETCD_INITIAL_CLUSTER_TOKEN=kmesh-lab
# TLS as kubeadm runs etcd: clients and peers present a certificate of the lab's etcd CA
ETCD_CERT_FILE=$PKI/etcd/server.crt
ETCD_KEY_FILE=$PKI/etcd/server.key
ETCD_CLIENT_CERT_AUTH=true
ETCD_TRUSTED_CA_FILE=$PKI/etcd/ca.crt
ETCD_PEER_CERT_FILE=$PKI/etcd/peer.crt
ETCD_PEER_KEY_FILE=$PKI/etcd/peer.key
ETCD_PEER_CLIENT_CERT_AUTH=true
ETCD_PEER_TRUSTED_CA_FILE=$PKI/etcd/ca.crt
CONF
systemctl enable --quiet etcd.service
systemctl restart --no-block etcd.service
log "etcd member $NAME (https://$IP:2379, client certificates of $CA) started; cluster $CLUSTER"
log "its health: curl --cacert $PKI/etcd/ca.crt --cert $PKI/etcd/healthcheck-client.crt" \
    "--key $PKI/etcd/healthcheck-client.key https://127.0.0.1:2379/health"
