"""Tar streams in and out, and ``import``: a tarball becomes a one-layer image.

Three tools live here because ``save``/``load`` (archive.py), ``import``
(this module) and ``export`` (runtime/export.py) all need them:

**Reading a possibly compressed stream once.** :func:`open_stream` looks at
the first bytes (the *magic number*) and, if the data is compressed,
returns a reader that decompresses as it is read:

=======  ==================  =========================================
format   magic               where it is defined
=======  ==================  =========================================
gzip     ``1f 8b``           RFC 1952, section 2.3.1
zstd     ``28 b5 2f fd``     RFC 8878, section 3.1.1 (frame magic)
bzip2    ``42 5a 68`` "BZh"  bzip2's file format (no RFC; "BZh" + level)
xz       ``fd 37 7a 58 5a``  The .xz File Format, section 2.1.1.1
=======  ==================  =========================================

The reader refuses a *decompression bomb*: a small input that expands to
something huge. Up to :data:`EXPANSION_FREE` bytes (256 MiB) of output are
always allowed; beyond that the output may not exceed
:data:`EXPANSION_RATIO` (1000) times the compressed bytes read so far.
(Deflate cannot exceed about 1032:1, so an honest gzip of real files never
comes close; zstd and xz can reach millions to one on zeros.)

**Reading a tar front to back.** :class:`TarReader` walks the 512-byte
headers of a tar (POSIX.1-2017 ``pax``, "ustar Interchange Format", plus
PAX ``x`` records and GNU ``L``/``K`` long names) from a stream that cannot
seek -- stdin, a pipe, an HTTP body -- and hands each member's data out
exactly once. Unlike :mod:`tarfile`, it refuses what it cannot explain: a
header with a bad checksum in the middle of an archive, a header cut short,
a member whose data stops early. Member names are checked (no absolute
paths, no ``..``) because load treats them as names inside the archive.

**Writing a tar.** :func:`tar_header`, :func:`padding` and
:data:`END_OF_ARCHIVE` are the three pieces of every tar: a header block
(plus PAX records when ustar cannot hold a field), the data padded to
512 bytes, and two zero blocks at the end (what Go's archive/tar writes,
and so what ``docker save`` writes).

``import`` (:func:`import_tarball`)
-----------------------------------

``docker import`` makes an image from a tarball of a root filesystem
(moby's daemon/images/image_import.go): the decompressed tar becomes the
only layer, stored *uncompressed* so that its digest is its diff_id; the
config gets this host's architecture and OS, ``created`` = now, the
``-c/--change`` instructions applied to an empty run config, and one
history entry ``{"created": ..., "comment": message}``. When no message
is given the API server uses ``"Imported from " + src`` -- and the docker
CLI sends a local file as ``-`` (it streams the file as the request body),
so a file and stdin both say ``Imported from -`` and a URL says
``Imported from http://...`` (moby api/server/router/image/image_routes.go).

Lifecycle of one import::

    source --sniff + decompress--> content writer (sha256 while streaming)
           --commit--> layer blob (digest == diff_id)
           --> config blob, manifest blob --> layer extracted (checks the tar)
           --> tag (one atomic index update) --> "sha256:<image id>"

Everything before the tag is invisible to ``images``; the content lease is
held from the first byte to the tag, and if anything fails the garbage
collector runs so the store is left as it was.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import tarfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from ..errors import EngineError, StoreError, UsageError

BLOCK = 512
CHUNK = 1 << 20
END_OF_ARCHIVE = bytes(2 * BLOCK)

EXPANSION_FREE = 256 << 20       # always allowed, whatever the ratio
EXPANSION_RATIO = 1000           # beyond EXPANSION_FREE: output <= ratio * input
MAX_MEMBER_SIZE = 1 << 40        # 1 TiB: a declared size above this is refused before reading

HEADER_ONLY = (tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE,
               tarfile.DIRTYPE, tarfile.FIFOTYPE)

MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
)


class ArchiveError(StoreError):
    """An archive or tarball given to load/import is malformed, unsafe or too big."""


# -- compression ---------------------------------------------------------------


def sniff(head: bytes) -> str:
    """The compression of data starting with ``head``: gzip, zstd, bzip2, xz or none."""
    for magic, name in MAGIC:
        if head.startswith(magic):
            return name
    return "none"


def _decompression_errors() -> tuple:
    errors = [OSError, EOFError, ValueError, zlib.error, lzma.LZMAError]
    try:
        from isal import igzip_lib
        errors.append(igzip_lib.IsalError)
    except ImportError:
        pass
    try:
        import zstandard
        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errors)


class _Counting(io.RawIOBase):
    """Pass reads through to ``stream``, counting the bytes (the compressed input)."""

    def __init__(self, stream):
        self._stream = stream
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self._stream.read(len(b))
        n = len(data)
        b[:n] = data
        self.count += n
        return n


class _Prefixed(io.RawIOBase):
    """``stream`` with ``head`` (bytes already read from it, to sniff) put back in front."""

    def __init__(self, head: bytes, stream):
        self._head = head
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._stream.read(len(b))
        b[:len(data)] = data
        return len(data)


class Inflater(io.RawIOBase):
    """Decompress ``source`` as it is read, refusing decompression bombs (see the module docstring)."""

    def __init__(self, source, kind: str, what: str, *, free: int | None = None,
                 ratio: int | None = None):
        self.kind = kind
        self.what = what
        self.free = EXPANSION_FREE if free is None else free
        self.ratio = EXPANSION_RATIO if ratio is None else ratio
        self.count = 0  # bytes of output so far
        self._input = _Counting(source)
        self._errors = _decompression_errors()
        if kind == "gzip":
            try:
                from isal import igzip as gzip  # ISA-L: the same GzipFile, 2-3x faster
            except ImportError:
                import gzip
            self._reader = gzip.GzipFile(fileobj=self._input, mode="rb")
        elif kind == "bzip2":
            self._reader = bz2.BZ2File(self._input)
        elif kind == "xz":
            self._reader = lzma.LZMAFile(self._input)
        elif kind == "zstd":
            import zstandard
            self._reader = zstandard.ZstdDecompressor().stream_reader(
                self._input, read_across_frames=True)
        else:
            raise ValueError(f"unknown compression {kind!r}")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        try:
            data = self._reader.read(len(b))
        except self._errors as e:
            raise ArchiveError(f"{self.what}: corrupt {self.kind} data: {e}") from None
        n = len(data)
        b[:n] = data
        self.count += n
        if self.count > self.free and self.count > self.ratio * self._input.count:
            raise ArchiveError(
                f"{self.what}: refusing to decompress further: {self._input.count} bytes of "
                f"{self.kind} data already expanded to {self.count} bytes, over {self.ratio}x "
                f"beyond the first {self.free >> 20} MiB (a decompression bomb?)")
        return n


def open_stream(stream: BinaryIO, what: str, *, free: int | None = None,
                ratio: int | None = None) -> tuple[BinaryIO, str]:
    """``(reader, compression)``: ``stream`` decompressed if its magic number says so.

    The stream is read once, from the front: it may be stdin or a socket.
    """
    head = b""
    while len(head) < 6:
        chunk = stream.read(6 - len(head))
        if not chunk:
            break
        head += chunk
    kind = sniff(head)
    raw = _Prefixed(head, stream)
    if kind == "none":
        return io.BufferedReader(raw, CHUNK), kind
    return io.BufferedReader(Inflater(raw, kind, what, free=free, ratio=ratio), CHUNK), kind


# -- reading a tar ---------------------------------------------------------------


@dataclass
class Member:
    """One archive member: ``kind`` is file, dir, symlink, hardlink or other."""

    name: str
    kind: str
    size: int
    linkname: str = ""


def member_name(raw: str, what: str) -> str:
    """A member's name as a clean relative path; absolute names and ``..`` are refused."""
    if raw.startswith("/"):
        raise ArchiveError(f"{what}: member {raw!r} refused: absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"{what}: member {raw!r} refused: '..' in path")
    return "/".join(parts)


def _pax_records(data: bytes, what: str) -> dict[str, str]:
    """Parse PAX extended header records: ``"<length> <key>=<value>\\n"`` each."""
    records = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise ArchiveError(f"{what}: malformed PAX header") from None
        record = data[space + 1:pos + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise ArchiveError(f"{what}: malformed PAX header")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


class TarReader:
    """Iterate over the members of a tar read from a stream, once.

    Lifecycle: ``for member in reader:`` yields each :class:`Member`; while
    it is the current one, ``reader.read(n)`` returns its data. Whatever the
    caller does not read is skipped when the loop moves on.
    """

    def __init__(self, stream: BinaryIO, what: str = "archive", max_size: int = MAX_MEMBER_SIZE):
        self._stream = stream
        self.what = what
        self.max_size = max_size
        self.offset = 0           # bytes consumed from the stream
        self._remaining = 0       # data bytes of the current member not yet read
        self._padding = 0
        self._current = ""

    def _read_full(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only at the end of the stream."""
        out = bytearray()
        while len(out) < n:
            chunk = self._stream.read(n - len(out))
            if not chunk:
                break
            out += chunk
        self.offset += len(out)
        return bytes(out)

    def _exactly(self, n: int, why: str) -> bytes:
        data = self._read_full(n)
        if len(data) < n:
            raise ArchiveError(f"{self.what}: truncated: {why} needs {n - len(data)} more bytes")
        return data

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all with -1) of the current member's data."""
        if n < 0 or n > self._remaining:
            n = self._remaining
        if n == 0:
            return b""
        data = self._stream.read(min(n, CHUNK))
        if not data:
            raise ArchiveError(f"{self.what}: truncated: member {self._current!r} needs "
                               f"{self._remaining} more bytes")
        self._remaining -= len(data)
        self.offset += len(data)
        return data

    def _skip_rest(self) -> None:
        while self._remaining:
            self.read(CHUNK)
        if self._padding:
            self._exactly(self._padding, f"member {self._current!r}")
            self._padding = 0

    def _header(self) -> tarfile.TarInfo | None:
        """The next raw header, or None at the end of the archive."""
        start = self.offset
        block = self._read_full(BLOCK)
        if not block:
            if start == 0:
                raise ArchiveError(f"{self.what}: empty archive (not a tar)")
            return None  # a stream may end between members (Go's archive/tar agrees)
        if len(block) < BLOCK:
            if start == 0:
                raise ArchiveError(f"{self.what}: not a tar archive (only {len(block)} bytes)")
            raise ArchiveError(f"{self.what}: truncated: the tar header at offset {start} "
                               f"needs {BLOCK - len(block)} more bytes")
        if block == bytes(BLOCK):
            return None  # end-of-archive marker; what follows is padding
        try:
            return tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as e:
            if start == 0:
                raise ArchiveError(f"{self.what}: not a tar archive ({e})") from None
            raise ArchiveError(f"{self.what}: corrupt tar header at offset {start} ({e})") from None

    def _meta(self, info: tarfile.TarInfo) -> bytes:
        if info.size > CHUNK:
            raise ArchiveError(f"{self.what}: tar extension header of {info.size} bytes is too big")
        data = self._exactly(info.size, "a tar extension header")
        self._exactly(-info.size % BLOCK, "a tar extension header")
        return data

    def __iter__(self) -> Iterator[Member]:
        pax: dict[str, str] = {}
        long_name = long_link = None
        while True:
            self._skip_rest()
            info = self._header()
            if info is None:
                # Read what follows the end marker too: for a compressed stream
                # that is where the checksum is checked (gzip's CRC-32 trailer).
                while self._stream.read(CHUNK):
                    pass
                return
            if info.type == tarfile.XHDTYPE:
                pax.update(_pax_records(self._meta(info), self.what))
                continue
            if info.type == tarfile.XGLTYPE:
                self._meta(info)  # global PAX header: nothing we use
                continue
            if info.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                text = self._meta(info).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                if info.type == tarfile.GNUTYPE_LONGNAME:
                    long_name = text
                else:
                    long_link = text
                continue
            raw_name = pax.get("path") or long_name or info.name
            linkname = pax.get("linkpath") or long_link or info.linkname
            size = info.size
            if "size" in pax:
                try:
                    size = int(pax["size"])
                except ValueError:
                    raise ArchiveError(f"{self.what}: malformed PAX size for {raw_name!r}") from None
            pax, long_name, long_link = {}, None, None
            name = member_name(raw_name, self.what)
            if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE):
                kind = "file"
            elif info.type == tarfile.DIRTYPE:
                kind = "dir"
            elif info.type == tarfile.SYMTYPE:
                kind = "symlink"
            elif info.type == tarfile.LNKTYPE:
                kind = "hardlink"
            else:
                kind = "other"
            if info.type in HEADER_ONLY:
                size = 0  # links, devices, directories and FIFOs carry no data
            if size < 0 or size > self.max_size:
                raise ArchiveError(f"{self.what}: member {name or raw_name!r} declares {size} bytes; "
                                   f"refusing more than {self.max_size}")
            self._current = name or raw_name
            self._remaining = size
            self._padding = -size % BLOCK
            yield Member(name, kind, size, linkname)


# -- writing a tar --------------------------------------------------------------


def tar_header(info: tarfile.TarInfo) -> bytes:
    """The header block(s) of one entry: ustar, with PAX records only where needed."""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def padding(size: int) -> bytes:
    """Zeros that round ``size`` bytes of data up to whole 512-byte blocks."""
    return bytes(-size % BLOCK)


def entry(name: str, kind: bytes = tarfile.REGTYPE, *, size: int = 0, mode: int = 0o644,
          mtime: int = 0, uid: int = 0, gid: int = 0, linkname: str = "") -> tarfile.TarInfo:
    """A TarInfo with numeric owners and no user/group names (reproducible)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mode = mode
    info.mtime = mtime
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    info.linkname = linkname
    return info


# -- import ---------------------------------------------------------------------


def _open_source(source) -> tuple[BinaryIO, str, bool]:
    """(stream, name for the history comment, whether we opened it and must close it)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), "-", True
    if hasattr(source, "read"):
        return source, "-", False
    text = os.fspath(source)
    if isinstance(text, str) and text.startswith(("http://", "https://")):
        import requests

        try:
            response = requests.get(text, stream=True, timeout=30)
        except requests.RequestException as e:
            raise ArchiveError(f"import: cannot fetch {text}: {e}") from None
        if response.status_code != 200:
            response.close()
            raise ArchiveError(f"import: GET {text}: {response.status_code} {response.reason}")
        response.raw.decode_content = True  # undo a Content-Encoding, keep the file's own compression
        return response.raw, text, True
    if text == "-":
        import sys
        return sys.stdin.buffer, "-", False
    try:
        return open(text, "rb"), "-", True
    except FileNotFoundError:
        raise ArchiveError(f"import: open {text}: no such file or directory") from None
    except IsADirectoryError:
        raise ArchiveError(f"import: {text} is a directory, not a tarball") from None


def import_tarball(engine, source, repository: str | None = None, changes=None,
                   message: str | None = None):
    """``docker import``: make a one-layer image from a root filesystem tarball.

    ``source`` is a path, ``"-"`` (stdin), an ``http(s)://`` URL, bytes, or a
    binary file object; the tarball may be gzip, zstd, bzip2 or xz
    compressed. Returns the :class:`~engine.image.store.Image`.
    """
    from . import changes as change_rules
    from . import mediatype, reference
    from .manifest import architecture, canonical
    from .store import now_rfc3339

    tag = None
    if repository:
        ref = reference.parse(repository)
        if ref.digest is not None:
            raise UsageError(f"invalid reference format: {repository!r} has a digest; "
                             "import takes REPOSITORY[:TAG]")
        tag = str(ref)
    run_config = change_rules.apply({}, list(changes or []))  # a bad -c fails before any reading

    stream, source_name, close = _open_source(source)
    failed = True
    try:
        with engine.content.lease():
            engine.layout.create()
            reader, _ = open_stream(stream, "import")
            with engine.content.writer() as w:
                while chunk := reader.read(CHUNK):
                    w.write(chunk)
                if w.size == 0:
                    raise ArchiveError("import: the tarball is empty")
                diff_id = w.commit(what="imported layer")
                layer_size = w.size
            created = now_rfc3339()
            comment = message if message else f"Imported from {source_name}"
            config = {
                "architecture": architecture(),
                "os": "linux",
                "created": created,
                "comment": comment,
                "config": run_config,
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                "history": [{"created": created, "comment": comment}],
            }
            config_bytes = canonical(config)
            config_digest = engine.content.put(config_bytes, what="imported image config")
            manifest = {
                "schemaVersion": 2,
                "mediaType": mediatype.OCI_MANIFEST,
                "config": {"mediaType": mediatype.OCI_CONFIG, "digest": config_digest,
                           "size": len(config_bytes)},
                "layers": [{"mediaType": mediatype.OCI_LAYER, "digest": diff_id, "size": layer_size}],
            }
            manifest_digest = engine.content.put(canonical(manifest), what="imported image manifest")
            image = engine.image_store.load(manifest_digest, tags=[])
            try:
                # Extracting now checks that the input really is a (safe) tar,
                # as docker's layer store does when it registers the layer.
                engine.snapshots.ensure(image)
            except EngineError as e:
                raise ArchiveError(f"import: {e}") from None
            engine.image_store.add(manifest_digest, tag)
            failed = False
    finally:
        if close:
            stream.close()
        if failed:
            collect_garbage(engine)  # the lease is released: reclaim what we wrote
    return engine.image_store.load(manifest_digest)


def collect_garbage(engine) -> None:
    """Reclaim the blobs a failed load or import wrote (never hiding the failure itself)."""
    try:
        engine.collect_garbage()
    except Exception:
        pass
