"""The build context: which files ``.dockerignore`` keeps, and what they hash to.

A build starts from a directory, the *build context*. Before anything is
built, the client reads ``.dockerignore`` at the root of the context and
leaves out every file its patterns exclude, so that large or secret files
never reach the builder (docs.docker.com, "Build context", section
".dockerignore files"). The matching rules are those of Docker's own code,
``github.com/moby/patternmatcher`` (``patternmatcher.go``, and
``ignorefile/ignorefile.go`` for reading the file); this module is a
readable re-statement of them, with each rule explained where it is applied.

Lifecycle of the data, from text to cache key::

    .dockerignore text --parse_dockerignore()--> [Pattern, ...]
        --context_patterns(patterns, dockerfile)--> the same, plus exceptions
          for the Dockerfile and .dockerignore, which are always sent
        --walk_context(root, patterns)--> (relative path, stat) for every entry sent
        --checksum(root, relpaths)--> "sha256:..." for the build cache

* :func:`parse_dockerignore` turns the file's text into :class:`Pattern`
  objects (comments, blank lines, trimming, cleaning, ``!`` exceptions);
  a malformed pattern raises :class:`BadIgnorePattern` right away, as
  ``docker build`` does before sending anything.
* :func:`is_excluded` answers "is this path left out?" with patternmatcher's
  ``MatchesOrParentMatches`` rule: the *last* pattern that matches the path
  or one of its parent directories decides.
* :func:`walk_context` walks the context directory and yields what is sent,
  never following a symlink and never leaving the root.
* :func:`always_sent`, :func:`context_patterns` and :func:`hidden_after_read`
  implement the one special case: the Dockerfile and ``.dockerignore`` can be
  ignored, yet are still sent because the builder needs them; it then hides
  them from ``COPY``/``ADD``.
* :func:`checksum` hashes a set of context entries (content and the metadata
  an image keeps, never the modification time) for the build cache.

Everything here is pure logic over the file system: no root, no mounts.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from engine.errors import EngineError


class BadIgnorePattern(EngineError):
    """A ``.dockerignore`` line is not a valid pattern (Go's ``filepath.ErrBadPattern``)."""

    def __init__(self, pattern: str, reason: str):
        # Docker reports Go's error text, "syntax error in pattern"; we add why.
        super().__init__(f".dockerignore: syntax error in pattern {pattern!r}: {reason}")
        self.pattern = pattern
        self.reason = reason


class OutsideContext(EngineError):
    """A path given to :func:`checksum` is absolute, climbs out with ``..``, or
    goes through a symlink: it is not inside the build context."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"forbidden path outside the build context: {path} ({reason})")
        self.path = path
        self.reason = reason


# --------------------------------------------------------------------------
# Cleaning paths and patterns
# --------------------------------------------------------------------------


def clean(path: str) -> str:
    """Return the shortest path naming the same file, lexically (Go's ``filepath.Clean``).

    Go's documentation of ``path/filepath.Clean`` gives the rules, applied here
    in order: repeated slashes become one; ``.`` elements go away; a ``..``
    removes the element before it (and at the root, ``/..`` is ``/``); an empty
    result is ``.``. Nothing touches the disk: ``a/link/..`` is ``a`` even if
    ``link`` is a symlink. (Python's ``posixpath.normpath`` is close but keeps
    a leading ``//``, so it is not used.)
    """
    rooted = path.startswith("/")
    parts: list[str] = []
    for element in path.split("/"):
        if element in ("", "."):
            continue
        if element == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                # A relative path may start with "..": keep it, nothing to cancel.
                parts.append("..")
            # A rooted path cannot go above "/": the ".." is simply dropped.
            continue
        parts.append(element)
    cleaned = "/".join(parts)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


# --------------------------------------------------------------------------
# Patterns
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    """One cleaned ``.dockerignore`` line, compiled.

    ``text`` is the pattern without its ``!``; ``exception`` is True for a
    ``!`` line, which re-includes what earlier lines excluded (the docs call
    these "exceptions"; patternmatcher calls them "exclusions"). ``str()``
    gives the line back as it would be written.
    """

    text: str
    exception: bool = False
    regex: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Compiled once: a context of many files is matched against every pattern.
        object.__setattr__(self, "regex", re.compile(_translate(self.text), re.DOTALL))
        # DOTALL: a file name may contain a newline, and "*" must match it too.

    def __str__(self) -> str:
        return ("!" if self.exception else "") + self.text

    def matches(self, path: str) -> bool:
        """True if the pattern matches the whole of ``path`` (slash-separated, cleaned)."""
        return self.regex.fullmatch(path) is not None

    def matches_or_parent_matches(self, path: str) -> bool:
        """True if the pattern matches ``path`` or any of its parent directories.

        This is the rule that makes a pattern naming a directory exclude
        everything under it: ``build`` matches ``build/out/app`` because it
        matches the parent ``build`` (patternmatcher's
        ``MatchesOrParentMatches`` checks every parent, from the top down).
        """
        if self.matches(path):
            return True
        parts = path.split("/")
        return any(self.matches("/".join(parts[:depth])) for depth in range(1, len(parts)))


def _translate(text: str) -> str:
    """Translate one cleaned pattern into a Python regular expression.

    The syntax is Go's ``filepath.Match`` plus ``**``, translated the way
    patternmatcher's ``Pattern.compile`` does (it too builds a regexp):

    ======  ===============================================================
    ``*``   any run of characters except ``/`` (stays inside one name)
    ``?``   exactly one character except ``/``
    ``[…]`` one character from a class: ``[abc]``, ranges ``[a-z]``, and
            negation with ``^`` as in ``[^0-9]`` (Go uses ``^``, not the
            shell's ``!``: ``[!a]`` means "``!`` or ``a``")
    ``\\x``  the character ``x`` itself (escapes a special character)
    ``**``  any number of directories, including none: ``**/*.go`` matches
            ``a.go`` and ``x/y/a.go``; a trailing ``**`` matches everything
            below (``foo/**`` matches ``foo/a/b``)
    ======  ===============================================================

    Anything else matches itself.
    """
    # patternmatcher quirk, kept so results agree with docker: a pattern that
    # *starts* with "**" and has no other special character is matched as a
    # plain suffix (its "suffixMatch" fast path). "**/foo" means "foo" at any
    # depth either way, but "**foo" also matches "barfoo" and "x/barfoo",
    # which the general translation below would not.
    rest = text[2:]
    if text.startswith("**") and not rest.startswith("/") and not any(c in rest for c in "*?[\\"):
        return ".*" + re.escape(rest)

    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "*" and text.startswith("**", i):
            i += 2
            # "**/" counts as "**": the slash is part of "any directories".
            if text.startswith("/", i):
                i += 1
            if i == len(text):
                out.append(".*")  # trailing "**": everything below
            else:
                out.append("(?:.*/)?")  # zero or more whole directories
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            class_regex, i = _translate_class(text, i)
            out.append(class_regex)
            continue
        elif char == "\\":
            if i + 1 == len(text):
                # Go's filepath.Match: a trailing backslash escapes nothing.
                raise BadIgnorePattern(text, "trailing backslash")
            out.append(re.escape(text[i + 1]))
            i += 2
            continue
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _translate_class(text: str, start: int) -> tuple[str, int]:
    """Translate the class ``[...]`` that opens at ``text[start]``.

    Returns the regex class and the index just after the closing ``]``.
    Go's grammar (``filepath.Match``)::

        '[' [ '^' ] { character-range } ']'    (must be non-empty)
        character-range:  c  |  lo '-' hi      (c, lo, hi: a char or \\char,
                                                 but not a bare '-' or ']')

    Anything else is ``ErrBadPattern``, reported here as BadIgnorePattern.
    """
    i = start + 1
    negate = text.startswith("^", i)
    if negate:
        i += 1

    def one_char(i: int) -> tuple[str, int]:
        # One class member: a plain character or a backslash-escaped one.
        if i >= len(text):
            raise BadIgnorePattern(text, "unterminated character class '['")
        if text[i] == "\\":
            if i + 1 >= len(text):
                raise BadIgnorePattern(text, "trailing backslash in character class")
            return text[i + 1], i + 2
        if text[i] in "-]":
            raise BadIgnorePattern(text, f"unescaped {text[i]!r} in character class")
        return text[i], i + 1

    members: list[str] = []
    while True:
        if i >= len(text):
            raise BadIgnorePattern(text, "unterminated character class '['")
        if text[i] == "]" and members:
            i += 1
            break
        lo, i = one_char(i)
        hi = lo
        if text.startswith("-", i):
            hi, i = one_char(i + 1)
            if hi < lo:
                # patternmatcher hands the class to Go's regexp, which rejects it.
                raise BadIgnorePattern(text, f"bad range {lo}-{hi} in character class")
        members.append(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}")
    return "[" + ("^" if negate else "") + "".join(members) + "]", i


# --------------------------------------------------------------------------
# Reading a .dockerignore file
# --------------------------------------------------------------------------


def parse_dockerignore(text: str) -> list[Pattern]:
    """Read the text of a ``.dockerignore`` file into patterns, in file order.

    Rules (Docker docs ".dockerignore files"; patternmatcher ``ignorefile.ReadAll``):

    * A line whose *first character* is ``#`` is a comment. Only column 1
      counts: ``  #x`` is a pattern (after trimming, one naming ``#x``).
    * Leading and trailing whitespace is trimmed; lines left empty are skipped.
    * A leading ``!`` makes an exception; whitespace after it is trimmed too
      (``! foo`` is ``!foo``). A lone ``!`` is an error, as in patternmatcher.
    * The pattern is cleaned like a path (:func:`clean`): ``./foo`` and
      ``foo/`` are ``foo``, ``foo/../bar`` is ``bar``; then a leading ``/`` is
      dropped, because the context root is both the working directory and
      the root (``/foo/bar`` and ``foo/bar`` are the same pattern).

    Order matters and is kept: the last matching line wins (:func:`is_excluded`).
    """
    if text.startswith("\ufeff"):
        # ReadAll strips a UTF-8 byte-order mark at the start of the file.
        text = text[1:]
    patterns = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        exception = line.startswith("!")
        if exception:
            line = line[1:].strip()
            if not line:
                raise BadIgnorePattern("!", 'illegal exclusion pattern: "!"')
        line = clean(line)
        if len(line) > 1 and line.startswith("/"):
            line = line[1:]
        patterns.append(Pattern(line, exception))
    return patterns


# --------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------


def is_excluded(path: str, patterns: Iterable[Pattern]) -> bool:
    """True if ``path`` (relative to the context root) is left out of the context.

    The last pattern that matches the path, or one of its parent directories,
    decides: a plain pattern excludes, an ``!`` exception re-includes. No
    match at all means the path is sent. This is the result of
    patternmatcher's ``MatchesOrParentMatches``, which walks the patterns
    forwards keeping a running answer; walking backwards and stopping at the
    first match gives the same answer and says the rule more plainly.

    So with ``*.md`` then ``!README*.md``, ``README.md`` is sent; and with
    ``docs`` then ``!docs/keep.txt``, ``docs/keep.txt`` is sent while the
    rest of ``docs`` is not.

    The context root itself (``.``) is never excluded.
    """
    path = clean(path)
    if path == ".":
        return False
    for pattern in reversed(list(patterns)):
        if pattern.matches_or_parent_matches(path):
            return not pattern.exception
    return False


def _may_reinclude_below(directory: str, patterns: list[Pattern]) -> bool:
    """Could an exception pattern bring back something inside this excluded directory?

    Without exceptions an excluded directory is skipped whole. With them,
    ``docs`` + ``!docs/keep.txt`` must still look inside ``docs``. Docker's
    classic archiver (moby ``pkg/archive`` ``TarWithOptions``) descends only
    when an exception's text *starts with* the directory's path, so it misses
    ``!*/keep.txt`` and ``!**/keep.txt``. We compare name by name instead:
    descend if each name of the exception's leading part could match the
    directory's names, or a ``**`` makes any depth possible. Descending too
    often only costs time; every entry below is still decided by
    :func:`is_excluded`.
    """
    dir_names = directory.split("/")
    for pattern in patterns:
        if not pattern.exception:
            continue
        for pattern_name, dir_name in zip(pattern.text.split("/"), dir_names):
            if "**" in pattern_name:
                return True
            try:
                name_regex = _translate(pattern_name)
            except BadIgnorePattern:
                return True  # e.g. a class split by "/": be safe and look inside
            if re.fullmatch(name_regex, dir_name, re.DOTALL) is None:
                break
        else:
            return True
    return False


# --------------------------------------------------------------------------
# The Dockerfile and .dockerignore are always sent
# --------------------------------------------------------------------------


def always_sent(dockerfile: str = "Dockerfile") -> tuple[str, ...]:
    """The context paths sent to the builder even when ``.dockerignore`` excludes them.

    The docs: "You can even use the .dockerignore file to exclude the
    Dockerfile and .dockerignore files. These files are still sent to the
    daemon because it needs them to do its job. But the ADD and COPY
    instructions do not copy them to the image." ``dockerfile`` is the ``-f``
    path relative to the context; a Dockerfile from outside the context (or
    from stdin) is not part of it, so only ``.dockerignore`` is returned then.
    """
    names = [".dockerignore"]
    dockerfile = clean(dockerfile)
    if not dockerfile.startswith(("/", "../")) and dockerfile not in (".", ".."):
        names.append(dockerfile)
    return tuple(names)


def context_patterns(patterns: list[Pattern], dockerfile: str = "Dockerfile") -> list[Pattern]:
    """The patterns to walk the context with: ``patterns`` plus ``!`` exceptions
    for the always-sent files that ``patterns`` exclude.

    This is what the docker CLI does before packing the context
    (``build.TrimBuildFilesFromExcludes``): it appends ``!.dockerignore`` and
    ``!<dockerfile>`` when they would be excluded. Being last, the exceptions win.
    """
    added = [Pattern(name, exception=True) for name in always_sent(dockerfile) if is_excluded(name, patterns)]
    return list(patterns) + added


def hidden_after_read(patterns: list[Pattern], dockerfile: str = "Dockerfile") -> tuple[str, ...]:
    """The always-sent files the builder must hide from ``COPY``/``ADD`` once it has read them.

    These are the ones the *original* patterns exclude: the daemon removes
    them from the context after reading the Dockerfile (moby
    ``builder/remotecontext`` ``removeDockerfile``), so ``COPY . /app``
    copies neither them nor uses them in cache checksums.
    """
    return tuple(name for name in always_sent(dockerfile) if is_excluded(name, patterns))


# --------------------------------------------------------------------------
# Walking the context
# --------------------------------------------------------------------------

# Opening directories with O_NOFOLLOW means a name that is (or has just been
# swapped for) a symlink is refused by the kernel instead of followed, so the
# walk cannot be led outside the root (open(2), O_NOFOLLOW and O_DIRECTORY).
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_root(root: str | os.PathLike) -> int:
    """Open the context directory itself.

    The root is the one name that *is* followed if it is a symlink: the
    user chose it, and the docker CLI likewise resolves the context path
    (``filepath.EvalSymlinks``) before walking it. Everything below it is
    opened with O_NOFOLLOW.
    """
    return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def walk_context(
    root: str | os.PathLike, patterns: Iterable[Pattern] = ()
) -> Iterator[tuple[str, os.stat_result]]:
    """Yield ``(relative path, lstat result)`` for every entry of the context that is sent.

    Files, directories, symlinks and special files are all yielded; the
    root itself is not. Paths use ``/`` and never start with ``./``. The
    order is the one Go's ``filepath.Walk`` gives (and so docker's context
    tar): each directory's entries sorted by name, a directory just before
    its contents.

    Symlinks are never followed: a symlink is yielded as itself (its target
    is data, read with ``readlink``), and a symlink to a directory is not
    descended into. Each directory is opened relative to its parent's file
    descriptor with ``O_NOFOLLOW``, so the walk stays under ``root`` even if
    the tree changes while it runs.

    An excluded directory is skipped whole, unless an ``!`` exception could
    re-include something inside it (see :func:`_may_reinclude_below`); then it
    is walked, the directory itself is *not* yielded, and only the
    re-included entries below it are. Whoever packs the entries creates such
    parent directories implicitly, as docker's context tar does.

    Pass :func:`context_patterns` (not the raw file's patterns) to keep the
    Dockerfile and ``.dockerignore`` in the context.
    """
    patterns = list(patterns)
    root_fd = _open_root(root)
    try:
        yield from _walk_dir(root_fd, "", patterns)
    finally:
        os.close(root_fd)


def _walk_dir(dir_fd: int, prefix: str, patterns: list[Pattern]) -> Iterator[tuple[str, os.stat_result]]:
    """Yield the sent entries under the open directory ``dir_fd`` (named ``prefix``)."""
    with os.scandir(dir_fd) as entries:
        names = sorted(entry.name for entry in entries)
    for name in names:
        relpath = prefix + name
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        excluded = is_excluded(relpath, patterns)
        if not excluded:
            yield relpath, st
        if not stat.S_ISDIR(st.st_mode):
            continue
        if excluded and not _may_reinclude_below(relpath, patterns):
            continue
        child_fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        try:
            yield from _walk_dir(child_fd, relpath + "/", patterns)
        finally:
            os.close(child_fd)


# --------------------------------------------------------------------------
# Checksum for the build cache
# --------------------------------------------------------------------------


def checksum(root: str | os.PathLike, relpaths: Iterable[str]) -> str:
    """Return ``"sha256:<hex>"`` over the given context entries, for the build cache.

    A ``COPY``/``ADD`` step can reuse its cached layer only if its sources
    are the same. Docker's classic builder decides that with a hash per file
    (moby ``builder/remotecontext/filehash.go``: a tarsum version 1 header
    plus the content). Tarsum v1 (``pkg/tarsum``) selects these header
    fields: name, mode, uid, gid, size, type, link name, user and group
    names, device numbers, and *not* the modification time. So does this
    function, per entry:

    * the relative path (a rename inside a copied directory is a change);
    * the file type (file, directory, symlink, fifo, char/block device, socket);
    * the permission bits, with setuid/setgid/sticky (``mode & 0o7777``);
    * the owner: uid and gid (numbers only: the names come from a lookup on
      the host, and the layer stores numbers anyway);
    * the symlink target, for a symlink; major:minor, for a device;
    * the sha256 of the content, for a regular file (it covers the size);
    * the ``security.capability`` extended attribute, as ``filehash.go``
      does, because file capabilities are copied into the image.

    The modification time is left out on purpose: ``git checkout`` or a
    fresh clone rewrites every mtime, and the cache should not miss for that.

    ``relpaths`` are relative to ``root`` and are hashed exactly as given,
    sorted, with no recursion: pass every entry of a copied directory (for
    example what :func:`walk_context` yields under it). A path that is
    absolute, climbs out with ``..`` or passes through a symlink raises
    :class:`OutsideContext`.
    """
    unique = sorted({_inside_context(p) for p in relpaths})
    digest = hashlib.sha256()
    root_fd = _open_root(root)
    try:
        for relpath in unique:
            digest.update(_entry_record(root_fd, relpath))
    finally:
        os.close(root_fd)
    return "sha256:" + digest.hexdigest()


def _inside_context(unsafe_path: str) -> str:
    """Clean a relative path from the caller, refusing one that leaves the context."""
    path = clean(unsafe_path)
    if path.startswith("/"):
        raise OutsideContext(unsafe_path, "absolute path")
    if path == ".." or path.startswith("../"):
        raise OutsideContext(unsafe_path, "climbs out with '..'")
    return path


_FILE_TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFSOCK: "socket",
}


def _entry_record(root_fd: int, relpath: str) -> bytes:
    """The bytes that stand for one entry in :func:`checksum`: NUL-separated
    fields, one line per entry, so no two different entries read the same."""
    parent_fd, name = _open_parent(root_fd, relpath)
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        kind = _FILE_TYPES.get(stat.S_IFMT(st.st_mode), "unknown")
        link = os.readlink(name, dir_fd=parent_fd) if kind == "symlink" else ""
        device = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" if kind in ("char", "block") else ""
        content = _content_sha256(parent_fd, name) if kind == "file" else ""
        capability = _capability(parent_fd, name) if kind in ("file", "dir") else ""
    finally:
        if parent_fd != root_fd:
            os.close(parent_fd)
    mode = f"{stat.S_IMODE(st.st_mode):04o}"
    fields = [relpath, kind, mode, str(st.st_uid), str(st.st_gid), link, device, content, capability]
    return "\0".join(fields).encode("utf-8", "surrogateescape") + b"\n"


def _open_parent(root_fd: int, relpath: str) -> tuple[int, str]:
    """Open the directory holding ``relpath`` one name at a time with
    O_NOFOLLOW, so no symlink on the way is followed. Returns its fd (the
    caller closes it unless it is ``root_fd``) and the entry's own name."""
    *parents, name = relpath.split("/")
    fd = root_fd
    try:
        for parent in parents:
            try:
                next_fd = os.open(parent, _DIR_FLAGS, dir_fd=fd)
            except OSError as error:
                # ELOOP / ENOTDIR: the name is a symlink (or not a directory).
                raise OutsideContext(relpath, f"{parent!r} is not a directory inside the context") from error
            if fd != root_fd:
                os.close(fd)
            fd = next_fd
    except BaseException:
        if fd != root_fd:
            os.close(fd)
        raise
    return fd, name


def _content_sha256(parent_fd: int, name: str) -> str:
    """sha256 of a regular file's bytes, read in 1 MiB chunks (O_NOFOLLOW: a
    file swapped for a symlink since the stat is refused, not followed)."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _capability(parent_fd: int, name: str) -> str:
    """The ``security.capability`` xattr in hex, or "" if there is none."""
    # os.getxattr has no dir_fd; the path through /proc/self/fd keeps us on
    # the directory already opened safely (proc(5), /proc/self/fd).
    try:
        value = os.getxattr(f"/proc/self/fd/{parent_fd}/{name}", "security.capability", follow_symlinks=False)
    except OSError:
        return ""  # ENODATA (none), or xattrs unsupported on this file system
    return value.hex()
