"""apply_layer: a tar stream becomes a directory tree, hashed on the way.

Every behavioural test runs twice through the ``impl`` fixture: once with
the compiled ``engine._native.layers`` and once with its Python twin
``engine.layer.tar``. The property tests feed both the same random trees
(and random garbage) through streams that return random short reads, and
require identical trees, results and errors.

These tests need root (chown, mknod, trusted.* xattrs).
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import random
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine.errors import DigestMismatch, LayerError, UnsafeLayerEntry
from engine.layer.tar import LayerResult

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: chown, mknod, trusted.* xattrs")

IMPL_NAMES = ["native", "python"]


def load_impl(name: str):
    if name == "native":
        try:
            from engine._native import layers
        except ImportError:
            pytest.skip("engine._native.layers is not built (test_native_layers_is_built fails)")
        return layers.apply_layer
    from engine.layer import tar

    return tar.apply_layer


@pytest.fixture(params=IMPL_NAMES)
def impl(request):
    """The apply_layer function of each implementation."""
    return load_impl(request.param)


def test_native_layers_is_built():
    """Fails (never skips) when the compiled module is missing: a broken build must not pass."""
    try:
        import engine._native.layers  # noqa: F401
    except ImportError as e:
        pytest.fail(f"engine._native.layers is not built ({e}); run `pip install --no-build-isolation -e .`")


@pytest.mark.parametrize("pure, expected", [("", ["engine._native.layers"] * 2),
                                            ("1", ["engine.layer.tar", "engine.layer.create"])])
def test_engine_layer_picks_the_implementation(pure, expected):
    env = {k: v for k, v in os.environ.items() if k != "DOCKYARD_PURE"}
    env["DOCKYARD_PURE"] = pure
    out = subprocess.run(
        [sys.executable, "-c", "import engine.layer as l; print(l.apply_layer.__module__); "
                               "print(l.create_layer.__module__); "
                               "import engine.layer.writer; print(l.LayerResult.__module__)"],
        capture_output=True, text=True, env=env, cwd=REPO, check=True)
    assert out.stdout.split() == [*expected, "engine.layer.tar"]


# --- building tars ----------------------------------------------------------

KINDS = {
    "file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
}


def member(name, kind="file", data=b"", *, mode=None, uid=0, gid=0, mtime=1_500_000_000,
           link="", dev=(0, 0), pax=None):
    info = tarfile.TarInfo(name)
    info.type = KINDS[kind]
    info.mode = mode if mode is not None else (0o755 if kind == "dir" else 0o644)
    info.uid, info.gid, info.mtime = uid, gid, mtime
    info.uname = info.gname = ""
    info.linkname = link
    info.size = len(data) if kind == "file" else 0
    info.devmajor, info.devminor = dev
    if pax:
        info.pax_headers = pax
    return info, data


def F(name, data=b"", **kw):
    return member(name, "file", data, **kw)


def D(name, **kw):
    return member(name, "dir", **kw)


def S(name, target, **kw):
    return member(name, "symlink", link=target, **kw)


def H(name, target, **kw):
    return member(name, "hardlink", link=target, **kw)


def make_tar(*members, format=tarfile.PAX_FORMAT, pax_headers=None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=format, pax_headers=pax_headers) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def raw_header(name=b"f", type=b"0", *, size=0, mode=0o644, uid=0, gid=0, mtime=1_500_000_000,
               linkname=b"", magic=b"ustar\x0000", prefix=b"", dev=(0, 0), patch=None,
               checksum="unsigned") -> bytes:
    """One 512-byte ustar header built by hand, ``patch`` ({offset: bytes}) applied last."""
    b = bytearray(512)

    def put(offset, width, value):
        b[offset:offset + width] = value.ljust(width, b"\0")[:width]

    put(0, 100, name)
    put(100, 8, b"%07o\0" % mode)
    put(108, 8, b"%07o\0" % uid)
    put(116, 8, b"%07o\0" % gid)
    put(124, 12, b"%011o\0" % size)
    put(136, 12, b"%011o\0" % mtime)
    b[156:157] = type
    put(157, 100, linkname)
    b[257:265] = magic
    put(329, 8, b"%07o\0" % dev[0])
    put(337, 8, b"%07o\0" % dev[1])
    put(345, 155, prefix)
    for offset, value in (patch or {}).items():
        b[offset:offset + len(value)] = value
    b[148:156] = b" " * 8
    if checksum == "unsigned":
        total = sum(b)
    elif checksum == "signed":
        total = sum(c - 256 if c >= 128 else c for c in b)
    else:
        total = checksum
    b[148:156] = b"%06o\0 " % total
    return bytes(b)


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def raw_entry(data=b"", **kw) -> bytes:
    kw.setdefault("size", len(data))
    return raw_header(**kw) + pad(data)


def pax_record(key: bytes, value: bytes) -> bytes:
    """"<length> key=value\\n" where length counts its own digits too."""
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def pax_entry(*records: tuple[bytes, bytes], type=b"x", raw: bytes | None = None) -> bytes:
    data = raw if raw is not None else b"".join(pax_record(k, v) for k, v in records)
    return raw_entry(data, name=b"././@PaxHeader", type=type)


def raw_tar(*parts: bytes, end=True) -> bytes:
    return b"".join(parts) + (bytes(1024) if end else b"")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def uncompressed(data: bytes, entries: int) -> LayerResult:
    """The result of applying the uncompressed tar ``data``: digest and diff_id are the same."""
    return LayerResult(sha(data), sha(data), len(data), len(data), entries)


# --- streams ----------------------------------------------------------------


class ChunkyReadinto:
    """A stream whose readinto() returns a random number of bytes (>= 1 until EOF)."""

    def __init__(self, data: bytes, seed: int = 0, max_chunk: int = 1 << 20, spy=None):
        self._data = memoryview(bytes(data))
        self._pos = 0
        self._rng = random.Random(seed)
        self._max = max_chunk
        self._spy = spy
        self.calls = 0

    def _take(self, n: int) -> memoryview:
        if self._spy:
            self._spy()
        self.calls += 1
        n = min(n, self._rng.randint(1, self._max), len(self._data) - self._pos)
        out = self._data[self._pos:self._pos + n]
        self._pos += n
        return out

    def readinto(self, buffer) -> int:
        chunk = self._take(len(buffer))
        buffer[:len(chunk)] = chunk
        return len(chunk)

    def read(self, n: int = -1) -> bytes:
        return bytes(self._take(n if n >= 0 else len(self._data)))


class ChunkyRead:
    """The same, with read() only (no readinto)."""

    def __init__(self, data: bytes, seed: int = 0, max_chunk: int = 1 << 20):
        self._inner = ChunkyReadinto(data, seed, max_chunk)

    @property
    def calls(self):
        return self._inner.calls

    def read(self, n: int = -1) -> bytes:
        return self._inner.read(n)


def apply(impl, data: bytes, root, **kw) -> LayerResult:
    return impl(io.BytesIO(data), root, **kw)


# --- looking at the result --------------------------------------------------

RECENT_NS = 1_600_000_000 * 10**9  # test mtimes are older: newer ones were set by the kernel


def snapshot(root, mask_recent: bool = False, xattrs: bool = False) -> dict:
    """Every path under ``root``: type, mode, owner, mtime, content/target/device, hard-link group.

    ``xattrs``: also every extended attribute but overlayfs' own.
    """
    root = os.fsencode(root)
    out: dict[bytes, dict] = {}
    inodes: dict[tuple[int, int], list[bytes]] = {}

    def visit(path: bytes, rel: bytes):
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            key = rel + name
            st_ = os.lstat(full)
            mode = st_.st_mode
            info = {"uid": st_.st_uid, "gid": st_.st_gid, "mtime": st_.st_mtime_ns,
                    "mode": None if stat.S_ISLNK(mode) else stat.S_IMODE(mode)}
            if mask_recent and info["mtime"] > RECENT_NS:
                info["mtime"] = "recent"
            if xattrs:
                info["xattrs"] = {n: os.getxattr(full, n, follow_symlinks=False)
                                  for n in sorted(os.listxattr(full, follow_symlinks=False))
                                  if not n.startswith("trusted.overlay.")}
            if stat.S_ISDIR(mode):
                info["kind"] = "dir"
                info["opaque"] = opaque(full)
            elif stat.S_ISREG(mode):
                info["kind"] = "file"
                with open(full, "rb") as f:
                    info["data"] = f.read()
            elif stat.S_ISLNK(mode):
                info["kind"] = "symlink"
                info["data"] = os.readlink(full)
            elif stat.S_ISFIFO(mode):
                info["kind"] = "fifo"
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                info["kind"] = "chr" if stat.S_ISCHR(mode) else "blk"
                info["data"] = (os.major(st_.st_rdev), os.minor(st_.st_rdev))
            if not stat.S_ISDIR(mode):
                inodes.setdefault((st_.st_dev, st_.st_ino), []).append(key)
            out[key] = info
            if stat.S_ISDIR(mode):
                visit(full, key + b"/")

    visit(root, b"")
    for paths in inodes.values():
        for p in paths:
            out[p]["links"] = tuple(sorted(paths))
    out[b"."] = {"opaque": opaque(root)}
    return out


def opaque(path) -> bytes | None:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False)
    except OSError:
        return None


# --- the basics ---------------------------------------------------------------


def test_files_dirs_symlinks_hardlinks(impl, tmp_path):
    data = make_tar(
        D("etc", mode=0o755, mtime=1_000_000_000),
        F("etc/hostname", b"box\n", mode=0o644, mtime=1_000_000_001),
        S("etc/mtab", "/proc/mounts", mtime=1_000_000_002),
        D("bin", mode=0o711, mtime=1_000_000_003),
        F("bin/sh", b"\x7fELF" * 100, mode=0o755, mtime=1_000_000_004),
        H("bin/ash", "bin/sh"),
    )
    result = apply(impl, data, tmp_path)
    assert type(result) is LayerResult
    assert result == uncompressed(data, 6)
    snap = snapshot(tmp_path)
    assert snap[b"etc/hostname"] == {"kind": "file", "data": b"box\n", "mode": 0o644, "uid": 0, "gid": 0,
                                     "mtime": 1_000_000_001 * 10**9, "links": (b"etc/hostname",)}
    assert snap[b"etc/mtab"]["data"] == b"/proc/mounts"
    assert snap[b"etc/mtab"]["mtime"] == 1_000_000_002 * 10**9
    assert snap[b"bin"]["mode"] == 0o711
    assert snap[b"bin"]["mtime"] == 1_000_000_003 * 10**9
    assert snap[b"etc"]["mtime"] == 1_000_000_000 * 10**9
    assert snap[b"bin/sh"]["links"] == (b"bin/ash", b"bin/sh")
    assert snap[b"bin/ash"]["data"] == b"\x7fELF" * 100
    assert sorted(snap) == [b".", b"bin", b"bin/ash", b"bin/sh", b"etc", b"etc/hostname", b"etc/mtab"]


def test_root_may_be_str_path_or_bytes(impl, tmp_path):
    data = make_tar(F("x", b"1"))
    for i, kind in enumerate((str, Path, os.fsencode)):
        root = tmp_path / str(i)
        root.mkdir()
        apply(impl, data, kind(root))
        assert (root / "x").read_bytes() == b"1"


def test_missing_root_is_an_os_error(impl, tmp_path):
    with pytest.raises(FileNotFoundError) as exc:
        apply(impl, make_tar(F("x")), tmp_path / "nope")
    assert exc.value.filename == str(tmp_path / "nope")  # as os.open says it


def test_empty_stream(impl, tmp_path):
    assert apply(impl, b"", tmp_path) == uncompressed(b"", 0)
    assert os.listdir(tmp_path) == []


def test_all_twelve_mode_bits(impl, tmp_path):
    data = make_tar(F("suid", b"x", mode=0o4755), F("sgid", mode=0o2711), F("all", mode=0o7777),
                    F("none", mode=0), D("tmp", mode=0o1777), D("sgiddir", mode=0o2775),
                    member("fifo", "fifo", mode=0o4640))
    apply(impl, data, tmp_path)
    modes = {name: stat.S_IMODE(os.lstat(tmp_path / name).st_mode)
             for name in ("suid", "sgid", "all", "none", "tmp", "sgiddir", "fifo")}
    assert modes == {"suid": 0o4755, "sgid": 0o2711, "all": 0o7777, "none": 0, "tmp": 0o1777,
                     "sgiddir": 0o2775, "fifo": 0o4640}


def test_owners_are_applied_without_following_symlinks(impl, tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"")
    root = tmp_path / "root"
    root.mkdir()
    data = make_tar(D("d", uid=1001, gid=1002), F("d/f", uid=1003, gid=1004),
                    S("d/l", str(target), uid=1005, gid=1006),
                    member("d/p", "fifo", uid=1007, gid=1008))
    apply(impl, data, root)
    owners = {n: (os.lstat(root / "d" / n).st_uid, os.lstat(root / "d" / n).st_gid) for n in ("f", "l", "p")}
    assert owners == {"f": (1003, 1004), "l": (1005, 1006), "p": (1007, 1008)}
    assert (os.lstat(root / "d").st_uid, os.lstat(root / "d").st_gid) == (1001, 1002)
    assert os.lstat(target).st_uid == 0  # the symlink's target was not chowned


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu-base256", "pax"])
def test_big_uids(impl, tmp_path, fmt):
    data = make_tar(F("f", b"x", uid=3_000_000, gid=4_000_000_000), format=fmt)
    apply(impl, data, tmp_path)
    st_ = os.lstat(tmp_path / "f")
    assert (st_.st_uid, st_.st_gid) == (3_000_000, 4_000_000_000)


def test_mtimes_fractional_and_negative(impl, tmp_path):
    data = make_tar(F("frac", mtime=1_700_000_000.25), F("neg", mtime=-2), F("negfrac", mtime=-1.5),
                    S("link", "x", mtime=1_600_000_000.75), D("dir", mtime=1_234_567_890.5))
    apply(impl, data, tmp_path)
    ns = {n: os.lstat(tmp_path / n).st_mtime_ns for n in ("frac", "neg", "negfrac", "link", "dir")}
    assert ns == {"frac": 1_700_000_000_250_000_000, "neg": -2_000_000_000, "negfrac": -1_500_000_000,
                  "link": 1_600_000_000_750_000_000, "dir": 1_234_567_890_500_000_000}
    assert os.lstat(tmp_path / "frac").st_atime_ns == 1_700_000_000_250_000_000  # atime = mtime


def test_gnu_negative_mtime_base256(impl, tmp_path):
    apply(impl, make_tar(F("f", mtime=-1000), format=tarfile.GNU_FORMAT), tmp_path)
    assert os.lstat(tmp_path / "f").st_mtime_ns == -1000 * 10**9


def test_directory_mtime_is_set_after_its_children(impl, tmp_path):
    data = make_tar(D("d", mtime=1_000_000_000), F("d/a", b"1"), D("d/sub", mtime=1_100_000_000),
                    F("d/sub/b"), S("d/l", "a"), member("d/p", "fifo"), H("d/h", "d/a"))
    apply(impl, data, tmp_path)
    assert os.lstat(tmp_path / "d").st_mtime_ns == 1_000_000_000 * 10**9
    assert os.lstat(tmp_path / "d/sub").st_mtime_ns == 1_100_000_000 * 10**9


def test_directory_modes_are_set_last(impl, tmp_path):
    # A directory nobody may write to, filled afterwards: its mode is applied at the end.
    data = make_tar(D("ro", mode=0o555), F("ro/f", b"x"), D("ro/closed", mode=0), F("ro/closed/g", b"y"))
    apply(impl, data, tmp_path)
    assert stat.S_IMODE(os.lstat(tmp_path / "ro").st_mode) == 0o555
    assert stat.S_IMODE(os.lstat(tmp_path / "ro/closed").st_mode) == 0
    assert (tmp_path / "ro/closed/g").read_bytes() == b"y"


def test_missing_parents_are_created_0755_root_owned(impl, tmp_path):
    old = os.umask(0o077)  # must not matter
    try:
        apply(impl, make_tar(F("a/b/c/file", b"x", uid=5, gid=6)), tmp_path)
    finally:
        os.umask(old)
    for d in ("a", "a/b", "a/b/c"):
        st_ = os.lstat(tmp_path / d)
        assert stat.S_ISDIR(st_.st_mode) and stat.S_IMODE(st_.st_mode) == 0o755
        assert (st_.st_uid, st_.st_gid) == (0, 0)
    assert os.lstat(tmp_path / "a/b/c/file").st_uid == 5


def test_setuid_file_is_never_visible_half_written(impl, tmp_path):
    # Bigger than a few 1 MiB chunks, so that the stream is read while the file is written.
    content = os.urandom(5 << 20)
    data = make_tar(F("s", content, mode=0o4755))
    seen = []

    def spy():  # called on every read: look at the file while it is still short
        if os.path.lexists(tmp_path / "s"):
            st_ = os.lstat(tmp_path / "s")
            if st_.st_size < len(content):
                seen.append(st_.st_mode)

    impl(ChunkyReadinto(data, seed=1, max_chunk=65_536, spy=spy), tmp_path)
    assert len(seen) > 10  # reads did happen while the file was being written
    assert all(m & 0o7000 == 0 for m in seen), [oct(m) for m in seen]  # no setuid/setgid/sticky yet
    assert all(m & 0o022 == 0 for m in seen)  # nor writable by others
    assert stat.S_IMODE(os.lstat(tmp_path / "s").st_mode) == 0o4755
    assert (tmp_path / "s").read_bytes() == content


def test_symlinks_are_created_exactly_as_given(impl, tmp_path):
    targets = ["/etc/passwd", "../../../../etc/shadow", "a/b", "dangling", "é" * 60, "x" * 300]
    data = make_tar(*(S(f"l{i}", t) for i, t in enumerate(targets)))
    apply(impl, data, tmp_path)
    assert [os.readlink(tmp_path / f"l{i}") for i in range(len(targets))] == targets


def test_fifo_and_devices(impl, tmp_path):
    data = make_tar(member("null", "chr", mode=0o666, dev=(1, 3)), member("loop9", "blk", mode=0o660, dev=(7, 9)),
                    member("pipe", "fifo", mode=0o620, mtime=1_200_000_000))
    apply(impl, data, tmp_path)
    null, loop, pipe = (os.lstat(tmp_path / n) for n in ("null", "loop9", "pipe"))
    assert stat.S_ISCHR(null.st_mode) and (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert stat.S_ISBLK(loop.st_mode) and (os.major(loop.st_rdev), os.minor(loop.st_rdev)) == (7, 9)
    assert stat.S_IMODE(null.st_mode) == 0o666 and stat.S_IMODE(loop.st_mode) == 0o660
    assert stat.S_ISFIFO(pipe.st_mode) and stat.S_IMODE(pipe.st_mode) == 0o620
    assert pipe.st_mtime_ns == 1_200_000_000 * 10**9


def test_root_entry_is_skipped_but_counted(impl, tmp_path):
    os.chmod(tmp_path, 0o711)
    data = make_tar(D("./", mode=0o700, mtime=5, uid=99), D(".", mode=0o700), F("./x", b"1"))
    result = apply(impl, data, tmp_path)
    assert result.entries == 3
    st_ = os.lstat(tmp_path)
    assert stat.S_IMODE(st_.st_mode) == 0o711 and st_.st_uid == 0
    assert (tmp_path / "x").read_bytes() == b"1"


def test_names_are_normalized(impl, tmp_path):
    data = make_tar(F("./a//b/./c", b"1"), D("./d/"), F("d/./e/", b"2"))
    apply(impl, data, tmp_path)
    assert (tmp_path / "a/b/c").read_bytes() == b"1"
    assert (tmp_path / "d/e").read_bytes() == b"2"


def test_writer_layers_apply(impl, tmp_path):
    from engine.layer import LayerWriter

    w = LayerWriter(mtime=1_111_111_111)
    w.add_dir("bin")
    w.add_file("bin/busybox", b"bb", mode=0o755)
    w.add_hardlink("bin/sh", "bin/busybox")
    w.add_symlink("bin/xx", "busybox")
    data = w.getvalue()
    assert apply(impl, data, tmp_path) == uncompressed(data, 4)
    assert os.lstat(tmp_path / "bin/sh").st_ino == os.lstat(tmp_path / "bin/busybox").st_ino


# --- formats -------------------------------------------------------------------

LONG = "/".join(["d" * 60] * 3) + "/" + "f" * 90


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT],
                         ids=["ustar-prefix", "gnu-L", "pax-path"])
def test_long_names(impl, tmp_path, fmt):
    name = LONG if fmt != tarfile.USTAR_FORMAT else "p" * 120 + "/" + "n" * 90
    data = make_tar(F(name, b"long"), format=fmt)
    assert apply(impl, data, tmp_path).entries == 1
    assert (tmp_path / name).read_bytes() == b"long"


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu-K", "pax-linkpath"])
def test_long_link_targets(impl, tmp_path, fmt):
    data = make_tar(F(LONG, b"x"), S("sym", "t" * 150), H("hard", LONG), format=fmt)
    assert apply(impl, data, tmp_path).entries == 3
    assert os.readlink(tmp_path / "sym") == "t" * 150
    assert os.lstat(tmp_path / "hard").st_ino == os.lstat(tmp_path / LONG).st_ino


def test_non_ascii_names(impl, tmp_path):
    data = make_tar(F("héllo/wörld", b"1"), format=tarfile.PAX_FORMAT)
    apply(impl, data, tmp_path)
    assert (tmp_path / "héllo/wörld").read_bytes() == b"1"


def test_pax_global_header_is_ignored(impl, tmp_path):
    data = make_tar(F("a", b"1"), pax_headers={"path": "global-ignored", "comment": "hi"})
    assert data[156:157] == b"g"
    assert apply(impl, data, tmp_path).entries == 1
    assert os.listdir(tmp_path) == ["a"]


def test_pax_size_uid_gid_mtime_override_the_header(impl, tmp_path):
    data = raw_tar(
        pax_entry((b"size", b"5"), (b"uid", b"70000"), (b"gid", b"80000"), (b"mtime", b"12.5"),
                  (b"atime", b"99"), (b"SCHILY.xattr.user.x", b"ignored")),
        raw_header(b"f", size=0, uid=1, gid=2, mtime=3) + pad(b"hello"),
    )
    apply(impl, data, tmp_path)
    st_ = os.lstat(tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == b"hello"
    assert (st_.st_uid, st_.st_gid, st_.st_mtime_ns) == (70000, 80000, 12_500_000_000)


def test_pax_empty_value_means_the_header_field(impl, tmp_path):
    data = raw_tar(pax_entry((b"path", b"from-pax"), (b"uid", b"7")), pax_entry((b"path", b""), (b"uid", b"")),
                   raw_entry(b"x", name=b"from-header", uid=3))
    apply(impl, data, tmp_path)
    assert os.listdir(tmp_path) == ["from-header"]
    assert os.lstat(tmp_path / "from-header").st_uid == 3


def test_pax_records_may_be_nul_padded(impl, tmp_path):
    data = raw_tar(pax_entry(raw=pax_record(b"path", b"padded") + bytes(7)), raw_entry(b"x", name=b"short"))
    apply(impl, data, tmp_path)
    assert os.listdir(tmp_path) == ["padded"]


def test_pax_wins_over_gnu_long_name(impl, tmp_path):
    data = raw_tar(raw_entry(b"gnu-name\0", name=b"././@LongLink", type=b"L"), pax_entry((b"path", b"pax-name")),
                   raw_entry(b"x", name=b"header-name"))
    apply(impl, data, tmp_path)
    assert os.listdir(tmp_path) == ["pax-name"]


def test_base256_size(impl, tmp_path):
    size = b"\x80" + (5).to_bytes(11, "big")
    data = raw_tar(raw_header(b"f", patch={124: size}) + pad(b"hello"))
    apply(impl, data, tmp_path)
    assert (tmp_path / "f").read_bytes() == b"hello"


def test_signed_checksum_is_accepted(impl, tmp_path):
    name = "été".encode()
    assert raw_header(name, checksum="signed") != raw_header(name)
    apply(impl, raw_tar(raw_entry(b"1", name=name, checksum="signed")), tmp_path)
    assert os.listdir(tmp_path) == ["été"]


def test_octal_fields_may_have_spaces(impl, tmp_path):
    data = raw_tar(raw_entry(b"x", name=b"f", patch={100: b"   640 \0"}))
    apply(impl, data, tmp_path)
    assert stat.S_IMODE(os.lstat(tmp_path / "f").st_mode) == 0o640


def test_prefix_only_under_posix_magic(impl, tmp_path):
    ustar = raw_entry(b"1", name=b"name", prefix=b"pre/fix")
    gnu = raw_entry(b"2", name=b"gname", prefix=b"junk", magic=b"ustar  \0")
    apply(impl, raw_tar(ustar, gnu), tmp_path)
    assert (tmp_path / "pre/fix/name").read_bytes() == b"1"
    assert (tmp_path / "gname").read_bytes() == b"2"


def test_v7_directory_with_trailing_slash(impl, tmp_path):
    apply(impl, raw_tar(raw_entry(name=b"olddir/", type=b"\0", mode=0o700), raw_entry(b"x", name=b"f", type=b"\0"),
                        raw_entry(b"y", name=b"g", type=b"7")), tmp_path)
    assert stat.S_ISDIR(os.lstat(tmp_path / "olddir").st_mode)
    assert (tmp_path / "f").read_bytes() == b"x" and (tmp_path / "g").read_bytes() == b"y"


def test_header_only_types_ignore_their_size_field(impl, tmp_path):
    # tarfile and Go do the same: a directory's size field does not announce data.
    data = raw_tar(raw_header(b"d", b"5", size=1024), raw_entry(b"after", name=b"f"))
    apply(impl, data, tmp_path)
    assert (tmp_path / "f").read_bytes() == b"after"


def test_one_zero_block_ends_the_archive_and_the_rest_is_hashed(impl, tmp_path):
    data = raw_tar(raw_entry(b"1", name=b"a"), end=False) + bytes(512) + raw_entry(b"2", name=b"b") + b"junk"
    result = apply(impl, data, tmp_path)
    assert result == uncompressed(data, 1)
    assert os.listdir(tmp_path) == ["a"]


def test_archive_without_end_blocks(impl, tmp_path):
    data = raw_tar(raw_entry(b"1", name=b"a"), end=False)
    assert apply(impl, data, tmp_path) == uncompressed(data, 1)


# --- streams and digests -------------------------------------------------------


@pytest.mark.parametrize("stream_class", [ChunkyReadinto, ChunkyRead])
@pytest.mark.parametrize("max_chunk", [1, 513, 70_000])
def test_short_reads(impl, tmp_path, stream_class, max_chunk):
    content = random.Random(7).randbytes(200_000)
    data = make_tar(D("d"), F("d/big", content), F("d/small", b"s" * 700), S("d/l", "big")) + b"trailer"
    stream = stream_class(data, seed=max_chunk, max_chunk=max_chunk)
    result = impl(stream, tmp_path)
    assert stream.calls > len(data) // max_chunk
    assert result == uncompressed(data, 4)
    assert (tmp_path / "d/big").read_bytes() == content


def test_big_stream_digest(impl, tmp_path):
    # Several full 1 MiB chunks, then junk after the end of the archive to
    # drain: the compiled core hashes chunks this big in a helper thread.
    rng = random.Random(3)
    contents = [rng.randbytes(700_000) for _ in range(5)]
    data = make_tar(*(F(f"f{i}", c) for i, c in enumerate(contents))) + rng.randbytes(3 << 20)
    stream = ChunkyReadinto(data, max_chunk=3 << 20)
    assert impl(stream, tmp_path) == uncompressed(data, 5)
    assert [(tmp_path / f"f{i}").read_bytes() for i in range(5)] == contents


def test_stream_errors_propagate_and_leave_no_thread(impl, tmp_path):
    class Failing(ChunkyReadinto):
        def _take(self, n):  # under read() and readinto() alike
            if self.calls == 3:
                raise ConnectionResetError("registry went away")
            return super()._take(n)

    data = make_tar(*(F(f"f{i}", bytes(600_000)) for i in range(6)))
    with pytest.raises(ConnectionResetError, match="registry went away"):
        impl(Failing(data, max_chunk=1 << 20), tmp_path)
    assert [t.name for t in threading.enumerate() if "layer" in t.name] == []


def test_expected_digest_matches(impl, tmp_path):
    data = make_tar(F("a", b"1"))
    assert apply(impl, data, tmp_path, expected_digest=sha(data)).digest == sha(data)


def test_digest_mismatch_after_draining(impl, tmp_path):
    data = make_tar(F("a", b"1"))
    with pytest.raises(DigestMismatch) as info:
        apply(impl, data + b"extra", tmp_path, expected_digest=sha(data))
    assert info.value.expected == sha(data)
    assert info.value.actual == sha(data + b"extra")
    assert str(info.value) == f"layer: digest mismatch: expected {sha(data)}, got {sha(data + b'extra')}"


# --- extended attributes -------------------------------------------------------

CAPABILITY = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_raw+p (VFS_CAP_REVISION_2)


def xattr_entry(*records: tuple[bytes, bytes]) -> bytes:
    return pax_entry(*((b"SCHILY.xattr." + name, value) for name, value in records))


def xattrs_of(path) -> dict:
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in os.listxattr(path, follow_symlinks=False)}


def test_pax_xattrs_are_applied(impl, tmp_path):
    data = raw_tar(
        xattr_entry((b"user.a", b"1"), (b"trusted.b", b"bin\nary\0"), (b"user.empty", b"")),
        raw_entry(b"content", name=b"f"),
        xattr_entry((b"user.d", b"dir")), raw_entry(name=b"d", type=b"5", mode=0o755),
        xattr_entry((b"trusted.s", b"sym")), raw_entry(name=b"l", type=b"2", linkname=b"f"),
        xattr_entry((b"trusted.p", b"pipe")), raw_entry(name=b"p", type=b"6"),
    )
    assert apply(impl, data, tmp_path).entries == 4
    assert xattrs_of(tmp_path / "f") == {"user.a": b"1", "trusted.b": b"bin\nary\0", "user.empty": b""}
    assert xattrs_of(tmp_path / "d") == {"user.d": b"dir"}
    assert xattrs_of(tmp_path / "l") == {"trusted.s": b"sym"}
    assert xattrs_of(tmp_path / "p") == {"trusted.p": b"pipe"}


def test_later_pax_records_win_and_xattrs_do_not_leak_to_the_next_entry(impl, tmp_path):
    data = raw_tar(xattr_entry((b"user.a", b"first")), xattr_entry((b"user.a", b"second")),
                   raw_entry(b"1", name=b"f"), raw_entry(b"2", name=b"g"))
    apply(impl, data, tmp_path)
    assert xattrs_of(tmp_path / "f") == {"user.a": b"second"}
    assert xattrs_of(tmp_path / "g") == {}


def test_capability_survives_the_owner_and_the_data(impl, tmp_path):
    # chown(2) and writing both clear security.capability: it must be set after them.
    data = raw_tar(xattr_entry((b"security.capability", CAPABILITY)),
                   raw_entry(b"\x7fELF" * 100, name=b"ping", uid=1000, gid=1000, mode=0o755))
    apply(impl, data, tmp_path)
    assert os.getxattr(tmp_path / "ping", "security.capability") == CAPABILITY
    assert os.lstat(tmp_path / "ping").st_uid == 1000


def test_overlay_xattrs_from_a_layer_are_ignored(impl, tmp_path):
    data = raw_tar(xattr_entry((b"trusted.overlay.opaque", b"y"), (b"trusted.overlay.redirect", b"/x"),
                               (b"user.kept", b"1")),
                   raw_entry(name=b"d", type=b"5", mode=0o755))
    apply(impl, data, tmp_path)
    assert xattrs_of(tmp_path / "d") == {"user.kept": b"1"}
    assert opaque(tmp_path / "d") is None  # only .wh..wh..opq makes a directory opaque


def test_xattrs_the_filesystem_refuses_are_skipped(impl, tmp_path):
    # user.* on a symlink: EPERM; an unknown namespace: EOPNOTSUPP. Skipped, as Docker does.
    data = raw_tar(xattr_entry((b"user.no", b"1"), (b"trusted.yes", b"2")),
                   raw_entry(name=b"l", type=b"2", linkname=b"x"),
                   xattr_entry((b"bogus.name", b"1"), (b"user.yes", b"2")), raw_entry(b"x", name=b"f"))
    apply(impl, data, tmp_path)
    assert xattrs_of(tmp_path / "l") == {"trusted.yes": b"2"}
    assert xattrs_of(tmp_path / "f") == {"user.yes": b"2"}


def test_hard_links_take_no_xattrs(impl, tmp_path):
    data = raw_tar(xattr_entry((b"user.a", b"1")), raw_entry(b"x", name=b"f"),
                   xattr_entry((b"user.b", b"2")), raw_entry(name=b"h", type=b"1", linkname=b"f"))
    apply(impl, data, tmp_path)
    assert xattrs_of(tmp_path / "h") == {"user.a": b"1"}  # the target's, untouched


# --- what is already there ---------------------------------------------------


def test_existing_directory_is_kept_and_updated(impl, tmp_path):
    (tmp_path / "d").mkdir(mode=0o700)
    (tmp_path / "d/old").write_bytes(b"old")
    apply(impl, make_tar(D("d", mode=0o750, uid=12, mtime=1_000), F("d/new", b"new")), tmp_path)
    st_ = os.lstat(tmp_path / "d")
    assert (stat.S_IMODE(st_.st_mode), st_.st_uid, st_.st_mtime_ns) == (0o750, 12, 1_000 * 10**9)
    assert sorted(os.listdir(tmp_path / "d")) == ["new", "old"]


@pytest.mark.parametrize("entry, kind", [
    (F("x", b"new"), "file"), (D("x"), "dir"), (S("x", "target"), "symlink"),
    (member("x", "fifo"), "fifo"), (member("x", "chr", dev=(1, 5)), "chr"),
])
@pytest.mark.parametrize("existing", ["file", "dir", "symlink"])
def test_existing_non_directories_are_replaced(impl, tmp_path, entry, kind, existing):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"keep")
    root = tmp_path / "root"
    root.mkdir()
    if existing == "file":
        (root / "x").write_bytes(b"old")
    elif existing == "dir":
        (root / "x/deep/er").mkdir(parents=True)
        (root / "x/deep/er/f").write_bytes(b"old")
        os.symlink(outside, root / "x/deep/escape")  # removed, never followed
    else:
        os.symlink(outside, root / "x")
    apply(impl, make_tar(entry), root)
    assert snapshot(root)[b"x"]["kind"] == kind
    if kind == "dir" and existing == "dir":
        assert os.listdir(root / "x") == ["deep"]  # a directory over a directory is kept
    elif kind == "dir":
        assert os.listdir(root / "x") == []
    assert os.listdir(outside) == ["keep"] and (outside / "keep").read_bytes() == b"keep"


def test_later_entries_replace_earlier_ones(impl, tmp_path):
    data = make_tar(F("a", b"first"), F("a", b"second"),
                    D("b"), F("b/child"), F("b", b"file now"),
                    F("c", b"file"), D("c", mode=0o701), S("d", "one"), S("d", "two"))
    assert apply(impl, data, tmp_path).entries == 9
    assert (tmp_path / "a").read_bytes() == b"second"
    assert (tmp_path / "b").read_bytes() == b"file now"
    assert stat.S_IMODE(os.lstat(tmp_path / "c").st_mode) == 0o701
    assert os.readlink(tmp_path / "d") == "two"


def test_replaced_directory_forgets_its_pending_mtimes(impl, tmp_path):
    data = make_tar(D("d", mtime=111), D("d/sub", mtime=222), F("d/sub/f"), F("d", b"file", mtime=333),
                    D("e/inner", mtime=444), S("e", "elsewhere", mtime=555))
    apply(impl, data, tmp_path)
    assert os.lstat(tmp_path / "d").st_mtime_ns == 333 * 10**9
    assert os.lstat(tmp_path / "e").st_mtime_ns == 555 * 10**9


def test_directory_cache_follows_interleaved_entries(impl, tmp_path):
    names = ["a/1", "b/1", "a/2", "a/b/c/1", "a/3", "b/a/1", "a/b/2", "c", "a/b/c/2"]
    apply(impl, make_tar(*(F(n, n.encode()) for n in names)), tmp_path)
    for n in names:
        assert (tmp_path / n).read_bytes() == n.encode()


def test_hardlink_cases(impl, tmp_path):
    (tmp_path / "preexisting").write_bytes(b"pre")
    data = make_tar(F("f", b"data"), H("h1", "f"), F("other", b"o"), H("other", "f"),  # replaces "other"
                    H("f", "f"),  # a link to itself: nothing to do
                    S("s", "f"), H("hs", "s"),  # a hard link to a symlink links the symlink
                    H("hp", "preexisting"))
    apply(impl, data, tmp_path)
    ino = os.lstat(tmp_path / "f").st_ino
    assert [os.lstat(tmp_path / n).st_ino for n in ("h1", "other")] == [ino, ino]
    assert (tmp_path / "f").read_bytes() == b"data"
    assert os.path.islink(tmp_path / "hs") and os.lstat(tmp_path / "hs").st_ino == os.lstat(tmp_path / "s").st_ino
    assert os.lstat(tmp_path / "hp").st_ino == os.lstat(tmp_path / "preexisting").st_ino


def test_hardlink_header_metadata_is_not_applied(impl, tmp_path):
    data = make_tar(F("f", b"x", mode=0o640, uid=3, mtime=1_000), H("h", "f", mode=0o777, uid=4, mtime=2_000))
    apply(impl, data, tmp_path)
    st_ = os.lstat(tmp_path / "h")
    assert (stat.S_IMODE(st_.st_mode), st_.st_uid, st_.st_mtime_ns) == (0o640, 3, 1_000 * 10**9)


# --- whiteouts -----------------------------------------------------------------


def test_whiteout_becomes_a_0_0_character_device(impl, tmp_path):
    (tmp_path / "etc/old/deep").mkdir(parents=True)
    (tmp_path / "etc/old/deep/f").write_bytes(b"x")
    (tmp_path / "etc/file").write_bytes(b"x")
    data = make_tar(D("etc"), F("etc/.wh.old"), F("etc/.wh.file", b"ignored content"), F("etc/.wh.never-there"),
                    F("new/.wh.gone"))
    assert apply(impl, data, tmp_path).entries == 5
    for path in ("etc/old", "etc/file", "etc/never-there", "new/gone"):
        st_ = os.lstat(tmp_path / path)
        assert stat.S_ISCHR(st_.st_mode) and st_.st_rdev == 0, path
    assert sorted(os.listdir(tmp_path / "etc")) == ["file", "never-there", "old"]  # no .wh.* file
    assert stat.S_IMODE(os.lstat(tmp_path / "new").st_mode) == 0o755


def test_opaque_whiteout_sets_the_overlay_xattr(impl, tmp_path):
    data = make_tar(D("kept"), F("kept/.wh..wh..opq"), F("kept/x", b"1"),
                    F("created/parent/.wh..wh..opq"), F(".wh..wh..opq"))
    apply(impl, data, tmp_path)
    assert opaque(tmp_path / "kept") == b"y"
    assert opaque(tmp_path / "created/parent") == b"y"
    assert opaque(tmp_path) == b"y"
    assert opaque(tmp_path / "created") is None
    assert os.listdir(tmp_path / "kept") == ["x"]
    assert os.listdir(tmp_path / "created/parent") == []


def test_aufs_metadata_is_skipped(impl, tmp_path):
    data = make_tar(D(".wh..wh.plnk"), F(".wh..wh.aufs"), F("a/.wh..wh.orph", b"x"))
    assert apply(impl, data, tmp_path).entries == 3
    assert os.listdir(tmp_path) == []
    assert os.listdir(tmp_path) == []


def test_entry_after_whiteout_replaces_the_device(impl, tmp_path):
    apply(impl, make_tar(F(".wh.a"), F("a", b"back")), tmp_path)
    assert (tmp_path / "a").read_bytes() == b"back"


# --- refusals --------------------------------------------------------------------

OUT = "@OUTSIDE@"  # replaced by a real directory outside the root

UNSAFE = [
    ("absolute file", [F("/etc/passwd", b"x")], "/etc/passwd", "absolute path"),
    ("absolute dir", [D("/tmp")], "/tmp/", "absolute path"),
    ("absolute symlink entry", [S("/l", "x")], "/l", "absolute path"),
    ("dotdot", [F("../escape", b"x")], "../escape", "path contains '..'"),
    ("dotdot deep", [F("a/../../escape")], "a/../../escape", "path contains '..'"),
    ("dotdot staying inside", [F("a/../b")], "a/../b", "path contains '..'"),
    ("dotdot whiteout", [F("a/.wh...")], "a/.wh...", "path contains '..'"),
    ("dotdot hardlink entry", [F("f"), H("../h", "f")], "../h", "path contains '..'"),
    ("symlink parent", [S("l", OUT), F("l/passwd", b"pwned")], "l/passwd", "path goes through a symlink"),
    ("relative symlink parent", [S("l", "."), F("l/x")], "l/x", "path goes through a symlink"),
    ("symlink grandparent", [D("a"), S("a/l", OUT), F("a/l/sub/x")], "a/l/sub/x", "path goes through a symlink"),
    ("symlink parent of dir", [S("l", OUT), D("l/newdir")], "l/newdir/", "path goes through a symlink"),
    ("symlink parent of symlink", [S("l", OUT), S("l/passwd", "x")], "l/passwd", "path goes through a symlink"),
    ("symlink parent of hardlink", [F("f"), S("l", OUT), H("l/passwd", "f")], "l/passwd",
     "path goes through a symlink"),
    ("whiteout through symlink", [S("l", OUT), F("l/.wh.passwd")], "l/.wh.passwd", "path goes through a symlink"),
    ("opaque through symlink", [S("l", OUT), F("l/.wh..wh..opq")], "l/.wh..wh..opq",
     "path goes through a symlink"),
    ("file parent", [F("f"), F("f/x")], "f/x", "path goes through a non-directory"),
    ("fifo parent", [member("p", "fifo"), D("p/d")], "p/d/", "path goes through a non-directory"),
    ("hardlink absolute", [H("h", "/etc/passwd")], "h", "hard link target outside the layer"),
    ("hardlink to outside", [H("h", OUT + "/passwd")], "h", "hard link target outside the layer"),
    ("hardlink dotdot", [H("h", "../outside/passwd")], "h", "hard link target outside the layer"),
    ("hardlink via symlink", [S("l", OUT), H("h", "l/passwd")], "h", "hard link target outside the layer"),
    ("hardlink missing", [H("h", "nothing")], "h", "hard link target missing"),
    ("hardlink missing parent", [H("h", "no/such")], "h", "hard link target missing"),
    ("hardlink via file", [F("f"), H("h", "f/x")], "h", "hard link target missing"),
    ("hardlink to directory", [D("d"), H("h", "d")], "h", "hard link target is a directory"),
    ("hardlink to root", [H("h", "./")], "h", "hard link target is a directory"),
    ("hardlink replacing its target's directory", [D("a"), F("a/t"), H("a", "a/t")], "a",
     "hard link target missing"),
]


@pytest.mark.parametrize("members, name, reason", [u[1:] for u in UNSAFE], ids=[u[0] for u in UNSAFE])
def test_unsafe_entries_are_refused(impl, tmp_path, members, name, reason):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_bytes(b"original")
    root = tmp_path / "root"
    root.mkdir()
    fixed = []
    for info, data in members:
        info = copy.copy(info)  # the table is shared by both implementations
        info.name = info.name.replace(OUT, str(outside))
        info.linkname = info.linkname.replace(OUT, str(outside))
        fixed.append((info, data))
    with pytest.raises(UnsafeLayerEntry) as exc:
        apply(impl, make_tar(*fixed), root)
    assert (exc.value.name, exc.value.reason) == (name.replace(OUT, str(outside)), reason)
    assert str(exc.value) == f"layer entry {exc.value.name!r} refused: {reason}"
    assert os.listdir(outside) == ["passwd"]
    assert (outside / "passwd").read_bytes() == b"original"
    assert os.lstat(outside / "passwd").st_nlink == 1


@pytest.mark.parametrize("existing", ["symlink", "file"])
def test_preexisting_non_directory_parent_is_refused(impl, tmp_path, existing):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    if existing == "symlink":
        os.symlink(outside, root / "etc")
    else:
        (root / "etc").write_bytes(b"")
    with pytest.raises(UnsafeLayerEntry) as exc:
        apply(impl, make_tar(F("etc/passwd", b"pwned")), root)
    reason = "symlink" if existing == "symlink" else "non-directory"
    assert exc.value.reason == f"path goes through a {reason}"
    assert os.listdir(outside) == []


def test_file_replacing_the_root_is_refused(impl, tmp_path):
    for name in (b"./", b".", b"./."):
        with pytest.raises(UnsafeLayerEntry) as exc:
            apply(impl, raw_tar(raw_entry(b"x", name=name)), tmp_path)
        assert (exc.value.name, exc.value.reason) == (name.decode(), "replaces the layer root")


ONE_FILE = raw_entry(b"x" * 1000, name=b"f")  # header + 1000 bytes + 24 padding


MALFORMED = [
    ("truncated data", ONE_FILE[:512 + 300], "truncated layer: entry 'f' needs 724 more bytes"),
    ("truncated padding", ONE_FILE[:512 + 1000], "truncated layer: entry 'f' needs 24 more bytes"),
    ("truncated header", ONE_FILE + raw_header(b"g")[:100],
     "truncated layer: tar header at offset 1536 needs 412 more bytes"),
    ("truncated pax data", pax_entry((b"path", b"x" * 600))[:700],
     "truncated layer: entry '././@PaxHeader' needs 836 more bytes"),  # 1024 - (700 - 512)
    ("bad checksum", raw_tar(raw_entry(b"x", name=b"f", checksum=12345)), "corrupt tar header at offset 0"),
    ("bad checksum second", raw_tar(ONE_FILE, raw_header(b"g", checksum=1)), "corrupt tar header at offset 1536"),
    ("bad octal", raw_tar(raw_entry(name=b"f", patch={124: b"0000000009a\0"})), "corrupt tar header at offset 0"),
    ("bad checksum digits", raw_tar(raw_header(b"f", patch={})[:148] + b"zzzzzz\0 " + bytes(356)),
     "corrupt tar header at offset 0"),
    ("size over int64", raw_tar(raw_header(b"f", patch={124: b"\x80" + b"\xff" * 11})),
     "corrupt tar header at offset 0"),
    ("negative size", raw_tar(raw_header(b"f", patch={124: b"\xff" * 12})), "layer entry 'f' has a negative size"),
    ("negative pax size", raw_tar(raw_header(b"././@PaxHeader", b"x", patch={124: b"\xff" * 12})),
     "layer entry '././@PaxHeader' has a negative size"),
    ("sparse", raw_tar(raw_entry(name=b"f", type=b"S")), "layer entry 'f': unsupported entry type 'S'"),
    ("volume", raw_tar(raw_entry(name=b"f", type=b"V")), "layer entry 'f': unsupported entry type 'V'"),
    ("unknown Z", raw_tar(raw_entry(name=b"f", type=b"Z")), "layer entry 'f': unsupported entry type 'Z'"),
    ("NUL in name", raw_tar(pax_entry((b"path", b"a\0b")), raw_entry(name=b"f")),
     "layer entry 'a\\x00b': name contains a NUL byte"),
    ("NUL in link", raw_tar(pax_entry((b"linkpath", b"a\0b")), raw_entry(name=b"l", type=b"2")),
     "layer entry 'l': link target contains a NUL byte"),
    ("empty symlink", raw_tar(raw_entry(name=b"l", type=b"2")), "layer entry 'l': symlink has an empty target"),
    ("pax length too long", raw_tar(pax_entry(raw=b"99 path=x\n"), raw_entry(name=b"f")),
     "corrupt pax header at offset 0"),
    ("pax length not a number", raw_tar(pax_entry(raw=b"1x path=x\n"), raw_entry(name=b"f")),
     "corrupt pax header at offset 0"),
    ("pax without =", raw_tar(pax_entry(raw=b"9 pathx\n"), raw_entry(name=b"f")),
     "corrupt pax header at offset 0"),
    ("pax without newline", raw_tar(pax_entry(raw=b"10 path=xy"), raw_entry(name=b"f")),
     "corrupt pax header at offset 0"),
    ("pax bad mtime", raw_tar(pax_entry((b"mtime", b"1e9")), raw_entry(name=b"f")),
     "corrupt pax header at offset 0: bad mtime value"),
    ("pax bad mtime fraction", raw_tar(pax_entry((b"mtime", b"12.")), raw_entry(name=b"f")),
     "corrupt pax header at offset 0: bad mtime value"),
    ("pax bad size", raw_tar(pax_entry((b"size", b"-1")), raw_entry(name=b"f")),
     "corrupt pax header at offset 0: bad size value"),
    ("pax bad uid", raw_tar(pax_entry((b"uid", b"9" * 20)), raw_entry(name=b"f")),
     "corrupt pax header at offset 0: bad uid value"),
    ("pax too large", raw_tar(raw_header(b"././@PaxHeader", b"x", size=2 << 20)),
     "layer entry '././@PaxHeader': metadata header of 2097152 bytes is too large"),
    ("uid out of range", raw_tar(pax_entry((b"uid", b"4294967295")), raw_entry(name=b"f")),
     "layer entry 'f': owner 4294967295:0 out of range"),
    ("empty whiteout", raw_tar(raw_entry(name=b"a/.wh.")), "layer entry 'a/.wh.': whiteout names no file"),
    ("dot whiteout", raw_tar(raw_entry(name=b".wh..")), "layer entry '.wh..': whiteout names no file"),
    ("device out of range", raw_tar(raw_header(b"c", b"3", patch={329: b"\x80\0\0\x01\0\0\0\0"})),
     "layer entry 'c': device number out of range"),
    ("empty xattr name", raw_tar(pax_entry((b"SCHILY.xattr.", b"v")), raw_entry(name=b"f")),
     "layer entry 'f': bad xattr name ''"),
    ("NUL in xattr name", raw_tar(pax_entry((b"SCHILY.xattr.user.a\0b", b"v")), raw_entry(name=b"f")),
     "layer entry 'f': bad xattr name 'user.a\\x00b'"),
]


@pytest.mark.parametrize("data, message", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_layers_are_refused(impl, tmp_path, data, message):
    with pytest.raises(LayerError) as exc:
        apply(impl, data, tmp_path)
    assert type(exc.value) is LayerError
    assert str(exc.value) == message


def test_short_writes_are_continued_and_write_errors_surface(impl, tmp_path):
    # Under RLIMIT_FSIZE, write(2) writes up to the limit and returns a short
    # count; writing the rest then fails with EFBIG (Python ignores SIGXFSZ).
    tar_path = tmp_path / "big.tar"
    tar_path.write_bytes(make_tar(F("big", bytes(300_000))))
    root = tmp_path / "root"
    root.mkdir()
    script = (f"import resource, sys, {impl.__module__} as m\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))\n"
              "try:\n    m.apply_layer(open(sys.argv[1], 'rb'), sys.argv[2])\n"
              "except OSError as e:\n    print(type(e).__name__, e.errno, e.__notes__)\n")
    out = subprocess.run([sys.executable, "-c", script, str(tar_path), str(root)],
                         capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "OSError 27 [\"while applying layer entry 'big'\"]"  # EFBIG
    assert os.lstat(root / "big").st_size == 100_000


def test_device_without_cap_mknod_is_a_layer_error(impl, tmp_path):
    if not shutil.which("setpriv"):
        pytest.skip("needs setpriv(1) to drop CAP_MKNOD")
    tar_path = tmp_path / "dev.tar"
    tar_path.write_bytes(make_tar(F("ok", b"1"), member("dev/null", "chr", dev=(1, 3))))
    root = tmp_path / "root"
    root.mkdir()
    script = (f"import {impl.__module__} as m\n"
              f"try:\n    m.apply_layer(open({str(tar_path)!r}, 'rb'), {str(root)!r})\n"
              "except Exception as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run(["setpriv", "--bounding-set", "-mknod", "--inh-caps", "-mknod",
                          sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == ("LayerError layer entry 'dev/null': cannot create a device node "
                                  "(operation not permitted)")
    assert (root / "ok").read_bytes() == b"1"


# --- properties: both implementations, random trees, random short reads -----------

SETTINGS = settings(max_examples=int(os.environ.get("LAYER_EXAMPLES", 150)), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


@dataclass
class Chunking:
    """How the stream is read: random short reads, or (``file``) a real file.

    The compiled implementation maps an uncompressed regular file instead
    of reading it, so files take a different path there than other streams.
    """

    seed: int
    max_chunk: int
    readinto: bool
    file: bool = False

    def stream(self, data: bytes):
        if self.file:
            f = tempfile.TemporaryFile()  # unlinked: gone when closed
            f.write(data)
            f.seek(0)
            return f
        cls = ChunkyReadinto if self.readinto else ChunkyRead
        return cls(data, self.seed, self.max_chunk)


chunkings = st.builds(Chunking, st.integers(0, 2**32 - 1),
                      st.sampled_from([1 << 20, 7, 512, 4096, 65_536, 3 << 20]), st.booleans(),
                      st.sampled_from([False, False, True]))


class TarData(bytes):
    """Tar bytes that show their members, not pages of NULs, when a test fails."""

    def __repr__(self):
        try:
            with tarfile.open(fileobj=io.BytesIO(self)) as tar:
                members = [(m.name, m.type, m.linkname, m.size, m.mtime) for m in tar.getmembers()]
        except (tarfile.TarError, ValueError) as e:
            members = f"<unreadable by tarfile: {e}>"
        return f"<{len(self)} bytes of tar: {members!r}>"


@dataclass
class Tree:
    tar: bytes
    entries: int
    expected: dict

    def __repr__(self):
        return f"Tree({TarData(self.tar)!r})"


def pax_ns(mtime) -> int:
    """What a PAX writer's str(mtime) means, in nanoseconds."""
    return int(Decimal(repr(mtime)) * 10**9)


@st.composite
def trees(draw):
    """A random consistent tree, its tar (written by tarfile) and what extracting it must give."""
    fmt = draw(st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]))
    ustar = fmt == tarfile.USTAR_FORMAT
    comps = ["a", "b", "c", "é", "d" * 50] + ([] if ustar else ["L" * 120])
    paths = draw(st.sets(st.lists(st.sampled_from(comps), min_size=1, max_size=3).map("/".join),
                         min_size=1, max_size=10))
    dirs = {p.rsplit("/", 1)[0] for p in paths if "/" in p}
    dirs |= {d.rsplit("/", i)[0] for d in list(dirs) for i in range(1, d.count("/") + 1)}
    leaves = sorted(paths - dirs)

    if ustar:
        mtimes, ids = st.integers(0, 2**33 - 1), st.integers(0, 0o7777777)
    elif fmt == tarfile.GNU_FORMAT:  # negative: base-256 fields
        mtimes, ids = st.integers(-2**30, 2**33), st.integers(0, 2**32 - 2)
    else:  # negative or fractional: PAX records
        mtimes = st.one_of(st.integers(-2**30, 2**33), st.integers(-2**32, 2**35).map(lambda n: n / 4))
        ids = st.integers(0, 2**32 - 2)
    # (ext4 stores times from 1901 (-2**31) to 2446 and clamps the rest: stay well inside.)
    targets = ["a", "/etc/passwd", "../../../x", "b/c", "é", "."] + ([] if ustar else ["t" * 150])
    contents = st.one_of(st.binary(max_size=1500),
                         st.builds(lambda n, s: random.Random(s).randbytes(n),
                                   st.integers(60_000, 150_000), st.integers(0, 2**32)))

    members, expected = [], {}

    def add(name, kind, **kw):
        meta = dict(mode=draw(st.integers(0, 0o7777)), uid=draw(ids), gid=draw(ids), mtime=draw(mtimes))
        meta.update(kw)
        members.append(member(name, kind, **meta))
        info = {"uid": meta["uid"], "gid": meta["gid"], "kind": kind,
                "mtime": pax_ns(meta["mtime"]) if isinstance(meta["mtime"], float) else meta["mtime"] * 10**9,
                "mode": None if kind == "symlink" else meta["mode"]}
        if kind == "dir":
            info["opaque"] = None
        else:
            info["links"] = (name.encode(),)
        expected[name.encode()] = info
        return info

    for d in sorted(dirs):
        add(d, "dir")
    for leaf in leaves:
        kind = draw(st.sampled_from(["file", "file", "file", "symlink", "dir", "fifo", "chr"]))
        if kind == "file":
            content = draw(contents)
            add(leaf, "file", data=content)["data"] = content
        elif kind == "symlink":
            target = draw(st.sampled_from(targets))
            add(leaf, "symlink", link=target)["data"] = target.encode()
        elif kind == "chr":
            dev = (draw(st.integers(0, 255)), draw(st.integers(0, 255)))
            add(leaf, "chr", dev=dev)["data"] = dev
        else:
            add(leaf, kind)
    members = draw(st.permutations(members))  # children may come before their directory

    files = [p for p in leaves if expected[p.encode()]["kind"] == "file" and not (ustar and len(p.encode()) > 100)]
    for i in range(draw(st.integers(0, 3)) if files else 0):
        target = draw(st.sampled_from(files))
        parent = draw(st.sampled_from([""] + sorted(dirs)))
        name = f"{parent}/hl{i}" if parent else f"hl{i}"
        members.append(member(name, "hardlink", link=target))
        expected[name.encode()] = expected[target.encode()]  # the same inode: the same everything
    groups: dict[int, list[bytes]] = {}
    for path, info in expected.items():
        groups.setdefault(id(info), []).append(path)
    expected = {p: dict(info) for p, info in expected.items()}
    for paths_ in groups.values():
        if "links" in expected[paths_[0]]:
            for p in paths_:
                expected[p]["links"] = tuple(sorted(paths_))
    expected[b"."] = {"opaque": None}
    return Tree(make_tar(*members, format=fmt), len(members), expected)


def both_impls():
    return load_impl("native"), load_impl("python")


def run(fn, data: bytes, chunking: Chunking, parent: Path, mask_recent: bool = True, **kw):
    """Apply ``data`` in a fresh directory; (result or error, snapshot).

    ``mask_recent``: what the layer did not date (missing parents, whiteout
    devices, a file cut short by an error) carries the current time, which
    differs from run to run.
    """
    root = Path(tempfile.mkdtemp(dir=parent))
    stream = chunking.stream(data)
    try:
        try:
            outcome = fn(stream, root, **kw)
        except Exception as e:  # noqa: BLE001 - comparing what each implementation raises
            outcome = (type(e), str(e))
        event(f"outcome: {outcome[0].__name__ if isinstance(outcome, tuple) else 'applied'}")
        return outcome, snapshot(root, mask_recent=mask_recent)
    finally:
        if isinstance(stream, io.IOBase):
            stream.close()
        shutil.rmtree(root)


@SETTINGS
@given(tree=trees(), chunking=chunkings)
def test_property_random_trees_extract_identically(tmp_path, tree, chunking):
    native, python = both_impls()
    (n_result, n_snap), (p_result, p_snap) = (run(fn, tree.tar, chunking, tmp_path, mask_recent=False)
                                              for fn in (native, python))
    assert n_result == p_result == uncompressed(tree.tar, tree.entries)
    assert n_snap == p_snap == tree.expected


SAFE_NAMES = ["a", "b", "a/b", "a/b/c", "b/a", "./a", "a//b/", "c/d/e", ".wh.a", "a/.wh.b", "a/.wh..wh..opq",
              ".wh..wh..opq", ".wh..wh.plnk", "l", "f", "."]
NAMES = SAFE_NAMES * 4 + ["l/x", "f/x", "/abs", "../up", "a/../b"]  # mostly conflicts, some refusals
TARGETS = ["a", "b", "a/b", "/", "..", "l", "f", "a/b/c", "missing", "", "/etc", "./a"]


@st.composite
def entry_sequences(draw):
    """Arbitrary (often conflicting or unsafe) entries: both implementations must agree on them."""
    fmt = draw(st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]))
    members = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["file", "file", "dir", "dir", "symlink", "hardlink", "fifo"]))
        members.append(member(draw(st.sampled_from(NAMES)), kind,
                              draw(st.binary(max_size=700)) if kind == "file" else b"",
                              link=draw(st.sampled_from(TARGETS)), mode=draw(st.integers(0, 0o7777)),
                              mtime=draw(st.integers(0, 1_500_000_000)), uid=draw(st.integers(0, 3))))
    return TarData(make_tar(*members, format=fmt))


@SETTINGS
@given(data=entry_sequences(), chunking=chunkings)
def test_property_conflicting_entries_agree(tmp_path, data, chunking):
    native, python = both_impls()
    assert run(native, data, chunking, tmp_path) == run(python, data, chunking, tmp_path)


@SETTINGS
@given(tree=trees(), mutations=st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 511), st.integers(0, 255)),
                                        min_size=1, max_size=4),
       cut=st.one_of(st.none(), st.integers(0, 2**20)), chunking=chunkings)
def test_property_corrupted_tars_agree(tmp_path, tree, mutations, cut, chunking):
    """Random bytes changed in the headers (and a random truncation): the same outcome either way."""
    with tarfile.open(fileobj=io.BytesIO(tree.tar)) as tar:
        headers = [m.offset for m in tar.getmembers()]
    data = bytearray(tree.tar)
    for which, offset, value in mutations:
        data[headers[which % len(headers)] + offset] = value
    if cut is not None:
        data = data[:cut % (len(data) + 1)]
    native, python = both_impls()
    assert run(native, bytes(data), chunking, tmp_path) == run(python, bytes(data), chunking, tmp_path)
