"""busybox:latest is made offline from busybox-static, the same bytes every time."""

import io
import json
import os
import shutil
import tarfile

import pytest

from engine import Engine
from engine.errors import EngineError
from engine.image import mediatype

BUSYBOX = "/bin/busybox"
pytestmark = pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs busybox-static")


def test_same_binary_same_digests(tmp_path):
    a = Engine(tmp_path / "a").images.build_busybox()
    copy = tmp_path / "busybox-copy"
    shutil.copy2(BUSYBOX, copy)  # same bytes and mtime
    b = Engine(tmp_path / "b").images.build_busybox(str(copy))
    assert a.manifest_digest == b.manifest_digest
    assert a.id == b.id
    assert a.layers[0].digest == b.layers[0].digest
    again = Engine(tmp_path / "a").images.build_busybox()
    assert again.manifest_digest == a.manifest_digest
    assert len(Engine(tmp_path / "a").images.list()) == 1


def test_image_shape(tmp_path):
    engine = Engine(tmp_path / "r")
    image = engine.images.build_busybox()
    assert image.tags == ["busybox:latest"]
    assert image.manifest.media_type == mediatype.OCI_MANIFEST
    assert image.manifest.config.media_type == mediatype.OCI_CONFIG
    assert [layer.media_type for layer in image.layers] == [mediatype.OCI_LAYER]
    assert image.run_config["Cmd"] == ["sh"]
    assert image.config["rootfs"]["diff_ids"] == [image.layers[0].digest]  # uncompressed
    assert image.config["os"] == "linux"
    layer = engine.content.read(image.layers[0].digest)
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    names = list(members)
    assert names == sorted(names), "entries are sorted"
    regular = [m for m in members.values() if m.isfile() and m.name.startswith("bin/")]
    assert len(regular) == 1 and regular[0].size == os.path.getsize(BUSYBOX)
    assert members["bin/sh"].islnk() and members["bin/sh"].linkname == regular[0].name
    assert members["bin/busybox"].islnk() or members["bin/busybox"].isfile()
    assert members["tmp"].mode == 0o1777
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "" for m in members.values())
    # The root is an OCI image layout that peer tools can read.
    index = json.loads((tmp_path / "r" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == image.manifest_digest


def test_a_dynamic_binary_is_refused(tmp_path):
    engine = Engine(tmp_path / "r")
    with pytest.raises(EngineError, match="not a statically linked"):
        engine.images.build_busybox("/bin/ls")
    with pytest.raises(EngineError, match="apt-get install busybox-static"):
        engine.images.build_busybox(str(tmp_path / "missing"))
    assert not (tmp_path / "r" / "index.json").exists()


@pytest.mark.root
def test_pull_busybox_on_a_fresh_root(tmp_path):
    import subprocess

    from support import DOCKYARD, REPO
    env = dict(os.environ, DOCKYARD_ROOT=str(tmp_path / "fresh"))
    r = subprocess.run([*DOCKYARD, "pull", "busybox"], capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 0 and "Status: Downloaded newer image for busybox:latest" in r.stdout
    r = subprocess.run([*DOCKYARD, "pull", "busybox"], capture_output=True, text=True, env=env, cwd=REPO)
    assert "Status: Image is up to date for busybox:latest" in r.stdout
    r = subprocess.run([*DOCKYARD, "run", "--rm", "busybox", "echo", "ok"], capture_output=True,
                       text=True, env=dict(env, DOCKYARD_ROOT=str(tmp_path / "fresh2")), cwd=REPO)
    assert r.stdout == "ok\n"
    assert "Unable to find image 'busybox:latest' locally" in r.stderr
