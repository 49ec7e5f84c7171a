"""The Python API's reach on a running container (docker-py's shape), and the
seeds' way into a container: nsenter with the PID from ``inspect -f``."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from engine.errors import Conflict


@pytest.fixture
def web(engine):
    c = engine.containers.run("busybox", ["sleep", "600"], detach=True, name="web")
    yield c
    c.remove(force=True)


def test_exec_run_top_stats_update_are_container_methods(web):
    result = web.exec_run(["sh", "-c", "echo $0 in $(hostname); exit 3"])
    assert result.exit_code == 3
    assert result.output == f"sh in {web.short_id}\n".encode()

    top = web.top()
    assert top["Titles"][:2] == ["UID", "PID"]
    assert [p[-1] for p in top["Processes"]] == ["sleep 600"]
    assert int(top["Processes"][0][1]) == web.attrs["State"]["Pid"]

    frame = web.stats(stream=False)
    assert frame["pids_stats"]["current"] == 1
    assert frame["memory_stats"]["usage"] > 0

    web.update(mem_limit="64m", pids_limit=50)
    web.reload()
    assert web.attrs["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert web.attrs["HostConfig"]["PidsLimit"] == 50
    # ... and the live cgroup enforces it: the 51st process cannot start.
    crowd = web.exec_run(["sh", "-c", "for i in $(seq 60); do sleep 5 & done 2>&1; wait"])
    assert b"fork" in crowd.output or b"Resource temporarily unavailable" in crowd.output


def test_stream_of_stats_frames_is_json_bytes_by_default(web):
    frames = web.stats()
    first = next(frames)
    assert isinstance(first, bytes) and first.startswith(b"{")
    frames.close()


def test_methods_need_a_running_container(engine):
    c = engine.containers.create("busybox", ["true"], name="idle")
    try:
        with pytest.raises(Conflict, match="is not running"):
            c.exec_run(["true"])
        with pytest.raises(Conflict, match="is not running"):
            c.top()
    finally:
        c.remove()


@pytest.mark.skipif(not shutil.which("nsenter"), reason="needs util-linux nsenter")
def test_nsenter_with_the_pid_from_inspect_format(cli, web):
    """The seeds' 进入容器 with nsenter:
    nsenter --target $(dockyard inspect -f '{{.State.Pid}}' web) --mount --uts --ipc --net --pid"""
    pid = cli("inspect", "-f", "{{.State.Pid}}", "web").stdout.strip()
    assert pid == str(web.attrs["State"]["Pid"])
    r = subprocess.run(["nsenter", "--target", pid, "--mount", "--uts", "--ipc", "--net", "--pid",
                        "sh", "-c", "hostname; ls /proc | grep -c '^[0-9]'; ls /"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    hostname, nprocs, *listing = r.stdout.split()
    assert hostname == web.short_id != os.uname().nodename
    # Inside its PID namespace: sleep (PID 1), sh and ls; not the host's hundreds.
    assert int(nprocs) <= 4
    assert "work" not in listing and "bin" in listing


@pytest.mark.parametrize("monitor_kind", ["compiled", "python"])
def test_an_exited_container_keeps_no_cgroup(cli, monitor_kind):
    """As runc delete does for docker, the monitor removes the cgroup when the
    container exits, even if nobody asks about the container afterwards."""
    from engine.runtime import cgroups

    env = cli.env(**({"DOCKYARD_MONITOR": "python"} if monitor_kind == "python" else {}))
    cid = cli("run", "-d", "-m", "32m", "busybox", "sleep", "0.3", env=env).stdout.strip()
    group = cgroups.Cgroup(cid)
    assert group.exists()
    deadline = time.monotonic() + 10
    while group.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not group.exists()
    if not cgroups.leftovers():  # it was the only container: the dockyard parents went too
        assert not any(os.path.exists(p) for p in group.parent_dirs())
    cli("rm", cid)
