"""Compressed layers: sniffing, streaming decompression, and the limits.

A layer blob is stored the way its manifest says (media types ``...tar``,
``...tar+gzip``, ``...tar+zstd``; OCI image-spec, media-types.md and
layer.md). Two digests describe it, and both are computed in one pass:

* the **digest** is the sha256 of the blob as stored: every byte read from
  the stream, compressed or not (the manifest lists it);
* the **diff_id** is the sha256 of the *uncompressed* tar (the image
  config's ``rootfs.diff_ids`` lists it). For an uncompressed layer the
  two are the same.

:class:`LayerSource` is the one pipeline both implementations of
:func:`~engine.layer.tar.apply_layer` read through, so they read, hash,
decompress and refuse in exactly the same way::

    stream --read 1 MiB--> sha256 (digest) --Decompressor--> limits --> sha256 (diff_id) --> tar chunks

Lifecycle of a :class:`LayerSource`: create it over the stream, iterate
:meth:`LayerSource.chunks` to the end (the tar reader stops at the end of
the archive and then *drains* the rest, so that the digests cover the whole
blob and the decompressor reaches the end of its stream, where gzip and
zstd keep their checksums), then read :meth:`~LayerSource.digest` and
:meth:`~LayerSource.diff_id`.

A tiny compressed blob can expand enormously (all zeros compress about
1000:1 with gzip and 32000:1 with zstd): a *decompression bomb*. The
:class:`Limits` refuse a layer that expands too much before it fills the
disk, and the decompressor never holds more than about 1 MiB of output in
memory whatever the ratio.

The reverse direction (:class:`Compressor`) is used by
:func:`~engine.layer.create.create_layer`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import zstandard
from isal import igzip_lib, isal_zlib

from ..errors import LayerError

CHUNK = 1 << 20  # how much is read from the stream, and the most one tar chunk holds

GZIP_MAGIC = b"\x1f\x8b"            # RFC 1952, 2.3.1 "Member header and trailer": ID1 ID2
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"    # RFC 8878, 3.1.1: Magic_Number 0xFD2FB528, little-endian

KINDS = ("none", "gzip", "zstd")

# Layer media types and how their blobs are compressed (OCI image-spec
# media-types.md; Docker's image manifest v2 schema 2 uses ".tar.gzip").
MEDIA_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
}


def layer_compression(media_type: str, what: str = "layer") -> str:
    """The ``compression`` argument of apply_layer for a layer media type.

    Raises :class:`~engine.errors.LayerError` for a media type that is not a
    layer we can read (``what`` names the layer in the message).
    """
    try:
        return MEDIA_TYPES[media_type]
    except KeyError:
        raise LayerError(f"{what}: media type {media_type} is not supported yet") from None


def sniff(head: bytes) -> str:
    """"gzip", "zstd" or "none", from the first bytes of a blob (its magic number).

    A zstd stream may also start with a *skippable* frame (RFC 8878, 3.1.2:
    magic 0x184D2A50 to 0x184D2A5F), as the seekable zstd layers of
    estargz and zstd:chunked do; containerd recognizes those too.
    """
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC) or (len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == b"\x2a\x4d\x18"):
        return "zstd"
    return "none"


def check_kind(compression: str) -> str:
    if compression not in KINDS + ("auto",):
        raise ValueError(f"compression must be 'auto', 'none', 'gzip' or 'zstd', not {compression!r}")
    return compression


# --- limits -------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """How big a layer may get, checked while it is read.

    * ``max_entry_size``: the size a file entry may declare in its header.
      Checked at the header, before anything is written.
    * ``max_uncompressed_size``: the whole tar stream, uncompressed.
    * ``max_ratio``: uncompressed bytes per compressed byte read so far,
      checked only once the output passes ``ratio_floor`` (small layers of
      zeros are legitimately very compressible; a bomb is not small).

    The defaults are far above any real image and far below a full disk.
    """

    max_entry_size: int = 64 << 30
    max_uncompressed_size: int = 256 << 30
    max_ratio: int = 1000
    ratio_floor: int = 256 << 20

    def check_entry(self, name: str, size: int) -> None:
        if size > self.max_entry_size:
            raise LayerError(f"layer entry {name!r} declares {size} bytes, "
                             f"more than the limit {self.max_entry_size}")

    def check_expansion(self, compressed: int, uncompressed: int, kind: str) -> None:
        """Refuse a layer that is too big, or (if ``kind`` is compressed) expands too much."""
        if uncompressed > self.max_uncompressed_size:
            raise LayerError(f"layer is larger than the limit of {self.max_uncompressed_size} bytes "
                             f"uncompressed ({uncompressed} bytes read so far)")
        if kind != "none" and uncompressed > self.ratio_floor and uncompressed > self.max_ratio * compressed:
            raise LayerError(f"layer expands more than {self.max_ratio}x ({uncompressed} bytes from "
                             f"{compressed} compressed): refusing a decompression bomb")


DEFAULT_LIMITS = Limits()


# --- decompression --------------------------------------------------------------


class Decompressor:
    """Streaming decompression of a whole gzip or zstd stream, bounded.

    Feed compressed bytes with :meth:`feed`, take uncompressed bytes with
    :meth:`read` until it returns ``b""`` (it needs more input), repeat;
    at the end of the input call :meth:`finish`, which refuses a stream
    that stops in the middle of a member or frame. :attr:`eof` is true at a
    boundary between members (frames), where the stream may end.

    One :meth:`read` returns at most about ``CHUNK`` bytes, whatever the
    compression ratio: that is what keeps a bomb out of memory.

    A stream may hold several gzip *members* (RFC 1952, 2.2: "a gzip file
    consists of a series of members") or zstd *frames* (RFC 8878, 3.1);
    their contents are concatenated. Bytes after the last one that do not
    start another one are refused (Go's ``compress/gzip``, which Docker and
    containerd use, refuses them too).
    """

    def __init__(self, kind: str):
        if kind not in ("gzip", "zstd"):
            raise ValueError(f"not a compression: {kind!r}")
        self.kind = kind
        self._impl = _GzipMembers() if kind == "gzip" else _ZstdFrames()

    def feed(self, data) -> None:
        self._impl.feed(data)

    def read(self, max_length: int = CHUNK) -> bytes:
        try:
            return self._impl.read(max_length)
        except (igzip_lib.IsalError, zstandard.ZstdError) as e:
            raise LayerError(f"corrupt {self.kind} stream: {e}") from None

    @property
    def eof(self) -> bool:
        return self._impl.eof

    def finish(self) -> None:
        if not self._impl.eof:
            part = "member" if self.kind == "gzip" else "frame"
            raise LayerError(f"truncated layer: the {self.kind} stream ends in the middle of a {part}")


class _GzipMembers:
    """gzip members, one after the other, through ISA-L's inflate (python-isal).

    ``IgzipDecompressor`` decodes one member (header, deflate data, CRC-32
    and size trailer, RFC 1952) and takes a ``max_length``; what follows
    its member is handed back as ``unused_data``, the start of the next.
    """

    def __init__(self):
        self._member = None     # the current member's decompressor, None between members
        self._input = b""       # bytes not yet given to a decompressor
        self._members = 0       # members completely read

    def feed(self, data) -> None:
        self._input = self._input + bytes(data) if self._input else bytes(data)

    def read(self, max_length: int) -> bytes:
        while True:
            if self._member is None:
                if not self._input:
                    return b""  # between members, nothing more yet
                if not GZIP_MAGIC.startswith(self._input[:2]):  # (ISA-L would wait for a whole header)
                    raise LayerError("corrupt gzip stream: a member does not start with the gzip magic number")
                self._member = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
            data, self._input = self._input, b""
            out = self._member.decompress(data, max_length)
            if self._member.eof:
                self._input = self._member.unused_data  # the next member starts there
                self._member = None
                self._members += 1
            if out:
                return out
            if self._member is not None and self._member.needs_input:
                return b""

    @property
    def eof(self) -> bool:
        return self._member is None and not self._input and self._members > 0


# zstd frame structure (RFC 8878, 3.1.1 and 3.1.2), just enough to find block boundaries.
_ZSTD_MAGIC_NUMBER = 0xFD2FB528
_SKIPPABLE_MASK, _SKIPPABLE_MAGIC = 0xFFFFFFF0, 0x184D2A50
_BLOCK_MAX = 128 << 10                      # Block_Maximum_Size is at most 128 KiB (3.1.1.2.4)
_BLOCKS_PER_READ = CHUNK // _BLOCK_MAX      # so one read() decodes at most CHUNK bytes
_DID_SIZE = (0, 1, 2, 4)                    # Dictionary_ID field size, by Dictionary_ID_Flag
_FCS_SIZE = (0, 2, 4, 8)                    # Frame_Content_Size field size, by its flag (0: see below)
_FRAME, _BLOCK, _CHECKSUM = "frame", "block", "checksum"


class _ZstdFrames:
    """zstd frames through python-zstandard, fed a few whole blocks at a time.

    zstandard's ``decompressobj().decompress(data)`` returns everything
    ``data`` decodes to: 1 MiB of a bomb would become 32 GiB in memory (a
    3-byte block header and 1 byte of an RLE block make 128 KiB). So this
    reads the frame structure itself and feeds the decompressor at most
    ``_BLOCKS_PER_READ`` *whole* blocks per call: each decodes to at most
    128 KiB, whatever the data. One decompressor object per frame; its
    ``eof`` must come exactly where the frame's last block (and checksum)
    ends. Skippable frames (user metadata) are dropped unread.
    """

    def __init__(self):
        self._input = bytearray()   # bytes not yet given to a decompressor
        self._state = _FRAME        # what starts at _input[0]
        self._checksum = False      # the current frame ends with a 4-byte checksum
        self._frame = None          # the current frame's decompressor
        self._frames = 0            # frames completely read

    def feed(self, data) -> None:
        self._input += data

    def read(self, max_length: int) -> bytes:
        # (max_length is CHUNK or more: _BLOCKS_PER_READ blocks never exceed it.)
        while True:
            size = self._whole_units()
            if size == 0:
                return b""
            if self._frame is None:
                self._frame = zstandard.ZstdDecompressor().decompressobj()
            with memoryview(self._input) as view, view[:size] as piece:  # no copy
                out = self._frame.decompress(piece)
            del self._input[:size]
            if self._state == _FRAME:  # the frame's last block (and checksum) went in
                if not self._frame.eof:
                    raise zstandard.ZstdError("frame does not end after its last block")
                self._frame = None
                self._frames += 1
            if out:
                return out

    def _whole_units(self) -> int:
        """How many bytes at the start of ``_input`` form whole units of one frame.

        Units are the frame header, blocks (at most ``_BLOCKS_PER_READ``)
        and the checksum. Updates ``_state`` to what follows them; drops
        skippable frames found at the start.
        """
        buf, pos, blocks = self._input, 0, 0
        while True:
            if self._state == _FRAME:
                if pos or len(buf) < 4:
                    return pos  # a frame ended here: decode it before starting the next
                magic = int.from_bytes(buf[0:4], "little")
                if magic & _SKIPPABLE_MASK == _SKIPPABLE_MAGIC:
                    if len(buf) < 8:
                        return 0
                    end = 8 + int.from_bytes(buf[4:8], "little")  # magic, Frame_Size, User_Data
                    if len(buf) < end:
                        return 0
                    del buf[:end]
                    self._frames += 1
                    continue
                if magic != _ZSTD_MAGIC_NUMBER:
                    raise zstandard.ZstdError(f"unknown frame magic 0x{magic:08x}")
                if len(buf) < 5:
                    return 0
                descriptor = buf[4]  # Frame_Header_Descriptor (3.1.1.1.1)
                single_segment = bool(descriptor & 0x20)
                fcs_flag = descriptor >> 6
                fcs = 1 if fcs_flag == 0 and single_segment else _FCS_SIZE[fcs_flag]
                header = 4 + 1 + (0 if single_segment else 1) + _DID_SIZE[descriptor & 3] + fcs
                if len(buf) < header:
                    return 0
                self._checksum = bool(descriptor & 0x04)
                self._state, pos = _BLOCK, header
            elif self._state == _BLOCK:
                if blocks == _BLOCKS_PER_READ or len(buf) - pos < 3:
                    return pos
                word = int.from_bytes(buf[pos:pos + 3], "little")  # Block_Header (3.1.1.2)
                last, kind, size = word & 1, (word >> 1) & 3, word >> 3
                if kind == 3:
                    raise zstandard.ZstdError("reserved block type")
                end = pos + 3 + (1 if kind == 1 else size)  # an RLE block holds one byte
                if len(buf) < end:
                    return pos
                pos, blocks = end, blocks + 1
                if last:
                    self._state = _CHECKSUM if self._checksum else _FRAME
            else:  # _CHECKSUM: Content_Checksum, 4 bytes
                if len(buf) - pos < 4:
                    return pos
                pos += 4
                self._state = _FRAME

    @property
    def eof(self) -> bool:
        return self._state == _FRAME and not self._input and self._frames > 0


# --- the pipeline both apply_layer implementations read through ----------------------


class LayerSource:
    """A layer blob read as uncompressed tar chunks, hashed and checked on the way.

    ``compression`` is "auto" (sniff the magic number), "none", "gzip" or
    "zstd". ``hash_tar=False`` leaves the diff_id of a compressed layer to
    the caller (the compiled implementation hashes the tar on another
    thread than the one decompressing); :meth:`diff_id` then returns None.
    """

    def __init__(self, stream, compression: str = "auto", limits: Limits | None = None,
                 hash_tar: bool = True):
        self._read = stream.read
        self.compression = check_kind(compression)
        self.limits = limits or DEFAULT_LIMITS
        self.kind = None            # what the blob turned out to be, once read
        self.size = 0               # bytes read from the stream
        self.uncompressed_size = 0  # tar bytes produced
        self._blob_hash = hashlib.sha256()
        self._tar_hash = hashlib.sha256() if hash_tar else None

    def read_raw(self) -> bytes:
        """Up to CHUNK bytes of the blob (fewer only at its end), hashed.

        Short reads are continued: a pipe or a socket returns what it has,
        and a chunk of whatever size is as good as a full one only to the
        stream, not to the limits, which are checked per chunk.
        """
        pieces, n = [], 0
        while n < CHUNK:
            data = self._read(CHUNK - n)
            if not data:  # b"" at EOF (None, from a non-blocking stream with no data, too)
                break
            pieces.append(data)
            n += len(data)
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if data:
            self._blob_hash.update(data)
            self.size += len(data)
        return data

    def produced(self, chunk) -> None:
        """Account for ``chunk`` of tar: limits first, then the diff_id."""
        self.uncompressed_size += len(chunk)
        self.limits.check_expansion(self.size, self.uncompressed_size, self.kind)
        if self._tar_hash is not None and self.kind != "none":
            self._tar_hash.update(chunk)

    def chunks(self):
        """The tar stream, in chunks of at most CHUNK bytes (a generator)."""
        data = self.read_raw()
        self.kind = sniff(data) if self.compression == "auto" else self.compression
        if self.kind == "none":
            while data:
                self.produced(data)
                yield data
                data = self.read_raw()
            return
        decompressor = Decompressor(self.kind)
        decompressor.feed(data)
        while True:
            out = decompressor.read(CHUNK)
            if out:
                self.produced(out)
                yield out
                continue
            data = self.read_raw()
            if not data:
                decompressor.finish()  # the input ended: it must end at a member/frame boundary
                return
            decompressor.feed(data)

    def digest(self) -> str:
        """sha256 of the blob as read: the layer's digest."""
        return "sha256:" + self._blob_hash.hexdigest()

    def diff_id(self) -> str | None:
        """sha256 of the uncompressed tar: the layer's diff_id."""
        if self.kind == "none":
            return self.digest()
        return None if self._tar_hash is None else "sha256:" + self._tar_hash.hexdigest()


# --- compression (create_layer) ---------------------------------------------------


class Compressor:
    """Compress a tar stream reproducibly: the same bytes in give the same bytes out.

    gzip goes through ISA-L (python-isal), whose gzip header has no file
    name, a modification time of 0 and OS 255 ("unknown"), so nothing about
    the moment or the machine leaks into the layer's digest (RFC 1952,
    2.3.1: MTIME 0 means "no time stamp is available"). zstd is written
    with a checksum and no content size. Both are fed the same 1 MiB blocks
    by both implementations of create_layer, so their outputs are the same.
    """

    def __init__(self, kind: str):
        self.kind = kind
        if kind == "gzip":
            self._obj = isal_zlib.compressobj(isal_zlib.ISAL_DEFAULT_COMPRESSION, isal_zlib.DEFLATED, 31)
        elif kind == "zstd":
            self._obj = zstandard.ZstdCompressor(level=3, write_checksum=True,
                                                 write_content_size=False).compressobj()
        elif kind == "none":
            self._obj = None
        else:
            raise ValueError(f"compression must be 'none', 'gzip' or 'zstd', not {kind!r}")

    def compress(self, data) -> bytes:
        return bytes(data) if self._obj is None else self._obj.compress(data)

    def flush(self) -> bytes:
        return b"" if self._obj is None else self._obj.flush()
