"""Dockyard's archives and root against the real peer tools: skopeo and umoci.

- what ``dockyard save`` writes is read by ``skopeo`` as a docker-archive
  *and* as an oci-archive;
- what ``skopeo copy`` writes (docker-archive:, oci-archive:) loads into
  Dockyard and runs, with the same files;
- Dockyard's root is itself an OCI image layout: ``skopeo inspect
  oci:<root>:busybox:latest`` and ``umoci unpack --image <root>:busybox:latest``
  read it (without changing it), and umoci's tree equals Dockyard's snapshot;
- ``umoci repack`` of a modified bundle, shipped as an oci-archive by
  skopeo, loads and runs with the modification visible.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from support import CLI, tree_digest

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo (apt-get install skopeo)"),
    pytest.mark.skipif(shutil.which("umoci") is None, reason="needs umoci (apt-get install umoci)"),
]


def tool(*args: str) -> str:
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{' '.join(args)}: {r.stderr}"
    return r.stdout


def snapshot_tree(engine, image) -> dict:
    """The extracted filesystem of a one-layer image, file by file."""
    engine.snapshots.ensure(image)
    return tree_digest(engine.layout.snapshot(image.chain_ids()[-1]))


def test_skopeo_inspects_the_dockyard_root(engine):
    image = engine.images.get("busybox")
    info = json.loads(tool("skopeo", "inspect", f"oci:{engine.root}:busybox:latest"))
    assert info["Digest"] == image.manifest_digest
    assert info["Layers"] == [layer.digest for layer in image.layers]
    assert (info["Os"], info["Architecture"]) == ("linux", image.config["architecture"])


def test_skopeo_reads_what_dockyard_saves(cli, engine, tmp_path):
    image = engine.images.get("busybox")
    archive = tmp_path / "busybox.tar"
    assert cli("save", "-o", str(archive), "busybox").returncode == 0

    info = json.loads(tool("skopeo", "inspect", f"docker-archive:{archive}"))
    assert info["Layers"] == [layer.digest for layer in image.layers]
    tool("skopeo", "copy", f"docker-archive:{archive}", f"oci:{tmp_path}/from-docker:busybox")
    # skopeo gzips the layer for the oci: directory; the content (diff_ids) stays.
    config = json.loads(tool("skopeo", "inspect", "--config", f"oci:{tmp_path}/from-docker:busybox"))
    assert config["rootfs"]["diff_ids"] == image.diff_ids

    # The same file is an OCI layout too, holding our manifest as it is.
    info = json.loads(tool("skopeo", "inspect", f"oci-archive:{archive}"))
    assert info["Digest"] == image.manifest_digest
    tool("skopeo", "copy", f"oci-archive:{archive}", f"oci:{tmp_path}/from-oci:busybox")
    config = json.loads(tool("skopeo", "inspect", "--config", f"oci:{tmp_path}/from-oci:busybox"))
    assert config["rootfs"]["diff_ids"] == image.diff_ids


@pytest.mark.parametrize("transport", ["docker-archive", "oci-archive"])
def test_skopeo_archives_load_and_run_in_dockyard(engine, empty_root, tmp_path, transport):
    from engine import Engine

    archive = tmp_path / f"{transport}.tar"
    tool("skopeo", "copy", f"oci:{engine.root}:busybox:latest", f"{transport}:{archive}:busybox:latest")
    cli = CLI(empty_root)
    r = cli("load", "-i", str(archive))
    assert (r.returncode, r.stdout) == (0, "Loaded image: busybox:latest\n"), r.stderr
    r = cli("run", "--rm", "busybox", "sh", "-c", "echo ran from $0")
    assert (r.returncode, r.stdout) == (0, "ran from sh\n"), r.stderr

    ours, theirs = engine.images.get("busybox"), Engine(empty_root).images.get("busybox")
    assert theirs.diff_ids == ours.diff_ids  # skopeo's oci-archive gzips the layer; the content is the same
    assert snapshot_tree(Engine(empty_root), theirs) == snapshot_tree(engine, ours)


def test_umoci_unpacks_dockyard_images_to_the_same_tree(cli, engine, tmp_path):
    image = engine.images.get("busybox")
    expected = snapshot_tree(engine, image)

    # Straight from the Dockyard root (an OCI layout), which umoci must not change.
    before = tree_digest(engine.root)
    tool("umoci", "unpack", "--image", f"{engine.root}:busybox:latest", str(tmp_path / "bundle1"))
    assert tree_digest(engine.root) == before
    assert tree_digest(tmp_path / "bundle1" / "rootfs") == expected

    # From a saved archive, made an OCI directory by skopeo.
    archive = tmp_path / "busybox.tar"
    assert cli("save", "-o", str(archive), "busybox").returncode == 0
    tool("skopeo", "copy", f"oci-archive:{archive}", f"oci:{tmp_path}/layout:busybox")
    tool("umoci", "unpack", "--image", f"{tmp_path}/layout:busybox", str(tmp_path / "bundle2"))
    assert tree_digest(tmp_path / "bundle2" / "rootfs") == expected


def test_umoci_repack_loads_and_runs_with_the_change(engine, empty_root, tmp_path):
    layout, bundle = tmp_path / "layout", tmp_path / "bundle"
    tool("skopeo", "copy", f"oci:{engine.root}:busybox:latest", f"oci:{layout}:busybox")
    tool("umoci", "unpack", "--image", f"{layout}:busybox", str(bundle))
    (bundle / "rootfs" / "hello.txt").write_text("repacked by umoci\n")
    os.unlink(bundle / "rootfs" / "etc" / "group")  # becomes a whiteout in the new layer
    tool("umoci", "repack", "--image", f"{layout}:busybox-mod", str(bundle))
    archive = tmp_path / "mod.tar"
    tool("skopeo", "copy", f"oci:{layout}:busybox-mod", f"oci-archive:{archive}:mod:1")

    cli = CLI(empty_root)
    r = cli("load", "-i", str(archive))
    assert (r.returncode, r.stdout) == (0, "Loaded image: mod:1\n"), r.stderr
    r = cli("run", "--rm", "mod:1", "sh", "-c", "cat /hello.txt; test -e /etc/group || echo group gone")
    assert (r.returncode, r.stdout) == (0, "repacked by umoci\ngroup gone\n"), r.stderr
