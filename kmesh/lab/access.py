"""Who may read a lab's kubeconfig, with everything else in the data dir private.

The data dir holds the store, the CA key and the admin token: it is 0700 and
every entry directly in it is 0600/0700. Only ``kubeconfig.yaml`` is handed
out: by default to the user who ran ``sudo kmesh up`` (``SUDO_UID``/``SUDO_GID``
own it, mode 0600), or to whom ``--write-kubeconfig-mode`` lets read it (k3s's
flag: ``640`` adds the group, ``644`` every local user).

Those readers still need to traverse the data dir. They get search (``x``)
permission only, never read: a POSIX ACL entry ``user:<uid>:--x`` (and
``group:<gid>:--x`` for a group-readable kubeconfig) when the filesystem
has ACLs, so no one else may even traverse; 0711 otherwise (or when the mode
lets every user read). Traversal without read shows no names, and every other
entry in the dir is 0600/0700, so the kubeconfig is the only thing reachable.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from kmesh.client.kubeconfig import write_private  # noqa: F401 - the lab writes its private files with it

PRIVATE_DIRS = ("pki", "logs", "etcd", "nodes", "run")
"""Every directory a lab makes directly in its data dir (teardown removes the same)."""

_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_UNDEFINED_ID = 0xFFFFFFFF
_SEARCH = 0o1


@dataclass(frozen=True)
class KubeconfigAccess:
    """How the lab's kubeconfig is written: its mode, and the (uid, gid) that own it (None: this process)."""

    mode: int = 0o600
    owner: tuple[int, int] | None = None

    def uid_gid(self) -> tuple[int, int]:
        """The owner, this process's effective ids when none is set."""
        return self.owner or (os.geteuid(), os.getegid())


def parse_mode(text: str) -> int:
    """A kubeconfig mode as k3s's ``--write-kubeconfig-mode`` takes it (``644``, ``0640``).

    Refused: anything beyond read/write bits, write for group or others (they
    could point the file at another server), and a mode its owner cannot read."""
    try:
        mode = int(text, 8)
    except ValueError:
        raise ValueError(f"{text!r} is not an octal file mode such as 600, 640 or 644") from None
    if mode & ~0o666:
        raise ValueError(f"{text}: a kubeconfig mode has read/write bits only (no execute, setuid or sticky)")
    if mode & 0o022:
        raise ValueError(f"{text}: group or others may not write the kubeconfig (it holds where the API is)")
    if not mode & 0o400:
        raise ValueError(f"{text}: the owner must be able to read the kubeconfig")
    return mode


def kubeconfig_access(mode: int | None = None, env: dict[str, str] | None = None) -> KubeconfigAccess:
    """Who gets the kubeconfig: under ``sudo`` as root, the invoking user (SUDO_UID/SUDO_GID); else this user."""
    env = dict(os.environ) if env is None else env
    owner = None
    if os.geteuid() == 0:
        try:
            uid, gid = int(env.get("SUDO_UID", "")), int(env.get("SUDO_GID", ""))
        except ValueError:
            pass
        else:
            if uid > 0:
                owner = (uid, gid)
    return KubeconfigAccess(0o600 if mode is None else mode, owner)


def prepare_data_dir(root: Path, access: KubeconfigAccess) -> str:
    """Make the data dir private (it and its subdirectories 0700), then let the kubeconfig's readers
    traverse it (``grant_traverse``); returns the line saying who may."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    for path in (root / d for d in PRIVATE_DIRS):
        path.mkdir(exist_ok=True, mode=0o700)
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and st.st_mode & 0o077:
            os.chmod(path, 0o700)
    return grant_traverse(root, access)


def _acl(entries: list[tuple[int, int, int]]) -> bytes:
    """The kernel's xattr form of a POSIX ACL (what setfacl writes)."""
    return struct.pack("<I", _ACL_VERSION) + b"".join(struct.pack("<HHI", *e) for e in sorted(entries))


def grant_traverse(root: Path, access: KubeconfigAccess) -> str:
    """Let exactly the kubeconfig's readers traverse ``root``; a line saying who may, for ``kmesh up`` to print.

    The data dir's own mode stays 0700 for everyone else whenever the
    filesystem takes ACLs; a stale ACL from an earlier run is replaced."""
    uid, gid = access.uid_gid()
    st = root.stat()
    users = [uid] if uid != st.st_uid else []
    groups = [gid] if access.mode & 0o040 else []
    others = bool(access.mode & 0o004)
    group_obj = _SEARCH if st.st_gid in groups else 0
    groups = [g for g in groups if g != st.st_gid]
    try:
        os.removexattr(root, _ACL_XATTR)
    except OSError as exc:
        if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    base = 0o700 | (group_obj << 3) | (_SEARCH if others else 0)
    if not users and not groups:
        os.chmod(root, base)
        return f"{root}: mode {base:04o}" + (" (every user may traverse it to the kubeconfig)" if others else "")
    entries = [(_USER_OBJ, 0o7, _UNDEFINED_ID), (_GROUP_OBJ, group_obj, _UNDEFINED_ID),
               (_MASK, _SEARCH, _UNDEFINED_ID), (_OTHER, _SEARCH if others else 0, _UNDEFINED_ID)]
    entries += [(_USER, _SEARCH, u) for u in users] + [(_GROUP, _SEARCH, g) for g in groups]
    try:
        os.chmod(root, base)
        os.setxattr(root, _ACL_XATTR, _acl(entries))
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        os.chmod(root, 0o711)
        return f"{root}: mode 0711 (the filesystem has no ACLs; every user may traverse it, not list it)"
    who = [f"user {_user_name(u)}" for u in users] + [f"group {_group_name(g)}" for g in groups]
    return f"{root}: traversable by {' and '.join(who)} only (POSIX ACL)"


def unreachable_parent(path: Path, uid: int) -> Path | None:
    """The first ancestor of ``path`` that ``uid`` cannot traverse by its mode bits, if any (ACLs not read)."""
    if uid == 0:
        return None
    try:
        pw = pwd.getpwuid(uid)
        gids = set(os.getgrouplist(pw.pw_name, pw.pw_gid))
    except KeyError:
        gids = set()
    for parent in reversed(path.absolute().parents):
        try:
            st = parent.stat()
        except OSError:
            return parent
        if st.st_uid == uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in gids:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            return parent
    return None


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
