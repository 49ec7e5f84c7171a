"""Create a layer: walk a directory and write it as a reproducible tar, hashing it.

This is the readable Python twin of ``create_layer`` in
``_native/layers.pyx``: the same arguments, the same exceptions, and
byte-identical tars (the tests compare them). Read this one first.

The directory is usually a container's overlay *upper* directory: what the
container created, changed or deleted. overlayfs records a deletion as a
0/0 character device and a directory whose lower contents are hidden as
the xattr ``trusted.overlay.opaque=y`` (Documentation/filesystems/
overlayfs.rst, "whiteouts and opaque directories"). An image layer says
the same with OCI whiteouts (image-spec layer.md, "Whiteouts"): an empty
file ``.wh.<name>`` and an empty file ``.wh..wh..opq`` in the directory.
With ``whiteouts=True`` (the default) the first form becomes the second.

Lifecycle of one :func:`create_layer` call
------------------------------------------

1. The root is opened once (``O_DIRECTORY``); every directory below it is
   opened relative to its parent with ``O_NOFOLLOW``, and every name is
   looked at with ``lstat``: a symlink is archived as a symlink, never
   followed, even if the tree changes while it is walked (a container
   could swap a directory for a symlink to the host's ``/``).
2. Entries are written in byte order of their relative path, so parents
   come before their children (a parent's path is a prefix of theirs).
   The one exception is an opaque marker, written right after its
   directory (as Docker does). The root itself is not an entry.
3. Each entry is a 512-byte POSIX ustar header, preceded by a PAX extended
   header only when ustar cannot hold something: a path or link target
   that does not fit (ustar's 155-byte prefix + 100-byte name), a size of
   8 GiB or more, an owner id over 2097151, an mtime before 1970 or after
   2242, extended attributes. A regular file's content follows, padded to
   512 bytes. A second path to an inode already written becomes a hard
   link entry naming the first path.
4. The tar goes out in 1 MiB blocks: through sha256 (the diff_id), the
   compressor if any, sha256 again (the digest) and ``out.write``. Two
   zero blocks end the archive.

Reproducibility: the same tree gives the same bytes. Owners are numeric
(user and group names are left empty), times are whole seconds (or the
fixed ``mtime`` for every entry), nothing from the host (no pid, no clock,
no user database) goes in, and gzip output has no name and no timestamp.
atime and ctime are never written.

Not archived: sockets (tar has no type for them; GNU tar skips them too),
the root's own metadata, and the ``trusted.overlay.*`` xattrs, overlayfs'
bookkeeping. A tree using overlayfs' ``redirect_dir`` or ``metacopy``
features is refused: its upper directory does not hold what the layer
should (a renamed directory's contents, a file's data).
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import stat

from ..errors import LayerError
from .compression import CHUNK, Compressor
from .tar import (BLOCK, OPAQUE_MARKER, OPAQUE_XATTR, OPEN_DIR, OPEN_ROOT, OVERLAY_XATTRS, WHITEOUT_PREFIX,
                  XATTR_RECORD, LayerResult, _in_dir)

# ustar field limits (POSIX.1-2017, pax, "ustar Interchange Format").
NAME_MAX, PREFIX_MAX, LINK_MAX = 100, 155, 100
OCTAL_7, OCTAL_11 = 0o7777777, 0o77777777777  # the largest numbers 7 and 11 octal digits hold

REFUSED_OVERLAY_XATTRS = (b"trusted.overlay.redirect", b"trusted.overlay.metacopy")
PAX_NAME = b"././@PaxHeader"  # the name tarfile gives PAX headers: nothing from the host in it
READ_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO swapped in must not hang us

# typeflag bytes
REGTYPE, LNKTYPE, SYMTYPE, CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE = b"0123456"


def create_layer(root, out, *, mtime: int | None = None, whiteouts: bool = True,
                 compression: str = "none") -> LayerResult:
    """Write the directory ``root`` as a layer tar to the binary file ``out``.

    ``mtime`` (seconds since the epoch), when given, is every entry's
    modification time: the same content then always gives the same digest.
    ``whiteouts`` turns overlayfs whiteouts and opaque directories into
    OCI ``.wh.`` entries. ``compression`` is "none", "gzip" or "zstd".

    Returns a :class:`~engine.layer.tar.LayerResult`: ``digest`` and
    ``size`` of the bytes written to ``out``, ``diff_id`` and
    ``uncompressed_size`` of the tar, and the number of ``entries``.
    Raises :class:`~engine.errors.LayerError` for what cannot be archived
    (a file changing size while it is read, an xattr name with "=", an
    overlayfs redirect or metacopy); OSError for what the kernel refuses.
    """
    sink = _Sink(out, compression)
    walker = _Walker(sink, None if mtime is None else math.floor(mtime), whiteouts)
    root_fd = os.open(root, OPEN_ROOT)
    try:
        if whiteouts and _xattr(root_fd, OPAQUE_XATTR, _listxattr(root_fd)) == b"y":
            walker.opaque_marker(b"", os.fstat(root_fd))  # the root itself is opaque
        walker.walk(root_fd, b"")
    finally:
        os.close(root_fd)
    sink.write(bytes(2 * BLOCK))  # end of archive: two zero blocks
    return sink.finish(walker.entries)


# --- walking the tree -------------------------------------------------------


class _Walker:
    """Walks the tree depth first, in byte order of the paths, writing entries to the sink."""

    def __init__(self, sink: "_Sink", mtime: int | None, whiteouts: bool):
        self.sink = sink
        self.mtime = mtime
        self.whiteouts = whiteouts
        self.entries = 0
        self.inodes: dict[tuple[int, int], bytes] = {}  # (st_dev, st_ino) -> first path written

    def walk(self, dirfd: int, prefix: bytes) -> None:
        """Write everything below the directory ``dirfd`` (whose path is ``prefix``)."""
        # Sort keys: a child's own entry sorts by its name, what is below a
        # child directory by its name + "/": "a", "a.txt", "a/b" is byte
        # order of the full paths. A whiteout sorts by its ".wh." name.
        items = []
        for name in os.listdir(dirfd):
            name = os.fsencode(name)
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if self.whiteouts and _is_whiteout(st):
                items.append((WHITEOUT_PREFIX + name, name, st, False))
                continue
            items.append((name, name, st, False))
            if stat.S_ISDIR(st.st_mode):
                items.append((name + b"/", name, st, True))
        items.sort(key=lambda item: item[0])
        for key, name, st, below in items:
            if below:
                fd = os.open(name, OPEN_DIR, dir_fd=dirfd)  # O_NOFOLLOW: never a symlink swapped in
                try:
                    self.walk(fd, prefix + name + b"/")
                finally:
                    os.close(fd)
            else:
                self.entry(dirfd, name, prefix + key, st)

    def entry(self, dirfd: int, name: bytes, path: bytes, st: os.stat_result) -> None:
        """Write the entry for ``name`` in ``dirfd``, archived as ``path``."""
        mode = st.st_mode
        if stat.S_ISSOCK(mode):
            return  # tar cannot hold a socket (GNU tar says "socket ignored")
        if self.whiteouts and _is_whiteout(st):
            # overlayfs' deletion record becomes an OCI whiteout: an empty
            # file, 0600, with the device's owner and time (Docker's
            # overlayWhiteoutConverter does the same). Whiteouts may share
            # one inode (overlayfs links them to save inodes): never a hard link.
            self.header(path, REGTYPE, st, mode=0o600)
            return
        if not stat.S_ISDIR(mode) and st.st_nlink > 1:
            first = self.inodes.setdefault((st.st_dev, st.st_ino), path)
            if first != path:
                self.header(path, LNKTYPE, st, linkname=first)
                return
        if stat.S_ISREG(mode):
            self.regular(dirfd, name, path)
        elif stat.S_ISDIR(mode):
            target = _in_dir(dirfd, name)
            names = _listxattr(target)
            self.header(path + b"/", DIRTYPE, st, xattrs=_xattrs(target, names, path))
            if self.whiteouts and _xattr(target, OPAQUE_XATTR, names) == b"y":
                self.opaque_marker(path + b"/", st)
        elif stat.S_ISLNK(mode):
            target = _in_dir(dirfd, name)
            self.header(path, SYMTYPE, st, linkname=os.readlink(name, dir_fd=dirfd),
                        xattrs=_xattrs(target, _listxattr(target), path))
        else:  # character or block device, FIFO
            kind = CHRTYPE if stat.S_ISCHR(mode) else BLKTYPE if stat.S_ISBLK(mode) else FIFOTYPE
            target = _in_dir(dirfd, name)
            self.header(path, kind, st, xattrs=_xattrs(target, _listxattr(target), path))

    def regular(self, dirfd: int, name: bytes, path: bytes) -> None:
        """A regular file: its header (from the open file's fstat) and its content."""
        fd = os.open(name, READ_FILE, dir_fd=dirfd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise LayerError(f"{_show(path)!r} changed while being archived")
            self.header(path, REGTYPE, st, size=st.st_size, xattrs=_xattrs(fd, _listxattr(fd), path))
            left = st.st_size
            while left:
                data = os.read(fd, min(left, CHUNK))
                if not data:
                    raise LayerError(f"{_show(path)!r} changed while being archived "
                                     f"(it ended {left} bytes early)")
                self.sink.write(data)
                left -= len(data)
            self.sink.write(bytes(-st.st_size % BLOCK))  # padding to a whole block
        finally:
            os.close(fd)

    def opaque_marker(self, dir_path: bytes, st: os.stat_result) -> None:
        """The OCI opaque whiteout for a directory: an empty file, with the directory's owner and time."""
        self.header(dir_path + OPAQUE_MARKER, REGTYPE, st, mode=stat.S_IMODE(st.st_mode) & 0o777)

    def header(self, path: bytes, kind: bytes, st: os.stat_result, *, mode: int | None = None,
               size: int = 0, linkname: bytes = b"", xattrs: list | None = None) -> None:
        """Write one entry's header(s) (see :func:`ustar_header`)."""
        mtime = self.mtime if self.mtime is not None else st.st_mtime_ns // 1_000_000_000
        device = (os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in (CHRTYPE, BLKTYPE) else (0, 0)
        self.sink.write(ustar_header(
            path, kind, stat.S_IMODE(st.st_mode) if mode is None else mode, st.st_uid, st.st_gid,
            size, mtime, linkname, device, xattrs or []))
        self.entries += 1


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _show(path: bytes) -> str:
    return path.decode("utf-8", "surrogateescape")


def _listxattr(target) -> list[str]:
    """The xattr names of ``target`` (an fd, or a path not followed); none if the filesystem has none."""
    try:
        if isinstance(target, int):
            return os.listxattr(target)
        return os.listxattr(target, follow_symlinks=False)
    except OSError as e:
        if e.errno == errno.ENOTSUP:
            return []
        raise


def _xattr(target, name: bytes, names: list[str]) -> bytes | None:
    """The value of xattr ``name`` if ``names`` lists it."""
    if os.fsdecode(name) not in names:
        return None
    if isinstance(target, int):
        return os.getxattr(target, name)
    return os.getxattr(target, name, follow_symlinks=False)


def _xattrs(target, names: list[str], path: bytes) -> list[tuple[bytes, bytes]]:
    """The xattrs to archive, sorted by name: all but overlayfs' own."""
    out = []
    for name in sorted(os.fsencode(n) for n in names):
        if name.startswith(REFUSED_OVERLAY_XATTRS):
            raise LayerError(f"{_show(path)!r} uses overlayfs' {_show(name)}: the upper directory of a "
                             "mount with redirect_dir or metacopy cannot be archived as a layer")
        if name.startswith(OVERLAY_XATTRS):
            continue
        if b"=" in name:  # a PAX record is "key=value": the key cannot hold "="
            raise LayerError(f"{_show(path)!r}: xattr {_show(name)!r} cannot be archived "
                             "(its name contains '=')")
        out.append((name, _xattr(target, name, names)))
    return out


# --- writing headers --------------------------------------------------------------


def ustar_header(path: bytes, kind: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
                 linkname: bytes, device: tuple[int, int], xattrs: list[tuple[bytes, bytes]]) -> bytes:
    """One entry's header block, preceded by a PAX header when ustar cannot hold it all.

    Where a PAX record carries a value, the ustar field holds what fits (a
    truncated name, 0 for a number): readers that know PAX take the record.
    """
    pax: dict[bytes, bytes] = {}
    name, prefix = path, b""
    if len(path) > NAME_MAX:
        split = _split_path(path)
        if split is None:
            pax[b"path"] = path
            name = path[:NAME_MAX]
        else:
            prefix, name = split
    if len(linkname) > LINK_MAX:
        pax[b"linkpath"] = linkname
        linkname = linkname[:LINK_MAX]
    numbers = {b"uid": (uid, OCTAL_7), b"gid": (gid, OCTAL_7), b"size": (size, OCTAL_11),
               b"mtime": (mtime, OCTAL_11)}
    for key, (value, limit) in numbers.items():
        if not 0 <= value <= limit:
            pax[key] = b"%d" % value
    for key, value in xattrs:
        pax[XATTR_RECORD + key] = value

    def fits(key: bytes, value: int) -> int:
        return 0 if key in pax else value

    block = bytearray(BLOCK)
    _put(block, 0, 100, name)
    _put(block, 100, 8, b"%07o\0" % mode)
    _put(block, 108, 8, b"%07o\0" % fits(b"uid", uid))
    _put(block, 116, 8, b"%07o\0" % fits(b"gid", gid))
    _put(block, 124, 12, b"%011o\0" % fits(b"size", size))
    _put(block, 136, 12, b"%011o\0" % fits(b"mtime", mtime))
    block[156] = kind
    _put(block, 157, 100, linkname)
    _put(block, 257, 8, b"ustar\x0000")  # magic "ustar\0", version "00"
    _put(block, 329, 8, b"%07o\0" % device[0])
    _put(block, 337, 8, b"%07o\0" % device[1])
    _put(block, 345, 155, prefix)
    _checksum(block)
    if not pax:
        return bytes(block)
    return _pax_header(pax) + bytes(block)


def _split_path(path: bytes) -> tuple[bytes, bytes] | None:
    """Split a long path at a "/" into ustar's prefix (<= 155 bytes) and name (<= 100 bytes).

    The last "/" that leaves a non-empty name and a prefix that fits is the
    best split (any other leaves a longer name). None if there is none.
    """
    i = path.rfind(b"/", 0, min(len(path) - 1, PREFIX_MAX + 1))
    if i <= 0 or len(path) - i - 1 > NAME_MAX:
        return None
    return path[:i], path[i + 1:]


def _pax_header(records: dict[bytes, bytes]) -> bytes:
    """A PAX extended header ("x") entry holding ``records``, sorted by keyword.

    Each record is "<length> <keyword>=<value>\\n", the length counting the
    whole record, its own digits included (POSIX.1-2017, pax, "pax Extended
    Header").
    """
    data = b"".join(_pax_record(key, records[key]) for key in sorted(records))
    block = bytearray(BLOCK)
    _put(block, 0, 100, PAX_NAME)
    _put(block, 100, 8, b"%07o\0" % 0o644)
    _put(block, 108, 8, b"%07o\0" % 0)
    _put(block, 116, 8, b"%07o\0" % 0)
    _put(block, 124, 12, b"%011o\0" % len(data))
    _put(block, 136, 12, b"%011o\0" % 0)
    block[156] = ord("x")
    _put(block, 257, 8, b"ustar\x0000")
    _put(block, 329, 8, b"%07o\0" % 0)
    _put(block, 337, 8, b"%07o\0" % 0)
    _checksum(block)
    return bytes(block) + data + bytes(-len(data) % BLOCK)


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(b"%d" % n) + len(body) != n:  # the length counts its own digits
        n = len(b"%d" % n) + len(body)
    return b"%d" % n + body


def _put(block: bytearray, offset: int, width: int, value: bytes) -> None:
    block[offset:offset + len(value)] = value[:width]


def _checksum(block: bytearray) -> None:
    """The header checksum: the sum of its bytes, the checksum field counted as spaces."""
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)


# --- the output -------------------------------------------------------------------


class _Sink:
    """The tar stream on its way to ``out``: hashed, compressed, hashed again, written.

    Tar bytes are gathered into 1 MiB blocks before the compressor sees
    them, so that both implementations feed it exactly the same pieces
    (compressed output may depend on how the input was cut).
    """

    def __init__(self, out, compression: str):
        self._out = out
        self._compressor = Compressor(compression)
        self._compressed = compression != "none"
        self._tar_hash = hashlib.sha256()
        self._blob_hash = hashlib.sha256() if self._compressed else self._tar_hash
        self._buffer = bytearray()
        self.size = 0
        self.uncompressed_size = 0

    def write(self, data) -> None:
        self._buffer += data
        if len(self._buffer) >= CHUNK:
            whole = len(self._buffer) // CHUNK * CHUNK
            for start in range(0, whole, CHUNK):
                self._block(self._buffer[start:start + CHUNK])
            del self._buffer[:whole]

    def _block(self, data) -> None:
        self._tar_hash.update(data)
        self.uncompressed_size += len(data)
        self._emit(self._compressor.compress(data) if self._compressed else data)

    def _emit(self, blob) -> None:
        if not blob:
            return
        if self._compressed:
            self._blob_hash.update(blob)
        self.size += len(blob)
        view = memoryview(blob)
        while view:
            n = self._out.write(view)
            view = view[len(view) if n is None else n:]  # a raw file may write less than asked

    def finish(self, entries: int) -> LayerResult:
        if self._buffer:
            self._block(self._buffer)
            self._buffer = bytearray()
        if self._compressed:
            self._emit(self._compressor.flush())
        flush = getattr(self._out, "flush", None)
        if flush is not None:
            flush()
        return LayerResult("sha256:" + self._blob_hash.hexdigest(), "sha256:" + self._tar_hash.hexdigest(),
                           self.size, self.uncompressed_size, entries)
