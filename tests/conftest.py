"""Shared fixtures: temporary Dockyard roots, the CLI, and leak checks.

Every test gets its own ``DOCKYARD_ROOT`` under pytest's tmp_path. Building
busybox takes a fraction of a second, so it is built once per session in a
template root and its blobs are copied into each test's root. Tests under
``tests/integration`` must leave no process (container, monitor) and no
cgroup behind, and no test may leave a mount under its root.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from support import (BUSYBOX, CLI, assert_no_mounts_under, cgroup_leftovers, created_containers,
                     descendants,
                     processes_mentioning, seed_root)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and mounts")


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


@pytest.fixture
def cli(root) -> CLI:
    return CLI(root)


def _dockyard_bridges() -> set[str]:
    """Bridge devices named as Dockyard names them (dockyard0, dyb<hash>, dy-<id>)."""
    try:
        names = os.listdir("/sys/class/net")
    except OSError:
        return set()
    return {n for n in names if (n == "dockyard0" or n.startswith(("dyb", "dy-")))
            and os.path.isdir(f"/sys/class/net/{n}/bridge")}


@pytest.fixture(scope="session", autouse=True)
def no_bridges_left():
    """A net under the per-test checks: bridges made during the session and
    idle at its end (a scratch root whose test did not prune) are deleted,
    so that the host is as it was; each is reported."""
    before = _dockyard_bridges()
    yield
    new = sorted(_dockyard_bridges() - before)
    idle = [b for b in new if not os.listdir(f"/sys/class/net/{b}/brif")]
    if idle:
        from engine.network import link
        for name in idle:
            link.delete_bridge(name)
        import warnings
        warnings.warn(f"bridges left by the session, deleted at its end: {idle}")


@pytest.fixture(scope="session", autouse=True)
def no_cgroup_parents_left():
    """The ``dockyard`` cgroup directories go with the last container: if
    there were none before the tests, there are none after them."""
    from engine.runtime import cgroups

    def parents() -> list[str]:
        try:
            return [p for p in cgroups.Cgroup("x").parent_dirs() if os.path.exists(p)]
        except Exception:  # no cgroups here
            return []

    before = parents()
    yield
    if not before:
        assert not parents(), f"cgroup parent directories left behind: {parents()}"


@pytest.fixture(autouse=True)
def no_leaked_processes(request):
    if "integration" not in str(request.node.path):
        yield
        return
    before = descendants(os.getpid())
    yield
    # A container's monitor is no child of ours (it is double-forked so that
    # it outlives the CLI), so look for it by its root; and for the cgroups
    # of the containers this test created (their ids are in the root's event
    # log; other roots may be in use on this machine at the same time).
    root = request.node.funcargs.get("root")
    ours = created_containers(root) if root else set()
    deadline = time.time() + 5
    while True:
        monitors = processes_mentioning(str(root)) if root else []
        cgroups = set(cgroup_leftovers()) & ours
        if not (monitors or cgroups) or time.time() > deadline:
            break
        time.sleep(0.05)
    for pid in monitors:
        os.kill(pid, 9)
    assert not monitors, f"monitors left behind: {monitors}"
    assert not cgroups, f"cgroups left behind: {sorted(cgroups)}"
    deadline = time.time() + 5
    while True:
        leaked = descendants(os.getpid()) - before
        # reap zombies we may own
        for pid in list(leaked):
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    leaked.discard(pid)
            except ChildProcessError:
                pass
        if not leaked or time.time() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"processes left behind: {sorted(leaked)}"


@pytest.fixture(autouse=True)
def no_network_leftovers(request):
    """After an integration test, nothing of its root's networking is left on the host:
    no pinned namespace under ``<root>/netns``, no endpoint in a network record (an IPAM
    allocation), no veth on one of the root's bridges, no port proxy naming one of the
    root's containers. The root's bridges, idle now, are then deleted as ``network
    prune`` deletes them (a scratch root keeps them until then), so that none stays on
    the host. What is found is removed too, so one failure does not spill into the next
    tests."""
    yield
    if "integration" not in str(request.node.path):
        return
    root = request.node.funcargs.get("root")
    if root is None:
        return
    root = Path(root)
    networks, pins = root / "networks", root / "netns"
    if not (networks.exists() or pins.exists()):
        return  # the test never touched networking

    import json

    def records() -> list[dict]:
        out = []
        for entry in (os.listdir(networks) if networks.exists() else []):
            if entry.endswith(".json") and not entry.startswith("."):
                try:
                    out.append(json.loads((networks / entry).read_text()))
                except (OSError, ValueError):
                    continue
        return out

    def bridges() -> list[str]:
        return [name for r in records()
                if (name := (r.get("Options") or {}).get("com.docker.network.bridge.name"))]

    ids = created_containers(root)

    def found() -> dict[str, list]:
        ports = {br: sorted(os.listdir(f"/sys/class/net/{br}/brif")) for br in bridges()
                 if os.path.isdir(f"/sys/class/net/{br}/brif")}
        return {
            "pinned namespaces": sorted(os.listdir(pins)) if pins.exists() else [],
            "endpoints in network records": [(r["Name"], cid[:12]) for r in records()
                                             for cid in r.get("Containers") or {}],
            "veths on the root's bridges": [(br, p) for br, names in ports.items() for p in names],
            "port proxies": [pid for pid in processes_mentioning("engine/network/proxy.py")
                             if any(cid in _cmdline(pid) for cid in ids)],
        }

    deadline = time.time() + 5  # a --rm container's removal and a namespace's teardown are async
    while any(found().values()) and time.time() < deadline:
        time.sleep(0.05)
    left = {k: v for k, v in found().items() if v}

    from engine.network import link, netns
    for name in left.get("pinned namespaces", []):
        netns.remove(pins / name)
    for pid in left.get("port proxies", []):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    for name in bridges():
        if os.path.exists(f"/sys/class/net/{name}"):
            link.delete_bridge(name)  # its ports are set free; their namespaces are gone
    assert not left, f"networking left behind: {left}"


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
