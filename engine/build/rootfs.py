"""File steps of a build (COPY, ADD, WORKDIR) done inside an image's root filesystem.

A COPY writes files *into an image*. Where they land depends on that
image: ``COPY app /srv`` puts ``app`` inside ``/srv`` if the image has
such a directory, and a destination under a symlink (``/var/run`` ->
``/run``) must resolve as the image says, never as the host does. So the
writing happens where those rules hold by construction, in a short-lived
child process (the same way docker's ``chrootarchive`` does it):

1. ``fork``; the child ``unshare(CLONE_NEWNS)`` (mount_namespaces(7)) and
   makes every mount private, so nothing it mounts is seen by the host and
   everything it mounted vanishes when it exits, even if it is killed;
2. it mounts the image as an overlay -- the image's extracted layers as
   ``lowerdir``, a fresh ``upperdir`` (overlayfs(5)) -- like a container's root;
3. it ``chroot``s there (chroot(2)): ``/`` and every absolute symlink now
   mean the image's root;
4. it performs the steps, given as data (:class:`MakeDirs`,
   :class:`Unpack`), reading archives through file descriptors opened
   before the chroot; then it exits. An error is written to a pipe, one line.

The parent then has the step's changes, and nothing else, in the upper
directory -- exactly a layer (build/builder.py turns it into one with
engine/layer, as ``commit`` does). :func:`pack_from_image` is the same
dance in the other direction, for ``COPY --from``: it chroots into the
source image and packs the named files into a tar.
"""

from __future__ import annotations

import ctypes
import glob  # at import time: _pack runs in a chroot, where no module can be found
import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass

from ..errors import EngineError
from ..runtime import plan as P

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.unshare.argtypes = [ctypes.c_int]


class FileStepError(EngineError):
    """A COPY/ADD/WORKDIR could not be done in the image (the builder adds the line)."""


@dataclass(frozen=True)
class MakeDirs:
    """``mkdir -p path`` in the image; directories it creates belong to uid:gid."""
    path: str
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Unpack:
    """Extract the tar at host path ``archive`` at ``dest`` in the image.

    ``single_file``: the archive holds one file copied to ``dest`` as
    written; if ``dest`` does not end in ``/`` and is not an existing
    directory, the file *becomes* ``dest`` (``COPY a.txt /b.txt``).
    ``uid``/``gid``: override every entry's owner (``ADD --chown`` of an
    archive); None keeps the archive's (and our own packs carry the right ones).
    """
    archive: str
    dest: str
    single_file: bool = False
    uid: int | None = None
    gid: int | None = None


def _check(result: int, what: str) -> None:
    if result != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _enter(overlay) -> None:
    """In the child: a private mount namespace, the overlay mounted, chroot into it."""
    _check(_libc.unshare(P.CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(None, b"/", None, P.MS_REC | P.MS_PRIVATE, None), "mount --make-rprivate /")
    _check(_libc.mount(b"overlay", overlay.target.encode(), b"overlay", 0, overlay.options.encode()),
           "mount overlay")
    os.chroot(overlay.target)
    os.chdir("/")


def _in_child(overlay, work, keep_fds: dict) -> None:
    """Fork; in the child enter the overlay and call ``work(fds)``; report errors.

    ``keep_fds`` maps names to files opened *before* the chroot. Raises
    :class:`FileStepError` with the child's one-line error.
    """
    # Everything the child needs after the chroot must be imported now: the
    # image has no Python library (and must not provide one to us).
    import bz2, lzma, zlib  # noqa: F401,E401  (tarfile imports them lazily)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        status = 1
        try:
            os.close(read_end)
            _enter(overlay)
            work(keep_fds)
            status = 0
        except BaseException as e:  # noqa: BLE001 - reported to the parent, then exit
            message = str(e) if isinstance(e, (EngineError, OSError, tarfile.TarError)) else repr(e)
            try:
                os.write(write_end, message.encode("utf-8", "replace")[:4000])
            except OSError:
                pass
        finally:
            os._exit(status)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 4096):
        chunks.append(chunk)
    os.close(read_end)
    _, wait_status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(wait_status) != 0:
        message = b"".join(chunks).decode("utf-8", "replace") or \
            f"the file step's child process failed (status {os.waitstatus_to_exitcode(wait_status)})"
        raise FileStepError(message)


def apply(overlay, steps: list) -> None:
    """Perform ``steps`` (MakeDirs / Unpack) in the image root mounted as ``overlay``."""
    files = {}
    try:
        for step in steps:
            if isinstance(step, Unpack) and step.archive not in files:
                files[step.archive] = open(step.archive, "rb")
        _in_child(overlay, lambda fds: _perform(steps, fds), files)
    finally:
        for f in files.values():
            f.close()


def _perform(steps: list, files: dict) -> None:
    for step in steps:
        if isinstance(step, MakeDirs):
            make_dirs(step.path, step.uid, step.gid)
        elif isinstance(step, Unpack):
            _unpack(step, files[step.archive])
        else:
            raise TypeError(f"unknown file step {step!r}")


def make_dirs(path: str, uid: int = 0, gid: int = 0) -> None:
    """``mkdir -p``, chowning only what it creates; a non-directory in the way is an error."""
    current = "/"
    for name in [p for p in path.split("/") if p]:
        current = posixpath.join(current, name)
        try:
            os.mkdir(current, 0o755)
        except FileExistsError:
            if not os.path.isdir(current):  # follows symlinks: inside the chroot, as the image means
                raise FileStepError(f"mkdir {current}: not a directory") from None
            continue
        os.chown(current, uid, gid)


def _unpack(step: Unpack, file) -> None:
    file.seek(0)
    with tarfile.open(fileobj=file, mode="r|*") as tar:
        dest = step.dest
        if step.single_file and not dest.endswith("/") and not os.path.isdir(dest):
            member = tar.next()
            if member is None:
                return
            parent = posixpath.dirname(dest) or "/"
            make_dirs(parent)
            member.name = posixpath.basename(dest)
            _extract(tar, member, parent, step)
            return
        make_dirs(dest)
        for member in tar:
            name = posixpath.normpath(member.name.lstrip("/"))
            if name in (".", "") and member.isdir():
                continue
            if name == ".." or name.startswith("../"):
                raise FileStepError(f"archive entry {member.name!r} climbs out of the destination")
            member.name = name
            _extract(tar, member, dest, step)


def _extract(tar, member, dest: str, step: Unpack) -> None:
    if step.uid is not None:
        member.uid, member.gid = step.uid, step.gid
    target = posixpath.join(dest, member.name)
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        st = None
    if st is not None and not (member.isdir() and stat.S_ISDIR(st.st_mode)):
        if stat.S_ISDIR(st.st_mode):
            raise FileStepError(f"cannot overwrite directory {target} with a non-directory")
        os.unlink(target)  # replace a file or symlink; never write through it
    # Inside the chroot the image's root is "/": nothing here can reach the host.
    tar.extract(member, dest, set_attrs=True, numeric_owner=True, filter="fully_trusted")


def pack_from_image(overlay, sources: list[str], out_path: str, *, uid: int | None = None,
                    gid: int | None = None, mode: int | None = None) -> list[tuple[str, str]]:
    """``COPY --from``: pack ``sources`` (paths or wildcards, in the image
    mounted as ``overlay``) into a tar at ``out_path``, names relative to the
    destination. Returns [(source path, kind)] with kind "file"/"dir"/"other".
    """
    found_path = out_path + ".found"
    with open(out_path, "wb") as out, open(found_path, "w") as found:
        _in_child(overlay, lambda fds: _pack(sources, fds["out"], fds["found"], uid, gid, mode),
                  {"out": out, "found": found})
    with open(found_path) as f:
        lines = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    os.unlink(found_path)
    return [(path, kind) for path, kind in lines]


def _pack(sources: list[str], out, found, uid, gid, mode) -> None:
    def adjust(info):
        if uid is not None:
            info.uid, info.gid = uid, gid
        info.uname = info.gname = ""
        if mode is not None and not info.issym():
            info.mode = mode
        return info

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for src in sources:
            path = posixpath.normpath("/" + src)
            # include_hidden: Go's filepath.Match, which docker uses, lets ``*`` match a leading dot
            matches = sorted(glob.glob(path, include_hidden=True)) if any(c in src for c in "*?[") else [path]
            if not matches or not os.path.lexists(matches[0]):
                raise FileStepError(f'"{src}": not found in the source image')
            for match in matches:
                real = os.path.realpath(match)  # the source named is followed, as docker does
                if os.path.isdir(real):
                    for dirpath, dirnames, filenames in os.walk(real):
                        dirnames.sort()
                        for name in sorted(dirnames + filenames):
                            full = posixpath.join(dirpath, name)
                            tar.add(full, arcname=posixpath.relpath(full, real), recursive=False,
                                    filter=adjust)
                    found.write(f"{match}\tdir\n")
                else:
                    tar.add(real, arcname=posixpath.basename(match), recursive=False, filter=adjust)
                    found.write(f"{match}\t{'file' if os.path.isfile(real) else 'other'}\n")
    out.flush()  # the child leaves with os._exit: nothing is flushed for it
    found.flush()
