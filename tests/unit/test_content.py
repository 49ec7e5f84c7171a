"""The blob store hashes while writing and only shows verified blobs."""

import hashlib
import io
import os

import pytest

from engine.content import ContentStore
from engine.errors import DigestMismatch, StoreError
from engine.layout import Layout


@pytest.fixture
def store(tmp_path):
    layout = Layout(tmp_path / "root")
    layout.create()
    return ContentStore(layout)


def test_put_names_the_blob_by_its_sha256(store):
    data = b"hello layers\n"
    digest = store.put(data)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert store.read(digest) == data
    assert oct(store.path(digest).stat().st_mode & 0o777) == "0o444"
    assert list(store.layout.ingest.iterdir()) == []


def test_streaming_ingest_checks_digest_and_size(store):
    data = os.urandom(3 * 1024 * 1024 + 17)
    good = "sha256:" + hashlib.sha256(data).hexdigest()
    assert store.ingest(io.BytesIO(data), good, len(data)) == good
    with pytest.raises(StoreError, match="size mismatch"):
        store.ingest(io.BytesIO(data + b"x"), None, len(data))
    bad = "sha256:" + "0" * 64
    with pytest.raises(DigestMismatch, match="expected sha256:0000"):
        store.ingest(io.BytesIO(b"other"), bad)
    assert not store.exists(bad)
    assert list(store.layout.ingest.iterdir()) == [], "failed ingests leave nothing behind"


def test_a_blob_is_invisible_until_committed(store):
    data = b"x" * 100
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with store.writer() as w:
        w.write(data)
        assert not store.exists(digest)
        assert len(list(store.layout.ingest.iterdir())) == 1
        w.commit(digest)
    assert store.exists(digest)


def test_abandoned_writer_is_removed(store):
    with pytest.raises(RuntimeError):
        with store.writer() as w:
            w.write(b"partial")
            raise RuntimeError("killed")
    assert list(store.layout.ingest.iterdir()) == []


def test_verify_detects_corruption(store):
    digest = store.put(b"precious")
    assert store.verify(digest)
    path = store.path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"tampered")
    assert not store.verify(digest)
    with pytest.raises(DigestMismatch):
        store.read(digest)


def test_bad_digest_strings_are_refused(store):
    with pytest.raises(StoreError):
        store.path("md5:abc")
    with pytest.raises(StoreError, match="missing"):
        store.open("sha256:" + "1" * 64)
