"""Hosts that cannot run containers get one clear line, and the store is untouched."""

import os
import subprocess

import pytest

from support import DOCKYARD, REPO, seed_root, tree_digest

pytestmark = pytest.mark.root


def test_not_root(cli, root):
    before = tree_digest(root)
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        *DOCKYARD, "run", "--rm", "busybox", "true"],
                       capture_output=True, text=True, env=cli.env(), cwd=REPO)
    assert r.returncode == 125
    assert r.stderr == ("dockyard: running containers needs root: namespaces, mounts and "
                        "pivot_root require CAP_SYS_ADMIN (try sudo)\n")
    assert tree_digest(root) == before


def test_no_overlayfs(cli, root, tmp_path):
    """Hide overlay from /proc/filesystems in a private mount namespace."""
    fake = tmp_path / "filesystems"
    with open("/proc/filesystems") as f:
        fake.write_text("".join(line for line in f if "overlay" not in line))
    before = tree_digest(root)
    script = f"mount --bind {fake} /proc/filesystems && exec {' '.join(DOCKYARD)} run --rm busybox true"
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                       capture_output=True, text=True, env=cli.env(), cwd=REPO)
    assert r.returncode == 125
    assert r.stderr.startswith("dockyard: overlayfs is not available in this kernel")
    assert len(r.stderr.splitlines()) == 1
    assert tree_digest(root) == before


def test_root_on_a_filesystem_that_cannot_hold_upper_dirs(tmp_path, template_root):
    """overlayfs cannot be the upper dir of another overlay: a root on one is refused."""
    base = tmp_path / "ovl"
    for d in ("lower", "upper", "work", "merged"):
        (base / d).mkdir(parents=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={base}/lower,upperdir={base}/upper,workdir={base}/work",
                    str(base / "merged")], check=True)
    try:
        root = seed_root(template_root, base / "merged" / "root")
        before = tree_digest(root)
        env = dict(os.environ, DOCKYARD_ROOT=str(root))
        r = subprocess.run([*DOCKYARD, "run", "--rm", "busybox", "true"], capture_output=True,
                           text=True, env=env, cwd=REPO)
        assert r.returncode == 125
        assert "is on overlayfs, which cannot hold overlay upper directories" in r.stderr
        assert len(r.stderr.splitlines()) == 1
        assert tree_digest(root) == before
    finally:
        subprocess.run(["umount", str(base / "merged")], check=True)


def test_native_spawn_is_built():
    """Guard: the compiled spawner must exist; a silent fall back to the twin is a build bug."""
    import importlib
    module = importlib.import_module("engine._native.spawn")
    assert callable(module.spawn)
    from engine.runtime import process
    if not os.environ.get("DOCKYARD_PURE"):
        assert process.implementation() == "compiled"
