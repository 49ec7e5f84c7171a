"""Compressed layers: one pass that hashes the blob, decompresses it, hashes the tar.

The shared pieces (``engine.layer.compression``: sniffing, the bounded
decompressor, the limits) are tested directly; everything that goes through
``apply_layer`` runs with both implementations (the ``impl`` fixture), and
the property tests feed both the same random compressed trees, cut into
random gzip members and zstd frames, read in random short reads or from a
real file, intact or corrupted, and require identical outcomes.

These tests need root (apply_layer chowns and makes device nodes).
"""

from __future__ import annotations

import gzip
import io
import os
import random
import re

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import DigestMismatch, LayerError
from engine.layer.compression import (CHUNK, MEDIA_TYPES, Decompressor, LayerSource, Limits, layer_compression,
                                      sniff)
from engine.layer.tar import LayerResult
from test_layer_apply import (SETTINGS, ChunkyRead, ChunkyReadinto, D, F, S, both_impls, chunkings, load_impl,
                              make_tar, raw_header, raw_tar, run, sha, trees)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: chown, mknod, trusted.* xattrs")


@pytest.fixture(params=["native", "python"])
def impl(request):
    """The apply_layer function of each implementation."""
    return load_impl(request.param)


def gz(data: bytes, cuts=()) -> bytes:
    """``data`` as gzip, one member per piece between the ``cuts`` (offsets)."""
    edges = [0, *sorted(cuts), len(data)]
    return b"".join(gzip.compress(data[a:b], mtime=0) for a, b in zip(edges, edges[1:]))


SKIPPABLE = b"\x5a\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"notes"  # RFC 8878 3.1.2


def zst(data: bytes, cuts=(), skippable: bool = False, checksum: bool = True) -> bytes:
    """``data`` as zstd, one frame per piece between the ``cuts``, skippable frames between them."""
    edges = [0, *sorted(cuts), len(data)]
    compressor = zstandard.ZstdCompressor(write_checksum=checksum)
    frames = [compressor.compress(data[a:b]) for a, b in zip(edges, edges[1:])]
    glue = SKIPPABLE if skippable else b""
    return glue + glue.join(frames) + glue


COMPRESS = {"none": lambda data: data, "gzip": gz, "zstd": zst}

LAYER = make_tar(D("etc"), F("etc/hostname", b"box\n"), S("etc/mtab", "/proc/mounts"),
                 F("bin/busybox", random.Random(5).randbytes(300_000), mode=0o755))


def compressed_result(blob: bytes, tar: bytes, entries: int) -> LayerResult:
    return LayerResult(sha(blob), sha(tar), len(blob), len(tar), entries)


# --- the shared pieces -----------------------------------------------------------


@pytest.mark.parametrize("head, kind", [
    (b"\x1f\x8b\x08\x00", "gzip"), (b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd\x00", "zstd"),
    (b"\x28\xb5\x2f", "none"), (b"\x1f", "none"), (b"", "none"), (b"etc/\0\0\0", "none"),
    (SKIPPABLE, "zstd"), (b"\x5f\x2a\x4d\x18", "zstd"), (b"\x60\x2a\x4d\x18", "none"), (SKIPPABLE[:3], "none"),
])
def test_sniff(head, kind):
    assert sniff(head) == kind


@pytest.mark.parametrize("media_type, kind", sorted(MEDIA_TYPES.items()))
def test_media_types(media_type, kind):
    assert layer_compression(media_type) == kind


def test_unknown_media_type_is_refused():
    with pytest.raises(LayerError, match=r"^layer sha256:ab: media type application/x-tar is not supported yet$"):
        layer_compression("application/x-tar", "layer sha256:ab")


def test_limits_messages():
    limits = Limits(max_entry_size=10, max_uncompressed_size=100, max_ratio=5, ratio_floor=20)
    limits.check_entry("f", 10)
    with pytest.raises(LayerError, match=r"^layer entry 'f' declares 11 bytes, more than the limit 10$"):
        limits.check_entry("f", 11)
    limits.check_expansion(4, 20, "gzip")  # at the floor: not checked yet
    limits.check_expansion(5, 25, "gzip")  # exactly 5x
    with pytest.raises(LayerError, match=re.escape("layer expands more than 5x (26 bytes from 5 compressed): "
                                                   "refusing a decompression bomb")):
        limits.check_expansion(5, 26, "gzip")
    limits.check_expansion(1, 100, "none")  # an uncompressed layer has no ratio
    with pytest.raises(LayerError, match=re.escape("layer is larger than the limit of 100 bytes uncompressed "
                                                   "(101 bytes read so far)")):
        limits.check_expansion(101, 101, "none")


def drain(d: Decompressor, pieces) -> tuple[bytes, int]:
    """Feed ``pieces`` one by one, reading all it gives; (output, largest read)."""
    out, largest = bytearray(), 0
    for piece in pieces:
        d.feed(piece)
        while chunk := d.read():
            out += chunk
            largest = max(largest, len(chunk))
    return bytes(out), largest


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 30])
def test_decompressor_reads_every_member_and_frame(kind, step):
    data = random.Random(1).randbytes(50_000) + bytes(200_000)
    blob = gz(data, [10, 10, 30_000]) if kind == "gzip" else zst(data, [10, 30_000], skippable=True)
    d = Decompressor(kind)
    out, _ = drain(d, [blob[i:i + step] for i in range(0, len(blob), step)])
    assert out == data
    assert d.eof
    d.finish()


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_decompressor_never_returns_more_than_a_chunk(kind):
    # 256 MiB of zeros: 250 KB of gzip, 8 KB of zstd (whose RLE blocks make
    # 128 KiB out of 4 bytes). Fed at once, it still comes out 1 MiB at a time.
    zeros = bytes(256 << 20)
    blob = gz(zeros) if kind == "gzip" else zst(zeros)
    assert len(blob) < 300_000
    d = Decompressor(kind)
    d.feed(blob)
    total = largest = 0
    while chunk := d.read():
        total += len(chunk)
        largest = max(largest, len(chunk))
    assert total == len(zeros) and largest <= CHUNK
    d.finish()


@pytest.mark.parametrize("kind, blob, message", [
    ("gzip", b"", "truncated layer: the gzip stream ends in the middle of a member"),
    ("gzip", gz(b"x" * 1000)[:-4], "truncated layer: the gzip stream ends in the middle of a member"),
    ("zstd", b"", "truncated layer: the zstd stream ends in the middle of a frame"),
    ("zstd", zst(b"x" * 1000)[:-1], "truncated layer: the zstd stream ends in the middle of a frame"),
    ("zstd", zst(b"x" * 1000)[:5], "truncated layer: the zstd stream ends in the middle of a frame"),
])
def test_decompressor_refuses_a_stream_that_stops_early(kind, blob, message):
    d = Decompressor(kind)
    drain(d, [blob])
    assert not d.eof
    with pytest.raises(LayerError, match=f"^{re.escape(message)}$"):
        d.finish()



def test_source_continues_short_reads_and_hashes_everything():
    tar = make_tar(F("a", random.Random(2).randbytes(3 << 20)))
    blob = gz(tar, [100_000])
    stream = ChunkyRead(blob, seed=3, max_chunk=10_000)
    source = LayerSource(stream)
    assert b"".join(bytes(c) for c in source.chunks()) == tar
    assert stream.calls > len(blob) // 10_000
    assert (source.kind, source.digest(), source.diff_id()) == ("gzip", sha(blob), sha(tar))
    assert (source.size, source.uncompressed_size) == (len(blob), len(tar))


def test_bad_compression_argument(impl, tmp_path):
    with pytest.raises(ValueError, match="compression must be"):
        impl(io.BytesIO(LAYER), tmp_path, compression="bz2")
    assert os.listdir(tmp_path) == []


# --- apply_layer on compressed layers --------------------------------------------------


@pytest.mark.parametrize("kind", ["none", "gzip", "zstd"])
@pytest.mark.parametrize("compression", ["auto", "explicit"])
@pytest.mark.parametrize("as_file", [False, True], ids=["stream", "file"])
def test_compressed_layers_apply(impl, tmp_path, kind, compression, as_file):
    blob = COMPRESS[kind](LAYER)
    root = tmp_path / "root"
    root.mkdir()
    arg = kind if compression == "explicit" else "auto"
    if as_file:
        (tmp_path / "blob").write_bytes(blob)
        with open(tmp_path / "blob", "rb") as f:
            result = impl(f, root, compression=arg)
            assert f.tell() == len(blob)  # read to its end
    else:
        result = impl(io.BytesIO(blob), root, compression=arg)
    assert result == compressed_result(blob, LAYER, 4)
    assert (root / "bin/busybox").read_bytes() == random.Random(5).randbytes(300_000)
    assert os.readlink(root / "etc/mtab") == "/proc/mounts"


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_expected_digest_and_diff_id(impl, tmp_path, kind):
    blob = COMPRESS[kind](LAYER)
    result = impl(io.BytesIO(blob), tmp_path, expected_digest=sha(blob), expected_diff_id=sha(LAYER),
                  compression=kind)
    assert (result.digest, result.diff_id) == (sha(blob), sha(LAYER))


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_old_positional_call_checks_the_blob_digest(impl, tmp_path, kind):
    blob = COMPRESS[kind](LAYER)
    assert impl(io.BytesIO(blob), tmp_path / "ok" if (tmp_path / "ok").mkdir() is None else None,
                sha(blob)).diff_id == sha(LAYER)
    (tmp_path / "bad").mkdir()
    with pytest.raises(DigestMismatch) as info:
        impl(io.BytesIO(blob), tmp_path / "bad", sha(LAYER))  # the diff_id is not the digest
    assert str(info.value) == f"layer: digest mismatch: expected {sha(LAYER)}, got {sha(blob)}"


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_wrong_digest_and_wrong_diff_id(impl, tmp_path, kind):
    # Junk after the end of the archive, inside the compressed stream: the
    # diff_id covers it (the decompressor is drained to its end).
    tar = LAYER + b"junk after the end of the archive"
    blob = COMPRESS[kind](tar)
    (tmp_path / "a").mkdir()
    with pytest.raises(DigestMismatch) as info:
        impl(io.BytesIO(blob), tmp_path / "a", expected_digest=sha(blob + b"x"), expected_diff_id=sha(tar))
    assert str(info.value) == f"layer: digest mismatch: expected {sha(blob + b'x')}, got {sha(blob)}"
    (tmp_path / "b").mkdir()
    with pytest.raises(DigestMismatch) as info:
        impl(io.BytesIO(blob), tmp_path / "b", expected_digest=sha(blob), expected_diff_id=sha(LAYER))
    assert str(info.value) == f"layer diff_id: digest mismatch: expected {sha(LAYER)}, got {sha(tar)}"
    assert (info.value.expected, info.value.actual) == (sha(LAYER), sha(tar))


def test_uncompressed_diff_id_is_the_digest(impl, tmp_path):
    with pytest.raises(DigestMismatch, match="^layer diff_id: digest mismatch"):
        impl(io.BytesIO(LAYER), tmp_path, expected_digest=sha(LAYER), expected_diff_id=sha(b""))


def test_mapped_file_from_its_current_position(impl, tmp_path):
    # The compiled implementation maps regular files: from the stream's position, not the file's start.
    path = tmp_path / "blob"
    path.write_bytes(b"preamble" + LAYER)
    root = tmp_path / "root"
    root.mkdir()
    with open(path, "rb") as f:
        f.read(8)
        assert impl(f, root) == compressed_result(LAYER, LAYER, 4)
        assert f.tell() == 8 + len(LAYER)


TAR_4MIB_ZEROS = make_tar(F("zeros", bytes(4 << 20)))
BOMB_LIMITS = Limits(max_ratio=100, ratio_floor=1 << 20)
BOMB = "layer expands more than 100x ({} bytes from {} compressed): refusing a decompression bomb"

# name, blob, compression, limits, message (a regular expression)
REFUSED = [
    ("truncated gzip trailer", gz(LAYER)[:-3], "gzip", None,
     "truncated layer: the gzip stream ends in the middle of a member"),
    ("truncated gzip data", gz(LAYER)[:2000], "auto", None,
     "truncated layer: the gzip stream ends in the middle of a member"),
    ("truncated gzip header", gz(LAYER)[:5], "auto", None,
     "truncated layer: the gzip stream ends in the middle of a member"),
    ("corrupt gzip crc", gz(LAYER)[:-8] + bytes([gz(LAYER)[-8] ^ 1]) + gz(LAYER)[-7:], "gzip", None,
     "corrupt gzip stream: Error -6 Incorrect checksum found"),
    ("corrupt gzip size", gz(LAYER)[:-1] + bytes([gz(LAYER)[-1] ^ 1]), "gzip", None,
     "corrupt gzip stream: Error -6 Incorrect checksum found"),
    ("garbage after gzip", gz(LAYER) + b"garbage!", "gzip", None,
     "corrupt gzip stream: a member does not start with the gzip magic number"),
    ("zeros after gzip", gz(LAYER) + bytes(512), "gzip", None,
     "corrupt gzip stream: a member does not start with the gzip magic number"),
    ("plain tar said to be gzip", LAYER, "gzip", None,
     "corrupt gzip stream: a member does not start with the gzip magic number"),
    ("empty gzip", b"", "gzip", None, "truncated layer: the gzip stream ends in the middle of a member"),
    ("gzip said to be plain", gz(LAYER), "none", None, "corrupt tar header at offset 0"),
    ("truncated zstd", zst(LAYER)[:-2], "zstd", None,
     "truncated layer: the zstd stream ends in the middle of a frame"),
    ("truncated zstd data", zst(LAYER)[:3000], "auto", None,
     "truncated layer: the zstd stream ends in the middle of a frame"),
    ("corrupt zstd checksum", zst(LAYER)[:-1] + bytes([zst(LAYER)[-1] ^ 1]), "zstd", None,
     "corrupt zstd stream: zstd decompressor error: Restored data doesn't match checksum"),
    ("garbage after zstd", zst(LAYER) + b"garbage!", "zstd", None,
     "corrupt zstd stream: unknown frame magic 0x62726167"),
    ("reserved zstd block", zst(b"")[:6] + b"\x07\x00\x00", "zstd", None,  # last block, type 3
     "corrupt zstd stream: reserved block type"),
    ("gzip said to be zstd", gz(LAYER), "zstd", None, "corrupt zstd stream: unknown frame magic 0x00088b1f"),
    ("gzip bomb", gz(TAR_4MIB_ZEROS), "auto", BOMB_LIMITS,
     re.escape(BOMB.format(2 << 20, len(gz(TAR_4MIB_ZEROS))))),
    ("zstd bomb", zst(TAR_4MIB_ZEROS), "auto", BOMB_LIMITS,
     BOMB.format("[0-9]+", len(zst(TAR_4MIB_ZEROS))).replace("(", r"\(").replace(")", r"\)")),
    ("too big uncompressed", gz(TAR_4MIB_ZEROS), "gzip", Limits(max_uncompressed_size=3 << 20),
     re.escape(f"layer is larger than the limit of {3 << 20} bytes uncompressed ({4 << 20} bytes read so far)")),
    ("too big plain", TAR_4MIB_ZEROS, "none", Limits(max_uncompressed_size=3 << 20),
     re.escape(f"layer is larger than the limit of {3 << 20} bytes uncompressed ({4 << 20} bytes read so far)")),
    ("absurd entry size", raw_tar(raw_header(b"huge", patch={124: b"\x80" + (1 << 40).to_bytes(11, "big")})),
     "auto", None,
     "layer entry 'huge' declares 1099511627776 bytes, more than the limit 68719476736"),
    ("entry over a small limit", gz(make_tar(F("big", bytes(2000)))), "auto", Limits(max_entry_size=1999),
     "layer entry 'big' declares 2000 bytes, more than the limit 1999"),
    ("whiteout over the limit", make_tar(F(".wh.big", bytes(2000))), "auto", Limits(max_entry_size=1999),
     r"layer entry '\.wh\.big' declares 2000 bytes, more than the limit 1999"),
]


@pytest.mark.parametrize("as_file", [False, True], ids=["stream", "file"])
@pytest.mark.parametrize("blob, compression, limits, message", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_refused_layers(impl, tmp_path, blob, compression, limits, message, as_file):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "blob").write_bytes(blob)
    with open(tmp_path / "blob", "rb") as f, pytest.raises(LayerError) as exc:
        stream = f if as_file else ChunkyReadinto(blob, seed=1, max_chunk=70_000)
        impl(stream, root, compression=compression, limits=limits)
    assert type(exc.value) is LayerError
    assert re.fullmatch(message, str(exc.value)), str(exc.value)


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_a_bomb_is_stopped_before_it_fills_the_disk(impl, tmp_path, kind):
    # The ratio is checked against what was read so far: here, all of the
    # blob in the first read. So at most 100x that, and one more chunk.
    blob = COMPRESS[kind](make_tar(F("zeros", bytes(64 << 20))))
    with pytest.raises(LayerError, match="refusing a decompression bomb"):
        impl(io.BytesIO(blob), tmp_path, limits=BOMB_LIMITS)
    assert os.lstat(tmp_path / "zeros").st_size <= 100 * len(blob) + CHUNK


def test_an_absurd_entry_is_refused_before_anything_is_written(impl, tmp_path):
    data = raw_tar(raw_header(b"dir/huge", patch={124: b"\x80" + (1 << 40).to_bytes(11, "big")}) + b"x" * 512)
    with pytest.raises(LayerError, match="declares 1099511627776 bytes"):
        impl(io.BytesIO(data), tmp_path)
    assert os.listdir(tmp_path) == []  # not even the parent directory


# --- properties: random compressed trees, both implementations -------------------------------

COMPRESSED_SETTINGS = settings(SETTINGS, max_examples=int(os.environ.get("LAYER_EXAMPLES", 150)) // 3)


@st.composite
def compressed(draw, tar: bytes):
    """``tar`` compressed some random way: (blob, kind)."""
    kind = draw(st.sampled_from(["none", "gzip", "zstd"]))
    cuts = draw(st.lists(st.integers(0, len(tar)), max_size=3))
    if kind == "gzip":
        return gz(tar, cuts), kind
    if kind == "zstd":
        return zst(tar, cuts, skippable=draw(st.booleans()), checksum=draw(st.booleans())), kind
    return tar, kind


@COMPRESSED_SETTINGS
@given(tree=trees(), chunking=chunkings, data=st.data())
def test_property_compressed_trees_extract_identically(tmp_path, tree, chunking, data):
    blob, kind = data.draw(compressed(tree.tar))
    compression = data.draw(st.sampled_from(["auto", kind]))
    native, python = both_impls()
    (n_result, n_snap), (p_result, p_snap) = (
        run(fn, blob, chunking, tmp_path, mask_recent=False, compression=compression) for fn in (native, python))
    assert n_result == p_result == compressed_result(blob, tree.tar, tree.entries)
    assert n_snap == p_snap == tree.expected


@COMPRESSED_SETTINGS
@given(tree=trees(), chunking=chunkings, data=st.data(),
       mutations=st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), max_size=3),
       cut=st.one_of(st.none(), st.integers(0, 2**20)),
       limits=st.sampled_from([None, Limits(max_ratio=2, ratio_floor=100_000), Limits(max_entry_size=1000),
                               Limits(max_uncompressed_size=200_000)]))
def test_property_corrupted_compressed_layers_agree(tmp_path, tree, chunking, data, mutations, cut, limits):
    """Random bytes of the blob changed, a random cut, tight limits: the same outcome either way."""
    blob, kind = data.draw(compressed(tree.tar))
    blob = bytearray(blob)
    for offset, value in mutations:
        if blob:
            blob[offset % len(blob)] = value
    if cut is not None:
        blob = blob[:cut % (len(blob) + 1)]
    native, python = both_impls()
    assert run(native, bytes(blob), chunking, tmp_path, limits=limits) == \
        run(python, bytes(blob), chunking, tmp_path, limits=limits)
