"""The tag index is an OCI index; moving a tag leaves the old image dangling."""

import json

import pytest

from engine.content import ContentStore
from engine.errors import ImageNotFound, StoreError
from engine.image import mediatype
from engine.image.manifest import Manifest, canonical, chain_ids
from engine.image.store import ImageStore
from engine.layout import Layout


def make_image(content, text: str) -> str:
    layer = content.put(text.encode())  # not a real tar: the index does not care
    config = canonical({"architecture": "amd64", "os": "linux", "created": "2020-01-01T00:00:00Z",
                        "config": {"Cmd": ["sh"]}, "rootfs": {"type": "layers", "diff_ids": [layer]}})
    config_digest = content.put(config)
    manifest = canonical({"schemaVersion": 2, "mediaType": mediatype.OCI_MANIFEST,
                          "config": {"mediaType": mediatype.OCI_CONFIG, "digest": config_digest,
                                     "size": len(config)},
                          "layers": [{"mediaType": mediatype.OCI_LAYER, "digest": layer,
                                      "size": len(text)}]})
    return content.put(manifest)


@pytest.fixture
def images(tmp_path):
    layout = Layout(tmp_path / "root")
    layout.create()
    return ImageStore(layout, ContentStore(layout))


def test_tag_lookup_and_oci_index_shape(images):
    m = make_image(images.content, "one")
    images.add(m, "app")
    index = json.loads(images.layout.index.read_text())
    assert index["mediaType"] == mediatype.OCI_INDEX
    assert index["manifests"][0]["annotations"] == {mediatype.REF_NAME: "app:latest"}
    assert json.loads(images.layout.oci_layout.read_text()) == {"imageLayoutVersion": "1.0.0"}
    image = images.get("app")
    assert image.manifest_digest == m
    assert images.get("docker.io/library/app:latest").manifest_digest == m
    assert images.get(image.id[7:19]).manifest_digest == m
    assert images.get(image.id).tags == ["app:latest"]


def test_moving_a_tag_leaves_a_dangling_image(images):
    old = make_image(images.content, "old")
    new = make_image(images.content, "new")
    images.add(old, "app:1")
    images.add(new, "app:1")
    listed = {im.manifest_digest: im.tags for im in images.list()}
    assert listed == {old: [], new: ["app:1"]}


def test_one_image_many_tags(images):
    m = make_image(images.content, "x")
    images.add(m, "a")
    images.add(m, "b:2")
    (image,) = images.list()
    assert sorted(image.tags) == ["a:latest", "b:2"]


def test_unknown_image_is_not_found(images):
    with pytest.raises(ImageNotFound, match="No such image: nope:latest"):
        images.get("nope")


def test_manifest_shape_must_match_its_media_type():
    index_doc = canonical({"schemaVersion": 2, "mediaType": mediatype.OCI_MANIFEST, "manifests": []})
    with pytest.raises(StoreError, match="not an image manifest"):
        Manifest.parse(index_doc)
    with pytest.raises(StoreError, match="needs 'config' and 'layers'"):
        Manifest.parse(canonical({"schemaVersion": 2, "mediaType": mediatype.OCI_MANIFEST}))
    with pytest.raises(StoreError, match="schema version 2"):
        Manifest.parse(b'{"schemaVersion": 1}')
    with pytest.raises(StoreError, match="not JSON"):
        Manifest.parse(b"{")


def test_chain_ids_follow_the_spec():
    import hashlib
    a, b, c = ("sha256:" + ch * 64 for ch in "abc")
    ab = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    abc = "sha256:" + hashlib.sha256(f"{ab} {c}".encode()).hexdigest()
    assert chain_ids([a, b, c]) == [a, ab, abc]
    assert chain_ids([]) == []
