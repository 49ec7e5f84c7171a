"""``export``: a container's whole filesystem as one tar, like ``docker export``.

The tar holds the container's *merged* view -- the image layers with the
container's writable layer on top, whiteouts applied -- as its processes
see it, without the kernel filesystems mounted over it (/proc, /sys, /dev).
Entries are named ``bin/``, ``bin/busybox``... (no leading ``./`` and no
entry for the root itself, as docker's), in byte order of their paths
(parents first); hard links inside the tree stay hard links; owners are
numeric, with no user or group names.

Where the merged view comes from, without leaving anything mounted on the
host:

- **created or exited container** (no process): a child process makes its
  own mount namespace (``unshare(CLONE_NEWNS)``, then ``/`` made
  rprivate so nothing propagates back), mounts the container's overlay
  (:meth:`~engine.snapshot.Snapshotter.overlay`) on its ``rootfs/``
  directory, writes it to a pipe with the layer writer
  (:func:`~engine.layer.create_layer` with ``whiteouts=False``) and exits.
  The mount lives only in that namespace, which dies with the child.
- **running container**: overlayfs does not allow a second mount sharing
  the same upper and work directories, but none is needed: the container's
  own mount namespace already has the merged root, reachable through
  ``/proc/<pid>/root`` (proc(5)). The child reads it from there, and does
  not descend into the mount points it finds in ``/proc/<pid>/mountinfo``
  (like ``find / -xdev`` inside the container); a mount point's own
  directory entry is taken from the layer below the mount. Files may
  change while they are read: one that vanishes is left out, one that
  shrinks is padded with zeros (the tar stays valid). This walk writes
  entries in the same order as the layer writer; it does not archive
  extended attributes.

Reading hostile trees: the walk opens every directory relative to its
parent's file descriptor with ``O_NOFOLLOW`` and never follows a symlink,
so a link planted in the container (``/etc -> /``) is exported as a link
and never read through -- through ``/proc/<pid>/root`` an absolute symlink
would otherwise resolve against the *host's* root. No host program is run
on the container's files (see ../shared/REFERENCES.md, docker
CVE-2019-14271).

Lifecycle of one export::

    parent: pipe, fork ----------------------------------> read chunks, yield them
    child:  [unshare + mount overlay | open /proc/<pid>/root]
            walk + write the tar to the pipe, exit 0 (or write the error, exit 1)
    parent: EOF, wait for the child; its error becomes an EngineError
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import signal
import stat
import tarfile
from typing import BinaryIO, Iterator

from ..errors import EngineError
from ..image.tarball import END_OF_ARCHIVE, entry, padding, tar_header

CHUNK = 1 << 20
CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1

OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _check(result: int, what: str) -> None:
    if result != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


# -- the walk -----------------------------------------------------------------------


class _Tree:
    """Write one directory tree as tar chunks (see the module docstring)."""

    def __init__(self, mount_points: set[str] = frozenset(), below=None):
        self.mount_points = mount_points   # relative paths not to descend into
        self.below = below                 # rel path -> os.stat_result under a mount point, or None
        self.links: dict[tuple[int, int], str] = {}  # (dev, ino) -> first name, for hard links

    def _info(self, name: str, st: os.stat_result, kind: bytes, **kw) -> tarfile.TarInfo:
        return entry(name, kind, mode=stat.S_IMODE(st.st_mode), mtime=int(st.st_mtime),
                     uid=st.st_uid, gid=st.st_gid, **kw)

    def walk(self, dir_fd: int, prefix: str = "") -> Iterator[bytes]:
        """Entries below ``dir_fd`` in byte order of their paths (as create_layer
        writes them: "a", "a.txt", "a/b"), parents before their children."""
        items = []
        for name in os.listdir(dir_fd):
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed meanwhile (the container is running)
            items.append((os.fsencode(name), name, st, False))
            if stat.S_ISDIR(st.st_mode) and prefix + name not in self.mount_points:
                items.append((os.fsencode(name) + b"/", name, st, True))
        items.sort(key=lambda item: item[0])
        for _, name, st, below in items:
            rel = prefix + name
            if below:
                try:
                    fd = os.open(name, OPEN_DIR, dir_fd=dir_fd)  # never a symlink swapped in
                except (FileNotFoundError, NotADirectoryError, OSError):
                    continue
                try:
                    yield from self.walk(fd, rel + "/")
                finally:
                    os.close(fd)
                continue
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                if rel in self.mount_points:  # the directory below the mount, not the mount's root
                    st = (self.below(rel) if self.below else None) or st
                yield tar_header(self._info(rel + "/", st, tarfile.DIRTYPE))
            elif stat.S_ISREG(mode):
                yield from self._file(dir_fd, name, rel, st)
            elif stat.S_ISLNK(mode):
                target = os.readlink(name, dir_fd=dir_fd)
                yield tar_header(self._info(rel, st, tarfile.SYMTYPE, linkname=target))
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                info = self._info(rel, st, tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE)
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                yield tar_header(info)
            elif stat.S_ISFIFO(mode):
                yield tar_header(self._info(rel, st, tarfile.FIFOTYPE))
            # sockets are skipped: tar has no type for them

    def _file(self, dir_fd: int, name: str, rel: str, st: os.stat_result) -> Iterator[bytes]:
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1:
            if key in self.links:
                yield tar_header(self._info(rel, st, tarfile.LNKTYPE, linkname=self.links[key]))
                return
            self.links[key] = rel
        try:
            fd = os.open(name, OPEN_FILE, dir_fd=dir_fd)
        except (FileNotFoundError, OSError) as e:
            if isinstance(e, FileNotFoundError) or e.errno == errno.ELOOP:
                return  # replaced meanwhile
            raise
        try:
            now = os.fstat(fd)
            if not stat.S_ISREG(now.st_mode) or now.st_ino != st.st_ino:
                return  # replaced meanwhile by something else
            size = st.st_size
            yield tar_header(self._info(rel, st, tarfile.REGTYPE, size=size))
            left = size
            while left:
                data = os.read(fd, min(CHUNK, left))
                if not data:
                    yield bytes(left)  # the file shrank while we read it: keep the tar valid
                    break
                left -= len(data)
                yield data
            yield padding(size)
        finally:
            os.close(fd)


def _lstat_beneath(base: str, rel: str) -> os.stat_result | None:
    """lstat ``base/rel`` without following a symlink on the way (None if absent)."""
    parts = [p for p in rel.split("/") if p]
    try:
        fd = os.open(base, OPEN_DIR)
    except OSError:
        return None
    try:
        for part in parts[:-1]:
            try:
                nfd = os.open(part, OPEN_DIR, dir_fd=fd)
            except OSError:
                return None
            os.close(fd)
            fd = nfd
        try:
            return os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except OSError:
            return None
    finally:
        os.close(fd)


def _mount_points(pid: int) -> set[str]:
    """Mount points of a process, relative to its root (proc(5), /proc/<pid>/mountinfo)."""
    points = set()
    with open(f"/proc/{pid}/mountinfo", "rb") as f:
        for line in f:
            # Field 5 is the mount point; a space, tab, newline or backslash in
            # it is written as a 3-digit octal escape (\040).
            point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), line.split()[4])
            rel = os.fsdecode(point).strip("/")
            if rel:
                points.add(rel)
    return points


# -- the child -----------------------------------------------------------------------


def _child_overlay(overlay) -> None:
    """In the child: a private mount namespace with the overlay on rootfs/."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    _check(_libc.mount(b"overlay", os.fsencode(overlay.target), b"overlay", 0,
                       overlay.options.encode()), f"mount overlay on {overlay.target}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _export_overlay(source: dict, out_fd: int) -> None:
    """A stopped container: mount its overlay in a private namespace, write it as a tar."""
    _child_overlay(source["overlay"])
    out = os.fdopen(out_fd, "wb", closefd=False)
    # The layer writer, without whiteout conversion: a merged view has no
    # whiteouts, and a 0/0 character device in it is a real device.
    source["create_layer"](source["overlay"].target, out, whiteouts=False)
    out.flush()


def _export_running(source: dict, out_fd: int) -> None:
    """A running container: walk its root as its own mount namespace shows it."""
    pid = source["pid"]
    root_fd = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    if not source["alive"]():  # the PID could have been reused by now
        raise EngineError("the container stopped while it was being exported")

    def below(rel: str) -> os.stat_result | None:
        for layer in source["layers"]:  # upper first, then the lower layers top down
            st = _lstat_beneath(layer, rel)
            if st is not None:
                return st
        return None

    for chunk in _Tree(_mount_points(pid), below).walk(root_fd):
        _write_all(out_fd, chunk)
    _write_all(out_fd, END_OF_ARCHIVE)


def _run_child(source: dict, out_fd: int, err_fd: int) -> None:
    """Everything the child does; never returns. Errors go to ``err_fd`` as one line."""
    status = 1
    try:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # die with the engine
        if source["kind"] == "overlay":
            _export_overlay(source, out_fd)
        else:
            _export_running(source, out_fd)
        status = 0
    except BrokenPipeError:
        status = 2  # the reader went away: nothing to report
    except BaseException as e:  # noqa: BLE001 -- report anything to the parent
        try:
            notes = "; ".join(getattr(e, "__notes__", []))
            _write_all(err_fd, (str(e) + (f" ({notes})" if notes else "")).encode(errors="replace"))
        except OSError:
            pass
    finally:
        os._exit(status)


# -- the parent ------------------------------------------------------------------------


def _source(engine, container) -> dict:
    from .container import process_start_time

    container.refresh_state()
    state = container.attrs["State"]
    manifest_digest = (container.attrs.get("Dockyard") or {}).get("ManifestDigest")
    image = (engine.image_store.load(manifest_digest, tags=[]) if manifest_digest
             else engine.images.get(container.attrs["Image"]))
    overlay = engine.snapshots.overlay(image, container.id)
    if state.get("Running") and state.get("Pid"):
        pid = state["Pid"]
        expected = (container.attrs.get("Dockyard") or {}).get("PidStartTime")
        return {"kind": "proc", "pid": pid,
                "alive": lambda: expected is None or process_start_time(pid) == expected,
                "layers": [overlay.upper, *overlay.lower]}
    from ..layer import create_layer  # imported here, in the parent: the child only runs it

    return {"kind": "overlay", "overlay": overlay, "create_layer": create_layer}


def export(engine, container) -> Iterator[bytes]:
    """The container's filesystem as tar chunks (docker-py's ``container.export()``)."""
    if not container.path.exists():
        raise EngineError(f"No such container: {container.id}")
    source = _source(engine, container)
    return _chunks(source, container)


def _chunks(source: dict, container) -> Iterator[bytes]:
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the child
        os.close(out_r)
        os.close(err_r)
        _run_child(source, out_w, err_w)
    os.close(out_w)
    os.close(err_w)
    finished = False
    try:
        while True:
            data = os.read(out_r, CHUNK)
            if not data:
                break
            yield data
        finished = True
    finally:
        os.close(out_r)
        if not finished:
            try:
                os.kill(pid, signal.SIGKILL)  # the consumer stopped early
            except ProcessLookupError:
                pass
        _, wait_status = os.waitpid(pid, 0)
        message = b""
        while chunk := os.read(err_r, 65536):
            message += chunk
        os.close(err_r)
    if finished and not (os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == 0):
        reason = message.decode(errors="replace").strip() or f"status {wait_status}"
        raise EngineError(f"cannot export container {container.short_id}: {reason}")


def export_to(engine, container, out: BinaryIO) -> None:
    """Write the tar of the container's filesystem to the binary file object ``out``."""
    for chunk in export(engine, container):
        out.write(chunk)
    out.flush()
