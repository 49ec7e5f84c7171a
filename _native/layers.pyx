# cython: language_level=3, wraparound=True
# (wraparound back on for this file: Python lists are indexed with [-1] here;
# the C buffers are only ever indexed with non-negative offsets.)
"""Apply a layer: stream an uncompressed tar into a directory, hashing it.

The compiled twin of ``engine/layer/tar.py`` (read that one first: it has
the same structure, the same names and the same comments on *why*). This
module is ``engine._native.layers``; ``engine.layer.apply_layer`` is this
module's :func:`apply_layer` when it is built, the Python twin otherwise.

What is different here is only *how*, because this is the hot path of
image loading:

* headers (and PAX records) are parsed by ``cdef`` functions straight from
  the read buffer (an ``unsigned char*``), not by slicing Python bytes;
* every filesystem call is the C call itself (``openat``, ``mkdirat``,
  ``fchownat``, ...), with no ``os`` module in between;
* file data goes from the read buffer to ``write(2)`` without a copy, and
  the GIL is released around big writes;
* per 1 MiB chunk, the only Python calls are ``stream.readinto(...)`` and
  ``sha256.update(...)``, and the update of a big chunk runs in a helper
  thread while this one writes the files that chunk holds (hashlib lets go
  of the GIL while it hashes). Hashing a layer costs about as much as
  writing it to the page cache, so this nearly halves the time.

Names stay Python ``bytes`` (splitting a path into components is not where
the time goes: system calls are).
"""

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport EEXIST, EINTR, EISDIR, ELOOP, ENOENT, ENOTDIR, EPERM, errno
from libc.stdint cimport INT64_MAX, int64_t, uint64_t
from libc.string cimport memcmp, memmove
from posix.types cimport dev_t, gid_t, mode_t, time_t, uid_t

from engine.errors import DigestMismatch, LayerError, UnsafeLayerEntry

# --- the C library, declared here so this file needs no other .pxd --------

cdef extern from "<fcntl.h>" nogil:
    int openat(int dirfd, const char *path, int flags, ...)
    enum:
        O_RDONLY
        O_WRONLY
        O_CREAT
        O_EXCL
        O_NOFOLLOW
        O_CLOEXEC
        O_DIRECTORY
        AT_FDCWD
        AT_SYMLINK_NOFOLLOW
        AT_REMOVEDIR

cdef extern from "<unistd.h>" nogil:
    ssize_t write(int fd, const void *buf, size_t count)
    int close(int fd)
    int dup(int fd)
    int symlinkat(const char *target, int dirfd, const char *path)
    int linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags)
    int unlinkat(int dirfd, const char *path, int flags)
    int fchown(int fd, uid_t uid, gid_t gid)
    int fchownat(int dirfd, const char *path, uid_t uid, gid_t gid, int flags)
    uid_t geteuid()

cdef extern from "<time.h>" nogil:
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec

cdef extern from "<sys/stat.h>" nogil:
    cdef struct struct_stat "stat":
        dev_t st_dev
        unsigned long st_ino
        mode_t st_mode
    int fstatat(int dirfd, const char *path, struct_stat *buf, int flags)
    int mkdirat(int dirfd, const char *path, mode_t mode)
    int mknodat(int dirfd, const char *path, mode_t mode, dev_t dev)
    int fchmod(int fd, mode_t mode)
    int fchmodat(int dirfd, const char *path, mode_t mode, int flags)
    int futimens(int fd, const timespec *times)
    int utimensat(int dirfd, const char *path, const timespec *times, int flags)
    bint S_ISDIR(mode_t mode)
    bint S_ISLNK(mode_t mode)
    mode_t S_IFCHR
    mode_t S_IFBLK
    mode_t S_IFIFO

cdef extern from "<sys/sysmacros.h>" nogil:
    dev_t makedev(unsigned int major, unsigned int minor)

cdef extern from "<sys/xattr.h>" nogil:
    int fsetxattr(int fd, const char *name, const void *value, size_t size, int flags)

cdef extern from "<dirent.h>" nogil:
    ctypedef struct DIR:
        pass
    cdef struct dirent:
        char d_name[256]
    DIR *fdopendir(int fd)
    dirent *readdir(DIR *dirp)
    int closedir(DIR *dirp)

# --- constants (the same as in engine/layer/tar.py) -----------------------

cdef enum:
    BLOCK = 512
    CHUNK = 1 << 20
    META_MAX = 1 << 20
    # Releasing the GIL costs little, but getting it back may mean waiting
    # for another thread's whole switch interval; only worth it for big writes.
    NOGIL_WRITE = 64 * 1024
    # Chunks at least this big are hashed by the helper thread; below it,
    # handing the work over would cost more than it saves.
    THREADED_HASH = 256 * 1024

cdef int64_t NS = 1000000000
cdef int64_t ID_MAX = (1 << 32) - 2
cdef int64_t DEV_MAX = (1 << 32) - 1

# typeflag bytes
cdef enum:
    T_AREG = 0
    T_REG = 48       # '0'
    T_HARDLINK = 49  # '1'
    T_SYMLINK = 50   # '2'
    T_CHARDEV = 51   # '3'
    T_BLOCKDEV = 52  # '4'
    T_DIRECTORY = 53 # '5'
    T_FIFO = 54      # '6'
    T_CONTIG = 55    # '7'
    T_PAX = 120      # 'x'
    T_PAX_GLOBAL = 103  # 'g'
    T_LONGNAME = 76  # 'L'
    T_LONGLINK = 75  # 'K'

cdef int OPEN_ROOT = O_RDONLY | O_DIRECTORY | O_CLOEXEC
cdef int OPEN_DIR = O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW
cdef int CREATE_FILE = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC

# What _step() returns instead of an fd when it cannot go further.
cdef enum:
    STEP_SYMLINK = -2
    STEP_NOT_DIR = -3
    STEP_MISSING = -4

WHITEOUT_PREFIX = b".wh."
WHITEOUT_META_PREFIX = b".wh..wh."
OPAQUE_MARKER = b".wh..wh..opq"
cdef const char *OPAQUE_XATTR = b"trusted.overlay.opaque"


cdef inline bint _is_regular(int kind) noexcept nogil:
    return kind == T_REG or kind == T_AREG or kind == T_CONTIG


cdef inline bint _is_header_only(int kind) noexcept nogil:
    return T_HARDLINK <= kind <= T_FIFO


cdef inline int64_t _padded(int64_t size) noexcept nogil:
    return (size + BLOCK - 1) // BLOCK * BLOCK


cdef str _show(bytes name):
    return name.decode("utf-8", "surrogateescape")


cdef int _raise_os(int err, object filename=None) except -1:
    # OSError(errno, text) becomes the right subclass (FileNotFoundError, ...),
    # exactly what the os module raises in the twin.
    if filename is None:
        raise OSError(err, os.strerror(err))
    raise OSError(err, os.strerror(err), filename)


cdef int _raise_link_error(int err, bytes target, bytes name) except -1:
    # os.link names both files in its error: so do we.
    raise OSError(err, os.strerror(err), target, None, name)


cdef int _write_all(int fd, const unsigned char *p, Py_ssize_t n) noexcept nogil:
    """write(2) all of p[:n] (it may write less than asked); -1 with errno on failure."""
    cdef ssize_t w
    while n > 0:
        w = write(fd, p, n)
        if w < 0:
            if errno == EINTR:
                continue
            return -1
        p += w
        n -= w
    return 0


# --- reading the stream ---------------------------------------------------

cdef class _Reader:
    """A buffered reader over the stream that hashes every byte it reads.

    ``_p[_start:_end]`` holds bytes read but not yet consumed by the parser.
    ``size`` counts bytes read from the stream, ``offset`` bytes consumed.

    Hashing in a helper thread: ``_fill`` hands the chunk it just read to
    ``_hasher`` and goes on; the chunk is only read (parsed, written out)
    until the next ``_fill``, which first waits for that hash to finish:
    only then may the buffer be overwritten. Chunks are hashed one at a
    time, in order. ``close()`` stops the thread.
    """

    cdef object _readinto, _read, _hash, _update, _view
    cdef object _hasher   # a one-thread executor, started for the first big chunk
    cdef object _hashing  # the Future of the chunk being hashed, or None
    cdef bytearray _buf
    cdef unsigned char *_p
    cdef Py_ssize_t _start, _end, _cap
    cdef int64_t size, offset

    def __cinit__(self, stream):
        self._readinto = getattr(stream, "readinto", None)
        self._read = stream.read
        self._buf = bytearray(CHUNK)
        # The bytearray is never resized (the memoryview pins it), so the pointer stays valid.
        self._view = memoryview(self._buf)
        self._p = <unsigned char *>PyByteArray_AS_STRING(self._buf)
        self._cap = CHUNK
        self._hash = hashlib.sha256()
        self._update = self._hash.update

    cdef int _wait_for_hash(self) except -1:
        """Wait until the chunk handed to the helper thread is hashed."""
        if self._hashing is not None:
            hashing, self._hashing = self._hashing, None
            hashing.result()  # re-raises what update() raised, if anything
        return 0

    cdef void close(self) noexcept:
        """Stop the helper thread (after the chunk it is hashing, if any)."""
        if self._hasher is not None:
            self._hasher.shutdown(wait=True)
            self._hasher = None

    cdef Py_ssize_t _fill(self) except -1:
        """Read (and hash) more bytes after ``_end``; return how many (0 at EOF)."""
        cdef Py_ssize_t kept, n
        self._wait_for_hash()  # the buffer may be overwritten below
        if self._start == self._end:
            self._start = self._end = 0
        elif self._end == self._cap:
            kept = self._end - self._start
            memmove(self._p, self._p + self._start, kept)
            self._start = 0
            self._end = kept
        space = self._view[self._end:]
        if self._readinto is not None:
            got = self._readinto(space)
            n = 0 if got is None else got
        else:
            data = self._read(self._cap - self._end)
            n = len(data)
            space[:n] = data
        if n >= THREADED_HASH:
            if self._hasher is None:
                self._hasher = ThreadPoolExecutor(1, thread_name_prefix="layer-sha256")
            self._hashing = self._hasher.submit(self._update, space[:n])
        elif n:
            self._update(space[:n])
        self.size += n
        self._end += n
        return n

    cdef Py_ssize_t block(self) except -2:
        """Index in ``_p`` of the next 512-byte header block, or -1 at a clean end of stream."""
        cdef Py_ssize_t have
        while self._end - self._start < BLOCK:
            if self._fill() == 0:
                have = self._end - self._start
                if have == 0:
                    return -1
                raise LayerError(f"truncated layer: tar header at offset {self.offset} "
                                 f"needs {BLOCK - have} more bytes")
        self._start += BLOCK
        self.offset += BLOCK
        return self._start - BLOCK

    cdef int data(self, bytes name, int64_t size, int fd=-1) except -1:
        """Consume an entry's data (written to ``fd`` if not -1) and its padding."""
        cdef int64_t padding = _padded(size) - size
        self._consume(name, size, fd, None, padding)
        self._consume(name, padding, -1, None, 0)
        return 0

    cdef bytes read_data(self, bytes name, int64_t size):
        """An entry's data as bytes (for the small PAX / GNU headers), padding consumed."""
        cdef int64_t padding = _padded(size) - size
        out = bytearray()
        self._consume(name, size, -1, out, padding)
        self._consume(name, padding, -1, None, 0)
        return bytes(out)

    cdef int _consume(self, bytes name, int64_t n, int fd, bytearray out, int64_t then) except -1:
        """Consume ``n`` bytes: write them to ``fd`` or append them to ``out`` (or drop them).

        ``then`` is how many more bytes the entry needs after these, only
        for the "truncated" message.
        """
        cdef Py_ssize_t k
        cdef const unsigned char *p
        cdef int rc
        while n > 0:
            if self._start == self._end and self._fill() == 0:
                raise LayerError(f"truncated layer: entry {_show(name)!r} needs {n + then} more bytes")
            k = self._end - self._start
            if k > n:
                k = <Py_ssize_t>n
            p = self._p + self._start
            if fd >= 0:
                if k >= NOGIL_WRITE:
                    with nogil:
                        rc = _write_all(fd, p, k)
                else:
                    rc = _write_all(fd, p, k)
                if rc < 0:
                    _raise_os(errno)
            elif out is not None:
                out += self._view[self._start:self._start + k]
            self._start += k
            self.offset += k
            n -= k
        return 0

    cdef int drain(self) except -1:
        """Read (and hash) the rest of the stream: the digest covers all of it."""
        self.offset += self._end - self._start
        self._start = self._end
        while self._fill():
            self.offset += self._end - self._start
            self._start = self._end
        return 0

    cdef str digest(self):
        self._wait_for_hash()
        return "sha256:" + self._hash.hexdigest()


# --- parsing headers ------------------------------------------------------

cdef class _Entry:
    """The fields of one header that we use (see _Header in the twin)."""

    cdef bytes name, linkname
    cdef int type
    cdef int64_t mode, uid, gid, size, devmajor, devminor
    cdef int64_t mtime_sec
    cdef long mtime_nsec


cdef Py_ssize_t _cstrlen(const unsigned char *p, Py_ssize_t width) noexcept nogil:
    """Length of a NUL-terminated (or full-width) text field."""
    cdef Py_ssize_t n = 0
    while n < width and p[n] != 0:
        n += 1
    return n


cdef bytes _cstring(const unsigned char *p, Py_ssize_t width):
    return PyBytes_FromStringAndSize(<const char *>p, _cstrlen(p, width))


cdef bint _number(const unsigned char *f, Py_ssize_t width, int64_t *out) noexcept nogil:
    """Parse a numeric header field into ``out``; False if it is malformed.

    Octal digits padded with spaces or NULs, or "base-256": first byte 0x80
    (positive) or 0xff (negative, two's complement), then big-endian binary.
    Values outside int64 are malformed (as in the twin).
    """
    cdef uint64_t n = 0
    cdef Py_ssize_t i, end
    cdef bint negative
    cdef unsigned char c
    if f[0] == 0x80 or f[0] == 0xFF:
        negative = f[0] == 0xFF
        for i in range(1, width):
            # A negative number -v-1 is stored as the complement of v: read v.
            c = f[i] ^ 0xFF if negative else f[i]
            if n > (<uint64_t>INT64_MAX >> 8):
                return False
            n = (n << 8) | c
        out[0] = -<int64_t>n - 1 if negative else <int64_t>n
        return True
    end = _cstrlen(f, width)
    i = 0
    while i < end and f[i] == 32:  # ' '
        i += 1
    while end > i and f[end - 1] == 32:
        end -= 1
    while i < end:
        if f[i] < 48 or f[i] > 55:  # '0'..'7'
            return False
        n = n * 8 + (f[i] - 48)
        i += 1
    out[0] = <int64_t>n  # at most 12 octal digits: no overflow
    return True


cdef bint _checksum_ok(const unsigned char *b) noexcept nogil:
    """The stored checksum matches the unsigned or the signed sum of the header.

    The checksum field itself counts as eight spaces (tarfile accepts both sums too).
    """
    cdef int64_t stored
    cdef long unsigned_sum = 8 * 32, signed_sum = 8 * 32
    cdef Py_ssize_t i
    if not _number(b + 148, 8, &stored):
        return False
    for i in range(BLOCK):
        if 148 <= i < 156:
            continue
        unsigned_sum += b[i]
        signed_sum += <signed char>b[i]
    return stored == unsigned_sum or stored == signed_sum


cdef bint _is_zero(const unsigned char *b) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(BLOCK):
        if b[i]:
            return False
    return True


cdef _Entry _parse_header(const unsigned char *b, int64_t offset):
    cdef _Entry h = _Entry.__new__(_Entry)
    cdef bint ok
    cdef bytes prefix
    if not _checksum_ok(b):
        raise LayerError(f"corrupt tar header at offset {offset}")
    h.name = _cstring(b, 100)
    # POSIX ustar splits long names in two: prefix "/" name (only under "ustar\0" magic).
    prefix = _cstring(b + 345, 155)
    if prefix and memcmp(b + 257, b"ustar\0", 6) == 0:
        h.name = prefix + b"/" + h.name
    h.type = b[156]
    h.devmajor = h.devminor = 0
    ok = True
    if h.type == T_CHARDEV or h.type == T_BLOCKDEV:
        ok = _number(b + 329, 8, &h.devmajor) and _number(b + 337, 8, &h.devminor)
    ok = (ok and _number(b + 100, 8, &h.mode) and _number(b + 108, 8, &h.uid)
          and _number(b + 116, 8, &h.gid) and _number(b + 124, 12, &h.size)
          and _number(b + 136, 12, &h.mtime_sec))
    if not ok:
        raise LayerError(f"corrupt tar header at offset {offset}")
    h.mtime_nsec = 0
    h.linkname = _cstring(b + 157, 100)
    return h


cdef class _Pending:
    """What PAX ``x`` and GNU ``L``/``K`` headers say about the next entry.

    For each PAX keyword: ``has_*`` is False when absent or set empty
    (an empty value means "use the header's own field").
    """

    cdef object path, linkpath, long_name, long_link
    cdef bint has_size, has_uid, has_gid, has_mtime
    cdef int64_t size, uid, gid, mtime_sec
    cdef long mtime_nsec

    cdef int apply_to(self, _Entry h) except -1:
        """Apply the overrides to ``h`` (PAX first, then GNU, then the header itself)."""
        if self.path:
            h.name = self.path
        elif self.long_name:
            h.name = self.long_name
        if h.type == T_AREG and h.name.endswith(b"/"):
            h.type = T_DIRECTORY  # old V7 tars mark a directory with a trailing slash only
        if self.has_uid:
            h.uid = self.uid
        if self.has_gid:
            h.gid = self.gid
        if self.has_size:
            h.size = self.size
        if self.has_mtime:
            h.mtime_sec = self.mtime_sec
            h.mtime_nsec = self.mtime_nsec
        if self.linkpath:
            h.linkname = self.linkpath
        elif self.long_link:
            h.linkname = self.long_link
        return 0


cdef int _read_meta(_Reader reader, _Entry h, int64_t offset, _Pending pending) except -1:
    """Consume a PAX or GNU meta header, recording what it says in ``pending``."""
    cdef bytes data
    if h.size < 0:
        raise LayerError(f"layer entry {_show(h.name)!r} has a negative size")
    if h.type == T_PAX_GLOBAL:
        reader.data(h.name, h.size)  # global PAX headers: ignored
        return 0
    if h.size > META_MAX:
        raise LayerError(f"layer entry {_show(h.name)!r}: metadata header of "
                         f"{h.size} bytes is too large")
    data = reader.read_data(h.name, h.size)
    if h.type == T_PAX:
        _parse_pax(data, offset, pending)
    elif h.type == T_LONGNAME:
        pending.long_name = data.split(b"\0", 1)[0]
    else:
        pending.long_link = data.split(b"\0", 1)[0]
    return 0


cdef bint _digits(const unsigned char *p, Py_ssize_t n, Py_ssize_t max_digits, int64_t *out) noexcept nogil:
    """A decimal number made of 1..max_digits digits and nothing else, <= INT64_MAX."""
    cdef uint64_t v = 0
    cdef Py_ssize_t i
    if n < 1 or n > max_digits:
        return False
    for i in range(n):
        if p[i] < 48 or p[i] > 57:
            return False
        v = v * 10 + (p[i] - 48)  # at most 19 digits: fits in uint64
    if v > <uint64_t>INT64_MAX:
        return False
    out[0] = <int64_t>v
    return True


cdef bint _pax_time(const unsigned char *p, Py_ssize_t n, int64_t *sec, long *nsec) noexcept nogil:
    """A PAX time ("-12.345") as seconds + nanoseconds (0 <= nsec < 1e9), floor-rounded."""
    cdef bint negative = n > 0 and p[0] == 45  # '-'
    cdef Py_ssize_t i, dot
    cdef int64_t whole
    cdef long fraction = 0, scale = 100000000
    if negative:
        p += 1
        n -= 1
    dot = 0
    while dot < n and p[dot] != 46:  # '.'
        dot += 1
    if not _digits(p, dot, 19, &whole):
        return False
    if dot < n:
        if dot + 1 == n:
            return False  # "12." has no fraction digits
        for i in range(dot + 1, n):
            if p[i] < 48 or p[i] > 57:
                return False
            if scale:  # keep nanoseconds, drop the rest
                fraction += (p[i] - 48) * scale
                scale //= 10
    if negative and fraction:
        sec[0] = -whole - 1
        nsec[0] = NS - fraction
    else:
        sec[0] = -whole if negative else whole
        nsec[0] = fraction
    return True


cdef int _parse_pax(bytes data, int64_t offset, _Pending pending) except -1:
    """Record the PAX keywords we use in ``pending`` (see _parse_pax in the twin).

    Each record is "<length> <keyword>=<value>\\n", length counting the whole record.
    """
    cdef const unsigned char *d = <const unsigned char *>PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t pos = 0, space, eq, end, klen, vlen
    cdef int64_t length, number = 0
    cdef const unsigned char *key
    cdef const unsigned char *value
    corrupt = f"corrupt pax header at offset {offset}"
    while pos < size and d[pos] != 0:  # some writers pad with NULs
        space = pos
        while space < size and d[space] != 32:
            space += 1
        if space == size or not _digits(d + pos, space - pos, 18, &length):
            raise LayerError(corrupt)
        end = pos + <Py_ssize_t>length
        if end <= space + 1 or end > size or d[end - 1] != 10:  # '\n'
            raise LayerError(corrupt)
        eq = space + 1
        while eq < end - 1 and d[eq] != 61:  # '='
            eq += 1
        if eq == end - 1:
            raise LayerError(corrupt)
        key = d + space + 1
        klen = eq - space - 1
        value = d + eq + 1
        vlen = end - 1 - eq - 1
        pos = end
        if klen == 4 and memcmp(key, b"path", 4) == 0:
            pending.path = PyBytes_FromStringAndSize(<const char *>value, vlen) if vlen else None
        elif klen == 8 and memcmp(key, b"linkpath", 8) == 0:
            pending.linkpath = PyBytes_FromStringAndSize(<const char *>value, vlen) if vlen else None
        elif klen == 5 and memcmp(key, b"mtime", 5) == 0:
            pending.has_mtime = vlen > 0
            if vlen and not _pax_time(value, vlen, &pending.mtime_sec, &pending.mtime_nsec):
                raise LayerError(corrupt + ": bad mtime value")
        elif ((klen == 4 and memcmp(key, b"size", 4) == 0) or
              (klen == 3 and memcmp(key, b"uid", 3) == 0) or
              (klen == 3 and memcmp(key, b"gid", 3) == 0)):
            if vlen and not _digits(value, vlen, 19, &number):
                raise LayerError(corrupt + f": bad {(<const char *>key)[:klen].decode()} value")
            if key[0] == 115:  # 's'
                pending.has_size, pending.size = vlen > 0, number
            elif key[0] == 117:  # 'u'
                pending.has_uid, pending.uid = vlen > 0, number
            else:
                pending.has_gid, pending.gid = vlen > 0, number
        # Every other keyword (atime, ctime, uname, SCHILY.xattr.*, ...) is ignored.
    return 0


# --- writing the tree -----------------------------------------------------

cdef int _fail_mknod(int err, str shown) except -1:
    if err == EPERM:  # no CAP_MKNOD (a rootless or user-namespaced engine)
        raise LayerError(f"layer entry {shown!r}: cannot create a device node "
                         "(operation not permitted)")
    return 0


cdef list _components(bytes name, _Entry e):
    """The path components of an entry name, normalized; refuse escapes."""
    if name.startswith(b"/"):
        raise UnsafeLayerEntry(_show(e.name), "absolute path")
    parts = [p for p in name.split(b"/") if p and p != b"."]
    if b".." in parts:
        raise UnsafeLayerEntry(_show(e.name), "path contains '..'")
    return parts


cdef int _apply_entry(_Tree tree, _Reader reader, _Entry e) except -1:
    """Check one entry and write it under the root (see _apply_entry in the twin)."""
    cdef list parts
    cdef bytes base
    cdef const char *cbase
    cdef int dirfd, fd, rc, err
    cdef mode_t kind
    cdef dev_t dev
    cdef bytes target
    cdef timespec times[2]
    if e.size < 0:
        raise LayerError(f"layer entry {_show(e.name)!r} has a negative size")
    if not _is_regular(e.type) and not _is_header_only(e.type):
        raise LayerError(f"layer entry {_show(e.name)!r}: unsupported entry type {chr(e.type)!r}")
    if b"\0" in e.name:
        raise LayerError(f"layer entry {_show(e.name)!r}: name contains a NUL byte")
    if (e.type == T_HARDLINK or e.type == T_SYMLINK) and b"\0" in e.linkname:
        raise LayerError(f"layer entry {_show(e.name)!r}: link target contains a NUL byte")
    parts = _components(e.name, e)
    if not (0 <= e.uid <= ID_MAX and 0 <= e.gid <= ID_MAX):
        raise LayerError(f"layer entry {_show(e.name)!r}: owner {e.uid}:{e.gid} out of range")

    if not parts:  # "./" is the root itself
        if e.type != T_DIRECTORY:
            raise UnsafeLayerEntry(_show(e.name), "replaces the layer root")
        return 0
    base = parts[-1]
    cbase = base
    if base.startswith(WHITEOUT_PREFIX):
        reader.data(e.name, e.size if _is_regular(e.type) else 0)
        _whiteout(tree, e, parts)
        return 0

    times[0].tv_sec = times[1].tv_sec = e.mtime_sec
    times[0].tv_nsec = times[1].tv_nsec = e.mtime_nsec
    dirfd = tree.enter(parts[:-1], e, True)
    if _is_regular(e.type):
        fd = openat(dirfd, cbase, CREATE_FILE, <mode_t>0o600)
        if fd < 0 and errno == EEXIST:
            tree.remove(dirfd, parts)
            fd = openat(dirfd, cbase, CREATE_FILE, <mode_t>0o600)
        if fd < 0:
            _raise_os(errno, base)
        try:
            reader.data(e.name, e.size, fd)
            # fchown before fchmod: chown clears setuid/setgid.
            if (tree.chown and fchown(fd, <uid_t>e.uid, <gid_t>e.gid) < 0) or \
                    fchmod(fd, <mode_t>(e.mode & 0o7777)) < 0 or futimens(fd, times) < 0:
                _raise_os(errno)
        finally:
            close(fd)
    elif e.type == T_DIRECTORY:
        tree.directory(dirfd, parts)
        tree.set_owner(dirfd, base, e)
        tree.dirs[b"/".join(parts)] = (e.mode & 0o7777, e.mtime_sec, e.mtime_nsec)
    elif e.type == T_SYMLINK:
        if not e.linkname:
            raise LayerError(f"layer entry {_show(e.name)!r}: symlink has an empty target")
        target = e.linkname
        rc = symlinkat(target, dirfd, cbase)
        if rc < 0 and errno == EEXIST:
            tree.remove(dirfd, parts)
            rc = symlinkat(target, dirfd, cbase)
        if rc < 0:
            _raise_os(errno, base)
        tree.set_owner(dirfd, base, e)
        if utimensat(dirfd, cbase, times, AT_SYMLINK_NOFOLLOW) < 0:
            _raise_os(errno, base)
    elif e.type == T_HARDLINK:
        tree.hardlink(dirfd, parts, e)  # no metadata: the inode is the target's
    else:  # FIFO, CHARDEV, BLOCKDEV
        if not (0 <= e.devmajor <= DEV_MAX and 0 <= e.devminor <= DEV_MAX):
            raise LayerError(f"layer entry {_show(e.name)!r}: device number out of range")
        kind = S_IFIFO if e.type == T_FIFO else S_IFCHR if e.type == T_CHARDEV else S_IFBLK
        dev = makedev(<unsigned int>e.devmajor, <unsigned int>e.devminor)
        rc = mknodat(dirfd, cbase, kind | 0o600, dev)
        if rc < 0 and errno == EEXIST:
            tree.remove(dirfd, parts)
            rc = mknodat(dirfd, cbase, kind | 0o600, dev)
        if rc < 0:
            err = errno
            _fail_mknod(err, _show(e.name))
            _raise_os(err, base)
        tree.set_owner(dirfd, base, e)
        # fchmodat(2) has no working AT_SYMLINK_NOFOLLOW, but this name is
        # the node created just above, in a directory only we write to.
        if fchmodat(dirfd, cbase, <mode_t>(e.mode & 0o7777), 0) < 0 or \
                utimensat(dirfd, cbase, times, AT_SYMLINK_NOFOLLOW) < 0:
            _raise_os(errno, base)
    return 0


cdef int _whiteout(_Tree tree, _Entry e, list parts) except -1:
    """OCI whiteouts, written as overlayfs expects them (see _whiteout in the twin)."""
    cdef bytes base = parts[-1]
    cdef bytes hidden
    cdef int dirfd, rc, err
    if base == OPAQUE_MARKER:
        dirfd = tree.enter(parts[:-1], e, True)
        if fsetxattr(dirfd, OPAQUE_XATTR, <const char *>b"y", 1, 0) < 0:
            _raise_os(errno)
        return 0
    if base.startswith(WHITEOUT_META_PREFIX):
        return 0  # AUFS bookkeeping (.wh..wh.plnk): skipped, as Docker does
    hidden = base[len(WHITEOUT_PREFIX):]
    if hidden == b"" or hidden == b".":
        raise LayerError(f"layer entry {_show(e.name)!r}: whiteout names no file")
    if hidden == b"..":
        raise UnsafeLayerEntry(_show(e.name), "path contains '..'")
    dirfd = tree.enter(parts[:-1], e, True)
    rc = mknodat(dirfd, hidden, S_IFCHR, makedev(0, 0))
    if rc < 0 and errno == EEXIST:
        tree.remove(dirfd, parts[:-1] + [hidden])
        rc = mknodat(dirfd, hidden, S_IFCHR, makedev(0, 0))
    if rc < 0:
        err = errno
        _fail_mknod(err, _show(e.name))
        _raise_os(err, hidden)
    return 0


cdef class _Tree:
    """The root directory, reached only through directory file descriptors.

    Keeps the chain of directories opened for the previous entry (``_path``
    and their fds ``_fds``, ``_fds[0]`` being the root): entries come grouped
    by directory, so most entries open no directory at all. See _Tree in the
    twin for why the chain stays valid.
    """

    cdef int root_fd
    cdef bint chown
    cdef dict dirs  # path -> (mode, mtime_sec, mtime_nsec), applied by finish()
    cdef list _path
    cdef list _fds

    def __cinit__(self, root):
        self.root_fd = -1
        self._path = []
        self._fds = []
        self.dirs = {}
        cdef bytes path = os.fsencode(root)
        if b"\0" in path:
            raise ValueError("embedded null byte")  # what os.open says
        self.root_fd = openat(AT_FDCWD, path, OPEN_ROOT)
        if self.root_fd < 0:
            _raise_os(errno, root)
        self._fds.append(self.root_fd)
        self.chown = geteuid() == 0

    def __dealloc__(self):
        self.release()

    cdef void release(self) noexcept:
        """Close every fd we hold (the root's too)."""
        cdef int fd
        for fd in self._fds:
            close(fd)
        self._fds = []
        self._path = []

    cdef int _step(self, int dirfd, bytes name, bint create) except -1:
        """Open the directory ``name`` in ``dirfd`` without following symlinks.

        Returns the fd, or STEP_SYMLINK / STEP_NOT_DIR / STEP_MISSING (when
        not ``create``). A missing directory is created 0755, root-owned.
        """
        cdef const char *c = name
        cdef struct_stat st
        cdef int fd = openat(dirfd, c, OPEN_DIR)
        cdef int err
        if fd >= 0:
            return fd
        err = errno
        if err == ELOOP or err == ENOTDIR:
            if fstatat(dirfd, c, &st, AT_SYMLINK_NOFOLLOW) < 0:
                _raise_os(errno, name)
            return STEP_SYMLINK if S_ISLNK(st.st_mode) else STEP_NOT_DIR
        if err != ENOENT:
            _raise_os(err, name)
        if not create:
            return STEP_MISSING
        if mkdirat(dirfd, c, 0o755) < 0 and errno != EEXIST:
            _raise_os(errno, name)
        fd = self._step(dirfd, name, False)
        if fd < 0:
            _raise_os(ENOENT, name)
        if fchmod(fd, 0o755) < 0 or (self.chown and fchown(fd, 0, 0) < 0):
            err = errno
            close(fd)
            _raise_os(err, name)
        return fd

    cdef int enter(self, list dirs, _Entry e, bint create) except -1:
        """The fd of directory ``dirs`` (components below the root), creating missing ones."""
        cdef Py_ssize_t keep = 0, n = len(dirs), have = len(self._path)
        cdef int fd
        while keep < n and keep < have and dirs[keep] == self._path[keep]:
            keep += 1
        while len(self._path) > keep:
            self._path.pop()
            close(self._fds.pop())
        for name in dirs[keep:]:
            fd = self._step(self._fds[-1], name, create)
            if fd == STEP_SYMLINK:
                raise UnsafeLayerEntry(_show(e.name), "path goes through a symlink")
            if fd == STEP_NOT_DIR:
                raise UnsafeLayerEntry(_show(e.name), "path goes through a non-directory")
            if fd == STEP_MISSING:
                _raise_os(ENOENT, name)
            self._path.append(name)
            self._fds.append(fd)
        return self._fds[-1]

    cdef int remove(self, int dirfd, list parts) except -1:
        """Remove whatever is at ``parts`` (in ``dirfd``), recursively for a directory."""
        _remove(dirfd, parts[-1])
        key = b"/".join(parts)
        below = key + b"/"
        for path in [p for p in self.dirs if p == key or p.startswith(below)]:
            del self.dirs[path]
        return 0

    cdef int directory(self, int dirfd, list parts) except -1:
        """Make directory ``parts`` exist, keeping one already there."""
        cdef bytes base = parts[-1]
        cdef const char *c = base
        cdef struct_stat st
        if mkdirat(dirfd, c, 0o700) == 0:  # 0700 until finish() gives the real mode
            return 0
        if errno != EEXIST:
            _raise_os(errno, base)
        if fstatat(dirfd, c, &st, AT_SYMLINK_NOFOLLOW) < 0:
            _raise_os(errno, base)
        if S_ISDIR(st.st_mode):
            return 0
        self.remove(dirfd, parts)
        if mkdirat(dirfd, c, 0o700) < 0:
            _raise_os(errno, base)
        return 0

    cdef int set_owner(self, int dirfd, bytes base, _Entry e) except -1:
        if self.chown and fchownat(dirfd, base, <uid_t>e.uid, <gid_t>e.gid, AT_SYMLINK_NOFOLLOW) < 0:
            _raise_os(errno, base)
        return 0

    cdef int hardlink(self, int dirfd, list parts, _Entry e) except -1:
        """Hard-link ``parts`` to the file ``e.linkname`` names inside the root."""
        cdef bytes linkname = e.linkname
        cdef bytes tbase, base = parts[-1]
        cdef struct_stat st, here
        cdef int tfd, fd, rc
        shown = _show(e.name)
        if linkname.startswith(b"/"):
            raise UnsafeLayerEntry(shown, "hard link target outside the layer")
        target = [p for p in linkname.split(b"/") if p and p != b"."]
        if b".." in target:
            raise UnsafeLayerEntry(shown, "hard link target outside the layer")
        if not target:
            raise UnsafeLayerEntry(shown, "hard link target is a directory")
        tbase = target[-1]
        tfd = dup(self.root_fd)
        if tfd < 0:
            _raise_os(errno)
        try:
            for name in target[:-1]:
                fd = self._step(tfd, name, False)
                if fd == STEP_SYMLINK:
                    raise UnsafeLayerEntry(shown, "hard link target outside the layer")
                if fd < 0:
                    raise UnsafeLayerEntry(shown, "hard link target missing")
                close(tfd)
                tfd = fd
            if fstatat(tfd, tbase, &st, AT_SYMLINK_NOFOLLOW) < 0:
                if errno == ENOENT:
                    raise UnsafeLayerEntry(shown, "hard link target missing")
                _raise_os(errno, tbase)
            if S_ISDIR(st.st_mode):
                raise UnsafeLayerEntry(shown, "hard link target is a directory")
            # linkat(2) with flags 0: a symlink target is linked itself, never followed.
            if linkat(tfd, tbase, dirfd, base, 0) == 0:
                return 0
            if errno != EEXIST:
                _raise_link_error(errno, tbase, base)
            if fstatat(dirfd, base, &here, AT_SYMLINK_NOFOLLOW) < 0:
                _raise_os(errno, base)
            if here.st_dev == st.st_dev and here.st_ino == st.st_ino:
                return 0  # already that very file
            self.remove(dirfd, parts)
            if linkat(tfd, tbase, dirfd, base, 0) < 0:
                if errno == ENOENT:  # the target was inside what we just removed
                    raise UnsafeLayerEntry(shown, "hard link target missing")
                _raise_link_error(errno, tbase, base)
        finally:
            close(tfd)
        return 0

    cdef int finish(self) except -1:
        """Give every directory entry its mode and mtime, deepest first."""
        cdef _Entry e = _Entry.__new__(_Entry)
        cdef timespec times[2]
        cdef int parent, fd, rc, err
        cdef bytes base
        for path in sorted(self.dirs, reverse=True):
            mode, sec, nsec = self.dirs[path]
            parts = path.split(b"/")
            e.name = path
            parent = self.enter(parts[:-1], e, False)
            base = parts[-1]
            fd = openat(parent, base, OPEN_DIR)
            if fd < 0:
                _raise_os(errno, base)
            times[0].tv_sec = times[1].tv_sec = sec
            times[0].tv_nsec = times[1].tv_nsec = nsec
            rc = fchmod(fd, <mode_t>mode)
            if rc == 0:
                rc = futimens(fd, times)
            err = errno
            close(fd)
            if rc < 0:
                _raise_os(err)
        return 0


cdef list _listdir(int fd):
    """The names in directory ``fd`` (what os.listdir(fd) does: fdopendir on a dup)."""
    cdef int copy = dup(fd)
    cdef DIR *d
    cdef dirent *ent
    cdef list names = []
    cdef int err
    global errno  # assigned below (readdir reports errors only through errno)
    if copy < 0:
        _raise_os(errno)
    d = fdopendir(copy)
    if d == NULL:
        err = errno
        close(copy)
        _raise_os(err)
    try:
        while True:
            errno = 0
            ent = readdir(d)
            if ent == NULL:
                if errno:
                    _raise_os(errno)
                break
            name = <bytes>ent.d_name
            if name != b"." and name != b"..":
                names.append(name)
    finally:
        closedir(d)
    return names


cdef int _remove(int dirfd, bytes name) except -1:
    """unlinkat(2) ``name``; a directory is emptied first (its own fd, no symlink followed)."""
    cdef int fd
    if unlinkat(dirfd, name, 0) == 0:
        return 0
    if errno != EISDIR:  # Linux's unlinkat says EISDIR for a directory
        _raise_os(errno, name)
    fd = openat(dirfd, name, OPEN_DIR)
    if fd < 0:
        _raise_os(errno, name)
    try:
        for child in _listdir(fd):
            _remove(fd, child)
    finally:
        close(fd)
    if unlinkat(dirfd, name, AT_REMOVEDIR) < 0:
        _raise_os(errno, name)
    return 0


# --- the entry point ------------------------------------------------------

def apply_layer(stream, root, expected_digest=None):
    """Extract the uncompressed tar read from ``stream`` into the directory ``root``.

    Same contract as engine.layer.tar.apply_layer: returns a LayerResult;
    raises UnsafeLayerEntry, LayerError, DigestMismatch.
    """
    # Imported here, not at the top: engine.layer imports this module, so a
    # top-level import of engine.layer.tar would be circular.
    from engine.layer.tar import LayerResult

    cdef _Reader reader = _Reader(stream)
    cdef _Tree tree = _Tree(root)
    cdef _Pending pending = _Pending.__new__(_Pending)
    cdef _Entry entry
    cdef int64_t offset, entries = 0
    cdef Py_ssize_t at
    try:
        while True:
            offset = reader.offset
            at = reader.block()
            if at < 0 or _is_zero(reader._p + at):
                break  # end of archive (one zero block is enough, as GNU tar and tarfile agree)
            entry = _parse_header(reader._p + at, offset)
            if entry.type == T_PAX or entry.type == T_PAX_GLOBAL or \
                    entry.type == T_LONGNAME or entry.type == T_LONGLINK:
                _read_meta(reader, entry, offset, pending)
                continue
            pending.apply_to(entry)
            pending = _Pending.__new__(_Pending)
            entries += 1
            try:
                _apply_entry(tree, reader, entry)
            except OSError as e:
                e.add_note(f"while applying layer entry {_show(entry.name)!r}")
                raise
        reader.drain()
        tree.finish()
        digest = reader.digest()
    finally:
        tree.release()
        reader.close()
    if expected_digest is not None and expected_digest != digest:
        raise DigestMismatch("layer", expected_digest, digest)
    return LayerResult(digest, reader.size, entries)
