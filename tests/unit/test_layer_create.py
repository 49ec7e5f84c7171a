"""create_layer: a directory (an overlay upper dir) becomes a reproducible layer tar.

Both implementations (the compiled ``engine._native.layers.create_layer``
and the readable ``engine.layer.create.create_layer``) must write the very
same bytes: every test here runs through the ``create`` fixture or compares
the two directly. The round-trip property builds random trees on disk,
archives them with both, applies each archive with both apply_layer
implementations, and requires the original tree back. The overlay test
uses a real overlayfs mount, in a private mount namespace of a child
process (nothing can stay mounted when it exits).

These tests need root (chown, mknod, trusted.* xattrs, mounts).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import LayerError
from engine.layer.create import ustar_header
from engine.layer.tar import LayerResult
from test_layer_apply import SETTINGS, load_impl, sha, snapshot

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: chown, mknod, trusted.* xattrs, mounts")

EMPTY_TAR = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"  # 1024 zero bytes


def load_create(name: str):
    if name == "native":
        try:
            from engine._native import layers
        except ImportError:
            pytest.skip("engine._native.layers is not built (test_native_layers_is_built fails)")
        return layers.create_layer
    from engine.layer import create

    return create.create_layer


@pytest.fixture(params=["native", "python"])
def create(request):
    """The create_layer function of each implementation."""
    return load_create(request.param)


def test_native_create_layer_is_built():
    """Fails (never skips) when the compiled module lacks create_layer."""
    from engine._native import layers

    assert callable(layers.create_layer)


def tar_bytes(fn, root, **kw) -> tuple[bytes, LayerResult]:
    out = io.BytesIO()
    result = fn(root, out, **kw)
    return out.getvalue(), result


def both(root, **kw) -> bytes:
    """The tar both implementations write for ``root``: they must be the same bytes."""
    native, python = (tar_bytes(load_create(n), root, **kw) for n in ("native", "python"))
    assert native[0] == python[0]
    assert native[1] == python[1]
    return native[0]


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


def names(data: bytes) -> list[str]:
    return [m.name + ("/" if m.isdir() else "") for m in members(data)]


def touch(path: Path, data: bytes = b"", mode: int = 0o644, mtime: int = 1_600_000_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    os.utime(path, (mtime, mtime))
    return path


# --- the format -------------------------------------------------------------------------


def test_empty_directory_is_the_empty_tar(create, tmp_path):
    data, result = tar_bytes(create, tmp_path)
    assert data == bytes(1024)
    assert result == LayerResult(EMPTY_TAR, EMPTY_TAR, 1024, 1024, 0)


def test_entries_and_their_metadata(create, tmp_path):
    touch(tmp_path / "etc/hostname", b"box\n", 0o644, 1_000_000_001)
    os.chown(tmp_path / "etc/hostname", 1000, 1001)
    os.symlink("/proc/mounts", tmp_path / "etc/mtab")
    os.mkfifo(tmp_path / "pipe")
    os.chmod(tmp_path / "pipe", 0o620)
    os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(tmp_path / "loop", stat.S_IFBLK | 0o660, os.makedev(7, 9))
    touch(tmp_path / "bin/sh", b"\x7fELF" * 1000, 0o4755)
    os.link(tmp_path / "bin/sh", tmp_path / "bin/ash")
    os.utime(tmp_path / "etc", (1_000_000_000, 1_000_000_000))
    data, result = tar_bytes(create, tmp_path)
    got = {m.name: m for m in members(data)}
    assert list(got) == ["bin", "bin/ash", "bin/sh", "etc", "etc/hostname", "etc/mtab", "loop", "null", "pipe"]
    assert got["etc/hostname"].get_info() | {"chksum": 0} == {
        "name": "etc/hostname", "mode": 0o644, "uid": 1000, "gid": 1001, "size": 4, "mtime": 1_000_000_001,
        "chksum": 0, "type": tarfile.REGTYPE, "linkname": "", "uname": "", "gname": "", "devmajor": 0,
        "devminor": 0}
    assert got["etc"].isdir() and got["etc"].mtime == 1_000_000_000 and got["etc"].mode == 0o755
    assert got["etc/mtab"].issym() and got["etc/mtab"].linkname == "/proc/mounts"
    assert got["bin/ash"].isreg() and got["bin/ash"].mode == 0o4755  # the first path of the inode...
    assert got["bin/sh"].islnk() and got["bin/sh"].linkname == "bin/ash"  # ...and the second links to it
    assert (got["null"].ischr(), got["null"].devmajor, got["null"].devminor) == (True, 1, 3)
    assert (got["loop"].isblk(), got["loop"].devmajor, got["loop"].devminor) == (True, 7, 9)
    assert got["pipe"].isfifo() and got["pipe"].mode == 0o620
    assert result == LayerResult(sha(data), sha(data), len(data), len(data), 9)
    raw = data[:512]
    assert raw[257:265] == b"ustar\x0000"  # POSIX ustar, not GNU
    assert all(m.pax_headers == {} for m in got.values())  # nothing needed PAX here


def test_byte_order_parents_first(create, tmp_path):
    for name in ("a/b", "a.txt", "a-c", "b", "A", "é", "a/.wh.x/y"):
        touch(tmp_path / name)
    data, _ = tar_bytes(create, tmp_path)
    order = [m.name.encode() for m in members(data)]
    assert order == sorted(order)
    assert order == [b"A", b"a", b"a-c", b"a.txt", b"a/.wh.x", b"a/.wh.x/y", b"a/b", b"b", "é".encode()]


def test_reproducible(tmp_path):
    """The same content, built in another order at another time, gives the same bytes."""
    rng = random.Random(4)
    files = {f"d{i % 3}/f{i}": rng.randbytes(rng.randint(0, 3000)) for i in range(30)}
    for root, order in ((tmp_path / "one", sorted(files)), (tmp_path / "two", sorted(files, reverse=True))):
        for name in order:
            touch(root / name, files[name], mtime=1_234_567_890)
        for d in ("d0", "d1", "d2"):
            os.utime(root / d, (1_234_567_890, 1_234_567_890))
    first = both(tmp_path / "one")
    assert both(tmp_path / "two") == first
    assert both(tmp_path / "one") == first  # and again
    os.utime(tmp_path / "two/d0/f0", (2_000_000_000, 2_000_000_000))
    assert both(tmp_path / "two") != first
    assert both(tmp_path / "two", mtime=7) == both(tmp_path / "one", mtime=7)


def test_fixed_mtime(create, tmp_path):
    touch(tmp_path / "a/f", mtime=1_000)
    os.symlink("f", tmp_path / "a/l")
    data, _ = tar_bytes(create, tmp_path, mtime=1_700_000_000.9)
    assert {m.mtime for m in members(data)} == {1_700_000_000}


def test_sub_second_times_are_rounded_down(create, tmp_path):
    path = touch(tmp_path / "f")
    os.utime(path, ns=(0, 1_500_000_000_999_999_999))
    os.utime(tmp_path / "f", ns=(0, -1_500_000_001))  # before 1970: rounded down too (-2 s)
    data, _ = tar_bytes(create, tmp_path)
    (m,) = members(data)
    assert m.mtime == -2 and m.pax_headers == {"mtime": "-2"}


def test_pax_only_when_needed(create, tmp_path):
    deep = "d" * 90 + "/" + "e" * 90  # fits ustar's prefix + name
    touch(tmp_path / deep / "f")
    long = "L" * 120  # cannot be split
    touch(tmp_path / long)
    os.symlink("t" * 150, tmp_path / "sym")
    big = touch(tmp_path / "big")
    os.chown(big, 3_000_000, 4_000_000_000)
    os.utime(big, (9_000_000_000, 9_000_000_000))  # after 2242: more than 11 octal digits
    data, _ = tar_bytes(create, tmp_path)
    got = {m.name: m for m in members(data)}
    assert got[deep + "/f"].pax_headers == {}
    assert data.count(b"././@PaxHeader") == 3
    assert got[long].pax_headers == {"path": long}
    assert got["sym"].pax_headers == {"linkpath": "t" * 150} and got["sym"].linkname == "t" * 150
    assert got["big"].pax_headers == {"uid": "3000000", "gid": "4000000000", "mtime": "9000000000"}
    assert (got["big"].uid, got["big"].gid, got["big"].mtime) == (3_000_000, 4_000_000_000, 9_000_000_000)


def test_huge_size_goes_into_pax():
    # (Tested on the header function: an 8 GiB file would take seconds to archive.)
    header = ustar_header(b"f", ord("0"), 0o644, 0, 0, 1 << 33, 0, b"", (0, 0), [])
    info = tarfile.TarInfo.frombuf(header[-512:], "utf-8", "surrogateescape")
    assert info.size == 0
    assert b" size=8589934592\n" in header[512:1024]


def test_xattrs_become_schily_records(create, tmp_path):
    f = touch(tmp_path / "f", b"x")
    os.setxattr(f, "user.b", b"2")
    os.setxattr(f, "user.a", b"bin\nary\0value")
    os.setxattr(f, "trusted.t", b"")
    os.setxattr(f, "trusted.overlay.origin", b"handle")  # overlayfs' own: not archived
    os.setxattr(f, "security.capability", bytes.fromhex("0100000200200000000000000000000000000000"))
    (tmp_path / "d").mkdir()
    os.setxattr(tmp_path / "d", "user.dir", b"yes")
    os.symlink("f", tmp_path / "l")
    os.setxattr(tmp_path / "l", "trusted.sym", b"link", follow_symlinks=False)
    data, _ = tar_bytes(create, tmp_path)
    got = {m.name: m for m in members(data)}
    assert list(got["f"].pax_headers) == ["SCHILY.xattr.security.capability", "SCHILY.xattr.trusted.t",
                                          "SCHILY.xattr.user.a", "SCHILY.xattr.user.b"]  # sorted: reproducible
    assert list(got["d"].pax_headers) == ["SCHILY.xattr.user.dir"]
    for fn in (load_impl("native"), load_impl("python")):
        dst = Path(tempfile.mkdtemp(dir=tmp_path))
        fn(io.BytesIO(data), dst)
        assert os.getxattr(dst / "f", "user.a") == b"bin\nary\0value"
        assert os.getxattr(dst / "f", "trusted.t") == b""
        assert "trusted.overlay.origin" not in os.listxattr(dst / "f")
        assert os.getxattr(dst / "f", "security.capability")[:4] == b"\x01\x00\x00\x02"
        assert os.getxattr(dst / "d", "user.dir") == b"yes"
        assert os.getxattr(dst / "l", "trusted.sym", follow_symlinks=False) == b"link"


@pytest.mark.parametrize("xattr, message", [
    ("trusted.overlay.redirect", "'d' uses overlayfs' trusted.overlay.redirect: the upper directory of a "
                                 "mount with redirect_dir or metacopy cannot be archived as a layer"),
    ("trusted.overlay.metacopy", "'d' uses overlayfs' trusted.overlay.metacopy: the upper directory of a "
                                 "mount with redirect_dir or metacopy cannot be archived as a layer"),
    ("user.a=b", "'d': xattr 'user.a=b' cannot be archived (its name contains '=')"),
])
def test_unarchivable_xattrs_are_refused(create, tmp_path, xattr, message):
    (tmp_path / "d").mkdir()
    os.setxattr(tmp_path / "d", xattr, b"x")
    with pytest.raises(LayerError) as exc:
        create(tmp_path, io.BytesIO())
    assert str(exc.value) == message


def test_sockets_are_skipped(create, tmp_path):
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "sock"))
        touch(tmp_path / "z")
        data, result = tar_bytes(create, tmp_path)
    assert names(data) == ["z"] and result.entries == 1


def test_missing_root(create, tmp_path):
    with pytest.raises(FileNotFoundError) as exc:
        create(tmp_path / "nope", io.BytesIO())
    assert exc.value.filename == str(tmp_path / "nope")  # as os.open says it


def test_symlinked_root_is_followed_but_nothing_below(create, tmp_path):
    # The root is the caller's choice; below it, a symlink is only ever an entry.
    touch(tmp_path / "real/f", b"1")
    os.symlink(tmp_path / "real", tmp_path / "root")
    (tmp_path / "real/outside").symlink_to("/etc")
    data, _ = tar_bytes(create, tmp_path / "root")
    assert names(data) == ["f", "outside"]


def test_short_writes_to_out_are_continued(create, tmp_path):
    touch(tmp_path / "f", random.Random(1).randbytes(3 << 20))

    class Trickle(io.RawIOBase):
        def __init__(self):
            self.data = bytearray()

        def writable(self):
            return True

        def write(self, b):
            n = min(len(b), 1000)
            self.data += bytes(b[:n])
            return n

    out = Trickle()
    result = create(tmp_path, out)
    assert bytes(out.data) == tar_bytes(create, tmp_path)[0] and result.size == len(out.data)


# --- whiteouts -------------------------------------------------------------------------------


def whiteout(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
    return path


def test_whiteouts_become_oci_entries(create, tmp_path):
    os.utime(whiteout(tmp_path / "etc/old"), (1_111_111_111, 1_111_111_111))
    whiteout(tmp_path / "gone")
    (tmp_path / "data").mkdir()
    touch(tmp_path / "data/new", b"n")
    os.setxattr(tmp_path / "data", "trusted.overlay.opaque", b"y")
    (tmp_path / "data-2").mkdir()  # sorts between "data" and "data/..."
    (tmp_path / "half").mkdir()
    os.setxattr(tmp_path / "half", "trusted.overlay.opaque", b"x")  # not opaque ("x": has xattr whiteouts)
    data, result = tar_bytes(create, tmp_path)
    got = [(m.name, m.type, m.mode) for m in members(data)]
    assert got == [
        (".wh.gone", tarfile.REGTYPE, 0o600), ("data", tarfile.DIRTYPE, 0o755),
        ("data/.wh..wh..opq", tarfile.REGTYPE, 0o755),  # right after its directory
        ("data-2", tarfile.DIRTYPE, 0o755), ("data/new", tarfile.REGTYPE, 0o644), ("etc", tarfile.DIRTYPE, 0o755),
        ("etc/.wh.old", tarfile.REGTYPE, 0o600), ("half", tarfile.DIRTYPE, 0o755)]
    assert {m.name: m.mtime for m in members(data)}["etc/.wh.old"] == 1_111_111_111
    assert all(m.size == 0 for m in members(data) if ".wh." in m.name)
    assert b"trusted.overlay" not in data
    assert result.entries == 8


def test_whiteouts_off_keeps_overlayfs_forms(create, tmp_path):
    whiteout(tmp_path / "gone")
    (tmp_path / "d").mkdir()
    os.setxattr(tmp_path / "d", "trusted.overlay.opaque", b"y")
    data, _ = tar_bytes(create, tmp_path, whiteouts=False)
    got = {m.name: m for m in members(data)}
    assert list(got) == ["d", "gone"]
    assert got["gone"].ischr() and (got["gone"].devmajor, got["gone"].devminor) == (0, 0)
    assert b"trusted.overlay" not in data


def test_opaque_root(create, tmp_path):
    os.setxattr(tmp_path, "trusted.overlay.opaque", b"y")
    touch(tmp_path / "a")
    data, _ = tar_bytes(create, tmp_path)
    assert names(data) == [".wh..wh..opq", "a"]


def test_whiteouts_sharing_an_inode_are_not_hard_links(create, tmp_path):
    # overlayfs may hard-link every whiteout to one shared inode.
    whiteout(tmp_path / "a")
    os.link(tmp_path / "a", tmp_path / "b")
    data, _ = tar_bytes(create, tmp_path)
    assert [(m.name, m.type) for m in members(data)] == [(".wh.a", tarfile.REGTYPE), (".wh.b", tarfile.REGTYPE)]


# --- compression ---------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_output(create, tmp_path, compression):
    touch(tmp_path / "a/f", random.Random(2).randbytes(100_000) + bytes(3 << 20))
    plain, plain_result = tar_bytes(create, tmp_path)
    blob, result = tar_bytes(create, tmp_path, compression=compression)
    assert result == LayerResult(sha(blob), sha(plain), len(blob), len(plain), 2)
    assert (gzip.decompress(blob) if compression == "gzip" else zstandard.ZstdDecompressor().decompressobj()
            .decompress(blob)) == plain
    if compression == "gzip":
        # RFC 1952 2.3: ID1 ID2 CM FLG MTIME(4) XFL OS: no name, no time.
        assert blob[:3] == b"\x1f\x8b\x08" and blob[3] == 0 and blob[4:8] == bytes(4)
    assert tar_bytes(create, tmp_path, compression=compression)[0] == blob  # reproducible
    for apply in (load_impl("native"), load_impl("python")):
        dst = Path(tempfile.mkdtemp(dir=tmp_path / ".."))
        try:
            applied = apply(io.BytesIO(blob), dst, expected_digest=result.digest, expected_diff_id=result.diff_id)
            assert applied == result
        finally:
            shutil.rmtree(dst)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_output_is_the_same_from_both(tmp_path, compression):
    touch(tmp_path / "f", random.Random(3).randbytes(2_500_000))
    both(tmp_path, compression=compression)


def test_bad_compression(create, tmp_path):
    with pytest.raises(ValueError, match="compression must be"):
        create(tmp_path, io.BytesIO(), compression="xz")


# --- round trip: random trees, both implementations, both ways -------------------------------------

NAMES = ["a", "b", "é", "a.b", "a-b", ".hidden", "n" * 60, "m" * 101]
XATTR_VALUES = st.binary(max_size=40)


def normalize(snap: dict) -> dict:
    """Whiteout devices come back as new 0/0 devices: only that they exist matters."""
    out = {}
    for path, info in snap.items():
        if info.get("kind") == "chr" and info.get("data") == (0, 0):
            info = {"kind": "whiteout", "links": info["links"][:0]}
        out[path] = info
    return out


@st.composite
def disk_trees(draw, whiteouts: bool):
    """A plan for a random tree: (path, kind, details) entries, parents first."""
    plan = []
    dirs = [""]
    for _ in range(draw(st.integers(0, 14))):
        parent = draw(st.sampled_from(dirs))
        name = draw(st.sampled_from(NAMES))
        path = f"{parent}/{name}" if parent else name
        if any(p[0] == path for p in plan) or len(path.encode()) > 250:
            continue
        kinds = ["file", "file", "dir", "dir", "symlink", "fifo", "chr", "hardlink"]
        if whiteouts:
            kinds += ["whiteout", "opaque"]
        kind = draw(st.sampled_from(kinds))
        files = [p[0] for p in plan if p[1] == "file"]
        if kind == "hardlink" and not files:
            kind = "file"
        meta = {"mode": draw(st.integers(0, 0o7777)), "uid": draw(st.sampled_from([0, 1, 1000, 3_000_000])),
                "gid": draw(st.sampled_from([0, 5, 4_000_000_000])),
                "mtime": draw(st.integers(-2**31, 15_000_000_000)),
                "xattrs": draw(st.dictionaries(st.sampled_from(["user.a", "user.b", "trusted.c"]), XATTR_VALUES,
                                               max_size=2))}
        if kind == "file":
            meta["data"] = draw(st.one_of(st.binary(max_size=2000), st.just(bytes(70_000))))
        elif kind == "symlink":
            meta["target"] = draw(st.sampled_from(["a", "../x", "/etc/passwd", "t" * 130]))
        elif kind == "chr":
            meta["dev"] = (draw(st.integers(1, 255)), draw(st.integers(0, 255)))
        elif kind == "hardlink":
            meta["target"] = draw(st.sampled_from(files))
        plan.append((path, kind, meta))
        if kind in ("dir", "opaque"):
            dirs.append(path)
    return plan


def build(root: Path, plan) -> None:
    for path, kind, meta in plan:
        full = root / path
        if kind in ("dir", "opaque"):
            full.mkdir()
            if kind == "opaque":
                os.setxattr(full, "trusted.overlay.opaque", b"y")
        elif kind == "file":
            full.write_bytes(meta["data"])
        elif kind == "symlink":
            os.symlink(meta["target"], full)
        elif kind == "fifo":
            os.mkfifo(full)
        elif kind == "chr":
            os.mknod(full, stat.S_IFCHR | 0o600, os.makedev(*meta["dev"]))
        elif kind == "whiteout":
            whiteout(full)
            continue
        elif kind == "hardlink":
            os.link(root / meta["target"], full)
            continue
        os.chown(full, meta["uid"], meta["gid"], follow_symlinks=False)
        if kind != "symlink":
            os.chmod(full, meta["mode"])
            for name, value in meta["xattrs"].items():
                if not name.startswith("user.") or kind in ("file", "dir", "opaque"):
                    os.setxattr(full, name, value)
    for path, kind, meta in reversed(plan):  # children first: then a directory's time stays
        if kind not in ("whiteout", "hardlink"):
            os.utime(root / path, (meta["mtime"], meta["mtime"]), follow_symlinks=False)


@SETTINGS
@given(data=st.data(), whiteouts=st.booleans(), compression=st.sampled_from(["none", "gzip", "zstd"]))
def test_property_round_trip(tmp_path, data, whiteouts, compression):
    plan = data.draw(disk_trees(whiteouts))
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    try:
        src = work / "src"
        src.mkdir()
        build(src, plan)
        blob = both(src, whiteouts=whiteouts, compression=compression)
        assert both(src, whiteouts=whiteouts, compression=compression) == blob  # creating twice: the same bytes
        expected = normalize(snapshot(src, xattrs=True)) if whiteouts else snapshot(src, xattrs=True)
        for name in ("native", "python"):
            dst = work / name
            dst.mkdir()
            load_impl(name)(io.BytesIO(blob), dst)
            got = snapshot(dst, xattrs=True)
            assert (normalize(got) if whiteouts else got) == expected
    finally:
        shutil.rmtree(work)


def test_gnu_tar_reads_it_the_same(tmp_path):
    if not shutil.which("tar"):
        pytest.skip("needs GNU tar")
    src = tmp_path / "src"
    touch(src / ("d" * 90 + "/" + "e" * 90 + "/f"), b"deep")
    touch(src / ("L" * 120), b"long")
    os.symlink("t" * 150, src / "sym")
    touch(src / "x", b"x")
    os.chown(src / "x", 3_000_000, 5)
    data = both(src, mtime=1_000_000_000)
    (tmp_path / "layer.tar").write_bytes(data)
    out = subprocess.run(["tar", "--numeric-owner", "-tvf", str(tmp_path / "layer.tar")], capture_output=True,
                         text=True, check=True).stdout
    listed = [line.split()[-1] if " -> " not in line else line.split(" -> ")[0].split()[-1]
              for line in out.splitlines()]
    assert listed == [m.name + ("/" if m.isdir() else "") for m in members(data)]
    assert "3000000/5" in out


# --- a real overlay ------------------------------------------------------------------------------

SNAPSHOT_SCRIPT = r'''
import json, os, stat, sys

def view(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            info = [stat.filemode(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns // 10**9]
            if stat.S_ISREG(st.st_mode):
                info.append(open(full, "rb").read().hex())
            elif stat.S_ISLNK(st.st_mode):
                info.append(os.readlink(full))
            if not stat.S_ISLNK(st.st_mode):
                info.append(sorted((n, os.getxattr(full, n).hex()) for n in os.listxattr(full)
                                   if n.startswith("user.")))
            out[os.path.relpath(full, root)] = info
    return out

merged, options, commands = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
os.system(f"mount -t overlay overlay -o {options} {merged}") == 0 or sys.exit("mount failed")
try:
    for command in commands:
        if os.system(command) != 0:
            sys.exit(f"failed: {command}")
    print(json.dumps(view(merged)))
finally:
    os.system(f"umount {merged}")
'''


def in_overlay(tmp_path: Path, options: str, commands=()) -> dict:
    """Mount an overlay in a child's private mount namespace, run ``commands``, return its view."""
    merged = Path(tempfile.mkdtemp(dir=tmp_path))
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", SNAPSHOT_SCRIPT,
                          str(merged), options, json.dumps([c.replace("$M", str(merged)) for c in commands])],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_real_overlay_upper_dir(tmp_path):
    if not shutil.which("unshare"):
        pytest.skip("needs unshare(1)")
    lower, upper, work = tmp_path / "lower", tmp_path / "upper", tmp_path / "work"
    for d in (upper, work):
        d.mkdir()
    touch(lower / "etc/passwd", b"root:x:0:0\n")
    touch(lower / "etc/old", b"old")
    touch(lower / "etc/keep", b"keep", 0o644)
    touch(lower / "data/a", b"a")
    touch(lower / "data/sub/b", b"b")
    touch(lower / "gone/deep/c", b"c")
    touch(lower / "bin/tool", b"v1", 0o755)
    os.link(lower / "bin/tool", lower / "bin/tool-link")
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    before = in_overlay(tmp_path, options, [
        "rm $M/etc/old",                                         # a file deleted: a whiteout
        "rm -r $M/gone",                                         # a directory deleted: a whiteout
        "rm -r $M/data && mkdir $M/data && echo new > $M/data/new",  # replaced: an opaque directory
        "echo v2 > $M/bin/tool",                                 # changed: copied up
        "chmod 700 $M/etc/keep",                                 # metadata changed: copied up
        "mv $M/etc/passwd $M/etc/passwd.bak",                    # renamed: a copy and a whiteout
        "mkdir -p $M/new/dir && echo hi > $M/new/dir/file && ln $M/new/dir/file $M/new/hard",
        "ln -s ../etc $M/new/link && mkfifo $M/new/fifo && setfattr -n user.k -v v $M/new/dir/file"
        " 2>/dev/null || python3 -c \"import os; os.setxattr('$M/new/dir/file', 'user.k', b'v')\"",
    ])
    data = both(upper)
    listed = names(data)
    for expected in ("etc/.wh.old", ".wh.gone", "data/.wh..wh..opq", "etc/.wh.passwd", "new/hard"):
        assert expected in listed, listed
    assert listed.index("data/.wh..wh..opq") == listed.index("data/") + 1
    assert not any(m.ischr() for m in members(data))
    assert b"trusted.overlay" not in data
    # The layer, applied as a lower layer above the lower one, gives the same merged view.
    applied = {}
    for name in ("native", "python"):
        applied[name] = tmp_path / f"applied-{name}"
        applied[name].mkdir()
        load_impl(name)(io.BytesIO(data), applied[name])
    assert snapshot(applied["native"], mask_recent=True) == snapshot(applied["python"], mask_recent=True)
    after = in_overlay(tmp_path, f"lowerdir={applied['native']}:{lower}")
    assert after == before
    assert "gone" not in after and "etc/old" not in after and "data/a" not in after
    assert after["data/new"][4] == b"new\n".hex() and after["bin/tool"][4] == b"v2\n".hex()
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()  # nothing left mounted here
