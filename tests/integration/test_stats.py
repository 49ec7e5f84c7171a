"""``top``, ``stats``, ``update`` and the OOM killer, on real containers.

``top`` must show the container's processes and only them, with the host
``ps``'s columns; ``stats`` docker's columns with numbers the kernel agrees
with; ``update`` must change the live cgroup files and the record; a
container that outgrows ``--memory`` must be reported OOM-killed (exit 137,
``State.OOMKilled``, an ``oom`` event).
"""

import json
import os
import re
import time

import pytest

from engine.errors import Conflict, EngineError, UsageError
from engine.runtime import cgroups
from engine.runtime import stats as S
from engine.runtime.exec import exec_run, init_pid
from monitor_fixtures import no_monitor_leftovers, wait_until  # noqa: F401 -- fixtures

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("no_monitor_leftovers")]

MiB = 1024 * 1024
DOCKER_STATS_HEADER = ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O",
                       "BLOCK I/O", "PIDS"]
BUSY = "while true; do :; done"
# docker's NET I/O cell: received / sent, in decimal units (go-units HumanSize)
NET_IO = re.compile(r"\d+(\.\d+)?(B|kB|MB|GB) / \d+(\.\d+)?(B|kB|MB|GB)")


def cgroup_file(container_id: str, controller: str, name: str) -> str:
    from engine.runtime.cgroups import Cgroup

    with open(os.path.join(Cgroup(container_id).dir(controller), name)) as f:
        return f.read().strip()


def v1_only():
    from engine.runtime.cgroups import version

    if version() != "1":
        pytest.skip("reads cgroup v1 files (this host is v1 hybrid; v2 is covered by test_cgroups)")


def columns(line: str) -> list[str]:
    """Cells of a docker table line (separated by 3 or more spaces)."""
    return re.split(r"\s{3,}", line.strip())


# -- top ---------------------------------------------------------------------------------


def test_top_lists_the_containers_processes_with_the_host_ps(engine, spawner):
    c = engine.containers.run("busybox", ["sleep", "600"], detach=True, name="top1")
    exec_run(engine, c, ["sleep", "432"], detach=True)
    listing = wait_until(lambda: (lambda t: t if len(t["Processes"]) == 2 else None)(S.top(c)),
                         what="two processes")
    assert listing["Titles"] == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    commands = sorted(row[-1] for row in listing["Processes"])
    assert commands == ["sleep 432", "sleep 600"]
    pids = {int(row[1]) for row in listing["Processes"]}
    assert init_pid(c) in pids, "host PIDs, as the host's ps shows them"
    assert all(row[0] == "root" for row in listing["Processes"])
    # ps options are the host ps's; the PID column is found wherever it is.
    custom = S.top(c, "-o pid,comm,args")
    assert custom["Titles"] == ["PID", "COMMAND", "COMMAND"]
    assert sorted(row[1] for row in custom["Processes"]) == ["sleep", "sleep"]
    aux = S.top(c, ["aux"])
    assert aux["Titles"][:2] == ["USER", "PID"] and len(aux["Processes"]) == 2
    with pytest.raises(UsageError, match='specifying "ppid=PID" is not allowed'):
        S.top(c, "-o ppid=PID")
    with pytest.raises(EngineError, match="Couldn't find PID field in ps output"):
        S.top(c, "-o comm")
    c.pause()
    assert len(S.top(c)["Processes"]) == 2, "a paused container can be listed"
    assert S.stats(engine, c, stream=False, interval=0.1)["pids_stats"]["current"] >= 2
    c.unpause()


def test_cli_top_is_dockers_table(cli):
    assert cli("run", "-d", "--name", "top1", "busybox", "sh", "-c", "sleep 600").returncode == 0
    r = cli("top", "top1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert lines[0].startswith("UID" + " " * 17 + "PID"), "cells of at least 20 characters, as docker's"
    assert len(lines) == 2 and lines[1].endswith("sleep 600")   # (sh execs its last command)
    r = cli("top", "top1", "-o", "pid,args")
    assert r.stdout.splitlines()[1].endswith("sleep 600")
    cli("stop", "-t", "0", "top1")
    r = cli("top", "top1")
    assert r.returncode == 125 and "is not running" in r.stderr


# -- stats -------------------------------------------------------------------------------


def test_cli_stats_no_stream_columns_and_plausible_numbers(cli):
    assert cli("run", "-d", "--name", "busy", "-m", "64m", "busybox", "sh", "-c", BUSY).returncode == 0
    assert cli("run", "-d", "--name", "idle", "--network", "none", "busybox", "sleep", "600").returncode == 0
    assert cli("exec", "-d", "idle", "sleep", "601").returncode == 0
    r = cli("stats", "--no-stream")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert columns(lines[0]) == DOCKER_STATS_HEADER
    rows = {columns(line)[1]: columns(line) for line in lines[1:]}
    assert set(rows) == {"busy", "idle"}
    busy, idle = rows["busy"], rows["idle"]
    assert re.fullmatch(r"[0-9a-f]{12}", busy[0])
    assert float(busy[2].rstrip("%")) > 20, "a busy loop uses a good part of a CPU"
    assert float(idle[2].rstrip("%")) < 5
    assert re.fullmatch(r"\d+(\.\d+)?(B|KiB|MiB) / 64MiB", busy[3]), "the --memory limit"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3
    assert idle[3].endswith("GiB") and abs(float(idle[3].split(" / ")[1][:-3]) - total) < 0.5, \
        "no limit: the host's memory"
    assert NET_IO.fullmatch(busy[5]), "eth0 on the default bridge: counted"
    assert idle[5] == "0B / 0B", "--network none, only lo: nothing counted, as docker"
    assert (busy[7], idle[7]) == ("1", "2"), "PIDS: the exec'd sleep counts"
    r = cli("stats", "--no-stream", "--no-trunc", "idle")
    assert len(columns(r.stdout.splitlines()[1])[0]) == 64


def test_cli_stats_format(cli):
    cid = cli("run", "-d", "--name", "ff", "--network", "none", "busybox", "sleep", "600").stdout.strip()
    r = cli("stats", "--no-stream", "--format", "{{.Name}} {{.Container}} {{.ID}} {{.PIDs}} {{.NetIO}}", "ff")
    assert r.stdout == f"ff ff {cid[:12]} 1 0B / 0B\n", "--network none: only lo, nothing counted"
    r = cli("stats", "--no-stream", "--format", "table {{.Name}}\t{{.MemPerc}}")
    lines = r.stdout.splitlines()
    assert columns(lines[0]) == ["NAME", "MEM %"] and re.fullmatch(r"ff\s+\d+\.\d\d%", lines[1])
    r = cli("stats", "--no-stream", "--format", "json", "ff")
    row = json.loads(r.stdout)
    assert row["Name"] == "ff" and row["PIDs"] == "1" and row["CPUPerc"].endswith("%")
    assert cli("stats", "--no-stream", "nothere").returncode == 125


def test_api_stats_without_a_network_has_no_networks(engine):
    c = engine.containers.run("busybox", ["sleep", "600"], detach=True, network_mode="none")
    frame = S.stats(engine, c, stream=False, interval=0.1)
    assert S.network_io(frame) == (0, 0) and "networks" not in frame, "only lo: nothing counted"
    c.remove(force=True)


def test_cli_stats_all_shows_stopped_containers_with_zeros(cli):
    cli("create", "--name", "never", "busybox", "true")
    assert cli("stats", "--no-stream").stdout.splitlines()[1:] == []
    row = columns(cli("stats", "--no-stream", "-a").stdout.splitlines()[1])
    assert row[1:] == ["never", "0.00%", "0B / 0B", "0.00%", "0B / 0B", "0B / 0B", "0"]


def test_cli_stats_streams_until_interrupted(cli):
    import signal
    import subprocess

    cli("run", "-d", "--name", "st", "busybox", "sleep", "600")
    p = cli.popen("stats", "st", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(3.5)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=10)
    screens = out.decode().split("\033[2J\033[H")[1:]
    assert len(screens) >= 2, "redrawn every second"
    assert all(columns(s.splitlines()[0]) == DOCKER_STATS_HEADER for s in screens)


def test_api_stats_frames(engine, spawner):
    c = engine.containers.run("busybox", ["sh", "-c", BUSY], detach=True, name="api", mem_limit="32m",
                              pids_limit=50)
    frame = S.stats(engine, c, stream=False)
    assert frame["id"] == c.id and frame["name"] == "/api"
    assert frame["precpu_stats"]["cpu_usage"]["total_usage"] > 0, "two samples"
    assert S.cpu_percent(frame) > 20
    assert frame["memory_stats"]["limit"] == 32 * MiB
    assert 0 < S.memory_usage(frame) < 32 * MiB
    # pids.current: only the container's process -- the child joins its cgroup
    # itself, so the Python twin's middle process (outside) is not counted.
    assert frame["pids_stats"] == {"current": 1, "limit": 50}
    assert frame["pids_stats"]["current"] == len(cgroups.for_container(c).pids())
    # The default bridge: eth0's counters (never lo's, as docker), real traffic.
    assert set(frame["networks"]) == {"eth0"}
    gateway = c.attrs["NetworkSettings"]["Gateway"]
    sent = S.network_io(frame)[1]
    # (the requests are counted whether or not the replies come back)
    ping = exec_run(engine, c, ["ping", "-q", "-c", "3", "-i", "0.2", "-W", "1", "-s", "1000", gateway])
    sent_after = S.network_io(S.stats(engine, c, stream=False, interval=0.1))[1]
    assert sent_after - sent >= 3 * (14 + 20 + 8 + 1000), \
        f"3 echo requests: Ethernet + IP + ICMP + data; ping said: {ping.output!r}"
    stream = S.stats(engine, c, decode=True, interval=0.2)
    frames = [next(stream), next(stream)]
    assert frames[1]["precpu_stats"] == frames[0]["cpu_stats"]
    raw = S.stats(engine, c, decode=False, interval=0.2)
    assert json.loads(next(raw))["id"] == c.id
    c.kill()
    c.wait()
    last = list(stream)
    assert last == [] or last[-1]["read"] == "0001-01-01T00:00:00Z", "the stream ends with the container"


# -- update ------------------------------------------------------------------------------


def test_update_changes_the_live_cgroup_and_the_record(engine, cli, spawner):
    v1_only()
    c = engine.containers.run("busybox", ["sleep", "600"], detach=True, name="upd", mem_limit="64m")
    assert cgroup_file(c.id, "memory", "memory.limit_in_bytes") == str(64 * MiB)
    S.update(engine, c, mem_limit="128m", cpus=0.5, pids_limit=20)
    assert cgroup_file(c.id, "memory", "memory.limit_in_bytes") == str(128 * MiB)
    assert cgroup_file(c.id, "memory", "memory.memsw.limit_in_bytes") == str(256 * MiB), "2 x memory"
    assert cgroup_file(c.id, "cpu", "cpu.cfs_quota_us") == "50000"
    assert cgroup_file(c.id, "cpu", "cpu.cfs_period_us") == "100000"
    assert cgroup_file(c.id, "pids", "pids.max") == "20"
    c.reload()
    hc = c.attrs["HostConfig"]
    assert (hc["Memory"], hc["NanoCpus"], hc["PidsLimit"]) == (128 * MiB, 500_000_000, 20)
    # Lower, from the command line; the names are printed as docker does.
    r = cli("update", "-m", "32m", "--memory-swap", "48m", "--cpus", "1.5", "--restart", "on-failure:2", "upd")
    assert (r.returncode, r.stdout) == (0, "upd\n"), r.stderr
    assert cgroup_file(c.id, "memory", "memory.limit_in_bytes") == str(32 * MiB)
    assert cgroup_file(c.id, "memory", "memory.memsw.limit_in_bytes") == str(48 * MiB)
    assert cgroup_file(c.id, "cpu", "cpu.cfs_quota_us") == "150000"
    hc = json.loads(cli("inspect", "upd").stdout)[0]["HostConfig"]
    assert (hc["Memory"], hc["MemorySwap"], hc["NanoCpus"]) == (32 * MiB, 48 * MiB, 1_500_000_000)
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    with open(engine.root / "events.jsonl") as f:
        assert sum(json.loads(line)["Action"] == "update" for line in f) == 2


def test_update_is_checked_like_run(engine, cli):
    c = engine.containers.run("busybox", ["sleep", "600"], detach=True, name="val", mem_limit="64m",
                              cpu_period=100000, cpu_quota=50000)
    with pytest.raises(UsageError, match="Minimum memory limit allowed is 6MB"):
        S.update(engine, c, mem_limit="4m")
    with pytest.raises(UsageError, match="Minimum memoryswap limit should be larger than memory limit"):
        S.update(engine, c, mem_limit="64m", memswap_limit="32m")
    with pytest.raises(Conflict, match="CPU Period cannot be updated as NanoCPUs"):
        S.update(engine, c, cpus=1)
    with pytest.raises(UsageError, match="one or more flags"):
        S.update(engine, c)
    r = cli("update", "--cpus", "99", "val")
    assert r.returncode == 125 and "Range of CPUs is from 0.01" in r.stderr
    c.reload()
    assert c.attrs["HostConfig"]["Memory"] == 64 * MiB, "nothing recorded after a refusal"
    r = cli("update", "-m", "32m", "val", "nothere")
    assert r.returncode == 125 and r.stdout == "val\n" and "No such container: nothere" in r.stderr


def test_update_below_what_the_container_uses_is_refused_clearly(engine, spawner):
    v1_only()
    c = engine.containers.run("busybox", ["sh", "-c", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=40 && "
                                                      "touch /tmp/full && sleep 600"],
                              detach=True, name="full", mem_limit="64m")
    wait_until(lambda: exec_run(engine, c, ["test", "-e", "/tmp/full"]).exit_code == 0, what="the fill")
    # tmpfs pages cannot be reclaimed without swap: the kernel refuses with EBUSY.
    with pytest.raises(EngineError, match=r"cannot set the memory limit to 16MiB: it uses 4\d\.\d+MiB.*EBUSY"):
        S.update(engine, c, mem_limit="16m")
    c.reload()
    assert c.attrs["HostConfig"]["Memory"] == 64 * MiB
    assert cgroup_file(c.id, "memory", "memory.limit_in_bytes") == str(64 * MiB)


def test_update_a_stopped_container_records_for_the_next_start(engine):
    v1_only()
    c = engine.containers.create("busybox", ["sleep", "600"], name="later")
    S.update(engine, c, mem_limit="48m")
    c.start()
    assert cgroup_file(c.id, "memory", "memory.limit_in_bytes") == str(48 * MiB)


# -- OOM ---------------------------------------------------------------------------------


@pytest.mark.parametrize("script", [
    "x=a; while true; do x=$x$x; done",                        # the shell's own memory
    "dd if=/dev/zero of=/dev/shm/fill bs=1M count=64",         # tmpfs pages, charged to the cgroup
])
def test_an_oom_killed_container_is_reported(cli, root, script):
    r = cli("run", "--name", "oom", "-m", "16m", "busybox", "sh", "-c", script)
    assert r.returncode == 137, r.stderr
    state = json.loads(cli("inspect", "oom").stdout)[0]["State"]
    assert (state["Status"], state["ExitCode"], state["OOMKilled"]) == ("exited", 137, True)
    assert cli("inspect", "-f", "{{.State.OOMKilled}}", "oom").stdout == "true\n"
    with open(root / "events.jsonl") as f:
        actions = [json.loads(line)["Action"] for line in f]
    assert actions[-2:] == ["oom", "die"]
    # A container that was not OOM-killed says so.
    cli("run", "--name", "fine", "-m", "16m", "busybox", "true")
    assert cli("inspect", "-f", "{{.State.OOMKilled}}", "fine").stdout == "false\n"
