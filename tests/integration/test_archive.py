"""save / load / import / export: formats, round trips, bad input, crashes, concurrency.

The archives under test are made three ways: by ``dockyard save`` itself,
by hand (classic docker-archives and OCI layouts built here member by
member), and by mutating a good archive to break exactly one thing. Peer
tools (skopeo, umoci) are exercised in tests/interop.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import http.server
import io
import json
import lzma
import os
import pty
import signal
import subprocess
import tarfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import zstandard

from support import (
    CLI, DOCKYARD, REPO, rootfs_tarball, seed_root, tar_bytes, tar_members, tree_digest,
)

pytestmark = pytest.mark.root

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
IMAGE_NAME = "io.containerd.image.name"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hexof(digest: str) -> str:
    return digest.partition(":")[2]


def run_bytes(root: Path, *args, input: bytes | None = None, timeout=60):
    """Run dockyard with binary stdin/stdout."""
    env = dict(os.environ, DOCKYARD_ROOT=str(root))
    return subprocess.run([*DOCKYARD, *args], input=input, capture_output=True, env=env,
                          cwd=REPO, timeout=timeout)


def prime(root: Path) -> dict:
    """Create the bookkeeping a command may create (dirs, lock files), then
    return the root's state: what a failed command must leave unchanged."""
    from engine import Engine

    engine = Engine(root)
    engine.layout.create()
    with engine.content.lease():
        pass
    return tree_digest(root)


class Archive:
    """A saved archive taken apart, to break one thing and put back together."""

    def __init__(self, data: bytes):
        self.blobs: dict[str, bytes] = {}
        self.files: dict[str, bytes] = {}
        for info, content in tar_members(data):
            if content is None:
                continue
            if info.name.startswith("blobs/sha256/"):
                self.blobs[info.name.rpartition("/")[2]] = content
            else:
                self.files[info.name] = content

    def doc(self, name: str):
        return json.loads(self.files[name])

    def put_doc(self, name: str, doc) -> None:
        self.files[name] = json.dumps(doc).encode()

    @property
    def index(self) -> dict:
        return self.doc("index.json")

    def manifest(self, i: int = 0) -> dict:
        return json.loads(self.blobs[hexof(self.index["manifests"][i]["digest"])])

    def config(self, i: int = 0) -> dict:
        return json.loads(self.blobs[hexof(self.manifest(i)["config"]["digest"])])

    def set_manifest(self, doc: dict, i: int = 0) -> str:
        data = json.dumps(doc).encode()
        self.blobs[hexof(sha(data))] = data
        index = self.index
        index["manifests"][i].update(digest=sha(data), size=len(data))
        self.put_doc("index.json", index)
        return sha(data)

    def set_config(self, doc: dict, i: int = 0) -> None:
        data = json.dumps(doc).encode()
        self.blobs[hexof(sha(data))] = data
        manifest = self.manifest(i)
        old = manifest["config"]["digest"]
        manifest["config"].update(digest=sha(data), size=len(data))
        self.set_manifest(manifest, i)
        if "manifest.json" in self.files:
            items = self.doc("manifest.json")
            for item in items:
                if item["Config"] == f"blobs/sha256/{hexof(old)}":
                    item["Config"] = f"blobs/sha256/{hexof(sha(data))}"
            self.put_doc("manifest.json", items)

    def entries(self, extra=()) -> list:
        out = [("blobs", None), ("blobs/sha256", None)]
        out += [(f"blobs/sha256/{h}", b) for h, b in sorted(self.blobs.items())]
        out += sorted(self.files.items())
        return out + list(extra)

    def build(self, extra=()) -> bytes:
        return tar_bytes(self.entries(extra))


@pytest.fixture(scope="module")
def source(tmp_path_factory, template_root):
    """A root holding ``custom:1`` (imported, unique to this run) and its saved archive."""
    from engine import Engine

    root = seed_root(template_root, tmp_path_factory.mktemp("source") / "root")
    engine = Engine(root)
    rootfs = rootfs_tarball({"etc/custom.txt": b"custom " + os.urandom(8).hex().encode() + b"\n",
                             "data/blob.bin": os.urandom(100_000)})
    image = engine.images.import_(rootfs, "custom:1", changes=['CMD ["/bin/sh"]'])
    archive = b"".join(engine.images.save(["custom:1"]))
    return SimpleNamespace(root=root, engine=engine, image=image, archive=archive, rootfs=rootfs)


# -- save -------------------------------------------------------------------------------


def test_save_writes_both_layouts_reproducibly(cli, engine, tmp_path):
    assert cli("save", "-o", str(tmp_path / "a.tar"), "busybox").returncode == 0
    with open(tmp_path / "b.tar", "wb") as out:
        r = subprocess.run([*DOCKYARD, "save", "busybox:latest"], stdout=out, env=cli.env(), cwd=REPO)
    assert r.returncode == 0
    data = (tmp_path / "a.tar").read_bytes()
    assert data == (tmp_path / "b.tar").read_bytes(), "saving twice must give the same bytes"

    image = engine.images.get("busybox")
    layer = image.layers[0].digest
    blobs = sorted(hexof(d) for d in (image.manifest_digest, image.id, layer))
    members = tar_members(data)
    assert [i.name for i, _ in members] == ["blobs", "blobs/sha256", *(f"blobs/sha256/{h}" for h in blobs),
                                            "index.json", "manifest.json", "oci-layout", "repositories"]
    assert all(i.mtime == 0 and i.uid == 0 and i.gid == 0 for i, _ in members)
    contents = {i.name: c for i, c in members}
    for h in blobs:
        assert hashlib.sha256(contents[f"blobs/sha256/{h}"]).hexdigest() == h
    assert contents["oci-layout"] == b'{"imageLayoutVersion": "1.0.0"}'
    index = json.loads(contents["index.json"])
    assert index["mediaType"] == OCI_INDEX
    assert index["manifests"] == [{
        "mediaType": OCI_MANIFEST, "digest": image.manifest_digest, "size": image.manifest_size,
        "annotations": {IMAGE_NAME: "docker.io/library/busybox:latest", REF_NAME: "latest"},
        "platform": {"architecture": image.config["architecture"], "os": "linux"}}]
    assert json.loads(contents["manifest.json"]) == [{
        "Config": f"blobs/sha256/{hexof(image.id)}", "RepoTags": ["busybox:latest"],
        "Layers": [f"blobs/sha256/{hexof(layer)}"]}]
    assert json.loads(contents["repositories"]) == {"busybox": {"latest": hexof(layer)}}


def test_save_of_several_images_and_an_untagged_one(engine, empty_root):
    from engine import Engine

    untagged = engine.images.import_(rootfs_tarball({"etc/who": b"nobody's\n"}))
    assert untagged.tags == []
    busybox = engine.images.get("busybox")
    engine.image_store.add(busybox.manifest_digest, "busybox:v2")
    data = b"".join(engine.images.save(["busybox", untagged.id[:12]]))  # all busybox tags, by ID
    archive = Archive(data)
    items = archive.doc("manifest.json")
    assert sorted(items[0]["RepoTags"]) == ["busybox:latest", "busybox:v2"]
    assert items[1] == {"Config": f"blobs/sha256/{hexof(untagged.id)}", "RepoTags": None,
                        "Layers": [f"blobs/sha256/{hexof(untagged.layers[0].digest)}"]}
    names = [(d.get("annotations") or {}).get(REF_NAME) for d in archive.index["manifests"]]
    assert sorted(map(str, names)) == ["None", "latest", "v2"]

    result = Engine(empty_root).images.load_archive(data)
    assert sorted(result.lines) == sorted(["Loaded image: busybox:latest", "Loaded image: busybox:v2",
                                           f"Loaded image ID: {untagged.id}"])
    loaded = {im.id: sorted(im.tags) for im in Engine(empty_root).images.list()}
    assert loaded == {busybox.id: ["busybox:latest", "busybox:v2"], untagged.id: []}


def test_save_of_a_missing_image_writes_nothing(cli, tmp_path):
    r = cli("save", "-o", str(tmp_path / "x.tar"), "busybox", "nosuch:1")
    assert r.returncode == 125 and r.stderr == "dockyard: No such image: nosuch:1\n"
    assert not list(tmp_path.glob("*x.tar*"))


# -- load ---------------------------------------------------------------------------------


def test_load_then_save_keeps_every_digest(source, empty_root, tmp_path):
    path = tmp_path / "custom.tar"
    path.write_bytes(source.archive)
    cli = CLI(empty_root)
    r = cli("load", "-i", str(path))
    assert (r.returncode, r.stdout, r.stderr) == (0, "Loaded image: custom:1\n", "")
    from engine import Engine

    loaded = Engine(empty_root).images.get("custom:1")
    assert (loaded.manifest_digest, loaded.id, loaded.layers) == \
        (source.image.manifest_digest, source.image.id, source.image.layers)
    assert run_bytes(empty_root, "save", "custom:1").stdout == source.archive
    r = cli("run", "--rm", "custom:1", "/bin/busybox", "cat", "/etc/custom.txt")
    assert r.returncode == 0 and r.stdout.startswith("custom ")


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_load_compressed_archive_from_stdin(source, empty_root, compression):
    data = gzip.compress(source.archive) if compression == "gzip" \
        else zstandard.ZstdCompressor().compress(source.archive)
    r = run_bytes(empty_root, "load", "-q", input=data)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"Loaded image: custom:1\n", b"")


def classic_archive(layers: list[bytes], config_extra: dict | None = None, tags=("classic:1",)):
    """A docker-archive in the classic layout (docker < 25): <id>/layer.tar, <id>/json,
    <id>/VERSION, <config-hex>.json, manifest.json and repositories."""
    from engine.image.manifest import architecture

    diff_ids = [sha(gzip.decompress(layer) if layer[:2] == b"\x1f\x8b" else layer) for layer in layers]
    config = {"architecture": architecture(), "os": "linux", "config": {"Cmd": ["/bin/sh"]}, "created": "2024-01-01T00:00:00Z",
              "rootfs": {"type": "layers", "diff_ids": diff_ids}, **(config_extra or {})}
    config_bytes = json.dumps(config).encode()
    entries, paths, parent = [], [], ""
    for i, layer in enumerate(layers):
        layer_id = hashlib.sha256(f"{parent} {diff_ids[i]}".encode()).hexdigest()
        entries += [(layer_id, None), (f"{layer_id}/VERSION", b"1.0"),
                    (f"{layer_id}/json", json.dumps({"id": layer_id, "parent": parent}).encode()),
                    (f"{layer_id}/layer.tar", layer)]
        paths.append(f"{layer_id}/layer.tar")
        parent = layer_id
    entries.append((f"{hexof(sha(config_bytes))}.json", config_bytes))
    entries.append(("manifest.json", json.dumps([{"Config": f"{hexof(sha(config_bytes))}.json",
                                                  "RepoTags": list(tags), "Layers": paths}]).encode()))
    entries.append(("repositories", json.dumps({"classic": {"1": parent}}).encode()))
    return tar_bytes(entries)


def test_classic_docker_archive_gets_a_stable_manifest(source, tmp_path, template_root):
    from engine import Engine

    second = tar_bytes([("etc", None), ("etc/second.txt", b"from the gzip layer\n")])
    data = classic_archive([source.rootfs, gzip.compress(second, mtime=0)])
    digests = []
    for n in range(2):
        engine = Engine(tmp_path / f"root{n}")
        result = engine.images.load_archive(data)
        assert result.lines == ["Loaded image: classic:1"]
        image = engine.images.get("classic:1")
        assert [layer.media_type for layer in image.layers] == [
            "application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip"]
        assert image.manifest.media_type == OCI_MANIFEST
        digests.append(image.manifest_digest)
    assert digests[0] == digests[1], "the generated manifest must be deterministic"
    # load -> save -> load keeps the digests
    saved = b"".join(Engine(tmp_path / "root0").images.save("classic:1"))
    again = Engine(tmp_path / "root2")
    again.images.load(saved)
    assert again.images.get("classic:1").manifest_digest == digests[0]
    r = CLI(tmp_path / "root2")("run", "--rm", "classic:1", "/bin/busybox", "cat", "/etc/second.txt")
    assert r.stdout == "from the gzip layer\n"


def test_loading_over_an_existing_tag_says_so(source, cli, engine):
    archive = Archive(source.archive)
    index = archive.index
    index["manifests"][0]["annotations"] = {IMAGE_NAME: "docker.io/library/busybox:latest",
                                            REF_NAME: "latest"}
    archive.put_doc("index.json", index)
    old = engine.images.get("busybox")
    r = run_bytes(cli.root, "load", input=archive.build())
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == [
        f"The image busybox:latest already exists, renaming the old one with ID {old.id} to empty string",
        "Loaded image: busybox:latest"]
    assert engine.images.get("busybox").id == source.image.id
    assert [im.tags for im in engine.images.list() if im.id == old.id] == [[]]  # dangling now


@pytest.mark.parametrize("annotations, keep_manifest_json, expected", [
    ({IMAGE_NAME: "docker.io/library/app:2", REF_NAME: "2"}, False, "app:2"),
    ({REF_NAME: "example.com/team/app:3"}, False, "example.com/team/app:3"),
    ({REF_NAME: "latest"}, True, "custom:1"),     # a bare tag: manifest.json's RepoTags decide
    ({REF_NAME: "latest"}, False, None),          # ...and without them the image is untagged
    ({}, False, None),
], ids=["containerd-name", "full-ref-name", "repotags-fallback", "bare-tag", "no-name"])
def test_tag_rules(source, empty_root, annotations, keep_manifest_json, expected):
    from engine import Engine

    archive = Archive(source.archive)
    index = archive.index
    index["manifests"][0]["annotations"] = annotations
    archive.put_doc("index.json", index)
    if not keep_manifest_json:
        del archive.files["manifest.json"], archive.files["repositories"]
    result = Engine(empty_root).images.load_archive(archive.build())
    if expected:
        assert result.lines == [f"Loaded image: {expected}"]
    else:
        assert result.lines == [f"Loaded image ID: {source.image.id}"]
    assert [im.tags for im in Engine(empty_root).images.list()] == [[expected] if expected else []]


def test_nested_index_resolves_to_this_platform(source, empty_root):
    from engine import Engine
    from engine.image.manifest import architecture

    archive = Archive(source.archive)
    real = archive.index["manifests"][0]
    other = "s390x" if architecture() != "s390x" else "ppc64le"
    nested = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sha(b"not here"), "size": 8,
         "platform": {"architecture": other, "os": "linux"}},  # absent: never read
        {"mediaType": OCI_MANIFEST, "digest": real["digest"], "size": real["size"],
         "platform": {"architecture": architecture(), "os": "linux"}}]}
    data = json.dumps(nested).encode()
    archive.blobs[hexof(sha(data))] = data
    archive.put_doc("index.json", {"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_INDEX, "digest": sha(data), "size": len(data),
         "annotations": {IMAGE_NAME: "docker.io/library/nested:1"}}]})
    del archive.files["manifest.json"]
    result = Engine(empty_root).images.load_archive(archive.build())
    assert result.lines == ["Loaded image: nested:1"]
    assert Engine(empty_root).images.get("nested:1").manifest_digest == real["digest"]


# -- bad input: one line naming the culprit, exit 125, the store as it was ----------------


def _break(source, how):
    a = Archive(source.archive)
    manifest = a.manifest()
    layer = manifest["layers"][0]
    if how == "blob-content":
        h = hexof(layer["digest"])
        a.blobs[h] = bytes(len(a.blobs[h]))
    elif how == "descriptor-size":
        layer["size"] += 1
        a.set_manifest(manifest)
    elif how == "descriptor-digest":
        layer["digest"] = sha(b"something else")
        a.set_manifest(manifest)
    elif how == "absurd-size":
        layer["size"] = 10 ** 18
        a.set_manifest(manifest)
    elif how == "diff-ids":
        config = a.config()
        config["rootfs"]["diff_ids"] = [sha(b"another layer")]
        a.set_config(config)
    elif how == "layers-count":
        config = a.config()
        config["rootfs"]["diff_ids"].append(sha(b"another layer"))
        a.set_config(config)
    elif how == "missing-layer":
        del a.blobs[hexof(layer["digest"])]
    elif how == "media-type":
        index = a.index
        index["manifests"][0]["mediaType"] = "application/vnd.docker.distribution.manifest.v1+prettyjws"
        a.put_doc("index.json", index)
    elif how == "dot-dot":
        return a.build(extra=[("../escape", b"x")])
    elif how == "absolute":
        return a.build(extra=[("/etc/escape", b"x")])
    elif how == "link-escape":
        return a.build(extra=[("blobs/sha256/link", ("symlink", "../../../etc/passwd"))])
    elif how == "duplicate":
        return a.build(extra=[("index.json", a.files["index.json"])])
    return a.build()


def _truncated(source):
    data = source.archive
    layer_hex = hexof(Archive(data).manifest()["layers"][0]["digest"])
    return data[:data.index(layer_hex.encode()) + 4000]  # inside the layer's data


def _corrupt_gzip(source):
    data = bytearray(gzip.compress(source.archive))
    data[-8] ^= 0xFF  # the CRC-32 in the trailer: found only after every member was read
    return bytes(data)


def _zstd_bomb(_source):
    compressor = zstandard.ZstdCompressor().compressobj()
    info = tarfile.TarInfo("blobs/sha256/" + "0" * 64)
    info.size = 400 << 20
    parts = [compressor.compress(info.tobuf(tarfile.PAX_FORMAT))]
    zeros = bytes(1 << 20)
    parts += [compressor.compress(zeros) for _ in range(400)]
    return b"".join(parts) + compressor.flush()


def _huge_member(_source):
    info = tarfile.TarInfo("blobs/sha256/" + "1" * 64)
    info.size = 10 ** 18  # a PAX size record: ustar cannot hold it
    return info.tobuf(tarfile.PAX_FORMAT) + bytes(4096)


BAD_INPUT = {
    "truncated": (_truncated, "archive: truncated: member 'blobs/sha256/"),
    "corrupt-gzip": (_corrupt_gzip, "archive: corrupt gzip data"),
    "blob-content": (lambda s: _break(s, "blob-content"), "archive member 'blobs/sha256/"),
    "descriptor-size": (lambda s: _break(s, "descriptor-size"), "size mismatch for sha256:"),
    "descriptor-digest": (lambda s: _break(s, "descriptor-digest"), "is not in the archive"),
    "absurd-size": (lambda s: _break(s, "absurd-size"), "declares 1000000000000000000 bytes"),
    "diff-ids": (lambda s: _break(s, "diff-ids"), "invalid diffID"),
    "layers-count": (lambda s: _break(s, "layers-count"), "layers length mismatch: expected 1, got 2"),
    "missing-layer": (lambda s: _break(s, "missing-layer"), "is not in the archive"),
    "media-type": (lambda s: _break(s, "media-type"), "unsupported manifest media type"),
    "dot-dot": (lambda s: _break(s, "dot-dot"), "member '../escape' refused: '..' in path"),
    "absolute": (lambda s: _break(s, "absolute"), "member '/etc/escape' refused: absolute path"),
    "link-escape": (lambda s: _break(s, "link-escape"), "leaves the archive"),
    "duplicate": (lambda s: _break(s, "duplicate"), "archive member 'index.json' appears twice"),
    "huge-member": (_huge_member, "declares 1000000000000000000 bytes"),
    "zstd-bomb": (_zstd_bomb, "refusing to decompress further"),
    "not-a-tar": (lambda s: b"this is not a tar archive\n" * 100, "archive: not a tar archive"),
    "empty": (lambda s: b"", "archive: empty archive"),
    "no-images": (lambda s: tar_bytes([("hello.txt", b"hi\n")]), "not a docker or OCI image archive"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_archives_are_refused_and_leave_the_store_unchanged(source, root, tmp_path, case):
    make, expected = BAD_INPUT[case]
    path = tmp_path / "bad.tar"
    path.write_bytes(make(source))
    before = prime(root)
    r = run_bytes(root, "load", "-i", str(path))
    err = r.stderr.decode()
    assert r.returncode == 125, err
    assert err.startswith("dockyard: ") and err.count("\n") == 1, err
    assert expected in err
    assert tree_digest(root) == before


def test_a_gzip_layer_bomb_is_refused(source, root, monkeypatch):
    """A layer that inflates far beyond its size (limits lowered for speed, test only)."""
    from engine import Engine
    from engine.errors import EngineError
    from engine.image import tarball

    monkeypatch.setattr(tarball, "EXPANSION_FREE", 1 << 20)
    monkeypatch.setattr(tarball, "EXPANSION_RATIO", 100)
    inner = tar_bytes([("zeros", bytes(16 << 20))])
    layer = gzip.compress(inner, compresslevel=9, mtime=0)
    a = Archive(source.archive)
    manifest = a.manifest()
    manifest["layers"] = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                           "digest": sha(layer), "size": len(layer)}]
    a.blobs[hexof(sha(layer))] = layer
    config = a.config()
    config["rootfs"]["diff_ids"] = [sha(inner)]
    a.set_manifest(manifest)
    a.set_config(config)
    before = prime(root)
    with pytest.raises(EngineError, match="layer 0 .*refusing to decompress further"):
        Engine(root).images.load(a.build())
    assert tree_digest(root) == before


# -- import -------------------------------------------------------------------------------


COMPRESS = {
    "none": lambda d: d,
    "gzip": lambda d: gzip.compress(d, mtime=0),
    "zstd": lambda d: zstandard.ZstdCompressor().compress(d),
    "bzip2": lambda d: bz2.compress(d, 1),
    "xz": lambda d: lzma.compress(d, preset=0),
}


@pytest.mark.parametrize("compression", list(COMPRESS))
def test_import_file_with_changes_and_message(cli, engine, tmp_path, compression):
    rootfs = rootfs_tarball({"etc/motd": b"imported\n"})
    path = tmp_path / "rootfs.tar"
    path.write_bytes(COMPRESS[compression](rootfs))
    r = cli("import", "-c", "ENV GREETING=hello", "-c", 'CMD ["/bin/sh", "-c", "echo $GREETING; busybox cat /etc/motd"]',
            "--change", "WORKDIR /tmp", "-m", "my message", str(path), "imported:1")
    assert r.returncode == 0, r.stderr
    image = engine.images.get("imported:1")
    assert r.stdout == f"{image.id}\n"
    assert image.diff_ids == [sha(rootfs)] and image.layers[0].digest == sha(rootfs)
    assert image.layers[0].media_type == "application/vnd.oci.image.layer.v1.tar"
    assert image.run_config == {"Env": ["GREETING=hello"], "WorkingDir": "/tmp",
                                "Cmd": ["/bin/sh", "-c", "echo $GREETING; busybox cat /etc/motd"]}
    assert image.config["history"] == [{"created": image.created, "comment": "my message"}]
    assert image.config["os"] == "linux"
    if compression in ("none", "zstd"):  # running costs time: twice is enough
        r = cli("run", "--rm", "imported:1")
        assert (r.returncode, r.stdout) == (0, "hello\nimported\n"), r.stderr


class _Server:
    """A file server on 127.0.0.1 only, for ``import http://...``."""

    def __init__(self, directory: Path):
        handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(directory), **kw)  # noqa: E731
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.RequestHandlerClass.log_message = lambda *a: None
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_import_from_stdin_and_from_a_url(cli, engine, tmp_path):
    rootfs = gzip.compress(rootfs_tarball({"etc/where": b"web\n"}), mtime=0)
    r = run_bytes(cli.root, "import", "-", "fromstdin", input=rootfs)
    assert r.returncode == 0, r.stderr
    assert engine.images.get("fromstdin").config["history"][0]["comment"] == "Imported from -"

    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "rootfs.tar.gz").write_bytes(rootfs)
    server = _Server(tmp_path / "www")
    try:
        url = f"{server.url}/rootfs.tar.gz"
        r = cli("import", "-c", 'CMD ["/bin/busybox", "cat", "/etc/where"]', url, "fromurl:1")
        assert r.returncode == 0, r.stderr
        image = engine.images.get("fromurl:1")
        assert image.config["history"][0]["comment"] == f"Imported from {url}"
        assert image.id == r.stdout.strip()
        before = prime(cli.root)
        r = cli("import", f"{server.url}/missing.tar", "nothing:1")
        assert r.returncode == 125 and "404" in r.stderr and r.stderr.count("\n") == 1
        assert tree_digest(cli.root) == before
    finally:
        server.close()
    assert cli("run", "--rm", "fromurl:1").stdout == "web\n"


BAD_IMPORTS = {
    "not-a-tar": (lambda: b"\x01" * 3000, "import: corrupt tar header at offset 0"),
    "empty": (lambda: b"", "import: the tarball is empty"),
    "truncated-gzip": (lambda: gzip.compress(rootfs_tarball())[:5000], "import: corrupt gzip data"),
    "escaping-entry": (lambda: tar_bytes([("../../evil", b"x")]), "refused"),
}


@pytest.mark.parametrize("case", list(BAD_IMPORTS))
def test_bad_imports_leave_the_store_unchanged(cli, tmp_path, case):
    make, expected = BAD_IMPORTS[case]
    path = tmp_path / "in.tar"
    path.write_bytes(make())
    before = prime(cli.root)
    r = cli("import", str(path), "bad:1")
    assert r.returncode == 125 and r.stderr.startswith("dockyard: ") and r.stderr.count("\n") == 1
    assert expected in r.stderr, r.stderr
    assert tree_digest(cli.root) == before


def test_bad_change_fails_before_reading(cli):
    before = prime(cli.root)
    r = cli("import", "-c", "RUN echo hi", "/nonexistent.tar", "x:1")
    assert (r.returncode, r.stderr) == (125, "dockyard: run is not a valid change command\n")
    assert tree_digest(cli.root) == before


@pytest.mark.parametrize("changes, before, after", [
    (['CMD ["sh", "-c", "echo hi"]'], {}, {"Cmd": ["sh", "-c", "echo hi"]}),
    (["CMD echo $HOME"], {}, {"Cmd": ["/bin/sh", "-c", "echo $HOME"]}),
    (["ENTRYPOINT /bin/app"], {"Cmd": ["x"]}, {"Entrypoint": ["/bin/sh", "-c", "/bin/app"], "Cmd": None}),
    (['CMD ["a"]', 'ENTRYPOINT ["b"]'], {}, {"Cmd": ["a"], "Entrypoint": ["b"]}),
    (['ENV A=1 B="two words"', "ENV C ${A}-$B", "ENV A=3"], {},
     {"Env": ["A=3", "B=two words", "C=1-two words"]}),
    (["ENV D=${NOPE:-dflt} E=${A:+set} F='$A'"], {"Env": ["A=1"]}, {"Env": ["A=1", "D=dflt", "E=set", "F=$A"]}),
    (["EXPOSE 80 53/udp 8000-8001"], {},
     {"ExposedPorts": {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}}}),
    (['LABEL a=b "c d"=e', "LABEL a=z"], {}, {"Labels": {"a": "z", "c d": "e"}}),
    (["WORKDIR /a", "WORKDIR b/../c"], {}, {"WorkingDir": "/a/c"}),
    (["USER 1000:1000", "STOPSIGNAL SIGKILL"], {}, {"User": "1000:1000", "StopSignal": "SIGKILL"}),
    (['VOLUME ["/data"]', "VOLUME /x /y"], {}, {"Volumes": {"/data": {}, "/x": {}, "/y": {}}}),
    (["ONBUILD RUN echo hi"], {}, {"OnBuild": ["RUN echo hi"]}),
    (["HEALTHCHECK --interval=1m30s --retries=3 CMD curl -f http://localhost/"], {},
     {"Healthcheck": {"Test": ["CMD-SHELL", "curl -f http://localhost/"], "Interval": 90_000_000_000,
                      "Retries": 3}}),
    (["HEALTHCHECK NONE"], {}, {"Healthcheck": {"Test": ["NONE"]}}),
    (["env A=1 \\", "  B=2", "# a comment"], {}, {"Env": ["A=1", "B=2"]}),
])
def test_change_instructions(changes, before, after):
    from engine.image.changes import apply

    assert apply(before, changes) == {**before, **after}


@pytest.mark.parametrize("change, message", [
    ("RUN echo", "run is not a valid change command"),
    ("FROM busybox", "from is not a valid change command"),
    ("ENV", "ENV requires at least one argument"),
    ("ENV lonely", "ENV must have two arguments"),
    ("LABEL novalue", "Syntax error - can't find = in 'novalue'"),
    ("ONBUILD FROM x", "FROM isn't allowed as an ONBUILD trigger"),
    ("EXPOSE 99999", "invalid containerPort: 99999"),
    ("STOPSIGNAL NOPE", "Invalid signal: NOPE"),
    ('VOLUME [""]', "VOLUME specified can not be an empty string"),
    ("ENV A=\"unterminated", "unmatched"),
])
def test_bad_change_instructions(change, message):
    from engine.errors import UsageError
    from engine.image.changes import apply

    with pytest.raises(UsageError) as e:
        apply({}, [change])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_python_api_writes_to_files_or_yields_chunks(engine, tmp_path):
    buf = io.BytesIO()
    assert engine.images.save("busybox", buf) is None
    assert buf.getvalue() == b"".join(engine.images.save(["busybox"]))
    (loaded,) = engine.images.load(buf.getvalue())
    assert loaded.tags == ["busybox:latest"] and loaded.id == engine.images.get("busybox").id
    container = engine.containers.create("busybox", "true")
    with open(tmp_path / "fs.tar", "wb") as f:
        assert container.export(f) is None
    assert (tmp_path / "fs.tar").read_bytes() == b"".join(container.export())


# -- export ---------------------------------------------------------------------------------


def _names(data: bytes) -> list[str]:
    return [info.name for info, _ in tar_members(data)]


def test_export_of_a_created_container_is_the_image_plus_its_mount_points(engine):
    container = engine.containers.create("busybox", "true")
    data = b"".join(container.export())
    members = {info.name: (info, content) for info, content in tar_members(data)}
    layer = engine.content.read(engine.images.get("busybox").layers[0].digest)
    expected = {info.name for info, _ in tar_members(layer)} | {"dev", "proc", "sys", "etc/hosts", "etc/resolv.conf", "etc/hostname"}
    assert set(members) == expected
    assert _names(data)[0] == "bin"  # no "./" entry, as docker export
    busybox_entries = [(i, c) for i, c in members.values() if i.name.startswith("bin/")]
    files = [c for i, c in busybox_entries if i.isreg()]
    assert len(files) == 1 and files[0] == Path("/bin/busybox").read_bytes()
    assert all(i.islnk() for i, _ in busybox_entries if not i.isreg())  # hard links stay links
    assert members["tmp"][0].mode == 0o1777 and members["etc/passwd"][0].uid == 0


def test_export_of_an_exited_container_shows_its_changes(cli, tmp_path):
    r = cli("run", "--name", "gone", "busybox", "sh", "-c",
            "echo new > /tmp/new; rm /etc/group; mkdir -p /data/x; ln -s / /data/root; find / -xdev")
    assert r.returncode == 0, r.stderr
    inside = {line.lstrip("/") for line in r.stdout.splitlines()} - {""}
    out = tmp_path / "gone.tar"
    assert cli("export", "-o", str(out), "gone").returncode == 0
    members = {info.name: (info, content) for info, content in tar_members(out.read_bytes())}
    assert set(members) == inside
    assert "etc/group" not in members and members["tmp/new"][1] == b"new\n"
    assert members["data/root"][0].issym() and members["data/root"][0].linkname == "/"


def test_export_of_a_running_container_reads_its_live_root(cli, tmp_path):
    proc = cli.popen("run", "--name", "live", "busybox", "sh", "-c",
                     "echo live > /live; find / -xdev > /tmp/listing; touch /ready; sleep 30")
    try:
        pid = cli.wait_for("live")["State"]["Pid"]
        deadline = time.time() + 10
        while not os.path.exists(f"/proc/{pid}/root/ready"):
            assert time.time() < deadline, "the container never got ready"
            time.sleep(0.02)
        r = run_bytes(cli.root, "export", "live")
        assert r.returncode == 0, r.stderr
    finally:
        cli("rm", "-f", "live")
        proc.wait(timeout=10)
    members = {info.name: (info, content) for info, content in tar_members(r.stdout)}
    inside = {line.lstrip("/") for line in members["tmp/listing"][1].decode().splitlines()} - {""}
    assert set(members) == inside | {"ready"}
    assert members["live"][1] == b"live\n"
    assert members["proc"][0].isdir() and members["dev"][0].isdir()  # mount points, not their content


def _on_a_terminal(root: Path, *args, stdin_tty: bool = False):
    """Run dockyard with stdout (or stdin) on a pseudo-terminal."""
    main, sub = pty.openpty()
    try:
        env = dict(os.environ, DOCKYARD_ROOT=str(root))
        kw = {"stdin": sub} if stdin_tty else {"stdout": sub}
        return subprocess.run([*DOCKYARD, *args], stderr=subprocess.PIPE, env=env, cwd=REPO,
                              timeout=30, **kw)
    finally:
        os.close(main)
        os.close(sub)


def test_tars_are_never_written_to_a_terminal(cli):
    assert cli("run", "--name", "c1", "busybox", "true").returncode == 0
    for args in (["save", "busybox"], ["export", "c1"]):
        r = _on_a_terminal(cli.root, *args)
        assert (r.returncode, r.stderr) == (
            125, b"dockyard: cowardly refusing to save to a terminal. Use the -o flag or redirect\n")
    r = _on_a_terminal(cli.root, "load", stdin_tty=True)
    assert (r.returncode, r.stderr) == (125, b"dockyard: requested load from stdin, but stdin is empty\n")


# -- crashes and concurrency ------------------------------------------------------------------


@pytest.fixture(scope="module")
def big(tmp_path_factory, template_root):
    """A ~50 MB rootfs tarball and the saved archive of the image imported from it."""
    from engine import Engine

    where = tmp_path_factory.mktemp("big")
    rootfs = tar_bytes([("data", None), ("data/random.bin", os.urandom(50_000_000))])
    (where / "rootfs.tar").write_bytes(rootfs)
    engine = Engine(seed_root(template_root, where / "root"))
    image = engine.images.import_(rootfs, "big:1")
    archive = where / "big-image.tar"
    with open(archive, "wb") as f:
        engine.images.save("big:1", f)
    return SimpleNamespace(rootfs=where / "rootfs.tar", archive=archive, image=image)


def _images(root: Path) -> list[tuple[str, list[str]]]:
    from engine import Engine

    return sorted((im.id, sorted(im.tags)) for im in Engine(root).images.list())


@pytest.mark.parametrize("command", ["load", "import"])
def test_killed_anywhere_leaves_no_partial_image_and_a_retry_works(root, big, command):
    from engine import Engine

    args = ["load", "-i", str(big.archive)] if command == "load" else ["import", str(big.rootfs), "big:1"]
    engine = Engine(root)
    original_index = (root / "index.json").read_bytes()
    before = _images(root)
    env = dict(os.environ, DOCKYARD_ROOT=str(root))

    def reset():
        (root / "index.json").write_bytes(original_index)  # as if the image was removed
        engine.collect_garbage()

    # How long a whole run takes here decides where the late kills land:
    # the fixed early ones mostly hit start-up, these hit the copy, the
    # extraction and the tagging.
    start = time.monotonic()
    assert subprocess.run([*DOCKYARD, *args], env=env, cwd=REPO, capture_output=True).returncode == 0
    whole_ms = (time.monotonic() - start) * 1000
    reset()
    late = [int(whole_ms * f) for f in (0.5, 0.6, 0.7, 0.8, 0.9, 0.97)]
    for delay_ms in sorted({0, 5, 10, 20, 50, 100, 200, *late}):
        proc = subprocess.Popen([*DOCKYARD, *args], env=env, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay_ms / 1000)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        json.loads((root / "index.json").read_text())  # still a valid index
        new = [im for im in Engine(root).images.list() if (im.id, sorted(im.tags)) not in before]
        for image in new:  # killed after the tag was written: the image must be whole
            assert image.tags == ["big:1"], f"after a kill at {delay_ms} ms: {image}"
            blobs = [image.manifest_digest, image.id, *(layer.digest for layer in image.layers)]
            assert all(engine.content.verify(d) for d in blobs), f"after a kill at {delay_ms} ms"
            assert all(engine.layout.snapshot(c).is_dir() for c in image.chain_ids())
        retry = subprocess.run([*DOCKYARD, *args], env=env, cwd=REPO, capture_output=True)
        assert retry.returncode == 0, retry.stderr
        if command == "load":
            assert engine.images.get("big:1").id == big.image.id
        reset()  # back to the start for the next round
    assert _images(root) == before


def test_concurrent_loads(root, big, source, tmp_path):
    from engine import Engine

    small = tmp_path / "custom.tar"
    small.write_bytes(source.archive)
    env = dict(os.environ, DOCKYARD_ROOT=str(root))
    inputs = [big.archive, small, big.archive, small]
    procs = [subprocess.Popen([*DOCKYARD, "load", "-i", str(path)], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for path in inputs]
    results = [p.communicate(timeout=60) + (p.returncode,) for p in procs]
    assert all(code == 0 for _, _, code in results), results
    engine = Engine(root)
    assert {tag for _, tags in _images(root) for tag in tags} == {"busybox:latest", "big:1", "custom:1"}
    assert all(engine.content.verify(d) for d in engine.content.digests())
    assert not list(engine.layout.ingest.iterdir())
    for name in ("big:1", "custom:1"):  # loaded images are extracted too
        image = engine.images.get(name)
        assert all(engine.layout.snapshot(c).is_dir() for c in image.chain_ids())
