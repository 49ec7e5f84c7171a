"""The build cache's keys and the reasons it gives for a miss (engine/build/cache.py).

The cache reads the build records stored with images; here a small stand-in
for the image store holds them, so no root and no image is needed.
"""

from __future__ import annotations

import pytest

from engine.build.cache import (MAX_RECORDED_FILES, BuildCache, CacheKey, _changed_files,
                                sources_checksum)


class Store:
    """The two methods BuildCache reads: _entries() and meta()."""

    def __init__(self, records: dict | None = None):
        self.records = dict(records or {})

    def _entries(self):
        for digest in self.records:
            yield digest, None, None
            yield digest, None, None  # an image with two tags is listed twice

    def meta(self, digest):
        return self.records[digest]


def key(parent="sha256:p", step="RUN [\"true\"]", args=(), sources="", files=None) -> CacheKey:
    return CacheKey(parent, step, tuple(args), sources, files or {})


# -- keys -------------------------------------------------------------------------------


def test_key_digest_covers_parent_step_args_and_sources():
    base = key()
    assert base.digest.startswith("sha256:") and base.digest == key().digest
    others = [key(parent="sha256:q"), key(step="RUN [\"false\"]"), key(args=[("A", "1")]),
              key(sources="sha256:s")]
    assert len({base.digest, *(k.digest for k in others)}) == 5
    # the per-file digests only explain; the checksum in ``sources`` decides
    assert key(files={"a": "1"}).digest == base.digest
    assert key(files={"a": "1"}) == key(files={"b": "2"})


def test_key_digest_is_unambiguous():
    # an arg value containing what looks like another arg is still one arg
    assert key(args=[("A", "1 B=2")]).digest != key(args=[("A", "1"), ("B", "2")]).digest
    assert key(step="a", sources="b").digest != key(step="ab").digest


def test_record_holds_what_explains_a_miss():
    k = key(args=[("V", "1")], sources="sha256:s", files={"a.txt": "d1"})
    record = k.record()
    assert record == {"key": k.digest, "parent": "sha256:p", "step": k.step, "args": {"V": "1"},
                      "sources": "sha256:s", "files": {"a.txt": "d1"}}
    many = {f"f{i}": "d" for i in range(MAX_RECORDED_FILES + 1)}
    assert "files" not in key(files=many).record()
    assert "files" not in key().record()


def test_sources_checksum_ignores_order_and_sees_names_and_digests():
    a = sources_checksum({"a": "1", "b": "2"})
    assert a == sources_checksum({"b": "2", "a": "1"})
    assert a != sources_checksum({"a": "1", "b": "3"})
    assert a != sources_checksum({"a": "1", "c": "2"})
    assert sources_checksum({}) != a
    # no two different maps read the same: names and digests are delimited
    assert sources_checksum({"a": "b\nc"}) != sources_checksum({"a": "b", "c": ""})


# -- lookups ------------------------------------------------------------------------------


def cache_with(*made: tuple[str, CacheKey]) -> BuildCache:
    return BuildCache(Store({digest: {"build": k.record()} for digest, k in made}))


def test_an_exact_match_is_a_hit():
    k = key()
    cache = cache_with(("sha256:img", k))
    assert cache.lookup(key(), "RUN") == ("sha256:img", None)


def test_the_newest_match_wins_and_added_records_count():
    cache = cache_with(("sha256:old", key()))
    cache.add("sha256:new", key())
    assert cache.lookup(key(), "RUN") == ("sha256:new", None)


def test_images_without_a_build_record_are_ignored():
    cache = BuildCache(Store({"sha256:a": {}, "sha256:b": {"build": "junk"},
                              "sha256:c": {"build": {"key": "x"}}}))
    assert cache.lookup(key(), "RUN") == (None, "RUN: not in cache (new or changed instruction)")


def test_miss_reasons():
    copy = key(step="COPY [\"a.txt\",\"b.txt\"] /", sources=sources_checksum({"a.txt": "1", "b.txt": "2"}),
               files={"a.txt": "1", "b.txt": "2"})
    run = key(step="RUN [\"make\"]", args=[("V", "1"), ("W", "x")])
    cache = cache_with(("sha256:copy", copy), ("sha256:run", run))
    changed = key(step=copy.step, sources=sources_checksum({"a.txt": "9", "b.txt": "2", "c": "3"}),
                  files={"a.txt": "9", "b.txt": "2", "c": "3"})
    assert cache.lookup(changed, "COPY a.txt b.txt") == \
        (None, "COPY a.txt b.txt: content changed (a.txt, +c)")
    assert cache.lookup(key(step=run.step, args=[("V", "2"), ("W", "x")]), "RUN") == \
        (None, "RUN: build args changed (V)")
    assert cache.lookup(key(step=run.step, args=[("W", "x"), ("X", "")]), "RUN") == \
        (None, "RUN: build args changed (V, X)")
    assert cache.lookup(key(step="RUN [\"other\"]"), "RUN") == \
        (None, "RUN: not in cache (new or changed instruction)")
    # another parent: nothing to compare with
    assert cache.lookup(key(parent="sha256:elsewhere", step=run.step, args=run.args), "RUN")[0] is None


def test_content_changed_without_recorded_files_says_so_briefly():
    old = key(step="COPY", sources="sha256:1")
    cache = cache_with(("sha256:a", old))
    assert cache.lookup(key(step="COPY", sources="sha256:2"), "COPY x") == \
        (None, "COPY x: content changed")


def test_changed_files_lists_at_most_five():
    old = {f"f{i}": "1" for i in range(8)}
    new = {f"f{i}": "2" for i in range(8)}
    assert _changed_files(old, new) == "f0, f1, f2, f3, f4 and 3 more"
    assert _changed_files({"a": "1", "gone": "1"}, {"a": "1"}) == "-gone"
    assert _changed_files(None, new) == ""


@pytest.mark.parametrize("changes", [{"files": None}, {"args": None}])
def test_damaged_records_do_not_break_a_lookup(changes):
    k = key(step="COPY", sources="sha256:1", files={"a": "1"})
    record = {**k.record(), **changes}
    cache = BuildCache(Store({"sha256:a": {"build": record}}))
    hit, reason = cache.lookup(key(step="COPY", sources="sha256:2", files={"a": "2"}), "COPY a")
    assert hit is None and reason.startswith("COPY a:")
