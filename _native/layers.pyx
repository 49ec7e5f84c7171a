# cython: language_level=3, wraparound=True
# (wraparound back on for this file: Python lists are indexed with [-1] here;
# the C buffers are only ever indexed with non-negative offsets.)
"""Layers, compiled: apply a layer blob to a directory, create one from a directory.

The compiled twin of ``engine/layer/tar.py`` (:func:`apply_layer`) and
``engine/layer/create.py`` (:func:`create_layer`): read those first, they
have the same structure, the same names and the comments on *why*. This
module is ``engine._native.layers``; ``engine.layer`` uses it when it is
built. Both implementations read compressed layers through the same
``engine.layer.compression.LayerSource`` (hashing, decompression, limits),
so they refuse the same bytes with the same messages at the same place.

What is different here is only *how*, because applying layers is the hot
path of image loading:

* headers (and PAX records) are parsed by ``cdef`` functions straight from
  the buffer holding them (an ``unsigned char*``), not by slicing bytes;
* every filesystem call is the C call itself (``openat``, ``mkdirat``,
  ``fchownat``, ...), with no ``os`` module in between, and the GIL is
  released around them, so that the other thread (below) keeps going;
* only the calls that change something are made: a file is created with
  its final permission bits when it may be (no special bits), so
  ``fchmod`` is only needed when the umask took bits away or for
  setuid/setgid/sticky; ``fchown`` only when the owner differs from the
  one the kernel gives a new file; a directory's mode and time are set by
  one ``utimensat`` when its mode is already right;
* reading is done by a second thread, in parallel with the writing:

  - an uncompressed layer in a regular file (the snapshotter's blobs) is
    ``mmap``-ed: file data goes from the mapping straight to ``write(2)``
    (no ``read(2)`` copy), and the helper thread hashes the mapping;
  - anything else (a pipe, a socket, a compressed blob) is read, hashed
    and decompressed by the helper thread (``LayerSource.chunks``), which
    hands 1 MiB chunks of tar over a queue; this thread hashes the tar
    (the diff_id) while it writes. hashlib, python-isal and zstandard all
    release the GIL while they work on big buffers, and this thread
    releases it around every system call, so the two really run at once.

Tried and measured slower on the 2-core machine of docs/benchmarks.md, so
not kept: a third thread hashing the diff_id of a compressed layer (three
threads wanting the GIL); a GIL-free writing thread doing the write /
futimens / close of each file of a mapped layer while this one parses and
creates (about 8000 context switches per layer, and more CPU in all); the
hashing thread kept a few MiB ahead of this one so that the data would
still be in the CPU cache when copied (no better, often worse).
What is left on this thread is kernel work (creating inodes, allocating
and filling tmpfs pages), about as much as GNU tar's minus its read(2)
copies and its fchown/fchmod calls.

Names stay Python ``bytes`` (splitting a path into components is not where
the time goes: system calls are).
"""

import hashlib
import os
import threading
from queue import SimpleQueue

cimport cython

from cpython.buffer cimport PyBUF_READ, PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.memoryview cimport PyMemoryView_FromMemory
from libc.errno cimport EEXIST, EINTR, EISDIR, ELOOP, ENOENT, ENOTDIR, EOPNOTSUPP, EPERM, ERANGE, errno
from libc.stdint cimport INT64_MAX, int64_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset
from posix.types cimport dev_t, gid_t, mode_t, off_t, time_t, uid_t

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
        O_NONBLOCK
        O_CLOEXEC
        O_DIRECTORY
        AT_FDCWD
        AT_SYMLINK_NOFOLLOW
        AT_REMOVEDIR

cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t count)
    ssize_t write(int fd, const void *buf, size_t count)
    int close(int fd)
    int dup(int fd)
    int symlinkat(const char *target, int dirfd, const char *path)
    int linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags)
    int unlinkat(int dirfd, const char *path, int flags)
    int fchown(int fd, uid_t uid, gid_t gid)
    int fchownat(int dirfd, const char *path, uid_t uid, gid_t gid, int flags)
    uid_t geteuid()
    gid_t getegid()

cdef extern from "<time.h>" nogil:
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec

cdef extern from "<sys/stat.h>" nogil:
    cdef struct struct_stat "stat":
        dev_t st_dev
        unsigned long st_ino
        mode_t st_mode
        unsigned long st_nlink
        uid_t st_uid
        gid_t st_gid
        dev_t st_rdev
        off_t st_size
        timespec st_mtim
    int fstat(int fd, struct_stat *buf)
    int fstatat(int dirfd, const char *path, struct_stat *buf, int flags)
    int mkdirat(int dirfd, const char *path, mode_t mode)
    int mknodat(int dirfd, const char *path, mode_t mode, dev_t dev)
    int fchmod(int fd, mode_t mode)
    int fchmodat(int dirfd, const char *path, mode_t mode, int flags)
    int futimens(int fd, const timespec *times)
    int utimensat(int dirfd, const char *path, const timespec *times, int flags)
    bint S_ISDIR(mode_t mode)
    bint S_ISLNK(mode_t mode)
    bint S_ISREG(mode_t mode)
    bint S_ISCHR(mode_t mode)
    bint S_ISBLK(mode_t mode)
    bint S_ISFIFO(mode_t mode)
    bint S_ISSOCK(mode_t mode)
    mode_t S_IFCHR
    mode_t S_IFBLK
    mode_t S_IFIFO
    mode_t S_ISGID

cdef extern from "<sys/sysmacros.h>" nogil:
    dev_t makedev(unsigned int major, unsigned int minor)
    unsigned int major(dev_t dev)
    unsigned int minor(dev_t dev)

cdef extern from "<sys/xattr.h>" nogil:
    int fsetxattr(int fd, const char *name, const void *value, size_t size, int flags)
    int lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags)
    ssize_t flistxattr(int fd, char *list, size_t size)
    ssize_t llistxattr(const char *path, char *list, size_t size)
    ssize_t fgetxattr(int fd, const char *name, void *value, size_t size)
    ssize_t lgetxattr(const char *path, const char *name, void *value, size_t size)

cdef extern from "<sys/mman.h>" nogil:
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
    int munmap(void *addr, size_t length)
    int madvise(void *addr, size_t length, int advice)
    void *MAP_FAILED
    int PROT_READ
    int MAP_SHARED
    int MADV_SEQUENTIAL

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
    # Chunks in flight between the reading thread and this one: enough to
    # keep both busy, little enough to keep memory small.
    DEPTH = 4
    # The hashing thread hashes a mapping this much at a time (one GIL
    # round trip each), so that an error here can stop it quickly.
    HASH_SLICE = 32 << 20

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
cdef int READ_FILE = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC

# What _step() returns instead of an fd when it cannot go further.
cdef enum:
    STEP_SYMLINK = -2
    STEP_NOT_DIR = -3
    STEP_MISSING = -4

WHITEOUT_PREFIX = b".wh."
WHITEOUT_META_PREFIX = b".wh..wh."
OPAQUE_MARKER = b".wh..wh..opq"
cdef const char *OPAQUE_XATTR = b"trusted.overlay.opaque"
XATTR_RECORD = b"SCHILY.xattr."
OVERLAY_XATTRS = b"trusted.overlay."


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
    """write(2) all of p[:n] (it may write less than asked); -errno on failure."""
    cdef ssize_t w
    while n > 0:
        w = write(fd, p, n)
        if w < 0:
            if errno == EINTR:
                continue
            return -errno
        p += w
        n -= w
    return 0


cdef bytes _in_dir(int dirfd, bytes base):
    """A path naming ``base`` in the directory ``dirfd`` (see _in_dir in the twin)."""
    return b"/proc/self/fd/%d/%s" % (dirfd, base)


cdef int _read_umask() except? -2:
    """The process umask, from /proc/self/status ("Umask:", Linux 4.7); -1 if unknown.

    umask(2) can only be read by setting it, which would race with other
    threads creating files.
    """
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return -1


# --- reading the tar stream -------------------------------------------------

class _Failure:
    """What the reading thread hands over instead of a chunk when it fails."""

    def __init__(self, error):
        self.error = error


def _produce(source, full, tokens, stop):
    """The reading thread: the LayerSource's chunks, at most DEPTH of them in flight.

    ``tokens`` holds one item per chunk we may read ahead; ``full`` gets the
    chunks, then None at the end (or a _Failure). ``stop[0]`` asks us to
    stop early (the other thread failed).
    """
    chunks = source.chunks()
    try:
        while True:
            tokens.get()
            if stop[0]:
                return
            chunk = next(chunks, None)
            full.put(chunk)
            if chunk is None:
                return
    except BaseException as e:  # noqa: BLE001 - handed over to the other thread, which raises it
        full.put(_Failure(e))
    finally:
        chunks.close()


def _hash_mapping(h, view, stop, failure):
    """The hashing thread of a mapped layer: sha256 of ``view``, a slice at a time."""
    try:
        for start in range(0, len(view), HASH_SLICE):
            if stop[0]:
                return
            h.update(view[start:start + HASH_SLICE])
    except BaseException as e:  # noqa: BLE001
        failure.append(e)


cdef class _Reader:
    """The tar stream, chunk by chunk, with the digests and sizes of what was read.

    ``_p[_pos:_len]`` is what is left of the current chunk; ``header``
    points at the last block returned by block() (in the chunk, or in
    ``_block`` when it straddled two chunks). ``offset`` counts the tar
    bytes consumed, for messages.

    Mapped mode (an uncompressed regular file): the chunks are 1 MiB
    windows of the mapping, so that the limits are checked exactly where
    the twin checks them (after each 1 MiB read). Threaded mode: chunks
    come from _produce over a queue.
    """

    cdef const unsigned char *_p
    cdef Py_ssize_t _pos, _len
    cdef const unsigned char *header
    cdef unsigned char _block[BLOCK]
    cdef int64_t offset
    cdef bint _done
    cdef object limits, _stream
    cdef int64_t max_entry_size  # limits.max_entry_size, for a check without a Python call per entry
    cdef object _stop          # [False]: set to [True] to stop the helper thread
    cdef object _thread        # the helper thread (hashing or reading)
    cdef int64_t size, uncompressed_size
    # mapped mode
    cdef bint mapped
    cdef unsigned char *_map
    cdef size_t _map_size
    cdef Py_ssize_t _map_next, _map_end, _map_start
    cdef object _hash, _failure
    # threaded mode
    cdef object _source, _full_get, _tokens_put, _tar_hash
    cdef bint _has_buf
    cdef Py_buffer _buf
    cdef int _hash_tar  # -1: not known yet

    def __cinit__(self):
        self._stop = [False]
        self._hash_tar = -1

    def __dealloc__(self):
        self.close()

    cdef int open(self, stream, str compression, limits) except -1:
        """Choose the mode and start the helper thread."""
        self.limits = limits
        self.max_entry_size = min(limits.max_entry_size, INT64_MAX)
        self._stream = stream
        if compression in ("auto", "none") and self._try_map(stream, compression):
            return 0
        from engine.layer.compression import LayerSource
        self._source = LayerSource(stream, compression, limits, hash_tar=False)
        full, tokens = SimpleQueue(), SimpleQueue()
        for _ in range(DEPTH):
            tokens.put(None)
        self._full_get, self._tokens_put = full.get, tokens.put
        self._tar_hash = hashlib.sha256()
        self._thread = threading.Thread(target=_produce, args=(self._source, full, tokens, self._stop),
                                        name="layer-reader", daemon=True)
        self._thread.start()
        return 0

    cdef bint _try_map(self, stream, str compression) except -1:
        """Map ``stream`` if it is a regular file holding an uncompressed layer.

        The mapping covers the file as it is now, from the stream's position
        to its end. (A file truncated while it is mapped would kill the
        process with SIGBUS: content-store blobs are written once and
        renamed into place, never truncated.)
        """
        cdef struct_stat st
        cdef int fd
        cdef void *m
        cdef Py_ssize_t start
        try:
            fd = stream.fileno()
            start = stream.tell()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
            return False
        if fstat(fd, &st) < 0 or not S_ISREG(st.st_mode) or st.st_size <= start:
            return False
        m = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0)
        if m == MAP_FAILED:
            return False  # not mappable (some special filesystems): read it instead
        self._map, self._map_size = <unsigned char *>m, st.st_size
        if compression == "auto":
            from engine.layer.compression import sniff
            head = PyBytes_FromStringAndSize(<char *>self._map + start, min(4, st.st_size - start))
            if sniff(head) != "none":
                munmap(self._map, self._map_size)
                self._map = NULL
                return False
        # The kernel reads ahead more for a mapping read in order.
        madvise(self._map, self._map_size, MADV_SEQUENTIAL)
        self.mapped = True
        self._map_start = self._map_next = start
        self._map_end = st.st_size
        self._hash = hashlib.sha256()
        self._failure = []
        view = PyMemoryView_FromMemory(<char *>self._map + start, st.st_size - start, PyBUF_READ)
        self._thread = threading.Thread(target=_hash_mapping, args=(self._hash, view, self._stop, self._failure),
                                        name="layer-sha256", daemon=True)
        self._thread.start()
        return True

    cdef bint _next_chunk(self) except -1:
        """Make the next chunk current; False at the end of the stream."""
        cdef Py_ssize_t n
        if self._done:
            return False
        if self.mapped:
            n = min(<Py_ssize_t>CHUNK, self._map_end - self._map_next)
            if n <= 0:
                self._done = True
                return False
            self._p, self._len, self._pos = self._map + self._map_next, n, 0
            self._map_next += n
            self.size += n
            self.uncompressed_size += n
            self.limits.check_expansion(self.size, self.uncompressed_size, "none")
            return True
        if self._has_buf:  # done with the current chunk: the reader may read one more
            PyBuffer_Release(&self._buf)
            self._has_buf = False
            self._tokens_put(None)
        item = self._full_get()  # SimpleQueue.get lets go of the GIL while it waits
        if item is None:
            self._done = True
            return False
        if type(item) is _Failure:
            self._done = True
            raise item.error
        if self._hash_tar < 0:
            self._hash_tar = self._source.kind != "none"
        if self._hash_tar:
            self._tar_hash.update(item)
        PyObject_GetBuffer(item, &self._buf, PyBUF_SIMPLE)
        self._has_buf = True
        self._p, self._len, self._pos = <const unsigned char *>self._buf.buf, self._buf.len, 0
        return True

    cdef int block(self) except -1:
        """Point ``header`` at the next 512-byte block: 1, or 0 at a clean end of stream."""
        cdef Py_ssize_t have = self._len - self._pos, got, k
        if have >= BLOCK:  # the usual case: all in this chunk
            self.header = self._p + self._pos
            self._pos += BLOCK
            self.offset += BLOCK
            return 1
        memcpy(self._block, self._p + self._pos, have)  # straddling two chunks: gather it
        self._pos += have
        got = have
        while got < BLOCK:
            if not self._next_chunk():
                if got == 0:
                    return 0
                raise LayerError(f"truncated layer: tar header at offset {self.offset} "
                                 f"needs {BLOCK - got} more bytes")
            k = min(BLOCK - got, self._len)
            memcpy(self._block + got, self._p, k)
            self._pos = k
            got += k
        self.header = self._block
        self.offset += BLOCK
        return 1

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
        """Consume ``n`` bytes: write them to ``fd`` or append them to ``out`` (or drop them)."""
        cdef Py_ssize_t k
        cdef const unsigned char *p
        cdef int rc
        while n > 0:
            if self._pos == self._len and not self._next_chunk():
                raise LayerError(f"truncated layer: entry {_show(name)!r} needs {n + then} more bytes")
            k = self._len - self._pos
            if k > n:
                k = <Py_ssize_t>n
            p = self._p + self._pos
            if fd >= 0:
                with nogil:
                    rc = _write_all(fd, p, k)
                if rc < 0:
                    _raise_os(-rc)
            elif out is not None:
                out += (<const char *>p)[:k]
            self._pos += k
            self.offset += k
            n -= k
        return 0

    cdef int drain(self) except -1:
        """Read the rest of the stream: the digests cover all of it."""
        while self._next_chunk():
            self._pos = self._len
        return 0

    cdef tuple result(self):
        """(digest, diff_id, size, uncompressed_size), once drained."""
        if self.mapped:
            self._thread.join()
            self._thread = None
            if self._failure:
                raise self._failure[0]
            self._stream.seek(self._map_end)  # as if read to the end, like the twin
            digest = "sha256:" + self._hash.hexdigest()
            return digest, digest, self.size, self.uncompressed_size
        self._thread.join()
        self._thread = None
        digest = self._source.digest()
        diff_id = digest if self._source.kind == "none" else "sha256:" + self._tar_hash.hexdigest()
        return digest, diff_id, self._source.size, self._source.uncompressed_size

    cdef void close(self) noexcept:
        """Stop the helper thread, unmap, let go of the current chunk."""
        if self._thread is not None:
            self._stop[0] = True
            try:
                if not self.mapped:
                    self._tokens_put(None)  # wake it if it waits for room
                self._thread.join()
            except BaseException:  # noqa: BLE001 - nothing can be raised from here
                pass
            self._thread = None
        if self._has_buf:
            PyBuffer_Release(&self._buf)
            self._has_buf = False
        if self._map != NULL:
            munmap(self._map, self._map_size)
            self._map = NULL


# --- parsing headers ------------------------------------------------------

@cython.no_gc  # holds only bytes and a dict of bytes: no cycles, so no GC tracking (one per entry)
cdef class _Entry:
    """The fields of one header that we use (see _Header in the twin)."""

    cdef bytes name, linkname
    cdef int type
    cdef int64_t mode, uid, gid, size, devmajor, devminor
    cdef int64_t mtime_sec
    cdef long mtime_nsec
    cdef dict xattrs  # from PAX SCHILY.xattr.* records, or None


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
    cdef long unsigned_sum = 0, signed_sum = 0
    cdef Py_ssize_t i
    if not _number(b + 148, 8, &stored):
        return False
    for i in range(BLOCK):  # the whole block (a loop the compiler vectorizes)...
        unsigned_sum += b[i]
        signed_sum += <signed char>b[i]
    for i in range(148, 156):  # ...then the checksum field counted as spaces instead
        unsigned_sum += 32 - b[i]
        signed_sum += 32 - <signed char>b[i]
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


@cython.no_gc
cdef class _Pending:
    """What PAX ``x`` and GNU ``L``/``K`` headers say about the next entry.

    For each PAX keyword: ``has_*`` is False when absent or set empty
    (an empty value means "use the header's own field").
    """

    cdef object path, linkpath, long_name, long_link
    cdef dict xattrs  # name -> value, in archive order (None until one is seen)
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
        h.xattrs = self.xattrs
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
        elif klen >= 13 and memcmp(key, b"SCHILY.xattr.", 13) == 0:
            if pending.xattrs is None:
                pending.xattrs = {}
            pending.xattrs[PyBytes_FromStringAndSize(<const char *>key + 13, klen - 13)] = \
                PyBytes_FromStringAndSize(<const char *>value, vlen)
        # Every other keyword (atime, ctime, uname, ...) is ignored.
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


cdef int _set_xattrs(_Entry e, int fd, bytes path) except -1:
    """Set the entry's xattrs on ``fd``, or (fd -1) on ``path``, never followed (see the twin)."""
    cdef int rc, err
    cdef bytes value
    for name, value in e.xattrs.items():
        if name.startswith(OVERLAY_XATTRS):
            continue  # overlayfs' bookkeeping: never from a layer
        if fd >= 0:
            rc = fsetxattr(fd, name, <const char *>value, len(value), 0)
        else:
            rc = lsetxattr(path, name, <const char *>value, len(value), 0)
        if rc < 0:
            err = errno
            if err != EOPNOTSUPP and err != EPERM:  # the filesystem refuses: skipped, as Docker does
                _raise_os(err, None if fd >= 0 else path)
    return 0


cdef int _apply_entry(_Tree tree, _Reader reader, _Entry e, limits) except -1:
    """Check one entry and write it under the root (see _apply_entry in the twin)."""
    cdef list parts
    cdef bytes base
    cdef const char *cbase
    cdef int dirfd, fd, rc, err
    cdef mode_t kind, perm
    cdef dev_t dev
    cdef bytes target
    cdef timespec times[2]
    cdef bint chown_it, chmod_it
    if e.size < 0:
        raise LayerError(f"layer entry {_show(e.name)!r} has a negative size")
    if not _is_regular(e.type) and not _is_header_only(e.type):
        raise LayerError(f"layer entry {_show(e.name)!r}: unsupported entry type {chr(e.type)!r}")
    if _is_regular(e.type) and e.size > reader.max_entry_size:
        limits.check_entry(_show(e.name), e.size)  # raises, before anything is written
    if b"\0" in e.name:
        raise LayerError(f"layer entry {_show(e.name)!r}: name contains a NUL byte")
    if (e.type == T_HARDLINK or e.type == T_SYMLINK) and b"\0" in e.linkname:
        raise LayerError(f"layer entry {_show(e.name)!r}: link target contains a NUL byte")
    parts = _components(e.name, e)
    if not (0 <= e.uid <= ID_MAX and 0 <= e.gid <= ID_MAX):
        raise LayerError(f"layer entry {_show(e.name)!r}: owner {e.uid}:{e.gid} out of range")
    if e.xattrs is not None:
        for name in e.xattrs:
            if not name or b"\0" in name:
                raise LayerError(f"layer entry {_show(e.name)!r}: bad xattr name {_show(name)!r}")

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
    # Does a new node here need chown(2)? The kernel gives it our euid and
    # egid, or the directory's group if the directory is setgid.
    chown_it = tree.chown and (e.uid != tree.euid or e.gid != tree.egid or tree.sgid[-1])
    if _is_regular(e.type):
        # Created with its final permission bits, never the special ones
        # nor write access for others: a half-written file may be seen,
        # but never setuid (the twin creates it 0600 to the same end).
        perm = <mode_t>(e.mode & 0o755)
        with nogil:
            fd = openat(dirfd, cbase, CREATE_FILE, perm)
            err = errno
        if fd < 0 and err == EEXIST:
            tree.remove(dirfd, parts)
            with nogil:
                fd = openat(dirfd, cbase, CREATE_FILE, perm)
                err = errno
        if fd < 0:
            _raise_os(err, base)
        try:
            reader.data(e.name, e.size, fd)
            # chown before chmod (chown clears setuid/setgid) and before the
            # xattrs (writing data and chown both clear security.capability).
            chmod_it = tree.umask < 0 or (e.mode & 0o7777) != (perm & ~tree.umask)
            rc = 0
            with nogil:
                if chown_it:
                    rc = fchown(fd, <uid_t>e.uid, <gid_t>e.gid)
                    err = errno
            if rc == 0 and e.xattrs:
                _set_xattrs(e, fd, None)
            with nogil:
                if rc == 0 and chmod_it:
                    rc = fchmod(fd, <mode_t>(e.mode & 0o7777))
                    err = errno
                if rc == 0:
                    rc = futimens(fd, times)
                    err = errno
            if rc < 0:
                _raise_os(err)
        finally:
            with nogil:
                close(fd)
    elif e.type == T_DIRECTORY:
        # A new directory gets its final permission bits at once (plus rwx
        # for us), so that finish() usually only sets its time.
        perm = <mode_t>((e.mode & 0o755) | 0o700)
        if tree.directory(dirfd, parts, perm):  # created
            if not (tree.umask >= 0 and not tree.sgid[-1] and (e.mode & 0o7777) == (perm & ~tree.umask)):
                perm = 0  # finish() must chmod it
        else:  # an existing directory, kept: its owner and mode are the archive's now
            chown_it, perm = tree.chown, 0
        if chown_it:
            tree.set_owner(dirfd, base, e)
        if e.xattrs:
            _set_xattrs(e, -1, _in_dir(dirfd, base))
        tree.dirs[b"/".join(parts)] = (e.mode & 0o7777, e.mtime_sec, e.mtime_nsec, perm)
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
        if chown_it:
            tree.set_owner(dirfd, base, e)
        if e.xattrs:
            _set_xattrs(e, -1, _in_dir(dirfd, base))
        with nogil:
            rc = utimensat(dirfd, cbase, times, AT_SYMLINK_NOFOLLOW)
            err = errno
        if rc < 0:
            _raise_os(err, base)
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
        if chown_it:
            tree.set_owner(dirfd, base, e)
        if e.xattrs:
            _set_xattrs(e, -1, _in_dir(dirfd, base))
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
    and their fds ``_fds``, ``_fds[0]`` being the root; ``sgid`` says which
    are setgid): entries come grouped by directory, so most entries open no
    directory at all. See _Tree in the twin for why the chain stays valid.
    """

    cdef int root_fd
    cdef bint chown
    cdef uid_t euid
    cdef gid_t egid
    cdef int umask
    cdef dict dirs  # path -> (mode, mtime_sec, mtime_nsec, perm it was created with or 0), for finish()
    cdef list _path
    cdef list _fds
    cdef list sgid

    def __cinit__(self, root):
        cdef struct_stat st
        self.root_fd = -1
        self._path = []
        self._fds = []
        self.sgid = []
        self.dirs = {}
        cdef bytes path = os.fsencode(root)
        if b"\0" in path:
            raise ValueError("embedded null byte")  # what os.open says
        self.root_fd = openat(AT_FDCWD, path, OPEN_ROOT)
        if self.root_fd < 0:
            _raise_os(errno, os.fspath(root))  # the filename os.open would give
        self._fds.append(self.root_fd)
        if fstat(self.root_fd, &st) < 0:
            _raise_os(errno, root)
        self.sgid.append(bool(st.st_mode & S_ISGID))
        self.euid, self.egid = geteuid(), getegid()
        self.chown = self.euid == 0
        self.umask = _read_umask()

    def __dealloc__(self):
        self.release()

    cdef void release(self) noexcept:
        """Close every fd we hold (the root's too)."""
        cdef int fd
        for fd in self._fds:
            close(fd)
        self._fds = []
        self._path = []
        self.sgid = []

    cdef int _step(self, int dirfd, bytes name, bint create) except -1:
        """Open the directory ``name`` in ``dirfd`` without following symlinks.

        Returns the fd, or STEP_SYMLINK / STEP_NOT_DIR / STEP_MISSING (when
        not ``create``). A missing directory is created 0755, root-owned.
        """
        cdef const char *c = name
        cdef struct_stat st
        cdef int fd, err
        with nogil:
            fd = openat(dirfd, c, OPEN_DIR)
            err = errno
        if fd >= 0:
            return fd
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
        cdef struct_stat st
        while keep < n and keep < have and dirs[keep] == self._path[keep]:
            keep += 1
        while len(self._path) > keep:
            self._path.pop()
            self.sgid.pop()
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
            if fstat(fd, &st) < 0:
                _raise_os(errno, name)
            self.sgid.append(bool(st.st_mode & S_ISGID))
        return self._fds[-1]

    cdef int remove(self, int dirfd, list parts) except -1:
        """Remove whatever is at ``parts`` (in ``dirfd``), recursively for a directory."""
        _remove(dirfd, parts[-1])
        key = b"/".join(parts)
        below = key + b"/"
        for path in [p for p in self.dirs if p == key or p.startswith(below)]:
            del self.dirs[path]
        return 0

    cdef bint directory(self, int dirfd, list parts, mode_t perm) except -1:
        """Make directory ``parts`` exist, keeping one already there; True if created."""
        cdef bytes base = parts[-1]
        cdef const char *c = base
        cdef struct_stat st
        cdef int rc, err
        with nogil:
            rc = mkdirat(dirfd, c, perm)
            err = errno
        if rc == 0:
            return True
        if err != EEXIST:
            _raise_os(err, base)
        if fstatat(dirfd, c, &st, AT_SYMLINK_NOFOLLOW) < 0:
            _raise_os(errno, base)
        if S_ISDIR(st.st_mode):
            return False
        self.remove(dirfd, parts)
        if mkdirat(dirfd, c, perm) < 0:
            _raise_os(errno, base)
        return True

    cdef int set_owner(self, int dirfd, bytes base, _Entry e) except -1:
        cdef int rc, err
        cdef const char *c = base
        if self.chown:
            with nogil:
                rc = fchownat(dirfd, c, <uid_t>e.uid, <gid_t>e.gid, AT_SYMLINK_NOFOLLOW)
                err = errno
            if rc < 0:
                _raise_os(err, base)
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
        """Give every directory entry its mode and mtime, deepest first.

        A directory created with its final mode only needs its time:
        utimensat(AT_SYMLINK_NOFOLLOW) by name. Otherwise it is opened
        (O_NOFOLLOW) for fchmod and futimens, as in the twin.
        """
        cdef _Entry e = _Entry.__new__(_Entry)
        cdef timespec times[2]
        cdef int parent, fd, rc, err
        cdef bytes base
        cdef const char *c
        cdef mode_t mode
        for path in sorted(self.dirs, reverse=True):
            mode, sec, nsec, perm = self.dirs[path]
            parts = path.split(b"/")
            e.name = path
            parent = self.enter(parts[:-1], e, False)
            base = parts[-1]
            c = base
            times[0].tv_sec = times[1].tv_sec = sec
            times[0].tv_nsec = times[1].tv_nsec = nsec
            if perm:
                with nogil:
                    rc = utimensat(parent, c, times, AT_SYMLINK_NOFOLLOW)
                    err = errno
                if rc < 0:
                    _raise_os(err, base)
                continue
            with nogil:
                fd = openat(parent, c, OPEN_DIR)
                err = errno
                if fd >= 0:
                    rc = fchmod(fd, mode)
                    if rc == 0:
                        rc = futimens(fd, times)
                    err = errno
                    close(fd)
            if fd < 0:
                _raise_os(err, base)
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



# --- applying: the entry point ---------------------------------------------

def apply_layer(stream, root, expected_digest=None, expected_diff_id=None, compression="auto", limits=None):
    """Extract the tar (uncompressed, gzip or zstd) read from ``stream`` into ``root``.

    Same contract as engine.layer.tar.apply_layer: returns a LayerResult;
    raises UnsafeLayerEntry, LayerError, DigestMismatch.
    """
    # Imported here, not at the top: engine.layer imports this module, so a
    # top-level import of engine.layer would be circular.
    from engine.layer.compression import DEFAULT_LIMITS, check_kind
    from engine.layer.tar import LayerResult

    limits = limits or DEFAULT_LIMITS
    check_kind(compression)
    cdef _Tree tree = _Tree(root)
    cdef _Reader reader = _Reader()
    cdef _Pending pending = _Pending.__new__(_Pending)
    cdef _Entry entry
    cdef int64_t offset, entries = 0
    try:
        reader.open(stream, compression, limits)
        while True:
            offset = reader.offset
            if not reader.block() or _is_zero(reader.header):
                break  # end of archive (one zero block is enough, as GNU tar and tarfile agree)
            entry = _parse_header(reader.header, offset)
            if entry.type == T_PAX or entry.type == T_PAX_GLOBAL or \
                    entry.type == T_LONGNAME or entry.type == T_LONGLINK:
                _read_meta(reader, entry, offset, pending)
                continue
            pending.apply_to(entry)
            pending = _Pending.__new__(_Pending)
            entries += 1
            try:
                _apply_entry(tree, reader, entry, limits)
            except OSError as e:
                e.add_note(f"while applying layer entry {_show(entry.name)!r}")
                raise
        reader.drain()
        tree.finish()
        digest, diff_id, size, uncompressed_size = reader.result()
    finally:
        tree.release()
        reader.close()
    if expected_digest is not None and expected_digest != digest:
        raise DigestMismatch("layer", expected_digest, digest)
    if expected_diff_id is not None and expected_diff_id != diff_id:
        raise DigestMismatch("layer diff_id", expected_diff_id, diff_id)
    return LayerResult(digest, diff_id, size, uncompressed_size, entries)


# --- creating: walking the tree, writing the tar -----------------------------

cdef enum:
    NAME_MAX = 100
    PREFIX_MAX = 155
    LINK_MAX = 100

cdef int64_t OCTAL_7 = 0o7777777
cdef int64_t OCTAL_11 = 0o77777777777
REFUSED_OVERLAY_XATTRS = (b"trusted.overlay.redirect", b"trusted.overlay.metacopy")
PAX_NAME = b"././@PaxHeader"
OPAQUE_XATTR_NAME = b"trusted.overlay.opaque"


@cython.no_gc
cdef class _Stat:
    """The fields of a struct stat that an entry's header needs."""

    cdef mode_t mode
    cdef int64_t uid, gid, size, mtime, nlink
    cdef uint64_t dev, ino, rdev

    @staticmethod
    cdef _Stat of(const struct_stat *st):
        cdef _Stat s = _Stat.__new__(_Stat)
        s.mode, s.uid, s.gid, s.size = st.st_mode, st.st_uid, st.st_gid, st.st_size
        s.mtime = st.st_mtim.tv_sec  # whole seconds, rounded down (tv_nsec is never negative)
        s.nlink, s.dev, s.ino, s.rdev = st.st_nlink, st.st_dev, st.st_ino, st.st_rdev
        return s


cdef inline bint _is_whiteout(_Stat st) noexcept:
    return S_ISCHR(st.mode) and st.rdev == 0


cdef void _octal(unsigned char *field, int digits, uint64_t value) noexcept nogil:
    """``digits`` octal digits, zero-padded, then a NUL (the twin's b"%0<digits>o\\0")."""
    cdef int i
    for i in range(digits - 1, -1, -1):
        field[i] = 48 + (value & 7)
        value >>= 3
    field[digits] = 0


cdef void _put(unsigned char *field, Py_ssize_t width, bytes value) noexcept:
    cdef Py_ssize_t n = min(width, PyBytes_GET_SIZE(value))
    memcpy(field, PyBytes_AS_STRING(value), n)


cdef void _checksum(unsigned char *b) noexcept nogil:
    """The sum of the header's bytes, its checksum field counted as spaces: "%06o\\0 "."""
    cdef unsigned long total = 0
    cdef int i
    memset(b + 148, 32, 8)
    for i in range(BLOCK):
        total += b[i]
    _octal(b + 148, 6, total)
    b[155] = 32


cdef bytes _pax_record(bytes key, bytes value):
    body = b" " + key + b"=" + value + b"\n"
    cdef Py_ssize_t n = len(body) + 1
    while len(b"%d" % n) + len(body) != n:  # the length counts its own digits
        n = len(b"%d" % n) + len(body)
    return b"%d" % n + body


cdef bytes _pax_header(dict records):
    """A PAX "x" entry holding ``records``, sorted by keyword (see the twin)."""
    cdef unsigned char b[BLOCK]
    data = b"".join([_pax_record(key, records[key]) for key in sorted(records)])
    memset(b, 0, BLOCK)
    _put(b, 100, PAX_NAME)
    _octal(b + 100, 7, 0o644)
    _octal(b + 108, 7, 0)
    _octal(b + 116, 7, 0)
    _octal(b + 124, 11, len(data))
    _octal(b + 136, 11, 0)
    b[156] = 120  # 'x'
    memcpy(b + 257, b"ustar\x0000", 8)
    _octal(b + 329, 7, 0)
    _octal(b + 337, 7, 0)
    _checksum(b)
    return PyBytes_FromStringAndSize(<char *>b, BLOCK) + data + bytes(_padded(len(data)) - len(data))


cdef object _split_path(bytes path):
    """ustar's (prefix, name) split of a long path, or None (see the twin)."""
    cdef Py_ssize_t i = path.rfind(b"/", 0, min(len(path) - 1, PREFIX_MAX + 1))
    if i <= 0 or len(path) - i - 1 > NAME_MAX:
        return None
    return path[:i], path[i + 1:]


cdef class _Out:
    """The tar on its way to ``out``, through a 1 MiB buffer (see _Sink in the twin)."""

    cdef object _out_write, _flush, _compressor, _tar_hash, _blob_hash
    cdef bint _compressed
    cdef unsigned char *buf
    cdef Py_ssize_t used
    cdef int64_t size, uncompressed_size

    def __cinit__(self, out, str compression):
        from engine.layer.compression import Compressor
        self._compressor = Compressor(compression)
        self._compressed = compression != "none"
        self._out_write = out.write
        self._flush = getattr(out, "flush", None)
        self._tar_hash = hashlib.sha256()
        self._blob_hash = hashlib.sha256() if self._compressed else self._tar_hash
        self.buf = <unsigned char *>malloc(CHUNK)
        if self.buf == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.buf)

    cdef int write(self, const unsigned char *p, Py_ssize_t n) except -1:
        cdef Py_ssize_t k
        while n > 0:
            k = min(n, CHUNK - self.used)
            memcpy(self.buf + self.used, p, k)
            self.used += k
            p += k
            n -= k
            if self.used == CHUNK:
                self.flush_block()
        return 0

    cdef int write_bytes(self, bytes data) except -1:
        return self.write(<const unsigned char *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))

    cdef int zeros(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t k
        while n > 0:
            k = min(n, CHUNK - self.used)
            memset(self.buf + self.used, 0, k)
            self.used += k
            n -= k
            if self.used == CHUNK:
                self.flush_block()
        return 0

    cdef int flush_block(self) except -1:
        """Hash, compress, hash and write what the buffer holds (a whole 1 MiB but at the end)."""
        if self.used == 0:
            return 0
        block = PyBytes_FromStringAndSize(<char *>self.buf, self.used)
        self.used = 0
        self._tar_hash.update(block)
        self.uncompressed_size += len(block)
        self._emit(self._compressor.compress(block) if self._compressed else block)
        return 0

    cdef int _emit(self, blob) except -1:
        if not blob:
            return 0
        if self._compressed:
            self._blob_hash.update(blob)
        self.size += len(blob)
        view = memoryview(blob)
        while view:
            n = self._out_write(view)
            view = view[len(view) if n is None else n:]  # a raw file may write less than asked
        return 0

    cdef object finish(self, int64_t entries):
        from engine.layer.tar import LayerResult
        self.flush_block()
        if self._compressed:
            self._emit(self._compressor.flush())
        if self._flush is not None:
            self._flush()
        return LayerResult("sha256:" + self._blob_hash.hexdigest(), "sha256:" + self._tar_hash.hexdigest(),
                           self.size, self.uncompressed_size, entries)


cdef list _listxattr(int fd, bytes path):
    """The xattr names of ``fd`` (or, fd -1, of ``path``, not followed), unsorted; none if unsupported."""
    cdef ssize_t n, i, start
    cdef char *names = NULL
    cdef int err
    while True:
        n = flistxattr(fd, NULL, 0) if fd >= 0 else llistxattr(path, NULL, 0)
        if n <= 0:
            break
        names = <char *>realloc(names, n)
        if names == NULL:
            raise MemoryError()
        n = flistxattr(fd, names, n) if fd >= 0 else llistxattr(path, names, n)
        if n >= 0 or errno != ERANGE:  # ERANGE: one was added since we asked for the size
            break
    err = errno
    try:
        if n < 0:
            if err == EOPNOTSUPP:
                return []
            _raise_os(err, None if fd >= 0 else path)
        out = []
        start = 0
        for i in range(n):
            if names[i] == 0:
                out.append(PyBytes_FromStringAndSize(names + start, i - start))
                start = i + 1
        return out
    finally:
        free(names)


cdef bytes _getxattr(int fd, bytes path, bytes name):
    """The value of xattr ``name`` (of ``fd``, or of ``path``, not followed)."""
    cdef ssize_t n
    cdef char *value = NULL
    while True:
        n = fgetxattr(fd, name, NULL, 0) if fd >= 0 else lgetxattr(path, name, NULL, 0)
        if n < 0:
            _raise_os(errno, None if fd >= 0 else path)
        value = <char *>realloc(value, n + 1)
        if value == NULL:
            raise MemoryError()
        n = fgetxattr(fd, name, value, n + 1) if fd >= 0 else lgetxattr(path, name, value, n + 1)
        if n >= 0 or errno != ERANGE:  # ERANGE: it grew since we asked for its size
            break
    try:
        if n < 0:
            _raise_os(errno, None if fd >= 0 else path)
        return PyBytes_FromStringAndSize(value, n)
    finally:
        free(value)


cdef list _xattrs(int fd, bytes target, list names, bytes path):
    """The xattrs to archive, sorted by name: all but overlayfs' own (see the twin)."""
    out = []
    for name in sorted(names):
        if name.startswith(REFUSED_OVERLAY_XATTRS):
            raise LayerError(f"{_show(path)!r} uses overlayfs' {_show(name)}: the upper directory of a "
                             "mount with redirect_dir or metacopy cannot be archived as a layer")
        if name.startswith(OVERLAY_XATTRS):
            continue
        if b"=" in name:
            raise LayerError(f"{_show(path)!r}: xattr {_show(name)!r} cannot be archived "
                             "(its name contains '=')")
        out.append((name, _getxattr(fd, target, name)))
    return out


cdef class _Walker:
    """Walks the tree in byte order of the paths, writing entries (see _Walker in the twin)."""

    cdef _Out out
    cdef object mtime  # None, or every entry's mtime
    cdef bint whiteouts
    cdef int64_t entries
    cdef dict inodes   # (st_dev, st_ino) -> first path written

    cdef int walk(self, int dirfd, bytes prefix) except -1:
        cdef struct_stat st
        cdef _Stat s
        cdef int fd
        items = []
        for name in _listdir(dirfd):
            if fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0:
                _raise_os(errno, name)
            s = _Stat.of(&st)
            if self.whiteouts and _is_whiteout(s):
                items.append((WHITEOUT_PREFIX + name, name, s, False))
                continue
            items.append((name, name, s, False))
            if S_ISDIR(s.mode):
                items.append((name + b"/", name, s, True))
        items.sort(key=_first)
        for key, name, s, below in items:
            if below:
                fd = openat(dirfd, <bytes>name, OPEN_DIR)  # O_NOFOLLOW: never a symlink swapped in
                if fd < 0:
                    _raise_os(errno, name)
                try:
                    self.walk(fd, prefix + name + b"/")
                finally:
                    close(fd)
            else:
                self.entry(dirfd, name, prefix + key, s)
        return 0

    cdef int entry(self, int dirfd, bytes name, bytes path, _Stat st) except -1:
        cdef bytes target
        if S_ISSOCK(st.mode):
            return 0  # tar cannot hold a socket
        if self.whiteouts and _is_whiteout(st):
            self.header(path, T_REG, st, 0o600, 0, b"", None)  # an OCI whiteout (see the twin)
            return 0
        if not S_ISDIR(st.mode) and st.nlink > 1:
            first = self.inodes.setdefault((st.dev, st.ino), path)
            if first != path:
                self.header(path, T_HARDLINK, st, -1, 0, first, None)
                return 0
        if S_ISREG(st.mode):
            self.regular(dirfd, name, path)
        elif S_ISDIR(st.mode):
            target = _in_dir(dirfd, name)
            names = _listxattr(-1, target)
            self.header(path + b"/", T_DIRECTORY, st, -1, 0, b"", _xattrs(-1, target, names, path))
            if self.whiteouts and OPAQUE_XATTR_NAME in names and _getxattr(-1, target, OPAQUE_XATTR_NAME) == b"y":
                self.opaque_marker(path + b"/", st)
        elif S_ISLNK(st.mode):
            target = _in_dir(dirfd, name)
            link = os.readlink(name, dir_fd=dirfd)
            self.header(path, T_SYMLINK, st, -1, 0, link, _xattrs(-1, target, _listxattr(-1, target), path))
        else:
            kind = T_CHARDEV if S_ISCHR(st.mode) else T_BLOCKDEV if S_ISBLK(st.mode) else T_FIFO
            target = _in_dir(dirfd, name)
            self.header(path, kind, st, -1, 0, b"", _xattrs(-1, target, _listxattr(-1, target), path))
        return 0

    cdef int regular(self, int dirfd, bytes name, bytes path) except -1:
        """A regular file: its header (from the open file's fstat) and its content."""
        cdef struct_stat st
        cdef int fd = openat(dirfd, name, READ_FILE)
        cdef int64_t left
        cdef ssize_t n
        cdef Py_ssize_t room
        cdef int err
        cdef _Out out = self.out
        if fd < 0:
            _raise_os(errno, name)
        try:
            if fstat(fd, &st) < 0:
                _raise_os(errno)
            if not S_ISREG(st.st_mode):
                raise LayerError(f"{_show(path)!r} changed while being archived")
            self.header(path, T_REG, _Stat.of(&st), -1, st.st_size, b"", _xattrs(fd, None, _listxattr(fd, None), path))
            left = st.st_size
            while left:
                # Read straight into the output buffer (no intermediate copy).
                room = min(<int64_t>(CHUNK - out.used), left)
                with nogil:
                    n = read(fd, out.buf + out.used, room)
                    err = errno
                if n < 0:
                    if err == EINTR:
                        continue
                    _raise_os(err, name)
                if n == 0:
                    raise LayerError(f"{_show(path)!r} changed while being archived "
                                     f"(it ended {left} bytes early)")
                out.used += n
                left -= n
                if out.used == CHUNK:
                    out.flush_block()
            out.zeros(_padded(st.st_size) - st.st_size)  # padding to a whole block
        finally:
            close(fd)
        return 0

    cdef int opaque_marker(self, bytes dir_path, _Stat st) except -1:
        return self.header(dir_path + OPAQUE_MARKER, T_REG, st, st.mode & 0o777, 0, b"", None)

    cdef int header(self, bytes path, int kind, _Stat st, int64_t mode, int64_t size, bytes linkname,
                    list xattrs) except -1:
        """Write one entry's header(s) (see ustar_header in the twin)."""
        cdef unsigned char b[BLOCK]
        cdef int64_t mtime = st.mtime if self.mtime is None else self.mtime
        cdef dict pax = {}
        cdef bytes name = path, prefix = b""
        if mode < 0:
            mode = st.mode & 0o7777
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
        if not 0 <= st.uid <= OCTAL_7:
            pax[b"uid"] = b"%d" % st.uid
        if not 0 <= st.gid <= OCTAL_7:
            pax[b"gid"] = b"%d" % st.gid
        if not 0 <= size <= OCTAL_11:
            pax[b"size"] = b"%d" % size
        if not 0 <= mtime <= OCTAL_11:
            pax[b"mtime"] = b"%d" % mtime
        if xattrs:
            for key, value in xattrs:
                pax[XATTR_RECORD + key] = value
        memset(b, 0, BLOCK)
        _put(b, 100, name)
        _octal(b + 100, 7, mode)
        _octal(b + 108, 7, 0 if b"uid" in pax else st.uid)
        _octal(b + 116, 7, 0 if b"gid" in pax else st.gid)
        _octal(b + 124, 11, 0 if b"size" in pax else size)
        _octal(b + 136, 11, 0 if b"mtime" in pax else mtime)
        b[156] = kind
        _put(b + 157, 100, linkname)
        memcpy(b + 257, b"ustar\x0000", 8)
        if kind == T_CHARDEV or kind == T_BLOCKDEV:
            _octal(b + 329, 7, major(st.rdev))
            _octal(b + 337, 7, minor(st.rdev))
        else:
            _octal(b + 329, 7, 0)
            _octal(b + 337, 7, 0)
        _put(b + 345, 155, prefix)
        _checksum(b)
        if pax:
            self.out.write_bytes(_pax_header(pax))
        self.out.write(b, BLOCK)
        self.entries += 1
        return 0


def _first(item):
    return item[0]


def create_layer(root, out, *, mtime=None, whiteouts=True, compression="none"):
    """Write the directory ``root`` as a layer tar to the binary file ``out``.

    Same contract as engine.layer.create.create_layer: the same bytes, the
    same LayerResult, the same exceptions.
    """
    import math

    cdef _Out sink = _Out(out, compression)
    cdef _Walker walker = _Walker.__new__(_Walker)
    cdef struct_stat st
    cdef int root_fd
    walker.out = sink
    walker.mtime = None if mtime is None else math.floor(mtime)
    walker.whiteouts = whiteouts
    walker.inodes = {}
    cdef bytes path = os.fsencode(root)
    if b"\0" in path:
        raise ValueError("embedded null byte")  # what os.open says
    root_fd = openat(AT_FDCWD, path, OPEN_ROOT)
    if root_fd < 0:
        _raise_os(errno, os.fspath(root))  # the filename os.open would give
    try:
        if whiteouts and OPAQUE_XATTR_NAME in _listxattr(root_fd, None) and \
                _getxattr(root_fd, None, OPAQUE_XATTR_NAME) == b"y":
            if fstat(root_fd, &st) < 0:
                _raise_os(errno)
            walker.opaque_marker(b"", _Stat.of(&st))  # the root itself is opaque
        walker.walk(root_fd, b"")
    finally:
        close(root_fd)
    sink.zeros(2 * BLOCK)  # end of archive: two zero blocks
    return sink.finish(walker.entries)
