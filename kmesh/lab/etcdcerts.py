"""``kmesh certs etcd``: the certificates of an etcd cluster kmesh does not run, as kubeadm makes them.

kubeadm's phases ``certs etcd-ca``, ``etcd-server``, ``etcd-peer``,
``etcd-healthcheck-client`` and ``apiserver-etcd-client``, in its layout
under ``--out DIR`` (kubeadm's ``/etc/kubernetes/pki``)::

    DIR/etcd/ca.crt                      etcd's CA (what etcd trusts, what clients verify etcd with)
    DIR/etcd/server.{crt,key}            --member NAME: serving pair (CN NAME)
    DIR/etcd/peer.{crt,key}              --member NAME: peer pair (CN NAME)
    DIR/etcd/healthcheck-client.{crt,key}  --client healthcheck-client
    DIR/apiserver-etcd-client.{crt,key}  --client apiserver-etcd-client (kube-apiserver's --etcd-certfile/-keyfile)
    DIR/NAME.{crt,key}                   --client NAME (CN NAME)

The CA (``ca.crt``, ``ca.key``) lives in ``--ca-dir`` (default ``DIR/etcd``):
it is made there once, when neither file exists, and reused after (several
machines share one CA as kubeadm's control-plane nodes do: the first makes
it, the others are handed a copy and run with ``--existing-ca``). A member's
pairs cover its ``--ip`` addresses, 127.0.0.1, ::1, localhost and its name,
for serving and for peers (serverAuth and clientAuth); a client pair is for
clientAuth only. Pairs already there are kept while they are the CA's, cover
what is asked and are not about to expire. Keys and certificates are 0600,
new directories 0700 (the same helpers as the lab's own etcd PKI,
``kmesh.apiserver.pki``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click

from kmesh.apiserver.pki import (
    ETCD_CLIENT_COMMON_NAMES,
    ETCD_CLIENT_USAGES,
    ETCD_MEMBER_USAGES,
    ETCD_SANS,
    EtcdPKI,
    ensure_etcd_pair,
    load_etcd_ca,
    new_etcd_ca,
    write_pki_file,
)

_MEMBER_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")  # goes into a DNS SAN
_CLIENT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$")  # a file name in DIR (or DIR/etcd)
_RESERVED = {"ca": "the CA's name", "server": "a member's pair (--member)", "peer": "a member's pair (--member)"}


class CertsError(ValueError):
    """Bad input to ``make_etcd_certs``; ``flag`` is the command-line flag it came from."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag
        self.message = message


@dataclass
class EtcdCerts:
    """What ``make_etcd_certs`` left in place."""

    ca_cert: Path
    ca_key: Path
    ca_created: bool
    cafile: Path  # DIR/etcd/ca.crt: etcd's --trusted-ca-file, a client's --etcd-cafile
    member: str = ""
    sans: list[str] = field(default_factory=list)
    clients: dict[str, tuple[Path, Path]] = field(default_factory=dict)  # name → (cert, key)
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    pki: EtcdPKI | None = None

    def pair(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) of ``server``, ``peer`` or a client, in kubeadm's layout."""
        assert self.pki is not None
        return self.pki.pair(name)

    def as_json(self) -> dict:
        """The result for ``--json``."""
        out: dict = {"ca": {"cert": str(self.ca_cert), "key": str(self.ca_key), "created": self.ca_created},
                     "cafile": str(self.cafile), "member": None,
                     "clients": {n: {"cert": str(c), "key": str(k)} for n, (c, k) in self.clients.items()},
                     "written": [str(p) for p in self.written], "kept": [str(p) for p in self.kept]}
        if self.member:
            (cert, key), (peer_cert, peer_key) = self.pair("server"), self.pair("peer")
            out["member"] = {"name": self.member, "sans": self.sans, "cert": str(cert), "key": str(key),
                             "peerCert": str(peer_cert), "peerKey": str(peer_key)}
        return out


def _check(member: str, ips: Sequence[str], clients: Sequence[str]) -> tuple[list[str], list[str]]:
    """The addresses (canonical) and client names, deduplicated; CertsError for anything wrong."""
    if member and not _MEMBER_NAME.match(member):
        raise CertsError("--member", f"{member!r} is not a host name (letters, digits, '-' and '.'): it goes "
                                     "into the certificates' SANs")
    addresses = []
    for ip in ips:
        try:
            addresses.append(str(ipaddress.ip_address(ip)))
        except ValueError:
            raise CertsError("--ip", f"{ip!r} is not an IP address") from None
    if addresses and not member:
        raise CertsError("--ip", "goes with --member NAME (the member that is reached on it)")
    if member and not addresses:
        raise CertsError("--member", "needs --ip IP, the address its clients and peers reach it on")
    names = []
    for name in clients:
        if name in _RESERVED:
            raise CertsError("--client", f"{name!r} is {_RESERVED[name]}")
        if not _CLIENT_NAME.match(name):
            raise CertsError("--client", f"{name!r} is not a file name of lowercase letters, digits and '-' "
                                         "(e.g. apiserver-etcd-client)")
        names.append(name)
    return list(dict.fromkeys(addresses)), list(dict.fromkeys(names))


def _not_a_file(path: Path, flag: str) -> None:
    if path.exists() and not path.is_dir():
        raise CertsError(flag, f"{path} exists and is not a directory")


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


def make_etcd_certs(
    out: Path, *, ca_dir: Path | None = None, existing_ca: bool = False, member: str = "",
    ips: Sequence[str] = (), clients: Sequence[str] = (),
) -> EtcdCerts:
    """Make (or keep) etcd's CA in ``ca_dir`` (default ``out/etcd``) and, in kubeadm's layout under ``out``,
    the CA's certificate, ``member``'s server and peer pairs (covering ``ips``) and the ``clients`` pairs.

    ``existing_ca``: never make a CA. Raises CertsError (naming the flag) for bad input, before writing
    anything; OSError when a file cannot be written."""
    addresses, names = _check(member, ips, clients)
    out = Path(os.path.abspath(out))
    ca_dir = Path(os.path.abspath(ca_dir)) if ca_dir is not None else out / "etcd"
    _not_a_file(out, "--out")
    _not_a_file(ca_dir, "--ca-dir")
    ca_cert_path, ca_key_path = ca_dir / "ca.crt", ca_dir / "ca.key"
    have = [p for p in (ca_cert_path, ca_key_path) if p.exists()]
    if not have and existing_ca:
        raise CertsError("--ca-dir", f"no etcd CA in {ca_dir} (ca.crt and ca.key), and --existing-ca makes none")
    if len(have) == 1:
        missing = ca_key_path if have[0] == ca_cert_path else ca_cert_path
        raise CertsError("--ca-dir", f"{have[0]} is there but not {missing.name}: a CA is made only where "
                                     "neither file is")
    created = not have
    if not created:
        try:
            ca_cert, ca_key = load_etcd_ca(ca_cert_path, ca_key_path)
        except (OSError, ValueError) as exc:
            raise CertsError("--ca-dir", f"{ca_dir} holds no usable etcd CA: {exc}") from None
    if not out.exists():
        _mkdir(out)  # 0700, as the lab's D/pki
    if created:
        _mkdir(ca_dir)
        new_etcd_ca(ca_cert_path, ca_key_path)
        ca_cert, ca_key = load_etcd_ca(ca_cert_path, ca_key_path)

    pki = EtcdPKI(out)
    result = EtcdCerts(ca_cert_path, ca_key_path, created, pki.ca_cert, member=member, pki=pki)
    (result.written if created else result.kept).extend((ca_cert_path, ca_key_path))
    _mkdir(pki.dir)
    ca_pem = ca_cert_path.read_bytes()
    if pki.ca_cert.resolve() != ca_cert_path.resolve():  # a CA elsewhere: its certificate where kubeadm has it
        if pki.ca_cert.exists() and pki.ca_cert.read_bytes() == ca_pem:
            result.kept.append(pki.ca_cert)
        else:
            write_pki_file(pki.ca_cert, ca_pem)
            result.written.append(pki.ca_cert)

    wanted: list[tuple[str, str, list[str], Sequence]] = []
    if member:
        result.sans = list(dict.fromkeys([*addresses, *ETCD_SANS, member]))
        wanted += [(pair, member, result.sans, ETCD_MEMBER_USAGES) for pair in ("server", "peer")]
    for name in names:
        wanted.append((name, ETCD_CLIENT_COMMON_NAMES.get(name, name), [], ETCD_CLIENT_USAGES))
    for name, common_name, sans, usages in wanted:
        cert, key = pki.pair(name)
        _mkdir(cert.parent)
        issued = ensure_etcd_pair(cert, key, ca_cert, ca_key, common_name, sans, usages)
        (result.written if issued else result.kept).extend((cert, key))
        if name in names:
            result.clients[name] = (cert, key)
    return result


# --- the command ---------------------------------------------------------------------------------------


@click.group("certs", context_settings={"help_option_names": ["-h", "--help"]})
def certs() -> None:
    """Certificates for what kmesh does not run itself (kubeadm's `certs` phases)."""


@certs.command("etcd")
@click.option("--out", type=click.Path(path_type=Path), required=True, metavar="DIR",
              help="The PKI directory written, kubeadm's layout: DIR/etcd/{ca.crt,server.*,peer.*}, "
                   "DIR/apiserver-etcd-client.*")
@click.option("--ca-dir", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="etcd's CA (ca.crt, ca.key): made there when neither file is, else reused (default: OUT/etcd).")
@click.option("--existing-ca", is_flag=True,
              help="Never make a CA: fail unless --ca-dir holds one (machines that share another's CA).")
@click.option("--member", default="", metavar="NAME",
              help="An etcd member's server and peer pairs (OUT/etcd/server.*, peer.*; CN NAME).")
@click.option("--ip", "ips", multiple=True, metavar="IP",
              help="With --member: an address its clients and peers reach it on (repeatable); the pairs also "
                   "cover 127.0.0.1, ::1, localhost and NAME.")
@click.option("--client", "clients", multiple=True, metavar="NAME",
              help="A client pair OUT/NAME.{crt,key} (repeatable): apiserver-etcd-client (kube-apiserver's, "
                   "CN kube-apiserver-etcd-client), healthcheck-client (in OUT/etcd), flannel-etcd-client, "
                   "or any other NAME (CN NAME).")
@click.option("--json", "json_out", is_flag=True, help="Print what was written and kept as JSON.")
def etcd_certs(out: Path, ca_dir: Path | None, existing_ca: bool, member: str, ips: tuple[str, ...],
               clients: tuple[str, ...], json_out: bool) -> None:
    """Make the certificates of an etcd cluster: its CA, a member's pairs, clients' pairs.

    \b
    kmesh certs etcd --out /etc/kmesh-pki --ca-dir /shared/etcd-ca \\
        --member m1 --ip 192.168.56.10 --client apiserver-etcd-client --client healthcheck-client
    """
    try:
        result = make_etcd_certs(out, ca_dir=ca_dir, existing_ca=existing_ca, member=member, ips=ips,
                                 clients=clients)
    except CertsError as exc:
        raise click.BadParameter(exc.message, param_hint=exc.flag) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write the certificates: {exc}") from None
    if json_out:
        click.echo(json.dumps(result.as_json(), indent=2))
        return
    click.echo(f"etcd CA {result.ca_cert} ({'made' if result.ca_created else 'reused'})")
    for p in result.written:
        click.echo(f"  wrote {p}")
    for p in result.kept:
        click.echo(f"  kept  {p}")
    if result.member:
        (cert, key), (peer_cert, peer_key) = result.pair("server"), result.pair("peer")
        click.echo(f"etcd --name {result.member} --cert-file {cert} --key-file {key} --client-cert-auth "
                   f"--trusted-ca-file {result.cafile} --peer-cert-file {peer_cert} --peer-key-file {peer_key} "
                   f"--peer-client-cert-auth --peer-trusted-ca-file {result.cafile} ...")
    for name, (cert, key) in result.clients.items():
        click.echo(f"{name}: --etcd https://... --etcd-cafile {result.cafile} --etcd-certfile {cert} "
                   f"--etcd-keyfile {key}")
