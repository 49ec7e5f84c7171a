"""Apply a layer: stream a (possibly compressed) tar into a directory, hashing it.

This is the readable Python twin of ``_native/layers.pyx`` (compiled as
``engine._native.layers``). Both have the same :func:`apply_layer`, return
the same :class:`LayerResult` and raise the same exceptions with the same
text; the parity tests in ``tests/unit/test_layer_apply.py`` run every case
through both. Read this one first.

Lifecycle of one :func:`apply_layer` call
-----------------------------------------

1. The root directory is opened once (``O_DIRECTORY``). From then on every
   filesystem call is relative to a directory file descriptor (``openat``,
   ``mkdirat``, ``symlinkat``, ``linkat``, ``mknodat``, ``fchownat``,
   ``utimensat``, ``unlinkat``) and never follows a symlink, so an entry can
   never reach outside the root, whatever the archive says.
2. The stream is read in 1 MiB chunks through a
   :class:`~engine.layer.compression.LayerSource`: every byte read goes
   through sha256 (the layer's *digest*); a gzip or zstd blob is
   decompressed and the tar it holds goes through a second sha256 (the
   *diff_id*); the :class:`~engine.layer.compression.Limits` are checked
   on every chunk. All of it in the same pass that extracts the layer.
3. Headers are parsed one 512-byte block at a time (POSIX ustar, see
   ``man 5 tar`` / POSIX.1-2017 "pax" utility, "ustar Interchange Format").
   PAX ``x`` headers and GNU ``L``/``K`` headers carry a long name, a long
   link target, big numbers or extended attributes for the entry that
   follows them.
4. Each entry is checked (absolute names, ``..``, symlinks on the way, the
   size it declares) and written: a file is created with ``O_EXCL|O_NOFOLLOW``
   and only its plain permission bits (``mode & 0o755``: never setuid,
   setgid or sticky, never writable by others, while it is half-written),
   filled, chowned, given its extended attributes, then its real mode and
   mtime. OCI whiteouts become overlayfs whiteouts
   (a 0/0 character device; the ``trusted.overlay.opaque`` xattr).
5. Directories get their mode and mtime last, after all their children are
   written (writing a child changes a directory's mtime).
6. After the end-of-archive blocks the rest of the stream is read and hashed
   too ("drain the stream before comparing", as umoci does); a compressed
   stream is decompressed to its very end, where gzip and zstd keep their
   own checksums. Then the digest is compared with ``expected_digest`` and
   the diff_id with ``expected_diff_id``.

If anything fails, the root is left half-written: the caller extracts into
a fresh directory and throws it away on error (the snapshotter does).

The rules, one by one
---------------------

* Names are normalized: ``./a//b/./c/`` is ``a/b/c``; ``./`` (or an empty
  name) is the root itself: a directory entry for it is skipped (the root's
  own metadata belongs to the caller), anything else is refused.
* Refused with :class:`~engine.errors.UnsafeLayerEntry`: absolute names,
  any ``..`` component, a parent that is a symlink or not a directory, a
  hard link whose target is absolute, has ``..``, goes through a symlink,
  is missing or is a directory.
* Refused with :class:`~engine.errors.LayerError`: a truncated or corrupt
  stream (tar, gzip or zstd), a bad header checksum or number, a negative
  size, a file bigger than ``limits.max_entry_size``, a layer bigger than
  ``limits.max_uncompressed_size`` or expanding more than
  ``limits.max_ratio`` times, an unknown entry type, a NUL byte in a name,
  an empty symlink target, a malformed PAX record or xattr name, a PAX/GNU
  header over 1 MiB, an owner or a device number out of range.
* What is already in the root: a directory over a directory is kept (its
  mode, owner and mtime are updated); anything else is removed first
  (recursively for a directory) and never followed. So a later entry with
  the same name replaces an earlier one, as with tar.
* Missing parent directories are created 0755, owned by root.
* Symlinks are created exactly as given: a symlink is only dangerous if it
  is followed while extracting, which never happens.
* A hard link gets no metadata of its own: it *is* its target's inode.
* Owners are applied only when running as root (euid 0), and before the
  mode and the xattrs: chown(2) clears setuid/setgid bits and the
  ``security.capability`` xattr.
* Extended attributes come from PAX ``SCHILY.xattr.<name>`` records (the
  names star and GNU tar use). ``trusted.overlay.*`` ones are ignored: that
  namespace is overlayfs' own bookkeeping, so a layer must never be able to
  set it (a directory is made opaque only by a ``.wh..wh..opq`` entry). An
  xattr the filesystem refuses with ENOTSUP or EPERM is skipped, as Docker
  does ("not all graphdrivers support xattrs", moby pkg/archive).
* The first zero block ends the archive (GNU tar warns about "a lone zero
  block" and stops too; tarfile stops silently); a stream that simply ends
  between entries is fine. Directories, links, devices and FIFOs carry no
  data whatever their size field says (as tarfile and Go's archive/tar).
* ``entries`` in the result counts archive members, like ``tar -tf``: the
  skipped root entry and whiteouts included, PAX/GNU meta headers not.
* AUFS bookkeeping entries (``.wh..wh.plnk``, ``.wh..wh.aufs``...) are
  skipped, as Docker does.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

from ..errors import DigestMismatch, LayerError, UnsafeLayerEntry
from .compression import DEFAULT_LIMITS, LayerSource, Limits

BLOCK = 512                 # tar works in 512-byte blocks
META_MAX = 1 << 20          # largest PAX / GNU long-name header we keep in memory (as Go's archive/tar)
ZERO_BLOCK = bytes(BLOCK)   # end of archive

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
ID_MAX = (1 << 32) - 2      # (uid_t)-1 means "leave unchanged" to chown(2), so it is not a valid owner
DEV_MAX = (1 << 32) - 1     # major/minor numbers are unsigned int for makedev(3)

# Entry types (the ``typeflag`` byte, POSIX ustar plus GNU extensions).
REGULAR = (ord("0"), 0, ord("7"))   # "7" is "contiguous file": a regular file everywhere but on old Masscomp
HARDLINK, SYMLINK, CHARDEV, BLOCKDEV, DIRECTORY, FIFO = (ord(c) for c in "123456")
PAX, PAX_GLOBAL = ord("x"), ord("g")
GNU_LONGNAME, GNU_LONGLINK = ord("L"), ord("K")
HEADER_ONLY = (HARDLINK, SYMLINK, CHARDEV, BLOCKDEV, DIRECTORY, FIFO)  # their size field is ignored

# OCI image-spec, layer.md "Whiteouts", stored the way overlayfs wants them.
WHITEOUT_PREFIX = b".wh."
WHITEOUT_META_PREFIX = b".wh..wh."  # reserved for the spec's own markers
OPAQUE_MARKER = b".wh..wh..opq"
OPAQUE_XATTR = b"trusted.overlay.opaque"

XATTR_RECORD = b"SCHILY.xattr."       # PAX keyword prefix for an extended attribute
OVERLAY_XATTRS = b"trusted.overlay."  # overlayfs' own namespace: never taken from a layer
XATTR_SKIPPED = (errno.ENOTSUP, errno.EPERM)  # the filesystem refuses: skipped, as Docker does

# What a file or directory is created with, until it gets its real mode: the
# permission bits, but never setuid/setgid/sticky nor write access for others.
SAFE_BITS = 0o755

OPEN_ROOT = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
OPEN_DIR = OPEN_ROOT | os.O_NOFOLLOW
CREATE_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class LayerResult:
    """What :func:`apply_layer` read (or :func:`~engine.layer.create.create_layer` wrote).

    ``digest`` is the sha256 of the blob (every byte of the stream, as
    stored: compressed or not), ``diff_id`` the sha256 of the uncompressed
    tar; they are equal for an uncompressed layer. ``size`` and
    ``uncompressed_size`` count the bytes of each. ``entries`` counts the
    archive members, PAX/GNU meta headers excluded (as ``tar -tf | wc -l``).
    """

    digest: str             # "sha256:<hex>" of every byte read from the stream, up to EOF
    diff_id: str            # "sha256:<hex>" of the uncompressed tar stream
    size: int               # bytes read from the stream
    uncompressed_size: int  # bytes of the uncompressed tar stream
    entries: int            # archive members


def apply_layer(stream, root, expected_digest: str | None = None, expected_diff_id: str | None = None,
                compression: str = "auto", limits: Limits | None = None) -> LayerResult:
    """Extract the tar read from ``stream`` into the directory ``root``.

    ``stream`` is a binary file object (``read`` is used; short reads are
    fine). ``compression`` says what the stream holds: "none", "gzip",
    "zstd", or "auto" to recognize gzip and zstd by their magic numbers.
    ``root`` must be an existing directory. ``limits`` (a
    :class:`~engine.layer.compression.Limits`) bounds what the layer may
    declare and expand to.

    Raises :class:`~engine.errors.UnsafeLayerEntry` for entries that would
    escape ``root``, :class:`~engine.errors.LayerError` for a malformed
    archive or stream or one over the limits, and
    :class:`~engine.errors.DigestMismatch` when the stream does not hash to
    ``expected_digest`` or its uncompressed tar to ``expected_diff_id``.
    """
    limits = limits or DEFAULT_LIMITS
    source = LayerSource(stream, compression, limits)
    reader = _Reader(source.chunks())
    tree = _Tree(root)
    entries = 0
    try:
        pending = _Pending()
        while True:
            offset = reader.offset
            block = reader.block()
            if block is None or block == ZERO_BLOCK:
                break  # end of archive (one zero block is enough, as GNU tar and tarfile agree)
            header = _parse_header(block, offset)
            if header.type in (PAX, PAX_GLOBAL, GNU_LONGNAME, GNU_LONGLINK):
                _read_meta(reader, header, offset, pending)
                continue
            entry = pending.apply_to(header)
            pending = _Pending()
            entries += 1
            try:
                _apply_entry(tree, reader, entry, limits)
            except OSError as e:
                e.add_note(f"while applying layer entry {_show(entry.name)!r}")
                raise
        reader.drain()
        tree.finish()
    finally:
        tree.close()
        reader.close()
    digest, diff_id = source.digest(), source.diff_id()
    if expected_digest is not None and expected_digest != digest:
        raise DigestMismatch("layer", expected_digest, digest)
    if expected_diff_id is not None and expected_diff_id != diff_id:
        raise DigestMismatch("layer diff_id", expected_diff_id, diff_id)
    return LayerResult(digest, diff_id, source.size, source.uncompressed_size, entries)


# --- reading the tar stream -------------------------------------------------


class _Reader:
    """The tar stream, consumed from an iterator of chunks (bytes-like objects).

    ``_view[_pos:]`` is what is left of the current chunk. ``offset``
    counts the tar bytes consumed, for messages.
    """

    def __init__(self, chunks):
        self._chunks = chunks
        self._view = memoryview(b"")
        self._pos = 0
        self.offset = 0

    def _next_chunk(self) -> bool:
        """Move to the next chunk; False at the end of the stream."""
        chunk = next(self._chunks, None)
        if chunk is None:
            return False
        self._view, self._pos = memoryview(chunk), 0
        return True

    def block(self) -> bytes | None:
        """The next 512-byte header block, or None at a clean end of stream."""
        block = bytes(self._view[self._pos:self._pos + BLOCK])
        self._pos += len(block)
        while len(block) < BLOCK:  # the block straddles two chunks, or the stream ends
            if not self._next_chunk():
                if not block:
                    return None
                raise LayerError(f"truncated layer: tar header at offset {self.offset} "
                                 f"needs {BLOCK - len(block)} more bytes")
            more = bytes(self._view[:BLOCK - len(block)])
            self._pos = len(more)
            block += more
        self.offset += BLOCK
        return block

    def data(self, name: bytes, size: int, fd: int | None = None) -> None:
        """Consume an entry's ``size`` data bytes, writing them to ``fd`` if given, and its padding."""
        padding = _padded(size) - size
        sink = None if fd is None else (lambda view: _write_all(fd, view))
        self._consume(name, size, sink, padding)
        self._consume(name, padding)

    def read_data(self, name: bytes, size: int) -> bytes:
        """An entry's data as bytes (for the small PAX / GNU headers), padding consumed."""
        out = bytearray()
        padding = _padded(size) - size
        self._consume(name, size, out.extend, padding)
        self._consume(name, padding)
        return bytes(out)

    def _consume(self, name: bytes, n: int, sink=None, then: int = 0) -> None:
        """Consume ``n`` bytes, handing each piece (within one chunk) to ``sink``.

        ``then`` is how many more bytes the entry needs after these, only
        for the "truncated" message.
        """
        while n:
            if self._pos == len(self._view) and not self._next_chunk():
                raise LayerError(f"truncated layer: entry {_show(name)!r} needs {n + then} more bytes")
            k = min(n, len(self._view) - self._pos)
            if sink is not None:
                sink(self._view[self._pos:self._pos + k])
            self._pos += k
            self.offset += k
            n -= k

    def drain(self) -> None:
        """Read the rest of the stream: the digests cover all of it, the decompressor reaches its end."""
        for _ in self._chunks:
            pass

    def close(self) -> None:
        self._chunks.close()  # a generator: stop it where it is


def _padded(size: int) -> int:
    """``size`` rounded up to whole 512-byte blocks."""
    return (size + BLOCK - 1) // BLOCK * BLOCK


def _write_all(fd: int, view) -> None:
    while view:
        view = view[os.write(fd, view):]  # write(2) may write less than asked


# --- parsing headers ------------------------------------------------------


@dataclass
class _Header:
    """The fields of one 512-byte header that we use (offsets from ``man 5 tar``)."""

    name: bytes
    type: int
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    linkname: bytes
    devmajor: int
    devminor: int
    xattrs: dict[bytes, bytes] = field(default_factory=dict)  # from PAX SCHILY.xattr.* records


def _parse_header(block: bytes, offset: int) -> _Header:
    """Parse one header block (POSIX.1-2017, pax, "ustar Interchange Format").

    ========  ======  ====  ==============================================
    field     offset  size
    ========  ======  ====  ==============================================
    name           0   100  NUL-terminated unless it fills the field
    mode         100     8  numbers: octal text, or base-256 (see _number)
    uid          108     8
    gid          116     8
    size         124    12
    mtime        136    12  seconds since the epoch
    chksum       148     8  sum of the header bytes, this field as spaces
    typeflag     156     1  "0" file, "5" directory, "x" PAX header...
    linkname     157   100  target of a symlink or hard link
    magic        257     6  "ustar\\0" (POSIX) or "ustar " (old GNU)
    version      263     2
    uname        265    32  owner names: unused, owners are numeric ids
    gname        297    32
    devmajor     329     8  device numbers, for "3" and "4" only
    devminor     337     8
    prefix       345   155  POSIX: the name is prefix + "/" + name
    ========  ======  ====  ==============================================
    """

    def number(start: int, end: int) -> int:
        n = _number(block[start:end])
        if n is None:
            raise LayerError(f"corrupt tar header at offset {offset}")
        return n

    if number(148, 156) not in _checksums(block):
        raise LayerError(f"corrupt tar header at offset {offset}")
    name = _cstring(block[0:100])
    # POSIX ustar splits long names in two: prefix "/" name (GNU's own format
    # uses those bytes for other things, so only trust them under "ustar\0").
    prefix = _cstring(block[345:500])
    if prefix and block[257:263] == b"ustar\0":
        name = prefix + b"/" + name
    kind = block[156]
    devmajor = devminor = 0
    if kind in (CHARDEV, BLOCKDEV):
        devmajor, devminor = number(329, 337), number(337, 345)
    return _Header(
        name=name,
        type=kind,
        mode=number(100, 108),
        uid=number(108, 116),
        gid=number(116, 124),
        size=number(124, 136),
        mtime_ns=number(136, 148) * 1_000_000_000,
        linkname=_cstring(block[157:257]),
        devmajor=devmajor,
        devminor=devminor,
    )


def _cstring(field: bytes) -> bytes:
    """A NUL-terminated (or full-width) text field."""
    return field.split(b"\0", 1)[0]


def _number(field: bytes) -> int | None:
    """A numeric header field, or None if it is malformed.

    Usually octal digits, padded with spaces or NULs. GNU tar (and star, and
    Go) store numbers too big for the octal digits in "base-256": the first
    byte is 0x80 (positive) or 0xff (negative, two's complement) and the rest
    is a big-endian binary number.
    """
    if field[0] in (0x80, 0xFF):
        n = int.from_bytes(field[1:], "big")
        if field[0] == 0xFF:
            n -= 1 << (8 * (len(field) - 1))
    else:
        text = _cstring(field).strip(b" ")
        if not text:
            return 0
        if any(c not in b"01234567" for c in text):
            return None
        n = int(text, 8)
    return n if INT64_MIN <= n <= INT64_MAX else None


def _checksums(block: bytes) -> tuple[int, int]:
    """The header checksum, summing bytes as unsigned and as signed chars.

    The checksum field itself counts as eight spaces. POSIX says unsigned;
    some old tars summed signed chars, so (like tarfile) both are accepted.
    """
    rest = block[:148] + block[156:]
    unsigned = sum(rest) + 8 * ord(" ")
    signed = unsigned - 256 * sum(1 for c in rest if c >= 128)
    return unsigned, signed


class _Pending:
    """What PAX ``x`` and GNU ``L``/``K`` headers say about the next entry."""

    def __init__(self):
        self.pax: dict[bytes, object] = {}
        self.xattrs: dict[bytes, bytes] = {}  # name -> value, in the order the archive gives them
        self.long_name: bytes | None = None
        self.long_link: bytes | None = None

    def apply_to(self, h: _Header) -> _Header:
        """``h`` with the overrides applied (PAX first, then GNU, then the header itself)."""
        pax = self.pax
        name = pax.get(b"path") or self.long_name or h.name
        kind = h.type
        if kind == 0 and name.endswith(b"/"):
            kind = DIRECTORY  # old V7 tars mark a directory with a trailing slash only
        mtime_ns = pax.get(b"mtime")
        return _Header(
            name=name,
            type=kind,
            mode=h.mode,
            uid=_or(pax.get(b"uid"), h.uid),
            gid=_or(pax.get(b"gid"), h.gid),
            size=_or(pax.get(b"size"), h.size),
            mtime_ns=_or(mtime_ns, h.mtime_ns),
            linkname=pax.get(b"linkpath") or self.long_link or h.linkname,
            devmajor=h.devmajor,
            devminor=h.devminor,
            xattrs=self.xattrs,
        )


def _or(value, default):
    return default if value is None else value


def _read_meta(reader: _Reader, header: _Header, offset: int, pending: _Pending) -> None:
    """Consume a PAX or GNU meta header, recording what it says in ``pending``."""
    if header.size < 0:
        raise LayerError(f"layer entry {_show(header.name)!r} has a negative size")
    if header.type == PAX_GLOBAL:
        reader.data(header.name, header.size)  # global PAX headers: ignored
        return
    if header.size > META_MAX:
        raise LayerError(f"layer entry {_show(header.name)!r}: metadata header of "
                         f"{header.size} bytes is too large")
    data = reader.read_data(header.name, header.size)
    if header.type == PAX:
        _parse_pax(data, offset, pending)
    elif header.type == GNU_LONGNAME:
        pending.long_name = _cstring(data)
    else:
        pending.long_link = _cstring(data)


def _parse_pax(data: bytes, offset: int, pending: _Pending) -> None:
    """Record what a PAX extended header says about the next entry in ``pending``.

    Each record is ``"<length> <keyword>=<value>\\n"`` where length counts
    the whole record (POSIX.1-2017, pax, "pax Extended Header"), so a value
    may hold any byte, newlines included. An empty value means "use the
    header's own field" and is recorded as None; an empty xattr value is an
    xattr with an empty value (as Go's archive/tar reads it).
    """
    out = pending.pax
    pos = 0
    while pos < len(data) and data[pos] != 0:  # some writers pad with NULs
        space = data.find(b" ", pos)
        digits = data[pos:space] if space > pos else b""
        if not digits.isdigit() or len(digits) > 18:
            raise LayerError(f"corrupt pax header at offset {offset}")
        end = pos + int(digits)
        if end <= space + 1 or end > len(data) or data[end - 1] != ord("\n"):
            raise LayerError(f"corrupt pax header at offset {offset}")
        key, eq, value = data[space + 1:end - 1].partition(b"=")
        if not eq:
            raise LayerError(f"corrupt pax header at offset {offset}")
        pos = end
        if key in (b"path", b"linkpath"):
            out[key] = value or None
        elif key in (b"size", b"uid", b"gid", b"mtime"):
            number = None
            if value:
                number = _pax_time(value) if key == b"mtime" else _pax_int(value)
                if number is None:
                    raise LayerError(f"corrupt pax header at offset {offset}: bad {key.decode()} value")
            out[key] = number
        elif key.startswith(XATTR_RECORD):
            pending.xattrs[key[len(XATTR_RECORD):]] = value
        # Every other keyword (atime, ctime, uname, ...) is ignored.


def _pax_int(value: bytes) -> int | None:
    """A PAX decimal number, or None if malformed (bytes.isdigit() is ASCII digits only)."""
    if not value.isdigit() or len(value) > 19 or int(value) > INT64_MAX:
        return None
    return int(value)


def _pax_time(value: bytes) -> int | None:
    """A PAX time ("-12.345") in nanoseconds, sub-nanosecond digits dropped."""
    negative = value.startswith(b"-")
    whole, dot, fraction = value[negative:].partition(b".")
    if not whole.isdigit() or (dot and not fraction.isdigit()) or len(whole) > 19:
        return None
    seconds = int(whole)
    if seconds > INT64_MAX:
        return None
    ns = seconds * 1_000_000_000 + int(fraction[:9].ljust(9, b"0"))
    return -ns if negative else ns


# --- writing the tree -----------------------------------------------------


def _show(name: bytes) -> str:
    """A name for messages and exceptions (undecodable bytes kept as surrogates)."""
    return name.decode("utf-8", "surrogateescape")


def _apply_entry(tree: "_Tree", reader: _Reader, e: _Header, limits: Limits) -> None:
    """Check one entry and write it under the root (see the module docstring)."""
    shown = _show(e.name)
    if e.size < 0:
        raise LayerError(f"layer entry {shown!r} has a negative size")
    if e.type not in REGULAR and e.type not in HEADER_ONLY:
        raise LayerError(f"layer entry {shown!r}: unsupported entry type {chr(e.type)!r}")
    if e.type in REGULAR:
        limits.check_entry(shown, e.size)  # before anything is written
    if b"\0" in e.name:
        raise LayerError(f"layer entry {shown!r}: name contains a NUL byte")
    if e.type in (HARDLINK, SYMLINK) and b"\0" in e.linkname:
        raise LayerError(f"layer entry {shown!r}: link target contains a NUL byte")
    parts = _components(e.name, shown)
    if not (0 <= e.uid <= ID_MAX and 0 <= e.gid <= ID_MAX):
        raise LayerError(f"layer entry {shown!r}: owner {e.uid}:{e.gid} out of range")
    for name in e.xattrs:
        if not name or b"\0" in name:
            raise LayerError(f"layer entry {shown!r}: bad xattr name {_show(name)!r}")
    data_size = e.size if e.type in REGULAR else 0

    if not parts:  # "./" is the root itself: nothing to create, and its metadata is the caller's
        if e.type != DIRECTORY:
            raise UnsafeLayerEntry(shown, "replaces the layer root")
        return
    base = parts[-1]
    if base.startswith(WHITEOUT_PREFIX):
        reader.data(e.name, data_size)  # a whiteout's own content (if any) is never written
        _whiteout(tree, shown, parts)
        return

    dirfd = tree.enter(parts[:-1], shown)
    if e.type in REGULAR:
        fd = tree.create(dirfd, parts, lambda: os.open(base, CREATE_FILE, e.mode & SAFE_BITS, dir_fd=dirfd))
        try:
            reader.data(e.name, e.size, fd)
            if tree.chown:
                os.fchown(fd, e.uid, e.gid)  # before fchmod: chown clears setuid/setgid
            _set_xattrs(e, fd)  # after the data and the owner: both clear security.capability
            os.fchmod(fd, e.mode & 0o7777)
            os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
        finally:
            os.close(fd)
    elif e.type == DIRECTORY:
        tree.directory(dirfd, parts, (e.mode & SAFE_BITS) | 0o700)  # rwx for us until finish()
        tree.set_owner(dirfd, base, e)
        _set_xattrs(e, _in_dir(dirfd, base))
        tree.dirs[b"/".join(parts)] = (e.mode & 0o7777, e.mtime_ns)  # applied by finish()
    elif e.type == SYMLINK:
        if not e.linkname:
            raise LayerError(f"layer entry {shown!r}: symlink has an empty target")
        tree.create(dirfd, parts, lambda: os.symlink(e.linkname, base, dir_fd=dirfd))
        tree.set_owner(dirfd, base, e)
        _set_xattrs(e, _in_dir(dirfd, base))
        os.utime(base, ns=(e.mtime_ns, e.mtime_ns), dir_fd=dirfd, follow_symlinks=False)
    elif e.type == HARDLINK:
        tree.hardlink(dirfd, parts, e.linkname, shown)
        # No metadata: a hard link shares its inode (and so its owner, mode
        # and mtime) with the target entry, which already set them.
    else:  # FIFO, CHARDEV, BLOCKDEV
        if not (0 <= e.devmajor <= DEV_MAX and 0 <= e.devminor <= DEV_MAX):
            raise LayerError(f"layer entry {shown!r}: device number out of range")
        kind = {FIFO: stat.S_IFIFO, CHARDEV: stat.S_IFCHR, BLOCKDEV: stat.S_IFBLK}[e.type]
        device = os.makedev(e.devmajor, e.devminor)
        tree.create(dirfd, parts, lambda: _mknod(base, kind | 0o600, device, dirfd, shown))
        tree.set_owner(dirfd, base, e)
        _set_xattrs(e, _in_dir(dirfd, base))
        # fchmodat(2) has no working AT_SYMLINK_NOFOLLOW, but this name is
        # the node created just above, in a directory only we write to.
        os.chmod(base, e.mode & 0o7777, dir_fd=dirfd)
        os.utime(base, ns=(e.mtime_ns, e.mtime_ns), dir_fd=dirfd, follow_symlinks=False)


def _in_dir(dirfd: int, base: bytes) -> bytes:
    """A path naming ``base`` in the directory ``dirfd``, for calls that take no dir_fd.

    There is no ``lsetxattrat``: ``/proc/self/fd/N`` leads to the directory
    itself (whatever its path), and ``base`` is looked up in it.
    """
    return b"/proc/self/fd/%d/%s" % (dirfd, base)


def _set_xattrs(e: _Header, target) -> None:
    """Set the entry's xattrs on ``target``: a file descriptor, or a path (never followed)."""
    for name, value in e.xattrs.items():
        if name.startswith(OVERLAY_XATTRS):
            continue  # overlayfs' bookkeeping: never from a layer (see the module docstring)
        try:
            if isinstance(target, int):
                os.setxattr(target, name, value)
            else:
                os.setxattr(target, name, value, follow_symlinks=False)
        except OSError as err:
            if err.errno not in XATTR_SKIPPED:
                raise


def _components(name: bytes, shown: str) -> list[bytes]:
    """The path components of an entry name, normalized; refuse escapes.

    "./a//b/./c/" becomes ["a", "b", "c"]; "" and "." become [] (the root).
    """
    if name.startswith(b"/"):
        raise UnsafeLayerEntry(shown, "absolute path")
    parts = [p for p in name.split(b"/") if p not in (b"", b".")]
    if b".." in parts:
        raise UnsafeLayerEntry(shown, "path contains '..'")
    return parts


def _mknod(base: bytes, mode: int, device: int, dirfd: int, shown: str) -> None:
    try:
        os.mknod(base, mode, device, dir_fd=dirfd)
    except OSError as e:
        if e.errno != errno.EPERM:  # EPERM: no CAP_MKNOD (a rootless or user-namespaced engine)
            raise
        raise LayerError(f"layer entry {shown!r}: cannot create a device node "
                         "(operation not permitted)") from None


def _whiteout(tree: "_Tree", shown: str, parts: list[bytes]) -> None:
    """OCI whiteouts, written as overlayfs expects them in a lower directory.

    ``dir/.wh..wh..opq`` makes ``dir`` opaque: the xattr
    ``trusted.overlay.opaque=y`` hides what lower layers have in it.
    ``dir/.wh.NAME`` deletes ``dir/NAME``: overlayfs shows a 0/0 character
    device as "no such file" (Documentation/filesystems/overlayfs.rst,
    "whiteouts and opaque directories").
    """
    base = parts[-1]
    if base == OPAQUE_MARKER:
        os.setxattr(tree.enter(parts[:-1], shown), OPAQUE_XATTR, b"y")
        return
    if base.startswith(WHITEOUT_META_PREFIX):
        return  # other ".wh..wh." names are AUFS bookkeeping (.wh..wh.plnk): skipped, as Docker does
    hidden = base[len(WHITEOUT_PREFIX):]
    if hidden in (b"", b"."):
        raise LayerError(f"layer entry {shown!r}: whiteout names no file")
    if hidden == b"..":
        raise UnsafeLayerEntry(shown, "path contains '..'")
    dirfd = tree.enter(parts[:-1], shown)
    target = parts[:-1] + [hidden]
    tree.create(dirfd, target, lambda: _mknod(hidden, stat.S_IFCHR, os.makedev(0, 0), dirfd, shown))


class _Blocked(Exception):
    """A path component is a symlink (``symlink=True``) or some other non-directory."""

    def __init__(self, symlink: bool):
        self.symlink = symlink


class _Tree:
    """The root directory, reached only through directory file descriptors.

    Entries come grouped by directory, so the chain of directories opened
    for the previous entry (``_path`` and their fds ``_fds``; ``_fds[0]`` is
    the root) is kept and reused: most entries open no directory at all.
    The chain stays valid because the only things ever removed are children
    of the current entry's directory, never one of its ancestors.
    """

    def __init__(self, root):
        self.root_fd = os.open(root, OPEN_ROOT)
        self.chown = os.geteuid() == 0
        self.dirs: dict[bytes, tuple[int, int]] = {}  # path -> (mode, mtime_ns), applied by finish()
        self._path: list[bytes] = []
        self._fds: list[int] = [self.root_fd]

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds, self._path = [], []

    def _step(self, dirfd: int, name: bytes, create: bool) -> int:
        """Open the directory ``name`` in ``dirfd`` without following symlinks.

        A missing directory is created (0755, root-owned) if ``create``,
        else FileNotFoundError is raised. Raises :class:`_Blocked` if ``name``
        is a symlink or not a directory.
        """
        try:
            return os.open(name, OPEN_DIR, dir_fd=dirfd)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                raise _Blocked(stat.S_ISLNK(st.st_mode)) from None
            raise
        try:
            os.mkdir(name, 0o755, dir_fd=dirfd)
        except FileExistsError:
            pass
        fd = self._step(dirfd, name, create=False)
        os.fchmod(fd, 0o755)  # the umask must not change it
        if self.chown:
            os.fchown(fd, 0, 0)
        return fd

    def enter(self, dirs: list[bytes], shown: str, create: bool = True) -> int:
        """The fd of directory ``dirs`` (components below the root), creating missing ones."""
        keep = 0
        while keep < min(len(dirs), len(self._path)) and dirs[keep] == self._path[keep]:
            keep += 1
        while len(self._path) > keep:
            self._path.pop()
            os.close(self._fds.pop())
        for name in dirs[keep:]:
            try:
                fd = self._step(self._fds[-1], name, create)
            except _Blocked as b:
                reason = "symlink" if b.symlink else "non-directory"
                raise UnsafeLayerEntry(shown, f"path goes through a {reason}") from None
            self._path.append(name)
            self._fds.append(fd)
        return self._fds[-1]

    def remove(self, dirfd: int, parts: list[bytes]) -> None:
        """Remove whatever is at ``parts`` (in ``dirfd``), recursively for a directory."""
        _remove(dirfd, parts[-1])
        key = b"/".join(parts)
        for path in [p for p in self.dirs if p == key or p.startswith(key + b"/")]:
            del self.dirs[path]  # gone: finish() must not touch what may replace it

    def create(self, dirfd: int, parts: list[bytes], make):
        """Call ``make()``; if the name exists, remove what is there and call it again."""
        try:
            return make()
        except FileExistsError:
            pass
        self.remove(dirfd, parts)
        return make()

    def directory(self, dirfd: int, parts: list[bytes], mode: int) -> None:
        """Make directory ``parts`` exist (created with ``mode``), keeping one already there."""
        base = parts[-1]
        try:
            os.mkdir(base, mode, dir_fd=dirfd)  # finish() gives it its real mode
            return
        except FileExistsError:
            pass
        if stat.S_ISDIR(os.stat(base, dir_fd=dirfd, follow_symlinks=False).st_mode):
            return
        self.remove(dirfd, parts)
        os.mkdir(base, mode, dir_fd=dirfd)

    def set_owner(self, dirfd: int, base: bytes, e: _Header) -> None:
        if self.chown:
            os.chown(base, e.uid, e.gid, dir_fd=dirfd, follow_symlinks=False)

    def hardlink(self, dirfd: int, parts: list[bytes], linkname: bytes, shown: str) -> None:
        """Hard-link ``parts`` to the file ``linkname`` names inside the root."""
        outside = UnsafeLayerEntry(shown, "hard link target outside the layer")
        missing = UnsafeLayerEntry(shown, "hard link target missing")
        if linkname.startswith(b"/"):
            raise outside
        target = [p for p in linkname.split(b"/") if p not in (b"", b".")]
        if b".." in target:
            raise outside
        if not target:
            raise UnsafeLayerEntry(shown, "hard link target is a directory")
        # Walk to the target's directory with fds of our own (the cached
        # chain belongs to the entry's directory), never creating anything.
        tfd = os.dup(self.root_fd)
        try:
            for name in target[:-1]:
                try:
                    fd = self._step(tfd, name, create=False)
                except FileNotFoundError:
                    raise missing from None
                except _Blocked as b:
                    raise (outside if b.symlink else missing) from None
                os.close(tfd)
                tfd = fd
            try:
                st = os.stat(target[-1], dir_fd=tfd, follow_symlinks=False)
            except FileNotFoundError:
                raise missing from None
            if stat.S_ISDIR(st.st_mode):
                raise UnsafeLayerEntry(shown, "hard link target is a directory")

            def link():  # linkat(2) with flags 0: a symlink target is linked itself, never followed
                os.link(target[-1], parts[-1], src_dir_fd=tfd, dst_dir_fd=dirfd, follow_symlinks=False)

            try:
                link()
                return
            except FileExistsError:
                pass
            here = os.stat(parts[-1], dir_fd=dirfd, follow_symlinks=False)
            if (here.st_dev, here.st_ino) == (st.st_dev, st.st_ino):
                return  # already that very file (a link to itself, or a repeated entry)
            self.remove(dirfd, parts)
            try:
                link()
            except FileNotFoundError:  # the target was inside what we just removed
                raise missing from None
        finally:
            os.close(tfd)

    def finish(self) -> None:
        """Give every directory entry its mode and mtime, now that its children exist.

        Deepest first, so a directory that is not writable or searchable is
        only closed after everything below it is done.
        """
        for path in sorted(self.dirs, reverse=True):
            mode, mtime_ns = self.dirs[path]
            parts = path.split(b"/")
            parent = self.enter(parts[:-1], _show(path), create=False)
            fd = os.open(parts[-1], OPEN_DIR, dir_fd=parent)
            try:
                os.fchmod(fd, mode)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            finally:
                os.close(fd)


def _remove(dirfd: int, name: bytes) -> None:
    """unlinkat(2) ``name``; a directory is emptied first (its own fd, no symlink followed)."""
    try:
        os.unlink(name, dir_fd=dirfd)
        return
    except IsADirectoryError:  # Linux's unlinkat says EISDIR for a directory
        pass
    fd = os.open(name, OPEN_DIR, dir_fd=dirfd)
    try:
        for child in os.listdir(fd):
            _remove(fd, os.fsencode(child))
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dirfd)
