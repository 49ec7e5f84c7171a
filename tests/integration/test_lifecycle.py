"""Detached containers and their monitors: start, stop, kill, wait, restart, rename,
pause, restart policies, --rm, events -- and the faults (killed monitors, CLIs,
launchers) after which the state must still tell the truth.

Tests that take the ``monitor`` fixture run twice: with the compiled monitor
(_native/monitor.c) and with its Python twin (engine/runtime/monitor.py).
After every test, removing its containers must leave no monitor process and
no cgroup behind (``no_monitor_leftovers``).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from monitor_fixtures import (  # noqa: F401 -- fixtures
    container_ids, monitor, monitor_processes, no_monitor_leftovers, process_gone, state, wait_until,
)
from support import DOCKYARD, REPO

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("no_monitor_leftovers")]


def test_the_compiled_monitor_is_built():
    """A broken build must not silently fall back to the Python twin."""
    from engine.runtime import launcher

    assert os.access(launcher.MONITOR_BINARY, os.X_OK), "dockyard-monitor was not built"
    if not os.environ.get("DOCKYARD_PURE"):
        assert launcher.implementation() == "compiled"


# -- detached containers -----------------------------------------------------------


def test_run_d_prints_the_id_and_the_container_outlives_the_cli(cli, root, monitor):
    r = cli("run", "-d", "--name", "bg", "busybox", "sh", "-c", "echo started; sleep 30")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"[0-9a-f]{64}\n", r.stdout)
    cid = r.stdout.strip()
    st = state(cli, "bg")
    assert st["Status"] == "running" and st["Running"] and st["Pid"] > 0
    # The CLI has exited; the container is no child of anything of ours.
    assert os.path.exists(f"/proc/{st['Pid']}")
    record = json.loads(cli("inspect", "bg").stdout)[0]
    monitor_pid = record["Dockyard"]["MonitorPid"]
    with open(f"/proc/{st['Pid']}/stat") as f:
        assert int(f.read().rsplit(") ", 1)[1].split()[1]) == monitor_pid, "the monitor is the parent"
    ps = cli("ps").stdout.splitlines()
    assert len(ps) == 2 and ps[1].startswith(cid[:12]) and re.search(r"Up (Less than a second|\d+ seconds?)", ps[1])
    wait_until(lambda: cli("logs", "bg").stdout == "started\n", what="the log")
    assert record["LogPath"] == str(root / "containers" / cid / f"{cid}-json.log")
    r = cli("rm", "bg")
    assert r.returncode == 125 and "container is running" in r.stderr
    assert cli("rm", "-f", "bg").returncode == 0
    assert process_gone(st["Pid"]) and process_gone(monitor_pid)


def test_the_monitor_is_small(cli, root):
    """An idle container costs the host well under 2 MB (the C monitor's RSS)."""
    from engine.runtime import launcher

    if launcher.implementation() != "compiled":
        pytest.skip("measures the compiled monitor")
    cli("run", "-d", "--name", "idle", "busybox", "sleep", "30")
    pid = json.loads(cli("inspect", "idle").stdout)[0]["Dockyard"]["MonitorPid"]
    with open(f"/proc/{pid}/status") as f:
        rss_kb = int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))
    assert rss_kb < 2048, f"monitor RSS {rss_kb} kB"


def test_foreground_run_streams_in_order_and_exits_with_the_code(cli, monitor):
    r = cli("run", "--name", "fg", "busybox", "sh", "-c",
            "for i in 1 2 3; do echo out$i; sleep 0.05; echo err$i >&2; sleep 0.05; done; exit 7")
    assert r.returncode == 7
    assert r.stdout == "out1\nout2\nout3\n" and r.stderr == "err1\nerr2\nerr3\n"
    # ... and the same output is in its log, each stream apart.
    logs = cli("logs", "fg")
    assert (logs.stdout, logs.stderr) == (r.stdout, r.stderr)
    st = state(cli, "fg")
    assert (st["Status"], st["ExitCode"], st["Running"]) == ("exited", 7, False)


def test_run_i_passes_piped_stdin_and_closes_it(cli, monitor):
    r = cli("run", "--rm", "-i", "busybox", "sh", "-c", "wc -l; echo read all", input="a\nb\nc\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["3", "read", "all"]
    # Without -i the container's stdin is /dev/null, as docker's.
    r = cli("run", "--rm", "busybox", "cat", input="not read\n")
    assert r.returncode == 0 and r.stdout == ""


def test_run_a_picks_the_streams(cli):
    r = cli("run", "--rm", "-a", "stderr", "busybox", "sh", "-c", "echo out; echo err >&2")
    assert (r.stdout, r.stderr) == ("", "err\n")
    r = cli("run", "-d", "-a", "stdout", "busybox", "true")
    assert r.returncode == 125 and "Conflicting options: -a and -d" in r.stderr


def test_create_then_start_attach(cli, monitor):
    cid = cli("create", "--name", "later", "busybox", "sh", "-c", "echo hi; exit 2").stdout.strip()
    assert state(cli, "later")["Status"] == "created"
    r = cli("start", "-a", "later")
    assert (r.returncode, r.stdout) == (2, "hi\n")
    # A second start runs it again in the same writable layer; its log grows.
    r = cli("start", "later")
    assert (r.returncode, r.stdout) == (0, "later\n")
    assert cli("wait", "later").stdout == "2\n"
    assert cli("logs", "later").stdout == "hi\nhi\n"
    assert cli("inspect", "-f", "{{.Id}}", "later").stdout.strip() == cid


def test_stop_uses_sigkill_after_the_timeout(cli, monitor):
    # PID 1 ignores SIGTERM when it has no handler (pid_namespaces(7)).
    cli("run", "-d", "--name", "stubborn", "busybox", "sleep", "30")
    t = time.monotonic()
    r = cli("stop", "-t", "1", "stubborn")
    took = time.monotonic() - t
    assert (r.returncode, r.stdout) == (0, "stubborn\n")
    assert 1.0 <= took < 6, took
    st = state(cli, "stubborn")
    assert (st["Status"], st["ExitCode"], st["Pid"]) == ("exited", 137, 0)
    assert st["FinishedAt"] > st["StartedAt"]
    # A shell that handles SIGTERM stops at once, with its own status.
    cli("run", "-d", "--name", "polite", "busybox", "sh", "-c",
        "trap 'exit 0' TERM; while true; do sleep 0.05; done")
    t = time.monotonic()
    assert cli("stop", "polite").returncode == 0
    assert time.monotonic() - t < 3
    assert state(cli, "polite")["ExitCode"] == 0
    # Stopping a stopped container is fine (docker says nothing either).
    assert cli("stop", "polite").returncode == 0


def test_stop_with_a_negative_timeout_never_kills(cli):
    """docker stop -t -1 waits for the container however long it takes."""
    cli("run", "-d", "--name", "slow", "busybox", "sh", "-c",
        "trap 'sleep 1.5; exit 3' TERM; while true; do sleep 0.05; done")
    t = time.monotonic()
    assert cli("stop", "-t", "-1", "slow").returncode == 0
    assert time.monotonic() - t >= 1.4
    assert state(cli, "slow")["ExitCode"] == 3, "it finished its trap: no SIGKILL"


def test_stop_signal_and_timeout_from_the_record(cli):
    cli("run", "-d", "--name", "usr1", "--stop-signal", "USR1", "--stop-timeout", "1", "busybox",
        "sh", "-c", "trap 'exit 42' USR1; while true; do sleep 0.05; done")
    assert cli("stop", "usr1").returncode == 0
    assert state(cli, "usr1")["ExitCode"] == 42


def test_kill_wait_and_restart(cli, monitor):
    cli("run", "-d", "--name", "kk", "busybox", "sh", "-c",
        "trap 'echo got-hup' HUP; while true; do sleep 0.05; done")
    assert cli("kill", "-s", "HUP", "kk").stdout == "kk\n"
    wait_until(lambda: "got-hup" in cli("logs", "kk").stdout, what="the trap")
    assert state(cli, "kk")["Running"]
    waiter = subprocess.Popen([*DOCKYARD, "wait", "kk"], env=cli.env(), cwd=REPO, stdout=subprocess.PIPE, text=True)
    time.sleep(0.2)
    assert waiter.poll() is None, "wait returned while the container runs"
    assert cli("kill", "kk").returncode == 0  # SIGKILL by default
    assert waiter.communicate(timeout=10)[0] == "137\n"
    r = cli("kill", "kk")
    assert r.returncode == 125 and "is not running" in r.stderr
    assert cli("kill", "-s", "NOSUCH", "kk").returncode == 125
    first = state(cli, "kk")
    assert cli("restart", "-t", "1", "kk").returncode == 0
    again = state(cli, "kk")
    assert again["Running"] and again["Pid"] != first["Pid"] and again["StartedAt"] > first["StartedAt"]


def test_rename(cli):
    cli("create", "--name", "old", "busybox", "true")
    cli("create", "--name", "taken", "busybox", "true")
    r = cli("rename", "old", "taken")
    assert r.returncode == 125
    owner = cli("inspect", "-f", "{{.Id}}", "taken").stdout.strip()
    assert r.stderr == (f'dockyard: Error when allocating new name: Conflict. The container name "/taken" '
                        f'is already in use by container "{owner}". You have to remove (or rename) that '
                        "container to be able to reuse that name.\n")
    r = cli("rename", "old", "old")
    assert r.returncode == 125 and "with the same name as its current name" in r.stderr
    assert cli("rename", "old", "new").returncode == 0
    assert cli("inspect", "-f", "{{.Name}}", "new").stdout == "/new\n"
    assert cli("inspect", "old").returncode == 125
    # The old name is free again, the new one is taken.
    assert cli("create", "--name", "old", "busybox", "true").returncode == 0
    assert cli("create", "--name", "new", "busybox", "true").returncode == 125


def test_rename_a_running_container_reaches_its_die_event(cli):
    cli("run", "-d", "--name", "before", "busybox", "sleep", "30")
    assert cli("rename", "before", "after").returncode == 0
    cli("kill", "after")
    wait_until(lambda: not state(cli, "after")["Running"], what="the exit")
    r = cli("events", "--since", "1m", "--until", "0s", "-f", "event=die")
    assert "name=after" in r.stdout and "name=before" not in r.stdout


def test_pause_freezes_and_unpause_thaws(cli, root, monitor):
    cli("run", "-d", "--name", "counter", "busybox", "sh", "-c",
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.02; done")
    read = lambda: _counter(root, "counter", cli)  # noqa: E731
    wait_until(lambda: read() > 2, what="the counter")
    assert cli("pause", "counter").stdout == "counter\n"
    st = state(cli, "counter")
    assert (st["Status"], st["Paused"], st["Running"]) == ("paused", True, True)
    assert "(Paused)" in cli("ps").stdout
    frozen_at = read()
    time.sleep(0.3)
    assert read() == frozen_at, "the counter moved while paused"
    r = cli("pause", "counter")
    assert r.returncode == 125 and "is already paused" in r.stderr
    assert cli("unpause", "counter").returncode == 0
    wait_until(lambda: read() > frozen_at + 2, what="the counter to move again")
    assert state(cli, "counter")["Status"] == "running"
    r = cli("unpause", "counter")
    assert r.returncode == 125 and "is not paused" in r.stderr
    # A paused container can be stopped: SIGKILL reaches it once thawed.
    cli("pause", "counter")
    assert cli("stop", "-t", "0", "counter").returncode == 0
    assert state(cli, "counter")["ExitCode"] == 137


def _counter(root, name, cli) -> int:
    """The number the container last wrote to /tmp/n (read from its writable layer)."""
    cid = cli("inspect", "-f", "{{.Id}}", name).stdout.strip()
    try:
        return int((root / "containers" / cid / "upper" / "tmp" / "n").read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


# -- restart policies and --rm -------------------------------------------------------


def test_on_failure_restarts_up_to_the_count(cli, monitor):
    cli("run", "-d", "--name", "flaky", "--restart", "on-failure:2", "busybox", "sh", "-c", "echo try; exit 3")
    wait_until(lambda: cli("logs", "flaky").stdout.count("try") == 3, timeout=20, what="three runs")
    wait_until(lambda: state(cli, "flaky")["Status"] == "exited", timeout=10, what="the end")
    record = json.loads(cli("inspect", "flaky").stdout)[0]
    assert record["RestartCount"] == 2
    assert record["State"]["ExitCode"] == 3
    time.sleep(0.5)
    assert cli("logs", "flaky").stdout.count("try") == 3, "restarted beyond the maximum"


def test_on_failure_does_not_restart_a_success(cli):
    cli("run", "-d", "--name", "ok", "--restart", "on-failure", "busybox", "true")
    wait_until(lambda: state(cli, "ok")["Status"] == "exited", what="the exit")
    time.sleep(0.4)
    assert json.loads(cli("inspect", "ok").stdout)[0]["RestartCount"] == 0


@pytest.mark.parametrize("policy", ["always", "unless-stopped"])
def test_always_restarts_until_stopped(cli, policy):
    cli("run", "-d", "--name", "again", "--restart", policy, "busybox", "sh", "-c", "echo up; sleep 0.1")
    wait_until(lambda: json.loads(cli("inspect", "again").stdout)[0]["RestartCount"] >= 2,
               timeout=20, what="two restarts")
    assert cli("stop", "-t", "1", "again").returncode == 0
    st = state(cli, "again")
    assert st["Status"] == "exited" and not st["Running"]
    count = json.loads(cli("inspect", "again").stdout)[0]["RestartCount"]
    time.sleep(1.0)
    assert state(cli, "again")["Status"] == "exited", "restarted after a stop"
    assert json.loads(cli("inspect", "again").stdout)[0]["RestartCount"] == count
    # `start` brings it back (and the policy with it).
    assert cli("start", "again").returncode == 0
    wait_until(lambda: json.loads(cli("inspect", "again").stdout)[0]["RestartCount"] > count,
               timeout=20, what="the policy after start")
    assert cli("rm", "-f", "again").returncode == 0


def test_restart_policy_and_rm_conflict(cli):
    r = cli("run", "--rm", "--restart", "always", "busybox", "true")
    assert r.returncode == 125 and "Conflicting options: --restart and --rm" in r.stderr


def test_rm_d_removes_the_container_after_it_exits(cli, root, monitor):
    r = cli("run", "-d", "--rm", "--name", "gone", "busybox", "sh", "-c", "sleep 0.2")
    cid = r.stdout.strip()
    assert state(cli, "gone")["Running"]
    wait_until(lambda: cli("inspect", "gone").returncode == 125, timeout=15, what="the removal")
    assert not (root / "containers" / cid).exists()
    assert not (root / "names" / "gone").exists()
    assert cid in container_ids(root)
    events = cli("events", "--since", "1m", "--until", "0s", "-f", f"container={cid}").stdout
    assert [line.split()[2] for line in events.splitlines()] == ["create", "start", "die", "destroy"]


def test_foreground_rm_returns_only_when_the_container_is_gone(cli, root, monitor):
    r = cli("run", "--rm", "--name", "brief", "busybox", "sh", "-c", "echo bye; exit 5")
    assert (r.returncode, r.stdout) == (5, "bye\n")
    assert os.listdir(root / "containers") == []
    assert cli("inspect", "brief").returncode == 125


# -- events ---------------------------------------------------------------------------


def test_events_of_a_start_stop_sequence(cli):
    since = str(time.time() - 1)
    cid = cli("run", "-d", "--name", "web", "busybox", "sleep", "30").stdout.strip()
    cli("stop", "-t", "1", "web")
    cli("rm", "web")
    r = cli("events", "--since", since, "--until", str(time.time() + 0.5))
    lines = r.stdout.splitlines()
    actions = [line.split()[2] for line in lines]
    assert actions == ["create", "start", "kill", "kill", "die", "stop", "destroy"], r.stdout
    pattern = (r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z container die " + cid
               + r" \(exitCode=137, image=busybox, name=web\)$")
    assert re.match(pattern, lines[4]), lines[4]
    assert lines[2].endswith(f"{cid} (image=busybox, name=web, signal=15)")
    assert lines[3].endswith("signal=9)")
    # Filters: event=, container= (name or ID prefix), image=, type=.
    def only(*filters):
        r = cli("events", "--since", since, "--until", str(time.time()), *filters)
        return [line.split()[2] for line in r.stdout.splitlines()]

    assert only("-f", "event=die") == ["die"]
    assert only("-f", "event=start", "-f", "event=stop") == ["start", "stop"]
    assert only("-f", f"container={cid[:10]}", "-f", "event=create") == ["create"]
    assert only("-f", "container=web", "-f", "event=destroy") == ["destroy"]
    assert only("-f", "image=busybox:latest", "-f", "event=create") == []  # docker matches the name as given
    assert only("-f", "image=busybox", "-f", "event=create") == ["create"]
    assert only("-f", "type=image") == []
    r = cli("events", "-f", "bogus=1", "--until", "0s")
    assert r.returncode == 125
    # --format with docker's Go field names, and the API's JSON.
    r = cli("events", "--since", since, "--until", str(time.time()), "-f", "event=die",
            "--format", "{{.Status}} {{.ID}} {{.From}} {{.Actor.Attributes.name}} {{.Type}}")
    assert r.stdout == f"die {cid} busybox web container\n", r.stderr
    for form in ("json", "{{json .}}"):
        r = cli("events", "--since", since, "--until", str(time.time()), "-f", "event=die", "--format", form)
        event = json.loads(r.stdout)
        assert (event["status"], event["id"], event["Actor"]["Attributes"]["exitCode"]) == ("die", cid, "137")


def test_events_follow_until_a_time(cli):
    """Without --until, events follow; with a future --until they stop then."""
    until = time.time() + 2
    proc = subprocess.Popen([*DOCKYARD, "events", "--until", str(until)], env=cli.env(), cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    cli("run", "--rm", "--name", "seen", "busybox", "true")
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert [line.split()[2] for line in out.splitlines()] == ["create", "start", "die", "destroy"]
    assert all("name=seen" in line for line in out.splitlines())


# -- faults ---------------------------------------------------------------------------


def test_killing_the_monitor_kills_the_container_and_state_tells_the_truth(cli, root, monitor):
    cid = cli("run", "-d", "--name", "victim", "busybox", "sleep", "30").stdout.strip()
    record = json.loads(cli("inspect", "victim").stdout)[0]
    pid, monitor_pid = record["State"]["Pid"], record["Dockyard"]["MonitorPid"]
    from engine.runtime import cgroups
    assert cid in cgroups.leftovers()
    os.kill(monitor_pid, signal.SIGKILL)
    wait_until(lambda: process_gone(pid), what="PR_SET_PDEATHSIG")
    st = state(cli, "victim")
    assert (st["Status"], st["Running"], st["ExitCode"], st["Pid"]) == ("exited", False, 255, 0)
    assert "monitor" in st["Error"] and "died" in st["Error"]
    assert "victim" not in cli("ps").stdout
    assert re.search(r"Exited \(255\)", cli("ps", "-a").stdout)
    # Nothing is left: no process in its cgroup (the cgroup itself is gone), no listener.
    assert cid not in cgroups.leftovers()
    assert not (root / "containers" / cid / "attach.sock").exists()
    r = cli("attach", "victim")
    assert r.returncode == 125 and "You cannot attach to a stopped container" in r.stderr
    # It can be started again.
    assert cli("start", "victim").returncode == 0
    assert state(cli, "victim")["Running"]


def test_killing_the_cli_of_a_foreground_run_leaves_the_container_running(cli, monitor):
    proc = cli.popen("run", "--name", "fgkill", "busybox", "sh", "-c",
                     "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.05; done",
                     stdout=subprocess.PIPE)
    try:
        wait_until(lambda: state(cli, "fgkill")["Running"] if cli("inspect", "fgkill").returncode == 0 else False,
                   what="the start")
        assert proc.stdout.readline().startswith(b"line")
    finally:
        proc.kill()
        proc.wait()
    time.sleep(0.2)
    st = state(cli, "fgkill")
    assert st["Status"] == "running"
    before = cli("logs", "fgkill").stdout.count("\n")
    wait_until(lambda: cli("logs", "fgkill").stdout.count("\n") > before + 2, what="more output")
    attached = cli.popen("attach", "fgkill", stdout=subprocess.PIPE)
    try:
        assert attached.stdout.readline().startswith(b"line")
    finally:
        attached.kill()
        attached.wait()
    assert cli("rm", "-f", "fgkill").returncode == 0


@pytest.mark.parametrize("point", ["before-spawn", "after-spawn"])
def test_a_launcher_killed_half_way_leaves_nothing(cli, root, point):
    """SIGKILL the intermediate process M before it spawns the container, or
    after the spawn but before it becomes the monitor."""
    cli("create", "--name", "half", "busybox", "sleep", "30")
    r = cli("start", "half", env=cli.env(DOCKYARD_TEST_CRASH=point))
    assert r.returncode == 125
    assert "died while starting it" in r.stderr
    st = state(cli, "half")
    assert not st["Running"]
    assert st["Status"] == ("created" if point == "before-spawn" else "exited")
    if point == "after-spawn":
        assert st["ExitCode"] == 255 and "monitor" in st["Error"]
    from engine.runtime import cgroups
    cid = cli("inspect", "-f", "{{.Id}}", "half").stdout.strip()
    assert cid not in cgroups.leftovers()
    assert monitor_processes(root) == []
    # The next start works.
    assert cli("start", "half").returncode == 0
    assert state(cli, "half")["Running"]


def test_a_launcher_killed_after_reporting_leaves_a_truthful_record(cli, root):
    """M reported the start, then died before becoming the monitor: the container
    dies with it (PR_SET_PDEATHSIG) and the next command records that."""
    cli("create", "--name", "late", "busybox", "sleep", "30")
    assert cli("start", "late", env=cli.env(DOCKYARD_TEST_CRASH="before-exec")).returncode == 0
    record = json.loads(cli("inspect", "late").stdout)[0]
    wait_until(lambda: process_gone(record["Dockyard"]["MonitorPid"]), what="M to die")
    wait_until(lambda: not state(cli, "late")["Running"], what="the record to tell")
    st = state(cli, "late")
    assert (st["Status"], st["ExitCode"]) == ("exited", 255)
    assert process_gone(record["State"]["Pid"])
    from engine.runtime import cgroups
    assert record["Id"] not in cgroups.leftovers()


def test_a_killed_foreground_rm_run_is_still_removed(cli, root, monitor):
    """The foreground `run --rm` is the remover; if it is killed, the monitor
    runs `python -m engine _autoremove` when the container exits."""
    proc = cli.popen("run", "--rm", "--name", "orphaned", "busybox", "sh", "-c", "echo up; sleep 30",
                     stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"up\n"
    finally:
        proc.kill()
        proc.wait()
    assert state(cli, "orphaned")["Running"]
    cid = cli("inspect", "-f", "{{.Id}}", "orphaned").stdout.strip()
    assert cli("kill", "orphaned").returncode == 0
    wait_until(lambda: not (root / "containers" / cid).exists(), timeout=15, what="the autoremove")
    assert cli("inspect", "orphaned").returncode == 125


def test_an_oom_kill_is_recorded(cli):
    r = cli("run", "--name", "hog", "-m", "16m", "--memory-swap", "16m", "busybox", "sh", "-c", "tail /dev/zero")
    assert r.returncode == 137
    st = state(cli, "hog")
    assert (st["Status"], st["ExitCode"], st["OOMKilled"]) == ("exited", 137, True)
    events = cli("events", "--since", "1m", "--until", "0s", "-f", "container=hog").stdout.splitlines()
    assert [line.split()[2] for line in events][-2:] == ["oom", "die"]


def test_a_restarted_container_still_gets_signals(cli):
    """The restart runs in the monitor's own process with SIGTERM blocked; the
    container it spawns must not inherit that."""
    cli("run", "-d", "--name", "trapper", "--restart", "on-failure:1", "busybox", "sh", "-c",
        "if [ -e /tmp/second ]; then trap 'exit 0' TERM; echo ready; while true; do sleep 0.05; done; "
        "else touch /tmp/second; exit 1; fi")
    wait_until(lambda: "ready" in cli("logs", "trapper").stdout, timeout=15, what="the second run")
    t = time.monotonic()
    assert cli("stop", "trapper").returncode == 0
    assert time.monotonic() - t < 3, "SIGTERM did not reach the trap"
    assert state(cli, "trapper")["ExitCode"] == 0


# -- the same through the Python API -------------------------------------------------------


def test_api_detached_lifecycle(engine, monitor):
    c = engine.containers.run("busybox", ["sh", "-c", "echo hello; echo oops >&2; sleep 30"],
                              detach=True, name="api")
    assert c.status == "running" and c.attrs["State"]["Pid"] > 0
    wait_until(lambda: c.logs() == b"hello\noops\n", what="the log")
    assert c.logs(stderr=False) == b"hello\n" and c.logs(stdout=False) == b"oops\n"
    stamped = c.logs(timestamps=True).splitlines()
    assert re.match(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z hello$", stamped[0])
    c.pause()
    c.reload()
    assert c.status == "paused"
    c.unpause()
    c.kill(signal="SIGTERM")  # PID 1 without a handler: ignored
    time.sleep(0.1)
    c.reload()
    assert c.status == "running"
    c.stop(timeout=1)
    assert c.wait() == {"StatusCode": 137, "Error": None}
    c.reload()
    assert c.status == "exited"
    c.start()
    assert c.status == "running"
    c.restart(timeout=0)
    c.reload()
    assert c.status == "running"
    c.rename("api2")
    assert engine.containers.get("api2").id == c.id
    c.kill()
    assert c.wait(timeout=10)["StatusCode"] == 137
    names = [e["Action"] for e in engine.events(since=0, until=time.time(), filters={"container": c.id})]
    assert names[:2] == ["create", "start"] and "rename" in names and names.count("die") >= 3
    c.remove()


def test_api_attach_stream_and_logs_follow(engine, monitor):
    c = engine.containers.run("busybox", ["sh", "-c", "sleep 0.3; for i in 1 2 3; do echo $i; sleep 0.05; done"],
                              detach=True)
    stream = c.attach(stream=True)
    followed = c.logs(stream=True, follow=True)
    assert b"".join(stream) == b"1\n2\n3\n"
    assert b"".join(followed) == b"1\n2\n3\n"
    assert c.wait()["StatusCode"] == 0
    c.remove()


def test_api_run_remove_and_errors(engine, monitor):
    from engine.errors import CommandNotFound, ContainerError

    assert engine.containers.run("busybox", ["echo", "x"], remove=True) == b"x\n"
    with pytest.raises(ContainerError) as e:
        engine.containers.run("busybox", ["sh", "-c", "echo bad >&2; exit 4"], remove=True)
    assert e.value.exit_status == 4 and e.value.stderr == b"bad\n"
    with pytest.raises(CommandNotFound):
        engine.containers.run("busybox", ["nosuch"], detach=True, remove=True)
    assert engine.containers.list(all=True) == []
    with pytest.raises(CommandNotFound):
        engine.containers.run("busybox", ["nosuch"], name="failed")
    failed = engine.containers.get("failed")
    assert failed.status == "created" and failed.attrs["State"]["ExitCode"] == 127
    failed.remove()


def test_detached_containers_survive_the_python_process_that_made_them(engine, root):
    script = ("from engine import Engine\n"
              f"c = Engine({str(root)!r}).containers.run('busybox', ['sleep', '30'], detach=True, name='kept')\n"
              "print(c.attrs['State']['Pid'])\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    pid = int(r.stdout)
    c = engine.containers.get("kept")
    assert c.status == "running" and c.attrs["State"]["Pid"] == pid
    c.remove(force=True)
    assert process_gone(pid)


def test_foreground_runs_leave_no_zombie_monitor(engine, monitor):
    """An attached start forks its monitor directly (no intermediate X); the
    monitors of finished runs are reaped, not left as zombies of ours."""
    from engine.runtime import launcher

    for _ in range(3):
        assert engine.containers.run("busybox", ["true"], remove=True) == b""
    wait_until(lambda: not any(_state_of(pid) not in (None, "Z") for pid in launcher._direct_monitors),
               what="the monitors to exit")
    engine.containers.run("busybox", ["true"], remove=True)   # its start reaps the others
    leftover = [pid for pid in launcher._direct_monitors if _state_of(pid) == "Z"]
    assert len(leftover) <= 1, f"zombie monitors: {leftover}"


def _state_of(pid: int):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
