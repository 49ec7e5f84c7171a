"""Who the container runs as: ``--user`` resolved against the image's own files.

``docker run --user nobody`` means the ``nobody`` of the *image*, not of the
host: the name is looked up in the image's ``/etc/passwd`` and
``/etc/group``. Dockyard reads those files before the container starts,
straight from the directories the overlay will stack (the container's own
upper directory on top of the image's extracted layers), without mounting
anything and without running a host tool (``getent``, NSS modules...) on
them: the image is hostile input (runc CVE-2019-5736, docker CVE-2019-14271).

Two parts:

- :class:`RootView` answers "what is at /path in the merged root?" the way
  overlayfs would (whiteouts and opaque directories included) and follows
  symlinks only *inside* that root, as if it were ``/`` -- a link to
  ``/etc/shadow`` means the image's file, never the host's;
- :func:`resolve_user` applies Docker's rules (moby/sys/user
  ``GetExecUser``, used by runc and by dockerd's ``getUser``):

  =======================  ==================================================
  ``""``                   root: uid 0, gid 0, home from passwd (``/root``)
  ``"1000"``               uid 1000; fine without a passwd entry (gid 0,
                           home ``/``)
  ``"name"``               must be in passwd, else ``unable to find user
                           name: no matching entries in passwd file``
  ``"1000:50"``            uid 1000, gid 50 (a number needs no group entry)
  ``"name:group"``         the group must be in /etc/group
  =======================  ==================================================

  Supplementary groups are the groups that list the user by name (only when
  no group is given explicitly); like dockerd, the primary gid comes first.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from ..errors import EngineError, SpawnError
from .commit import _is_opaque, _is_whiteout  # overlay's whiteouts, as docker diff reads them

MAX_SYMLINKS = 40            # the kernel's limit on links followed in one lookup (path_resolution(7))
MAX_DATABASE_SIZE = 4 << 20  # a 10 GB /etc/passwd in an image must not exhaust the engine
MAX_ID = 2**31 - 1           # moby/sys/user: ids must be in range 0-2147483647


class SetupError(SpawnError):
    """The container cannot be set up as asked, found out while planning it:
    like a failed spawn, the command never starts (exit 125), but no
    process was made. ``stage`` says which part of the setup refused."""

    def __init__(self, message: str, stage: str):
        EngineError.__init__(self, message)
        self.stage = stage
        self.errno = 0


class UserNotFound(SetupError):
    """``--user`` names a user or group the image does not have (docker's message)."""

    def __init__(self, message: str):
        super().__init__(message, "user")


class UnsafeMountTarget(SetupError):
    """A mount target inside the container goes through a symlink."""

    def __init__(self, message: str):
        super().__init__(message, "mounts")


@dataclass(frozen=True)
class ExecUser:
    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()   # supplementary groups, primary gid first
    home: str = "/"


# -- the merged root, read from its layer directories ---------------------------


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


class RootView:
    """The container's root as overlayfs will show it, read from the layer
    directories (top first: the container's upper dir, then the lower ones)."""

    def __init__(self, layers_top_first):
        self.layers = [str(layer) for layer in layers_top_first]

    @classmethod
    def of(cls, overlay) -> "RootView":
        """The view of an :class:`~engine.snapshot.Overlay` (upper on top of its lowers)."""
        return cls([overlay.upper, *overlay.lower])

    def entry(self, parts: list[str]) -> tuple[str, os.stat_result] | None:
        """The top-most ``(host path, lstat)`` of ``/parts...`` without following
        any symlink, or None when the merged root has nothing there.

        A directory is merged from every layer down to the first one that
        has something else at that name, a whiteout, or an opaque directory
        (overlayfs.rst, "whiteouts and opaque directories"). Only paths whose
        every component was seen to be a real directory are ever joined, so
        no symlink can be followed on the host.
        """
        merged = list(self.layers)   # the layer directories that make up the current directory
        found = None
        for i, name in enumerate(parts):
            below, found = [], None
            for directory in merged:
                path = os.path.join(directory, name)
                try:
                    st = os.lstat(path)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                if _is_whiteout(st):
                    break                       # deleted here: nothing further down counts
                if found is None:
                    found = (path, st)
                elif not stat.S_ISDIR(st.st_mode):
                    break                       # a file below a directory ends the merge
                if not stat.S_ISDIR(found[1].st_mode):
                    break                       # the top entry is not a directory: it alone counts
                below.append(path)
                if _is_opaque(path):
                    break
            if found is None:
                return None
            if i < len(parts) - 1 and not stat.S_ISDIR(found[1].st_mode):
                return None                     # a file (or a symlink) cannot have children
            merged = below
        return found if parts else (self.layers[0], os.lstat(self.layers[0]))

    def symlink_in(self, path: str) -> tuple[str, str] | None:
        """The first component of ``path`` that is a symlink, as ``("/a/b", target)``, or None."""
        parts = _components(path)
        for i in range(1, len(parts) + 1):
            hit = self.entry(parts[:i])
            if hit is None:
                return None                     # missing: it will be created as a directory
            if stat.S_ISLNK(hit[1].st_mode):
                return "/" + "/".join(parts[:i]), os.readlink(hit[0])
            if not stat.S_ISDIR(hit[1].st_mode):
                return None
        return None

    def resolve(self, path: str) -> str:
        """``path`` with every symlink followed *inside* this root (``..`` stops at
        ``/``, absolute targets start again at this root's ``/``)."""
        todo = _components(path)
        done: list[str] = []
        links = 0
        while todo:
            name = todo.pop(0)
            if name == "..":
                if done:
                    done.pop()
                continue
            hit = self.entry(done + [name])
            if hit is None or not stat.S_ISLNK(hit[1].st_mode):
                done.append(name)
                continue
            links += 1
            if links > MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            target = os.readlink(hit[0])
            if target.startswith("/"):
                done = []
            todo = _components(target) + todo
        return "/" + "/".join(done)

    def read_file(self, path: str) -> bytes | None:
        """The content of a regular file (symlinks followed inside the root), or
        None when there is none. Anything but a regular file -- a FIFO that
        would block us, a device -- counts as absent."""
        hit = self.entry(_components(self.resolve(path)))
        if hit is None or not stat.S_ISREG(hit[1].st_mode):
            return None
        fd = os.open(hit[0], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            data = f.read(MAX_DATABASE_SIZE + 1)
        if len(data) > MAX_DATABASE_SIZE:
            raise EngineError(f"{path} in the image is larger than {MAX_DATABASE_SIZE} bytes")
        return data


def check_mount_target(view: RootView, target: str) -> None:
    """Refuse a mount target that goes through a symlink in the image.

    The child checks again, and that check is the one that counts (it also
    covers volumes mounted on volumes, which this view cannot see); this one
    only gives the clear message before anything starts.
    """
    link = view.symlink_in(target)
    if link is not None:
        raise UnsafeMountTarget(f"mount target {target} goes through a symlink: "
                                f"{link[0]} -> {link[1]} in the image")


# -- /etc/passwd and /etc/group ---------------------------------------------------


def _records(data: bytes | None, fields: int) -> list[list[str]]:
    """The colon-separated lines of passwd(5)/group(5), padded to ``fields``;
    blank lines and comments are skipped, as moby/sys/user does."""
    out = []
    for line in (data or b"").decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        out.append(parts + [""] * (fields - len(parts)))
    return out


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _in_range(n: int) -> int:
    if not 0 <= n <= MAX_ID:
        raise UserNotFound(f"uids and gids must be in range 0-{MAX_ID}")
    return n


def resolve_user(view: RootView, spec: str) -> ExecUser:
    """Docker's ``--user`` rules (see the module docstring)."""
    name, _, group = (spec or "").partition(":")
    passwd = _records(view.read_file("/etc/passwd"), 7)   # name:x:uid:gid:gecos:home:shell
    groups = _records(view.read_file("/etc/group"), 4)    # name:x:gid:member,member

    uid_arg = _number(name)
    user = ExecUser()
    matched = ""
    for entry in passwd:
        entry_uid = _number(entry[2])
        if entry_uid is None or _number(entry[3]) is None:
            continue
        if (name == "" and entry_uid == 0) or (uid_arg is not None and entry_uid == uid_arg) \
                or (uid_arg is None and entry[0] == name):
            matched = entry[0]
            user = ExecUser(entry_uid, int(entry[3]), (), entry[5])
            break
    else:
        if name and uid_arg is None:
            raise UserNotFound(f"unable to find user {name}: no matching entries in passwd file")
        if uid_arg is not None:
            user = ExecUser(_in_range(uid_arg), 0, (), "/")

    gid, supplementary = user.gid, []
    if group:
        gid_arg = _number(group)
        for entry in groups:
            if _number(entry[2]) is not None and (
                    entry[0] == group if gid_arg is None else int(entry[2]) == gid_arg):
                gid = int(entry[2])
                break
        else:
            if gid_arg is None:
                raise UserNotFound(f"unable to find group {group}: no matching entries in group file")
            gid = _in_range(gid_arg)
    elif matched:
        supplementary = [int(entry[2]) for entry in groups
                         if _number(entry[2]) is not None and matched in entry[3].split(",")]
    # dockerd's getUser: AdditionalGids = [gid] + the supplementary groups.
    return ExecUser(user.uid, gid, (gid, *supplementary), user.home)
