"""The .dockerignore matcher, the context walker and the cache checksum.

Examples come from Docker's documentation (docs.docker.com, "Build context",
".dockerignore files") and from the behaviour of moby/patternmatcher, which
docker uses. No root needed: every test works in its own tmp_path.
"""

from __future__ import annotations

import os
import stat

import pytest

from engine.build.ignore import (
    BadIgnorePattern,
    OutsideContext,
    Pattern,
    always_sent,
    checksum,
    clean,
    context_patterns,
    hidden_after_read,
    is_excluded,
    parse_dockerignore,
    walk_context,
)
from engine.errors import EngineError


def excluded(text: str, path: str) -> bool:
    return is_excluded(path, parse_dockerignore(text))


# --- reading the file -------------------------------------------------------


def test_comments_blank_lines_and_whitespace():
    text = "# comment\n\n   \n  foo  \n\tbar\t\n"
    assert [str(p) for p in parse_dockerignore(text)] == ["foo", "bar"]


def test_comment_only_in_column_one():
    # "  # x" is not a comment: after trimming it is the pattern "# x".
    assert [str(p) for p in parse_dockerignore("  # x\n#y")] == ["# x"]


def test_byte_order_mark_is_dropped():
    assert [str(p) for p in parse_dockerignore("\ufefffoo\n")] == ["foo"]


@pytest.mark.parametrize(
    "line, pattern",
    [
        ("/foo", "foo"),
        ("./foo", "foo"),
        ("foo/", "foo"),
        ("foo//bar", "foo/bar"),
        ("foo/../bar", "bar"),
        ("foo/./bar", "foo/bar"),
        ("/a/file/here", "a/file/here"),
        ("! /inverted/abs/path", "!inverted/abs/path"),
        ("!./x/../y", "!y"),
        ("../outside", "../outside"),
        ("/", "/"),
    ],
)
def test_patterns_are_cleaned(line, pattern):
    assert [str(p) for p in parse_dockerignore(line)] == [pattern]


def test_leading_slash_and_relative_are_the_same_pattern():
    # docs: "/foo/bar and foo/bar both exclude a file or directory named bar
    # in the foo subdirectory ... Neither excludes anything else."
    for text in ("/foo/bar", "foo/bar"):
        assert excluded(text, "foo/bar")
        assert not excluded(text, "bar")
        assert not excluded(text, "x/foo/bar")


def test_lone_exclamation_mark_is_an_error():
    with pytest.raises(BadIgnorePattern, match="illegal exclusion"):
        parse_dockerignore("foo\n!\n")


@pytest.mark.parametrize("bad", ["[", "a[b", "[]", "[^]", "[a-]", "[-a]", "[z-a]", "foo\\"])
def test_malformed_patterns_raise(bad):
    with pytest.raises(BadIgnorePattern) as info:
        parse_dockerignore(bad)
    assert isinstance(info.value, EngineError)


def test_clean_matches_go_filepath_clean():
    assert clean("") == "."
    assert clean("a/b/../..") == "."
    assert clean("../../a") == "../../a"
    assert clean("/../a") == "/a"
    assert clean("//a//b/") == "/a/b"
    assert clean("a/../../b") == "../b"


# --- the documentation's examples --------------------------------------------


DOCS_EXAMPLE = """
# comment
*/temp*
*/*/temp*
temp?
"""


@pytest.mark.parametrize(
    "path, out",
    [
        ("somedir/temporary.txt", True),  # */temp*
        ("somedir/temp", True),  # */temp*, a directory...
        ("somedir/temp/inside.txt", True),  # ...and everything under it
        ("somedir/subdir/temporary.txt", True),  # */*/temp*
        ("tempa", True),  # temp?
        ("tempb", True),
        ("temp", False),  # ? is exactly one character
        ("tempab", False),
        ("temporary.txt", False),  # */temp* needs one directory level
        ("a/b/c/temp.txt", False),  # three levels: no pattern has that
        ("somedir/xtemp", False),
    ],
)
def test_docs_example(path, out):
    assert excluded(DOCS_EXAMPLE, path) is out


@pytest.mark.parametrize(
    "path, out",
    [("main.go", True), ("a/main.go", True), ("a/b/c/main.go", True), ("main.go.txt", False), ("a/gofile", False)],
)
def test_double_star_matches_any_number_of_directories(path, out):
    assert excluded("**/*.go", path) is out


def test_readme_exception():
    text = "*.md\n!README.md"
    assert excluded(text, "CHANGES.md")
    assert not excluded(text, "README.md")
    assert not excluded(text, "main.py")


def test_exception_placement_last_match_wins():
    # docs: no markdown files except README files other than README-secret.md
    first = "*.md\n!README*.md\nREADME-secret.md"
    assert excluded(first, "notes.md")
    assert not excluded(first, "README.md")
    assert not excluded(first, "README-public.md")
    assert excluded(first, "README-secret.md")
    # docs: all README files included; the middle line has no effect.
    second = "*.md\nREADME-secret.md\n!README*.md"
    assert not excluded(second, "README-secret.md")
    assert not excluded(second, "README.md")
    assert excluded(second, "notes.md")


def test_include_only_list():
    # docs: "*" first, then exceptions, to list what is included instead.
    text = "*\n!src\n!requirements.txt"
    assert excluded(text, "secret.key")
    assert excluded(text, "build/out.o")
    assert not excluded(text, "src")
    assert not excluded(text, "src/deep/app.py")
    assert not excluded(text, "requirements.txt")


# --- the matching syntax ------------------------------------------------------


@pytest.mark.parametrize(
    "pattern, path, out",
    [
        ("*", "anything", True),
        ("*", "a/b", True),  # via the parent rule: "*" matches "a"
        ("a*b", "a/b", False),  # "*" never crosses "/"
        ("?", "a", True),
        ("a?c", "a/c", False),  # neither does "?"
        ("[abc].txt", "b.txt", True),
        ("[abc].txt", "d.txt", False),
        ("file[0-9]", "file7", True),
        ("file[0-9]", "filex", False),
        ("file[^0-9]", "filex", True),  # Go negates with ^
        ("file[^0-9]", "file7", False),
        ("file[!0-9]", "file!", True),  # ...and "!" in a class is just "!"
        ("file[!0-9]", "filex", False),
        ("file[a-cx-z]", "filey", True),
        ("file[\\]]", "file]", True),  # escaped "]" inside a class
        ("\\*.txt", "*.txt", True),  # escaped star is literal
        ("\\*.txt", "a.txt", False),
        ("a.c", "abc", False),  # "." is not a wildcard
        ("a+(b)", "a+(b)", True),  # regex characters are literal
        ("foo/**", "foo/a/b", True),
        ("foo/**", "foo", False),  # trailing ** needs something below
        ("foo/**/bar", "foo/bar", True),  # ** may be zero directories
        ("foo/**/bar", "foo/x/y/bar", True),
        ("**/foo", "foo", True),
        ("**/foo", "x/y/foo", True),
        ("**/foo", "xfoo", False),
        ("**foo", "xfoo", True),  # patternmatcher's suffix fast path
        ("**", "a/b/c", True),
        ("x/**/*.go", "x/a.go", True),
        ("x/**/*.go", "y/a.go", False),
    ],
)
def test_syntax(pattern, path, out):
    assert excluded(pattern, path) is out


def test_name_with_newline_still_matches_star():
    assert excluded("*", "odd\nname")


# --- directories, parents and exceptions -------------------------------------


def test_directory_pattern_excludes_everything_under_it():
    assert excluded("build", "build")
    assert excluded("build", "build/out/app.bin")
    assert not excluded("build", "src/build.py")
    assert not excluded("build", "builds/x")


def test_trailing_slash_pattern_also_matches_a_file():
    # Cleaning removes the slash, so "logs/" is "logs" and matches a file too (docker does this).
    assert excluded("logs/", "logs")


def test_parent_rule_checks_every_parent():
    # The deprecated Matches only tried one parent level; MatchesOrParentMatches tries all.
    assert excluded("a/b", "a/b/c/d/e")
    assert excluded("*/b", "a/b/c/d")


def test_exception_inside_excluded_directory():
    text = "docs\n!docs/keep.txt"
    assert excluded(text, "docs")
    assert excluded(text, "docs/other.txt")
    assert not excluded(text, "docs/keep.txt")


def test_exception_on_a_parent_reincludes_children():
    # "!foo" matches the parent of foo/bar/x, and it is the last match.
    assert not excluded("foo/bar\n!foo", "foo/bar/x")
    # The other way round, "foo/bar" is last and wins.
    assert excluded("!foo\nfoo/bar", "foo/bar/x")


def test_root_is_never_excluded():
    assert not excluded("*", ".")
    assert not excluded("**", "")


def test_no_patterns_excludes_nothing():
    assert not is_excluded("anything/at/all", [])


def test_pattern_objects():
    pattern = Pattern("*.md", exception=True)
    assert str(pattern) == "!*.md"
    assert pattern.matches("a.md") and not pattern.matches("d/a.md")
    assert pattern.matches_or_parent_matches("x.md/inner")
    assert parse_dockerignore("!*.md") == [pattern]


# --- Dockerfile and .dockerignore are always sent ----------------------------


def test_always_sent():
    assert always_sent() == (".dockerignore", "Dockerfile")
    assert always_sent("./build/Dockerfile.dev") == (".dockerignore", "build/Dockerfile.dev")
    assert always_sent("../elsewhere/Dockerfile") == (".dockerignore",)
    assert always_sent("/abs/Dockerfile") == (".dockerignore",)


def test_context_patterns_add_exceptions_for_build_files():
    patterns = parse_dockerignore("Dockerfile\n.dockerignore\n*.tmp")
    walked = context_patterns(patterns)
    assert [str(p) for p in walked] == ["Dockerfile", ".dockerignore", "*.tmp", "!.dockerignore", "!Dockerfile"]
    assert not is_excluded("Dockerfile", walked)
    assert not is_excluded(".dockerignore", walked)
    assert is_excluded("a.tmp", walked)
    # The builder hides them from COPY/ADD after reading them.
    assert hidden_after_read(patterns) == (".dockerignore", "Dockerfile")


def test_context_patterns_leave_unexcluded_build_files_alone():
    patterns = parse_dockerignore("*.tmp")
    assert context_patterns(patterns) == patterns
    assert hidden_after_read(patterns) == ()


def test_custom_dockerfile_excluded_by_a_directory_pattern():
    patterns = parse_dockerignore("docker")
    walked = context_patterns(patterns, "docker/Dockerfile.prod")
    assert not is_excluded("docker/Dockerfile.prod", walked)
    assert is_excluded("docker/other", walked)
    assert hidden_after_read(patterns, "docker/Dockerfile.prod") == ("docker/Dockerfile.prod",)


# --- the walker on a real tree --------------------------------------------------


def make_tree(root, files):
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.mkdir(exist_ok=True)
        else:
            path.write_text(content)


def walked(root, text=""):
    return [rel for rel, _ in walk_context(root, parse_dockerignore(text))]


@pytest.fixture
def tree(tmp_path):
    make_tree(
        tmp_path,
        {
            "Dockerfile": "FROM scratch\n",
            "README.md": "r",
            "NOTES.md": "n",
            "app/main.go": "package main",
            "app/util/helper.go": "package util",
            "app/static/index.html": "<p>",
            "docs/keep.txt": "k",
            "docs/other.txt": "o",
            "docs/deep/keep.txt": "k2",
            "a.txt": "a",
            "empty": None,
        },
    )
    return tmp_path


def test_walk_everything_sorted_parents_first(tree):
    assert walked(tree) == [
        "Dockerfile",
        "NOTES.md",
        "README.md",
        "a.txt",
        "app",
        "app/main.go",
        "app/static",
        "app/static/index.html",
        "app/util",
        "app/util/helper.go",
        "docs",
        "docs/deep",
        "docs/deep/keep.txt",
        "docs/keep.txt",
        "docs/other.txt",
        "empty",
    ]


def test_walk_yields_lstat_results(tree):
    entries = dict(walk_context(tree))
    assert stat.S_ISDIR(entries["app"].st_mode)
    assert stat.S_ISREG(entries["a.txt"].st_mode)
    assert entries["a.txt"].st_size == 1


def test_walk_applies_patterns(tree):
    assert walked(tree, "*.md\n!README.md\napp/static\n**/*.go\nempty") == [
        "Dockerfile",
        "README.md",
        "a.txt",
        "app",
        "app/util",
        "docs",
        "docs/deep",
        "docs/deep/keep.txt",
        "docs/keep.txt",
        "docs/other.txt",
    ]


def test_walk_reincludes_inside_excluded_directory(tree):
    # "docs" itself is not sent, but its re-included file is.
    assert [p for p in walked(tree, "docs\n!docs/keep.txt") if p.startswith("docs")] == ["docs/keep.txt"]


def test_walk_reincludes_with_wildcard_exception(tree):
    # An exception that does not start with the directory's name still counts.
    result = walked(tree, "docs\n!**/keep.txt")
    assert [p for p in result if p.startswith("docs")] == ["docs/deep/keep.txt", "docs/keep.txt"]
    result = walked(tree, "docs\n!*/keep.txt")
    assert [p for p in result if p.startswith("docs")] == ["docs/keep.txt"]


def test_walk_include_only_list(tree):
    assert walked(tree, "*\n!app/util\n!Dockerfile") == ["Dockerfile", "app/util", "app/util/helper.go"]


def test_walk_with_context_patterns_keeps_dockerfile(tree):
    patterns = context_patterns(parse_dockerignore("Dockerfile\n*.md"))
    result = [rel for rel, _ in walk_context(tree, patterns)]
    assert "Dockerfile" in result
    assert "README.md" not in result


def test_walk_never_follows_symlinks(tree, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret").write_text("s")
    os.symlink(outside, tree / "link-out")
    os.symlink("app", tree / "link-app")
    os.symlink("missing", tree / "dangling")
    entries = dict(walk_context(tree))
    for name in ("link-out", "link-app", "dangling"):
        assert stat.S_ISLNK(entries[name].st_mode)
    # Nothing below a symlinked directory is walked.
    assert not [p for p in entries if p.startswith(("link-out/", "link-app/"))]


def test_walk_special_files(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    entries = dict(walk_context(tmp_path))
    assert stat.S_ISFIFO(entries["pipe"].st_mode)


def test_walk_follows_a_symlink_given_as_the_root(tmp_path):
    # Only the root: the user named it, and docker's CLI resolves it too.
    (tmp_path / "real").mkdir()
    (tmp_path / "real/f").write_text("x")
    os.symlink("real", tmp_path / "link")
    assert walked(tmp_path / "link") == ["f"]
    assert checksum(tmp_path / "link", ["f"]) == checksum(tmp_path / "real", ["f"])


def test_walk_of_a_missing_root_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(walk_context(tmp_path / "nope"))


# --- the checksum ------------------------------------------------------------------


def all_entries(root):
    return [rel for rel, _ in walk_context(root)]


def test_checksum_format_and_stability(tree):
    first = checksum(tree, all_entries(tree))
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64
    assert checksum(tree, reversed(all_entries(tree))) == first  # order does not matter
    assert checksum(tree, ["./a.txt"]) == checksum(tree, ["a.txt"])


def test_checksum_ignores_mtime(tree):
    before = checksum(tree, all_entries(tree))
    os.utime(tree / "a.txt", (1, 1))
    os.utime(tree / "app", (2, 2))
    assert checksum(tree, all_entries(tree)) == before


def test_checksum_same_content_elsewhere_same_sum(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for root, when in ((one, 1000), (two, 2000)):
        make_tree(root, {"f": "hello", "d/g": "world"})
        for p in (root / "f", root / "d/g", root / "d"):
            os.utime(p, (when, when))
    assert checksum(one, all_entries(one)) == checksum(two, all_entries(two))


def test_checksum_sees_content_mode_and_name(tree):
    before = checksum(tree, all_entries(tree))
    (tree / "a.txt").write_text("b")
    changed_content = checksum(tree, all_entries(tree))
    assert changed_content != before
    os.chmod(tree / "a.txt", 0o755)
    changed_mode = checksum(tree, all_entries(tree))
    assert changed_mode != changed_content
    os.rename(tree / "a.txt", tree / "b.txt")
    assert checksum(tree, all_entries(tree)) != changed_mode


def test_checksum_sees_directory_mode(tree):
    before = checksum(tree, ["app"])
    os.chmod(tree / "app", 0o700)
    assert checksum(tree, ["app"]) != before


def test_checksum_sees_symlink_target_not_what_it_points_to(tree):
    os.symlink("a.txt", tree / "link")
    before = checksum(tree, ["link"])
    (tree / "a.txt").write_text("changed")  # the target's content is not the link's
    assert checksum(tree, ["link"]) == before
    os.remove(tree / "link")
    os.symlink("README.md", tree / "link")
    assert checksum(tree, ["link"]) != before


def test_checksum_distinguishes_file_types(tmp_path):
    (tmp_path / "x").write_text("")
    as_file = checksum(tmp_path, ["x"])
    os.remove(tmp_path / "x")
    (tmp_path / "x").mkdir()
    os.chmod(tmp_path / "x", 0o644)
    assert checksum(tmp_path, ["x"]) != as_file


def test_checksum_sees_owner(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    (tmp_path / "f").write_text("x")
    before = checksum(tmp_path, ["f"])
    os.chown(tmp_path / "f", 1234, 1234)
    assert checksum(tmp_path, ["f"]) != before


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x", "a/../../x", ".."])
def test_checksum_refuses_paths_outside(tree, bad):
    with pytest.raises(OutsideContext):
        checksum(tree, [bad])


def test_checksum_refuses_to_go_through_a_symlink(tree, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret").write_text("s")
    os.symlink(outside, tree / "link-out")
    with pytest.raises(OutsideContext):
        checksum(tree, ["link-out/secret"])


def test_checksum_of_nothing_is_the_empty_hash(tree):
    assert checksum(tree, []) == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
