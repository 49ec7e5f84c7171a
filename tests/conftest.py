"""Shared fixtures: temporary Dockyard roots, the CLI, and leak checks.

Every test gets its own ``DOCKYARD_ROOT`` under pytest's tmp_path. Building
busybox takes a fraction of a second, so it is built once per session in a
template root and its blobs are copied into each test's root.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUSYBOX = "/bin/busybox"
DOCKYARD = [sys.executable, "-m", "engine"]

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and mounts")
needs_busybox = pytest.mark.skipif(not os.path.exists(BUSYBOX),
                                   reason="needs Debian's busybox-static (/bin/busybox)")


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("root"):
            item.add_marker(needs_root)


@pytest.fixture(scope="session")
def template_root(tmp_path_factory) -> Path:
    """A root holding busybox:latest, built once; tests copy it, never use it."""
    if not os.path.exists(BUSYBOX):
        pytest.skip("needs Debian's busybox-static (/bin/busybox)")
    from engine import Engine

    root = tmp_path_factory.mktemp("template") / "root"
    Engine(root).images.build_busybox()
    return root


def seed_root(template: Path, root: Path) -> Path:
    """Copy the template's images (blobs and tag index) into ``root``; layers are
    extracted again on first use, which also exercises the layer code."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("oci-layout", "index.json"):
        shutil.copy2(template / name, root / name)
    shutil.copytree(template / "blobs", root / "blobs", symlinks=True)
    return root


@pytest.fixture
def root(tmp_path, template_root) -> Path:
    """A fresh Dockyard root with busybox:latest, cleaned up after the test."""
    path = seed_root(template_root, tmp_path / "root")
    yield path
    assert_no_mounts_under(path)


@pytest.fixture
def empty_root(tmp_path) -> Path:
    path = tmp_path / "empty-root"
    yield path
    assert_no_mounts_under(path)


@pytest.fixture
def engine(root):
    from engine import Engine

    return Engine(root)


@pytest.fixture(params=["compiled", "twin"])
def spawner(request, monkeypatch):
    """Run the test once with the compiled spawner and once with its Python twin."""
    from engine.runtime import process, spawn as twin

    if request.param == "compiled":
        native = pytest.importorskip("engine._native.spawn")
        monkeypatch.setattr(process, "spawn", native.spawn)
    else:
        monkeypatch.setattr(process, "spawn", twin.spawn)
    return request.param


class CLI:
    """Run ``dockyard`` (as ``python -m engine``) against one root."""

    def __init__(self, root: Path):
        self.root = root

    def env(self, **extra) -> dict:
        env = dict(os.environ)
        env["DOCKYARD_ROOT"] = str(self.root)
        env.update(extra)
        return env

    def __call__(self, *args, input=None, timeout=60, env=None, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([*DOCKYARD, *args], capture_output=True, text=True, input=input,
                              timeout=timeout, env=env or self.env(), cwd=REPO, **kw)

    def popen(self, *args, **kw) -> subprocess.Popen:
        """Start ``dockyard`` in the background (for containers a test must kill)."""
        return subprocess.Popen([*DOCKYARD, *args], env=self.env(), cwd=REPO, **kw)

    def wait_for(self, name: str, status: str = "running", timeout: float = 10.0) -> dict:
        """Poll ``inspect`` until the container has ``status``; return its record."""
        import json
        import time
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self("inspect", "--type", "container", name)
            if r.returncode == 0:
                record = json.loads(r.stdout)[0]
                if record["State"]["Status"] == status:
                    return record
            time.sleep(0.05)
        raise AssertionError(f"container {name} never became {status}")


@pytest.fixture
def cli(root) -> CLI:
    return CLI(root)


def host_mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f]


def assert_no_mounts_under(path: Path) -> None:
    leaked = [m for m in host_mounts() if m.startswith(str(path))]
    assert not leaked, f"mounts left behind: {leaked}"


def tree_digest(path: Path) -> dict[str, str]:
    """Every file under ``path`` with its type, mode and content hash: to prove nothing changed."""
    out = {}
    if not path.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(path):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(path))
            if p.is_symlink():
                out[rel] = f"link:{os.readlink(p)}"
            elif p.is_file():
                out[rel] = f"{st.st_mode:o}:{hashlib.sha256(p.read_bytes()).hexdigest()}"
            else:
                out[rel] = f"{st.st_mode:o}"
    return out
