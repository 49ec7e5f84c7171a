"""``exec``: a second process inside a running container, checked from inside it
and from the host.

The process must land exactly where the container's PID 1 is: same
namespaces (hostname, PID numbers, mounts, files), same cgroup, same
capabilities and rlimits, the container's environment and working
directory, and be reaped (or handed to init with ``-d``) without leaving
anything behind. Most tests run twice (the ``spawner`` fixture for the
API, ``cli_env`` for the command line): with the compiled spawner and with
its Python twin.
"""

import json
import os
import re
import time

import pytest

from engine.errors import CommandNotFound, Conflict, UsageError
from engine.runtime import cgroups
from engine.runtime import exec as X
from engine.runtime.user import UserNotFound
from monitor_fixtures import no_monitor_leftovers, wait_until  # noqa: F401 -- fixtures
from support import Terminal

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("no_monitor_leftovers")]

BOX_SCRIPT = "echo from-the-container > /tmp/mark; exec sleep 600"


def run_exec(engine, container, *cmd, **kw):
    return X.exec_run(engine, container, list(cmd), **kw)


def text(result) -> str:
    return result.output.decode()


@pytest.fixture
def box(engine, spawner):
    """A running busybox container that wrote a file, with a few run options."""
    c = engine.containers.run("busybox", ["sh", "-c", BOX_SCRIPT], detach=True, name="box",
                              environment=["FROM_RUN=1"], working_dir="/tmp",
                              ulimits=["nofile=100:200"], cap_add=["NET_ADMIN"])
    wait_until(lambda: run_exec(engine, c, "cat", "/tmp/mark").output == b"from-the-container\n",
               what="the container's file")
    return c


@pytest.fixture(params=["compiled", "twin"])
def cli_env(request, cli):
    """The CLI's environment: compiled core, or every Python twin (DOCKYARD_PURE=1)."""
    return cli.env(**({"DOCKYARD_PURE": "1"} if request.param == "twin" else {}))


@pytest.fixture
def web(cli, cli_env):
    r = cli("run", "-d", "--name", "web", "-e", "FROM_RUN=1", "busybox", "sh", "-c", BOX_SCRIPT,
            env=cli_env)
    assert r.returncode == 0, r.stderr
    wait_until(lambda: cli("exec", "web", "cat", "/tmp/mark", env=cli_env).stdout == "from-the-container\n",
               what="the container's file")
    return r.stdout.strip()


def host_ns(pid: int, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


# -- where the process lands ----------------------------------------------------------------


def test_exec_sees_the_containers_namespaces_mounts_and_files(engine, box):
    init = X.init_pid(box)
    r = run_exec(engine, box, "sh", "-c",
                 "hostname; echo $$; cat /tmp/mark; cat /proc/1/cmdline | tr '\\0' ' '; echo; "
                 "head -1 /proc/mounts; for n in ipc uts net pid mnt; do readlink /proc/self/ns/$n; done")
    assert r.exit_code == 0, r.output
    lines = text(r).splitlines()
    assert lines[0] == box.attrs["Config"]["Hostname"] == box.short_id
    assert int(lines[1]) < 10, "a PID of the container's namespace, not the host's"
    assert lines[2] == "from-the-container"
    assert lines[3].startswith("sleep 600"), "PID 1 is the container's command"
    assert lines[4].startswith("overlay / overlay "), "the container's root, not the host's"
    assert lines[5:] == [host_ns(init, k) for k in ("ipc", "uts", "net", "pid", "mnt")]
    ps = text(run_exec(engine, box, "ps"))
    assert re.search(r"^\s*1 root\s+sleep 600$", ps, re.M)
    assert len(ps.splitlines()) == 3, "ps sees PID 1 and itself, nothing of the host"
    assert text(run_exec(engine, box, "sh", "-c", "echo written-by-exec > /tmp/new && cat /tmp/new")) == \
        "written-by-exec\n"
    # The container's own layer has it: the same file system, seen from the host.
    assert (box.path / "upper" / "tmp" / "new").read_text() == "written-by-exec\n"


def test_exec_is_in_the_containers_cgroup(engine, box):
    lines = text(run_exec(engine, box, "cat", "/proc/self/cgroup")).splitlines()
    memory = next(line for line in lines if ":memory:" in line or line.startswith("0::"))
    assert memory.endswith(f"/dockyard/{box.id}")
    # From the host too, for a process that stays.
    run_exec(engine, box, "sleep", "123", detach=True)
    pid = wait_until(lambda: _host_pid_of(box, "sleep 123"), what="the exec'd sleep")
    with open(f"/proc/{pid}/cgroup") as f:
        assert all(line.rstrip().endswith(f"/dockyard/{box.id}") for line in f
                   if any(c in line for c in (":memory:", ":pids:", ":cpu,", ":freezer:")))
    assert pid in cgroups.for_container(box).pids()


def _host_pid_of(container, command: str) -> int | None:
    from engine.runtime.stats import top

    for row in top(container)["Processes"]:
        if row[-1] == command:
            return int(row[1])
    return None


def test_capabilities_and_rlimits_are_the_containers(engine, box):
    init = X.init_pid(box)
    with open(f"/proc/{init}/status") as f:
        theirs = [line for line in f if line.startswith("Cap")]
    ours = text(run_exec(engine, box, "grep", "Cap", "/proc/self/status")).splitlines(keepends=True)
    assert ours == theirs
    assert "00000000a80435fb" in theirs[1], "the container's --cap-add NET_ADMIN"
    assert text(run_exec(engine, box, "sh", "-c", "ulimit -n; ulimit -Hn")) == "100\n200\n"
    # --privileged: every capability dockyard has, for this process only.
    privileged = text(run_exec(engine, box, "grep", "CapEff", "/proc/self/status", privileged=True))
    with open("/proc/self/status") as f:
        engine_caps = next(int(line.split()[1], 16) for line in f if line.startswith("CapPrm"))
    with open("/proc/sys/kernel/cap_last_cap") as f:
        everything = (1 << (int(f.read()) + 1)) - 1
    assert privileged == f"CapEff:\t{engine_caps & everything:016x}\n"


def test_environment_and_working_directory(engine, box):
    env = text(run_exec(engine, box, "env")).splitlines()
    assert "FROM_RUN=1" in env and f"HOSTNAME={box.short_id}" in env and "HOME=/root" in env
    assert any(e.startswith("PATH=/usr/local/sbin:") for e in env)
    assert "TERM=xterm" not in env
    env = text(run_exec(engine, box, "env", environment={"FROM_RUN": "2", "EXTRA": "x y"})).splitlines()
    assert "FROM_RUN=2" in env and "EXTRA=x y" in env
    assert text(run_exec(engine, box, "pwd")) == "/tmp\n", "the container's WorkingDir"
    assert text(run_exec(engine, box, "pwd", workdir="/etc")) == "/etc\n"
    with pytest.raises(UsageError, match="absolute path"):
        run_exec(engine, box, "pwd", workdir="etc")


def test_user(engine, box):
    assert text(run_exec(engine, box, "id")) == "uid=0(root) gid=0(root) groups=0(root),10(wheel)\n"
    assert text(run_exec(engine, box, "id", user="nobody")).startswith("uid=65534(nobody) gid=65534")
    assert text(run_exec(engine, box, "id", "-u", user="1000:50")) == "1000\n"
    caps = text(run_exec(engine, box, "grep", "CapEff", "/proc/self/status", user="1000"))
    assert caps == "CapEff:\t0000000000000000\n"
    with pytest.raises(UserNotFound, match="unable to find user nobody2: no matching entries in passwd file"):
        run_exec(engine, box, "id", user="nobody2")


def test_exit_codes_and_output_streams(engine, box):
    assert run_exec(engine, box, "true").exit_code == 0
    assert run_exec(engine, box, "sh", "-c", "exit 3").exit_code == 3
    assert run_exec(engine, box, "sh", "-c", "kill -9 $$").exit_code == 137
    r = run_exec(engine, box, "/etc/passwd")
    assert r == (126, b'exec: "/etc/passwd": permission denied\n')
    r = run_exec(engine, box, "nosuch")
    assert r == (127, b'exec: "nosuch": executable file not found in $PATH\n')
    both = run_exec(engine, box, "sh", "-c", "echo out; echo err >&2")
    assert sorted(text(both).splitlines()) == ["err", "out"]
    assert run_exec(engine, box, "sh", "-c", "echo out; echo err >&2", stderr=False).output == b"out\n"
    assert run_exec(engine, box, "sh", "-c", "echo out; echo err >&2", demux=True).output == (b"out\n", b"err\n")
    code, chunks = run_exec(engine, box, "sh", "-c", "echo a; sleep 0.2; echo b", stream=True)
    assert code is None and b"".join(chunks) == b"a\nb\n"
    r = run_exec(engine, box, "sh", "-c", "tty; echo $TERM", tty=True)
    assert r.exit_code == 0 and re.fullmatch(rb"/dev/pts/\d+\r\nxterm\r\n", r.output)


@pytest.fixture
def exec_pids(monkeypatch):
    """The PIDs every exec of the test made: its spawned child and the command's
    process (checked by PID: other tests' leftovers in this shared pytest
    process must not decide, nor hide, anything here)."""
    made = []
    real = X.ExecProcess.wait_started

    def recording(self):
        try:
            return real(self)
        finally:
            made.extend(p for p in (self.pid, self.exec_pid) if p)

    monkeypatch.setattr(X.ExecProcess, "wait_started", recording)
    return made


def still_ours(pids) -> list[int]:
    """Those of ``pids`` that are still a child of ours (alive or a zombie)."""
    children = set()
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            children.update(int(pid) for pid in f.read().split())
    return sorted(set(pids) & children)


def test_nothing_is_left_behind_and_we_are_no_subreaper_after(engine, box, exec_pids):
    from engine.runtime.spawn import child_subreaper

    for _ in range(3):
        run_exec(engine, box, "true")
        run_exec(engine, box, "nosuch")
    assert len(exec_pids) == 12, exec_pids
    assert still_ours(exec_pids) == [], "every child and command process was reaped"
    assert child_subreaper(0) == 0, "the subreaper mark was switched off again"
    ps = text(run_exec(engine, box, "ps", "-o", "pid,comm"))
    assert len(ps.splitlines()) == 3, f"only PID 1 and ps: {ps}"


def test_exec_needs_a_running_container(engine, spawner):
    c = engine.containers.create("busybox", ["sleep", "60"], name="idle")
    with pytest.raises(Conflict, match=f"container {c.id} is not running"):
        run_exec(engine, c, "true")
    c.start()
    c.pause()
    with pytest.raises(Conflict, match="is paused, unpause the container before exec"):
        run_exec(engine, c, "true")
    c.unpause()
    assert run_exec(engine, c, "true").exit_code == 0
    c.kill()
    c.wait()
    with pytest.raises(Conflict, match=f"container {c.id} is not running"):
        run_exec(engine, c, "true")


def test_exec_events(engine, box, root):
    run_exec(engine, box, "sh", "-c", "exit 4")
    with open(root / "events.jsonl") as f:
        events = [json.loads(line) for line in f]
    mine = [e for e in events if e["Action"].startswith("exec_")][-3:]   # the fixture's own before
    assert [e["Action"] for e in mine] == ["exec_create: sh -c exit 4", "exec_start: sh -c exit 4", "exec_die"]
    assert {e["Actor"]["Attributes"]["execID"] for e in mine} == {mine[0]["Actor"]["Attributes"]["execID"]}
    assert mine[-1]["Actor"]["Attributes"]["exitCode"] == "4"
    assert all(e["id"] == box.id and e["Actor"]["Attributes"]["name"] == "box" for e in mine)
    # event=exec_start matches "exec_start: <command>" (docker matches by prefix).
    from engine.runtime import events as E

    found = [e["Action"] for e in E.read(engine.layout, since_ns=0, until_ns=time.time_ns(),
                                         filters={"event": ["exec_start", "exec_die"]}, follow=False)]
    assert found[-2:] == ["exec_start: sh -c exit 4", "exec_die"]
    assert not [e for e in events if E.matches(e, {"event": ["exec"]})], "no prefix match without the colon rule"


def test_a_failed_setup_step_is_reported_and_reaped(engine, box, exec_pids):
    with pytest.raises(Exception, match="chdir|No such file"):
        run_exec(engine, box, "pwd", workdir="/does/not/exist")
    assert exec_pids and still_ours(exec_pids) == []
    with pytest.raises(CommandNotFound):
        X.start(box, ["nosuch"])


# -- the command line ----------------------------------------------------------------------


def test_cli_exec_output_exit_codes_and_options(cli, cli_env, web):
    r = cli("exec", "web", "sh", "-c", "echo out; echo err >&2; exit 3", env=cli_env)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    r = cli("exec", "-e", "A=1", "-e", "FROM_RUN=2", "-w", "/etc", "-u", "nobody", "web", "sh", "-c",
            "echo $A $FROM_RUN; pwd; id -un", env=cli_env)
    assert r.stdout == "1 2\n/etc\nnobody\n", r.stderr
    r = cli("exec", "web", "nosuch", env=cli_env)
    assert r.returncode == 127 and 'exec: "nosuch": executable file not found in $PATH' in r.stderr
    r = cli("exec", "web", "/etc/passwd", env=cli_env)
    assert r.returncode == 126 and "permission denied" in r.stderr
    r = cli("exec", "-u", "nobody2", "web", "id", env=cli_env)
    assert r.returncode == 125
    assert r.stderr == "dockyard: unable to find user nobody2: no matching entries in passwd file\n"
    # Without -i the command's stdin is /dev/null; with -i it is ours.
    assert cli("exec", "web", "cat", input="typed\n", env=cli_env).stdout == ""
    assert cli("exec", "-i", "web", "cat", input="typed\n", env=cli_env).stdout == "typed\n"
    r = cli("exec", "web", env=cli_env)
    assert r.returncode == 125 and '"exec" requires at least 2 arguments' in r.stderr


def test_cli_exec_into_a_stopped_container_is_dockers_error(cli, cli_env, web):
    assert cli("stop", "-t", "0", "web", env=cli_env).returncode == 0
    r = cli("exec", "web", "true", env=cli_env)
    assert r.returncode == 125
    assert r.stderr == f"dockyard: container {web} is not running\n"
    r = cli("exec", "nothere", "true", env=cli_env)
    assert r.returncode == 125 and "No such container: nothere" in r.stderr


def test_cli_exec_d_leaves_a_process_running_in_the_container(cli, cli_env, web, engine):
    r = cli("exec", "-d", "web", "sleep", "321", env=cli_env)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    top = cli("top", "web", env=cli_env).stdout
    assert "sleep 321" in top and "sleep 600" in top
    pid = int(next(line for line in top.splitlines() if line.endswith("sleep 321")).split()[1])
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    assert int(fields[1]) != os.getpid(), "not our child"
    assert int(fields[2]) == pid and int(fields[3]) == pid, "a session (and process group) of its own"
    # It dies with the container (the end of PID 1 kills the namespace).
    assert cli("rm", "-f", "web", env=cli_env).returncode == 0
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), what="the exec'd process to die")


def test_cli_exec_explain_prints_the_plan(cli, cli_env, web):
    r = cli("exec", "--explain", "web", "true", env=cli_env)
    assert r.returncode == 0
    assert "nsenter --mount=/proc/" in r.stderr and "nsenter --fork" in r.stderr
    assert "clone(SIGCHLD)" in r.stderr


def test_cli_exec_t_through_a_real_pty(cli_env, web):
    term = Terminal(cli_env, "exec", "-t", "web", "sh", "-c", "tty; stty size; exit 7", rows=31, cols=97)
    assert term.wait() == 7
    # \r\r\n: without -i our terminal stays cooked (as docker leaves it), so its
    # own ONLCR adds a \r to the container terminal's \r\n. Invisible on a screen.
    assert re.search(rb"^/dev/pts/\d+\r+\n31 97\r+\n", term.output), term.output


def test_cli_exec_it_is_an_interactive_shell_in_the_container(cli_env, web):
    term = Terminal(cli_env, "exec", "-it", "web", "sh")
    term.read_until(b"# ")
    term.type(b"sleep 30\r")
    time.sleep(0.3)
    term.type(b"\x03")          # ^C: raw mode sent it on; the container's terminal made it SIGINT
    term.read_until(b"^C")
    term.type(b"echo after $?; cat /tmp/mark; exit 5\r")
    term.read_until(b"from-the-container\r\n")
    assert b"after 130\r\n" in term.output
    assert term.wait() == 5


def test_cli_exec_without_t_shares_our_terminal_so_ctrl_c_reaches_it(cli_env, web):
    term = Terminal(cli_env, "exec", "web", "sh", "-c", "echo ready; sleep 30")
    term.read_until(b"ready")
    t = time.time()
    term.type(b"\x03")          # our terminal's ^C: SIGINT to its foreground group, the command's too
    assert term.wait() == 130, "dockyard waited for the command and exits as it did"
    assert time.time() - t < 5


def test_failed_execs_leave_no_zombie_that_would_block_the_stop(engine, box, exec_pids):
    """A command that fails at once may report before the exec's child sends
    its PID (the two write the same pipe). The failed process must still be
    reaped: a zombie left in the container's PID namespace keeps its PID 1
    from finishing its exit, and the container could never be stopped."""
    for _ in range(25):
        assert run_exec(engine, box, "nosuch").exit_code == 127
    assert len(exec_pids) == 50, "every exec's child and command process were known"
    assert still_ours(exec_pids) == []
    t = time.monotonic()
    box.stop(timeout=0)
    assert box.wait(timeout=5)["StatusCode"] == 137
    assert time.monotonic() - t < 5
