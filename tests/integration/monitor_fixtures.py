"""Fixtures and helpers shared by the lifecycle tests (monitor, attach, logs).

Import the fixtures into a test module (``from monitor_fixtures import ...``).
``monitor`` runs a test once with the compiled monitor and once with its
Python twin; ``no_monitor_leftovers`` checks, after each test, that removing
its containers leaves no monitor (or ``_restart``/``_autoremove``) process
and no cgroup of them behind.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from support import created_containers


@pytest.fixture(params=["compiled", "twin"])
def monitor(request, monkeypatch):
    """The container monitor to use: the C program, or engine/runtime/monitor.py."""
    from engine.runtime import launcher

    if request.param == "compiled":
        if not os.access(launcher.MONITOR_BINARY, os.X_OK):
            pytest.fail(f"{launcher.MONITOR_BINARY} is not built (pip install -e .)")
        monkeypatch.delenv("DOCKYARD_MONITOR", raising=False)
    else:
        monkeypatch.setenv("DOCKYARD_MONITOR", "python")
    return request.param


def monitor_processes(root) -> list[tuple[int, str]]:
    """Live (not zombie) monitor or monitor-exec'd engine processes of ``root``."""
    found = []
    marker = str(root).encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b") ", 1)[1][:1]
        except OSError:
            continue
        if state == b"Z" or marker not in cmdline:
            continue
        words = cmdline.split(b"\0")
        if (any(w.endswith(b"dockyard-monitor") for w in words) or b"engine.runtime.monitor" in words
                or b"_restart" in words or b"_autoremove" in words):
            found.append((int(name), cmdline.replace(b"\0", b" ").decode(errors="replace")[:200]))
    return found


container_ids = created_containers  # every container this root ever created


@pytest.fixture
def no_monitor_leftovers(root):
    """After the test: remove its containers, then nothing of them may remain."""
    yield
    from engine import Engine
    from engine.runtime import cgroups

    engine = Engine(root)
    for c in engine.containers.list(all=True):
        try:
            c.remove(force=True)
        except Exception:
            pass
    deadline = time.time() + 10
    while monitor_processes(root) and time.time() < deadline:
        time.sleep(0.05)
    assert monitor_processes(root) == [], "monitor processes left behind"
    ids = container_ids(root)
    deadline = time.time() + 5
    while time.time() < deadline:
        left = sorted(ids & set(cgroups.leftovers()))
        if not left:
            break
        time.sleep(0.05)
    assert not left, f"cgroups left behind: {left}"
    sockets = [p for p in root.glob("containers/*/attach.sock")]
    assert sockets == [], "attach sockets left behind"


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def state(cli, name: str) -> dict:
    r = cli("inspect", "--type", "container", name)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]["State"]


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b") ", 1)[1][:1] == b"Z"
    except FileNotFoundError:
        return True
