"""The build context (engine/build/context.py): what COPY/ADD sources name, their
cache digests and the tar they are packed into. No root needed: every test
builds its context directory under tmp_path.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import socket
import tarfile

import pytest

from engine.build.context import (BuildContext, SourceError, _match_regex, looks_like_archive)
from engine.errors import EngineError, UsageError


def make(tmp_path, files: dict, dockerfile: str = "FROM busybox\n", **kw) -> BuildContext:
    """A context directory from ``files`` (bytes/str: a file; None: a directory;
    ("symlink", target): a symlink), then BuildContext.from_directory."""
    root = tmp_path / "ctx"
    root.mkdir()
    if dockerfile is not None:
        (root / "Dockerfile").write_text(dockerfile)
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.mkdir(exist_ok=True)
        elif isinstance(content, tuple):
            os.symlink(content[1], path)
        else:
            path.write_bytes(content.encode() if isinstance(content, str) else content)
    return BuildContext.from_directory(str(root), **kw)


def names(sources) -> list[tuple[str, str, str]]:
    return [(s.path, s.target, s.kind) for s in sources]


def packed(ctx, sources, **kw) -> dict:
    out = io.BytesIO()
    count = ctx.pack(sources, out, **kw)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert len(members) == count
        return {name: (m, tar.extractfile(m).read() if m.isreg() else None)
                for name, m in members.items()}


# -- making a context -------------------------------------------------------------


def test_directory_context_reads_the_dockerfile_and_lists_entries(tmp_path):
    ctx = make(tmp_path, {"a.txt": "aaa", "src/x.py": "x", "src/empty": None})
    assert ctx.dockerfile_text == "FROM busybox\n"
    assert ctx.dockerfile_name == "Dockerfile"
    assert sorted(ctx.entries) == ["Dockerfile", "a.txt", "src", "src/empty", "src/x.py"]
    assert ctx.size == len("FROM busybox\n") + 3 + 1


def test_dockerfile_elsewhere_and_given_as_text(tmp_path):
    outside = tmp_path / "other.Dockerfile"
    outside.write_text("FROM scratch\n")
    root = tmp_path / "ctx2"
    root.mkdir()
    (root / "sub").mkdir()
    (root / "sub" / "Build.file").write_text("FROM busybox\nRUN true\n")
    ctx = BuildContext.from_directory(str(root), str(root / "sub" / "Build.file"))
    assert ctx.dockerfile_name == "sub/Build.file" and "RUN true" in ctx.dockerfile_text
    ctx = BuildContext.from_directory(str(root), str(outside))
    assert ctx.dockerfile_name == "other.Dockerfile" and ctx.dockerfile_text == "FROM scratch\n"
    ctx = BuildContext.from_directory(str(root), dockerfile_text="FROM x\n")
    assert ctx.dockerfile_text == "FROM x\n"


def test_missing_context_or_dockerfile(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        BuildContext.from_directory(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no such file or directory"):
        BuildContext.from_directory(str(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "Dockerfile").write_bytes(b"\xff\xfe")
    with pytest.raises(UsageError, match="not UTF-8"):
        BuildContext.from_directory(str(tmp_path / "bad"))


def test_dockerignore_hides_files_and_the_dockerfile_after_reading(tmp_path):
    ctx = make(tmp_path, {".dockerignore": "*.log\nDockerfile\n.dockerignore\nsecret/\n",
                          "a.log": "x", "keep.txt": "k", "secret/key": "s"})
    assert "FROM" in ctx.dockerfile_text  # read although excluded
    assert sorted(ctx.entries) == ["keep.txt"]
    with pytest.raises(SourceError, match="excluded by .dockerignore"):
        ctx.resolve("a.log")
    with pytest.raises(SourceError):
        ctx.resolve("Dockerfile")


def test_a_dockerignore_symlink_is_refused(tmp_path):
    (tmp_path / "real-ignore").write_text("*\n")
    with pytest.raises(EngineError, match="symlink"):
        make(tmp_path, {".dockerignore": ("symlink", str(tmp_path / "real-ignore"))})


def test_without_files_refuses_local_sources():
    ctx = BuildContext.without_files("FROM busybox\nCOPY a /\n")
    assert ctx.root is None and ctx.entries == {}
    with pytest.raises(SourceError, match="no build context"):
        ctx.resolve("a")


# -- tar contexts ------------------------------------------------------------------


def tar_of(entries: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, content in entries.items():
            info = tarfile.TarInfo(name)
            if isinstance(content, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, content[1]
                tar.addfile(info)
            elif content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


@pytest.mark.parametrize("compress", [lambda b: b, gzip.compress, bz2.compress, lzma.compress])
def test_tar_context_is_unpacked_and_removed_on_close(tmp_path, compress):
    data = compress(tar_of({"Dockerfile": b"FROM busybox\n", "dir": None, "dir/f": b"F"}))
    scratch = tmp_path / "scratch"
    with BuildContext.from_tar(io.BytesIO(data), str(scratch)) as ctx:
        assert ctx.dockerfile_text == "FROM busybox\n"
        assert sorted(ctx.entries) == ["Dockerfile", "dir", "dir/f"]
        assert names(ctx.resolve("dir/f")) == [("dir/f", "dir/f", "file")]
    assert not scratch.exists()


def test_tar_context_with_another_dockerfile_name(tmp_path):
    data = tar_of({"build/Dockerfile.dev": b"FROM scratch\n"})
    with BuildContext.from_tar(io.BytesIO(data), str(tmp_path / "s"), "build/Dockerfile.dev") as ctx:
        assert ctx.dockerfile_text == "FROM scratch\n"


@pytest.mark.parametrize("data, words", [
    (b"this is not a tar archive at all" * 40, "not a valid tar"),
    (tar_of({"../escape": b"x", "Dockerfile": b"FROM a\n"}), "not a valid tar"),
    (tar_of({"a.txt": b"x"}), "no such file or directory"),
])
def test_bad_tar_contexts_leave_no_scratch_directory(tmp_path, data, words):
    scratch = tmp_path / "scratch"
    with pytest.raises(UsageError, match=words):
        BuildContext.from_tar(io.BytesIO(data), str(scratch))
    assert not scratch.exists()
    assert not (tmp_path / "escape").exists()


def test_tar_context_absolute_names_stay_inside(tmp_path):
    data = tar_of({"/abs-name": b"x", "Dockerfile": b"FROM a\n"})
    with BuildContext.from_tar(io.BytesIO(data), str(tmp_path / "s")) as ctx:
        assert "abs-name" in ctx.entries
    assert not os.path.exists("/abs-name")


def test_tar_context_symlink_out_is_not_followed(tmp_path):
    data = tar_of({"Dockerfile": b"FROM a\n", "link": ("symlink", "/etc/passwd")})
    try:
        ctx = BuildContext.from_tar(io.BytesIO(data), str(tmp_path / "s"))
    except UsageError:
        return  # refused by the data filter: fine too
    with ctx:
        with pytest.raises(SourceError, match="outside the build context"):
            ctx.resolve("link")


# -- resolving sources -----------------------------------------------------------------


def test_resolve_files_directories_and_the_root(tmp_path):
    ctx = make(tmp_path, {"a.txt": "a", "src/x.py": "x", "src/sub/y": "y"})
    assert names(ctx.resolve("a.txt")) == [("a.txt", "a.txt", "file")]
    assert names(ctx.resolve("/a.txt")) == [("a.txt", "a.txt", "file")]
    assert names(ctx.resolve("./src/../a.txt")) == [("a.txt", "a.txt", "file")]
    [src] = ctx.resolve("src/")
    assert (src.path, src.kind, src.name) == ("src", "dir", "src")
    assert sorted(src.members) == ["src/sub", "src/sub/y", "src/x.py"]
    [everything] = ctx.resolve(".")
    assert everything.kind == "dir" and "Dockerfile" in everything.members
    assert len(everything.members) == len(ctx.entries)


@pytest.mark.parametrize("src", ["../x", "..", "a/../../x", "src/../../etc/passwd"])
def test_resolve_refuses_paths_outside(tmp_path, src):
    ctx = make(tmp_path, {"a/b": "b", "src/x": "x"})
    with pytest.raises(SourceError, match="outside the build context"):
        ctx.resolve(src)


def test_a_rooted_source_stays_in_the_context(tmp_path):
    # filepath.Join(context, "/../a.txt") is context/a.txt, as docker resolves it
    ctx = make(tmp_path, {"a.txt": "a"})
    assert names(ctx.resolve("/../a.txt")) == [("a.txt", "a.txt", "file")]


def test_resolve_missing(tmp_path):
    ctx = make(tmp_path, {"a.txt": "a"})
    with pytest.raises(SourceError, match="not found"):
        ctx.resolve("b.txt")
    with pytest.raises(SourceError, match="not found"):
        ctx.resolve("a.txt/inside")


def test_resolve_symlinks_inside_the_context(tmp_path):
    ctx = make(tmp_path, {"real.txt": "r", "dir/f": "f",
                          "link": ("symlink", "real.txt"),
                          "chain": ("symlink", "link"),
                          "dirlink": ("symlink", "dir"),
                          "sub/up": ("symlink", "../real.txt"),
                          "sub/updir": ("symlink", "../dir/")})
    assert names(ctx.resolve("link")) == [("link", "real.txt", "file")]
    assert names(ctx.resolve("chain")) == [("chain", "real.txt", "file")]
    assert names(ctx.resolve("sub/up")) == [("sub/up", "real.txt", "file")]
    assert names(ctx.resolve("dirlink/f")) == [("dirlink/f", "dir/f", "file")]
    [d] = ctx.resolve("sub/updir")
    assert (d.target, d.kind, d.members) == ("dir", "dir", ("dir/f",))
    # the source's own name is what COPY writes
    assert ctx.resolve("link")[0].name == "link"


@pytest.mark.parametrize("link", ["/etc/passwd", "../outside", "sub/../../x", "/"])
def test_resolve_refuses_symlinks_out(tmp_path, link):
    ctx = make(tmp_path, {"sub": None, "link": ("symlink", link)})
    with pytest.raises(SourceError, match="outside the build context"):
        ctx.resolve("link")


def test_resolve_symlink_loops(tmp_path):
    ctx = make(tmp_path, {"a": ("symlink", "b"), "b": ("symlink", "a"),
                          "dangling": ("symlink", "nothing")})
    with pytest.raises(SourceError, match="too many levels"):
        ctx.resolve("a")
    with pytest.raises(SourceError, match="not found"):
        ctx.resolve("dangling")


def test_resolve_wildcards(tmp_path):
    ctx = make(tmp_path, {"a.txt": "a", "b.txt": "b", "c.md": "c", "dir/d.txt": "d",
                          "x1": "", "x2": "", "xy": "", "[lit]": ""})
    assert sorted(s.path for s in ctx.resolve("*.txt")) == ["a.txt", "b.txt"]
    assert sorted(s.path for s in ctx.resolve("*/*.txt")) == ["dir/d.txt"]
    assert sorted(s.path for s in ctx.resolve("x?")) == ["x1", "x2", "xy"]
    assert sorted(s.path for s in ctx.resolve("x[0-9]")) == ["x1", "x2"]
    assert sorted(s.path for s in ctx.resolve("x[^0-9]")) == ["xy"]
    assert sorted(s.path for s in ctx.resolve("\\[lit]")) == ["[lit]"]
    assert [s.kind for s in ctx.resolve("d*")] == ["dir"]
    with pytest.raises(SourceError, match="matches nothing"):
        ctx.resolve("*.none")


def test_wildcards_follow_go_filepath_match():
    # Go's filepath.Match: * and ? never match "/", "^" negates a class, "!" is
    # an ordinary character, and a bad pattern is an error (not a crash).
    def match(pattern, name):
        return bool(_match_regex(pattern).fullmatch(name))

    assert match("*", ".hidden") and not match("*", "a/b")
    assert match("a?c", "abc") and not match("a?c", "a/c")
    assert match("[!a]", "!") and match("[!a]", "a") and not match("[!a]", "b")
    assert match("[^a]", "b") and not match("[^a]", "a")
    assert match("[a-c]x", "bx") and not match("[a-c]x", "dx")
    assert match("\\*", "*") and not match("\\*", "x")
    assert match("[\\]]", "]")
    for bad in ("x[", "[]a]", "[-a]", "[a-]", "[^]"):
        with pytest.raises(SourceError, match="syntax error in pattern"):
            _match_regex(bad)


# -- digests ------------------------------------------------------------------------------


def test_digests_ignore_mtimes_and_see_content_and_mode(tmp_path):
    ctx = make(tmp_path, {"a.txt": "a", "src/x": "x", "src/y": "y"})
    sources = ctx.resolve("a.txt") + ctx.resolve("src")
    first = ctx.digests(sources)
    assert sorted(first) == ["a.txt", "x", "y"]  # as the destination sees them
    os.utime(ctx.root + "/a.txt", (1, 1))
    os.utime(ctx.root + "/src/x", (2, 2))
    assert ctx.digests(sources) == first
    (tmp_path / "ctx" / "src" / "x").write_text("changed")
    second = ctx.digests(sources)
    assert second["x"] != first["x"] and second["a.txt"] == first["a.txt"]
    os.chmod(ctx.root + "/a.txt", 0o600)
    assert ctx.digests(sources)["a.txt"] != first["a.txt"]


def test_digests_are_keyed_by_destination_name(tmp_path):
    ctx = make(tmp_path, {"one/f": "same", "two/f": "same", "link": ("symlink", "one/f")})
    one = ctx.digests(ctx.resolve("one"))
    two = ctx.digests(ctx.resolve("two"))
    assert one == two == {"f": one["f"]}
    # a symlink source is followed: its digest is the target's, under the link's name
    assert ctx.digests(ctx.resolve("link")) == {"link": one["f"]}


# -- packing --------------------------------------------------------------------------------


def test_pack_names_are_relative_to_the_destination(tmp_path):
    ctx = make(tmp_path, {"a.txt": "A", "src/x": "X", "src/sub/y": "Y", "src/empty": None,
                          "src/rel": ("symlink", "x"), "link.txt": ("symlink", "a.txt")})
    os.chmod(ctx.root + "/src/x", 0o755)
    entries = packed(ctx, ctx.resolve("a.txt") + ctx.resolve("src") + ctx.resolve("link.txt"))
    assert sorted(entries) == ["a.txt", "empty", "link.txt", "rel", "sub", "sub/y", "x"]
    assert entries["a.txt"][1] == b"A" and entries["x"][0].mode == 0o755
    assert entries["rel"][0].issym() and entries["rel"][0].linkname == "x"
    # the source that is a symlink is followed: the file's data under the link's name
    assert entries["link.txt"][0].isreg() and entries["link.txt"][1] == b"A"
    assert entries["empty"][0].isdir()
    assert {(m.uid, m.gid, m.uname, m.gname) for m, _ in entries.values()} == {(0, 0, "", "")}


def test_pack_chown_and_chmod(tmp_path):
    ctx = make(tmp_path, {"a.txt": "A", "d/f": "F", "d/l": ("symlink", "f")})
    entries = packed(ctx, ctx.resolve("a.txt") + ctx.resolve("d"), uid=1000, gid=2000, mode=0o640)
    assert {(m.uid, m.gid) for m, _ in entries.values()} == {(1000, 2000)}
    assert entries["a.txt"][0].mode == 0o640 and entries["f"][0].mode == 0o640
    assert entries["l"][0].issym()


def test_pack_skips_sockets(tmp_path):
    ctx_dir = tmp_path / "ctx"
    ctx_dir.mkdir()
    (ctx_dir / "Dockerfile").write_text("FROM a\n")
    (ctx_dir / "d").mkdir()
    (ctx_dir / "d" / "f").write_text("f")
    os.mkfifo(ctx_dir / "d" / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(ctx_dir / "d" / "sock"))
    try:
        ctx = BuildContext.from_directory(str(ctx_dir))
        entries = packed(ctx, ctx.resolve("d"))
        assert sorted(entries) == ["f", "fifo"] and entries["fifo"][0].isfifo()
    finally:
        sock.close()


def test_open_file_reads_a_source(tmp_path):
    ctx = make(tmp_path, {"a.tar.gz": gzip.compress(b"x")})
    [source] = ctx.resolve("a.tar.gz")
    with ctx.open_file(source) as f:
        assert looks_like_archive(f.read(512)) == "gzip"
    ctx._close_root()


# -- archives ---------------------------------------------------------------------------------


def test_looks_like_archive():
    assert looks_like_archive(gzip.compress(b"x")[:512]) == "gzip"
    assert looks_like_archive(bz2.compress(b"x")[:512]) == "bzip2"
    assert looks_like_archive(lzma.compress(b"x")[:512]) == "xz"
    assert looks_like_archive(tar_of({"a": b"x"})[:512]) == "tar"
    assert looks_like_archive(b"#!/bin/sh\necho hi\n") is None
    assert looks_like_archive(b"just text " * 100) is None
    assert looks_like_archive(b"") is None
