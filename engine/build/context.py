"""The build context as the builder sees it: the files sent, and COPY/ADD sources among them.

Lifecycle::

    BuildContext.from_directory(path, dockerfile)   a directory (the usual case)
    BuildContext.from_tar(stream, scratch_dir)      ``tar c . | dockyard build -``
    BuildContext.without_files(text)                ``dockyard build - < Dockerfile``
        |  .dockerfile_text    the Dockerfile, read before anything else
        |  .entries            {relative path: lstat} of every entry sent
        v
    resolve(src) -> [Source]   one COPY/ADD source (maybe a wildcard) -> what it names
    digests(sources)           per-file digests for the cache (content + metadata, no mtimes)
    pack(sources, out, ...)    the files as a tar whose names are relative to the destination
        v
    close()                    a tar context's scratch directory is removed

What is sent follows ``.dockerignore`` (build/ignore.py): excluded files do
not exist for COPY, and the Dockerfile and ``.dockerignore`` are hidden
again once read when the patterns exclude them, as docker's daemon does.
Nothing here follows a symlink out of the context: the walk never follows
symlinks, a source that *is* a symlink is resolved inside the context or
refused, and files are opened one directory at a time with O_NOFOLLOW.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import re
import shutil
import stat
import tarfile
from dataclasses import dataclass, field

from ..errors import EngineError, UsageError
from . import ignore

MAX_SYMLINK_HOPS = 40  # as the kernel's path walk (path_resolution(7), ELOOP)


class SourceError(UsageError):
    """A COPY/ADD source is missing, excluded or outside the context (no line yet:
    the builder adds it)."""


@dataclass(frozen=True)
class Source:
    """One thing a COPY/ADD source names, in the context.

    ``path``: its relative path as written after cleaning (``app.sh``,
    ``src``); ``target``: the entry that holds the data (differs when
    ``path`` is a symlink, which COPY follows); ``kind``: "file", "dir" or
    "other" (symlinks met *inside* a copied directory stay symlinks);
    ``members``: for a directory, every entry sent below it.
    """

    path: str
    target: str
    kind: str
    members: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)


class BuildContext:
    """The files a build may copy from, after ``.dockerignore``."""

    def __init__(self, root: str | None, dockerfile_text: str, dockerfile_name: str,
                 patterns: list | None = None, scratch: str | None = None):
        self.root = root
        self.dockerfile_text = dockerfile_text
        self.dockerfile_name = dockerfile_name
        self.patterns = patterns or []
        self._scratch = scratch  # a directory we made and must remove
        self.entries: dict[str, os.stat_result] = {}
        if root is not None:
            sent = ignore.context_patterns(self.patterns, dockerfile_name)
            hidden = set(ignore.hidden_after_read(self.patterns, dockerfile_name))
            for relpath, st in ignore.walk_context(root, sent):
                if relpath not in hidden:
                    self.entries[relpath] = st

    # -- making one ------------------------------------------------------------

    @classmethod
    def from_directory(cls, path: str, dockerfile: str | None = None,
                       dockerfile_text: str | None = None) -> "BuildContext":
        """The context directory ``path``; the Dockerfile is ``dockerfile`` (a
        path as the user gave it, relative to the current directory, as
        ``docker build -f``), else ``PATH/Dockerfile``; or its text is given."""
        if not os.path.isdir(path):
            raise UsageError(f'unable to prepare context: path "{path}" not found')
        root = os.path.realpath(path)
        name = "Dockerfile"
        if dockerfile_text is None:
            file = dockerfile if dockerfile is not None else os.path.join(path, "Dockerfile")
            dockerfile_text = _read_dockerfile(file)
            name = os.path.relpath(os.path.realpath(file), root)
            if name.startswith("../"):
                name = os.path.basename(file)  # outside the context: not part of it
        elif dockerfile is not None:
            name = dockerfile
        return cls(root, dockerfile_text, name, _read_patterns(root))

    @classmethod
    def from_tar(cls, stream, scratch_dir: str, dockerfile: str = "Dockerfile") -> "BuildContext":
        """A context sent as a tar stream (maybe gzip/bzip2/xz compressed): it
        is unpacked into ``scratch_dir`` with tarfile's ``data`` filter (no
        absolute names, no ``..``, no links out), which :meth:`close` removes."""
        os.makedirs(scratch_dir, mode=0o700)
        try:
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                tar.extractall(scratch_dir, filter="data")
        except (tarfile.TarError, EOFError, OSError) as e:
            shutil.rmtree(scratch_dir, ignore_errors=True)
            raise UsageError(f"the build context is not a valid tar archive: {e}") from None
        dockerfile_path = os.path.join(scratch_dir, ignore.clean(dockerfile))
        try:
            text = _read_dockerfile(dockerfile_path, shown=dockerfile)
            return cls(scratch_dir, text, dockerfile, _read_patterns(scratch_dir), scratch=scratch_dir)
        except BaseException:
            shutil.rmtree(scratch_dir, ignore_errors=True)
            raise

    @classmethod
    def without_files(cls, dockerfile_text: str) -> "BuildContext":
        """Only a Dockerfile (``dockyard build - < Dockerfile``): COPY/ADD of
        local files fail, URLs and ``--from`` still work."""
        return cls(None, dockerfile_text, "Dockerfile")

    def close(self) -> None:
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def size(self) -> int:
        """Bytes of file content sent ("Sending build context to ...")."""
        return sum(st.st_size for st in self.entries.values() if stat.S_ISREG(st.st_mode))

    # -- sources -----------------------------------------------------------------

    def resolve(self, src: str) -> list[Source]:
        """What one source names: a path, or a wildcard (Go's ``filepath.Match``:
        ``*``, ``?``, ``[...]``, none of them matching ``/``)."""
        if self.root is None:
            raise SourceError(f"{src}: no build context: the Dockerfile came from stdin "
                              "(give a context directory to COPY files)")
        # A rooted source is rooted at the context (filepath.Join(context, "/../a") is
        # context/a, as docker resolves it); a relative one may not climb out of it.
        path = (ignore.clean("/" + src)[1:] or ".") if src.startswith("/") else ignore.clean(src)
        if path == ".." or path.startswith("../"):
            raise SourceError(f"forbidden path outside the build context: {src}")
        if _has_wildcard(path):
            regex = _match_regex(path)
            found = [self._source(p) for p in self.entries if regex.fullmatch(p)]
            if not found:
                raise SourceError(f"no source files were specified: {src!r} matches nothing "
                                  "in the build context (or only what .dockerignore excludes)")
            return found
        # Not looked up in self.entries directly: a symlink on the way
        # (``linkdir/file``) is followed inside the context by _follow.
        return [self._source(path)]

    def _source(self, path: str) -> Source:
        target = self._follow(path) if path != "." else "."
        st = self.entries.get(target)
        if target == "." or (st is not None and stat.S_ISDIR(st.st_mode)):
            prefix = "" if target == "." else target + "/"
            members = tuple(p for p in self.entries if p.startswith(prefix))
            return Source(path, target, "dir", members)
        kind = "file" if stat.S_ISREG(st.st_mode) else "other"
        return Source(path, target, kind)

    def _follow(self, path: str) -> str:
        """Resolve symlinks in ``path`` inside the context; refuse one that leaves it."""
        hops = 0
        parts = path.split("/")
        done: list[str] = []
        while parts:
            name = parts.pop(0)
            current = "/".join(done + [name])
            st = self.entries.get(current)
            if st is not None and stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise SourceError(f"{path}: too many levels of symbolic links")
                link = os.readlink(os.path.join(self.root, current))
                joined = link if link.startswith("/") else "/".join(done + [link])
                resolved = ignore.clean(joined.lstrip("/") if link.startswith("/") else joined)
                if link.startswith("/") or resolved == ".." or resolved.startswith("../"):
                    raise SourceError(f"forbidden path outside the build context: {path} "
                                      f"(the symlink {current} points to {link})")
                parts = ([] if resolved == "." else resolved.split("/")) + parts
                done = []
                continue
            if st is None:
                raise SourceError(f'"{path}": not found: file not found in build context or '
                                  "excluded by .dockerignore")
            done.append(name)
        return "/".join(done) or "."

    def digests(self, sources: list[Source]) -> dict[str, str]:
        """{path as copied: sha256 of its content and metadata} for the cache.

        The keys are the paths the image will see relative to the
        destination, so renaming a file inside a copied directory is a
        change; the values follow ignore.checksum's record (no mtimes),
        without the path in the context and without the host owner: COPY
        writes 0:0 (or ``--chown``'s), as docker's CLI sends the context, so
        a ``chown`` on the host changes nothing in the image.
        """
        out = {}
        for source in sources:
            for relpath, shown in self._walk_source(source):
                # fields: relpath, kind, mode, uid, gid, link, device, content, capability
                fields = ignore._entry_record(self._root_fd(), relpath).split(b"\0")
                kept = b"\0".join(fields[1:3] + fields[5:])
                out[shown] = hashlib.sha256(kept).hexdigest()
        self._close_root()
        return out

    def _walk_source(self, source: Source):
        """(entry relative path in the context, name relative to the destination)."""
        if source.kind == "dir":
            prefix = "" if source.target == "." else source.target + "/"
            for member in source.members:
                yield member, member[len(prefix):]
        else:
            yield source.target, source.name

    _fd = None

    def _root_fd(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return self._fd

    def _close_root(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def pack(self, sources: list[Source], out, *, uid: int = 0, gid: int = 0,
             mode: int | None = None) -> int:
        """Write the sources as a tar to the binary file ``out``; return the entry count.

        Names are relative to the destination directory: a directory source
        contributes its contents, a file its base name. Owners become
        ``uid``/``gid`` (0:0 unless ``--chown``, as the reference says);
        ``mode`` (``--chmod``) replaces the permission bits.
        """
        count = 0
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for source in sources:
                for relpath, name in self._walk_source(source):
                    count += self._add(tar, relpath, name, uid, gid, mode)
        self._close_root()
        return count

    def _add(self, tar, relpath: str, name: str, uid: int, gid: int, mode: int | None) -> int:
        parent_fd, base = ignore._open_parent(self._root_fd(), relpath)
        try:
            st = os.stat(base, dir_fd=parent_fd, follow_symlinks=False)
            info = tarfile.TarInfo(name)
            info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
            info.mtime = int(st.st_mtime)
            perm = stat.S_IMODE(st.st_mode) if mode is None else mode
            info.mode = perm
            if stat.S_ISREG(st.st_mode):
                info.type, info.size = tarfile.REGTYPE, st.st_size
                fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
                with os.fdopen(fd, "rb") as f:
                    tar.addfile(info, f)
                return 1
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
            elif stat.S_ISLNK(st.st_mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(base, dir_fd=parent_fd)
                info.mode = 0o777
            elif stat.S_ISFIFO(st.st_mode):
                info.type = tarfile.FIFOTYPE
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            else:
                return 0  # a socket: tar cannot hold one (GNU tar skips them too)
            tar.addfile(info)
            return 1
        finally:
            if parent_fd != self._root_fd():
                os.close(parent_fd)

    def open_file(self, source: Source):
        """A binary file object on a file source (for ADD's archive check)."""
        parent_fd, base = ignore._open_parent(self._root_fd(), source.target)
        try:
            fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
        finally:
            if parent_fd != self._root_fd():
                os.close(parent_fd)
        return os.fdopen(fd, "rb")


def _read_dockerfile(path: str, shown: str | None = None) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise UsageError(f"unable to prepare context: unable to evaluate symlinks in Dockerfile "
                         f"path: lstat {shown or path}: no such file or directory") from None
    except IsADirectoryError:
        raise UsageError(f"the Dockerfile {shown or path} is a directory") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"the Dockerfile {shown or path} is not UTF-8 text") from None


def _read_patterns(root: str) -> list:
    path = os.path.join(root, ".dockerignore")
    if os.path.islink(path):
        raise EngineError(".dockerignore is a symlink: refusing to follow it out of the context")
    try:
        with open(path, encoding="utf-8") as f:
            return ignore.parse_dockerignore(f.read())
    except FileNotFoundError:
        return []


def _has_wildcard(path: str) -> bool:
    return any(c in path for c in "*?[")


def _match_regex(pattern: str) -> re.Pattern:
    """Go's ``filepath.Match`` as a regex: ``*`` and ``?`` never match ``/``."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            regex, i = _match_class(pattern, i)
            out.append(regex)
            continue
        elif c == "\\":
            i += 1
            if i == len(pattern):
                raise SourceError(f"syntax error in pattern {pattern!r}: it ends with '\\'")
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _match_class(pattern: str, start: int) -> tuple[str, int]:
    """The class ``[...]`` opening at ``pattern[start]`` as a regex, and the index after it.

    Go's rules (``path/filepath.Match``): ``^`` right after ``[`` negates
    (``!`` is an ordinary character, unlike fnmatch); members are characters,
    ``\\``-escaped characters or ranges ``lo-hi``; ``]`` closes the class
    only after one member; ``-`` or ``]`` where a member is due, or no ``]``,
    is a bad pattern (Go's ErrBadPattern).
    """
    def bad(why: str) -> SourceError:
        return SourceError(f"syntax error in pattern {pattern!r}: {why}")

    def member(i: int) -> tuple[str, int]:
        if i >= len(pattern):
            raise bad("unterminated '['")
        if pattern[i] in "-]":
            raise bad(f"unexpected {pattern[i]!r} in a character class")
        if pattern[i] == "\\":
            i += 1
            if i >= len(pattern):
                raise bad("unterminated '['")
        return pattern[i], i + 1

    i = start + 1
    negated = pattern[i:i + 1] == "^"
    i += negated
    ranges, members = [], 0
    while not (i < len(pattern) and pattern[i] == "]" and members):
        lo, i = member(i)
        hi = lo
        if i < len(pattern) and pattern[i] == "-":
            hi, i = member(i + 1)
        members += 1
        if lo <= hi:  # Go: a reversed range is allowed and matches nothing
            ranges.append(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}")
    body = "".join(ranges)
    if not body:
        return ("." if negated else "(?!)"), i + 1
    return f"[{'^' if negated else ''}{body}]", i + 1


def looks_like_archive(head: bytes) -> str | None:
    """The kind of archive ADD extracts, from the first bytes: "tar", "gzip",
    "bzip2" or "xz" (moby's ``archive.DetectCompression`` plus a tar header
    check), or None for anything else, which ADD copies as a plain file."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if len(head) >= 512 and head[257:262] == b"ustar":
        return "tar"
    if len(head) >= 512:
        try:
            tarfile.TarInfo.frombuf(head[:512], "utf-8", "surrogateescape")
            return "tar"
        except tarfile.HeaderError:
            return None
    return None


__all__ = ["BuildContext", "Source", "SourceError", "looks_like_archive", "io"]
