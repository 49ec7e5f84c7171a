"""Image reference parsing follows distribution/reference (docker's grammar)."""

import pytest

from engine.errors import InvalidReference
from engine.image.reference import looks_like_id, parse


@pytest.mark.parametrize("text, domain, path, tag, digest, familiar", [
    ("busybox", "docker.io", "library/busybox", "latest", None, "busybox:latest"),
    ("busybox:1.36", "docker.io", "library/busybox", "1.36", None, "busybox:1.36"),
    ("team/app", "docker.io", "team/app", "latest", None, "team/app:latest"),
    ("localhost/app:v1", "localhost", "app", "v1", None, "localhost/app:v1"),
    ("localhost:5000/team/app:v1", "localhost:5000", "team/app", "v1", None,
     "localhost:5000/team/app:v1"),
    ("registry.example.com/a/b/c", "registry.example.com", "a/b/c", "latest", None,
     "registry.example.com/a/b/c:latest"),
    ("docker.io/library/busybox:latest", "docker.io", "library/busybox", "latest", None,
     "busybox:latest"),
    ("my_app.v2-x__y", "docker.io", "library/my_app.v2-x__y", "latest", None, "my_app.v2-x__y:latest"),
    ("busybox@sha256:" + "a" * 64, "docker.io", "library/busybox", None, "sha256:" + "a" * 64,
     "busybox@sha256:" + "a" * 64),
    ("Registry:5000/app", "Registry:5000", "app", "latest", None, "Registry:5000/app:latest"),
])
def test_parse_and_normalize(text, domain, path, tag, digest, familiar):
    ref = parse(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert str(ref) == familiar


@pytest.mark.parametrize("text, wording", [
    ("", "at least one component"),
    ("Busybox", "must be lowercase"),
    ("busy box", "invalid reference format"),
    ("busybox:", "bad tag"),
    ("busybox:-x", "bad tag"),
    ("busybox:" + "x" * 129, "bad tag"),
    ("busybox@sha256:abc", "bad digest"),
    ("a//b", "invalid reference format"),
    ("-app", "invalid reference format"),
    ("app-", "invalid reference format"),
    ("app/", "invalid reference format"),
    ("a" * 256, "more than 255"),
])
def test_malformed_references_are_refused(text, wording):
    with pytest.raises(InvalidReference, match=wording):
        parse(text)


def test_ids_are_recognised():
    assert looks_like_id("3f2a")
    assert looks_like_id("sha256:" + "0" * 64)
    assert not looks_like_id("busybox")
    assert not looks_like_id("sha256:xyz")
