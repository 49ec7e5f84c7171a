"""Checker for lab 03, "Processes, cgroups and exec".

Run it after your own attempt (see README.md)::

    pytest labs/03-processes

It reads the real state of your Dockyard root ($DOCKYARD_ROOT, or
/var/lib/dockyard) through the ``lab_engine`` fixture of Dockyard's pytest
plugin: the records of the containers ``mem64``, ``frozen`` and ``web`` (what
``dockyard inspect`` prints), the root's event log (what ``dockyard events``
prints), the containers' cgroup files, their processes in /proc and their
writable layers. It changes nothing: it neither starts nor execs anything.
Each test checks one thing and, when it fails, says what to do. While a
container is missing, the tests that need it are skipped.
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

import pytest

MiB = 1024 * 1024
LIMIT = 64 * MiB                 # -m 64m
HELLO = "hello from exec\n"      # what /tmp/hello in web must hold
TICKER = """sh -c 'i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.5; done'"""
GOOD_MEM64 = "dockyard run -d --name mem64 -m 64m --memory-swap 64m busybox tail /dev/zero"
GOOD_EXEC = """dockyard exec web sh -c 'echo "hello from exec" > /tmp/hello'"""


def require(condition, hint: str) -> None:
    """Fail with just the hint: the learner needs what to do, not the checker's code."""
    if not condition:
        pytest.fail(hint, pytrace=False)


def find(engine, name: str):
    from engine.errors import NotFound

    try:
        return engine.containers.get(name)
    except NotFound:
        return None


def command_line(container) -> str:
    return shlex.join([container.attrs["Path"], *container.attrs["Args"]])


def events_of(engine, container) -> list[dict]:
    """Every event of this container (this one: by ID, not by name), oldest first."""
    from engine.runtime import events

    return list(events.read(engine.layout, filters={"container": [container.id]}))


def actions(engine, container) -> list[str]:
    return [event["Action"] for event in events_of(engine, container)]


def exec_starts(engine, container) -> list[dict]:
    """The ``exec_start: COMMAND`` events: one per ``dockyard exec`` that ran."""
    return [e for e in events_of(engine, container) if e["Action"].partition(":")[0] == "exec_start"]


def exec_command(event: dict) -> str:
    return event["Action"].partition(":")[2].strip()


def processes(container) -> list[int]:
    """The host PIDs of the processes in the container's cgroup."""
    from engine.runtime import cgroups

    return cgroups.for_container(container).pids()


def proc_state(pid: int) -> str:
    """The one-letter state of a process (proc(5): R, S, D, T, Z...), "" if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def context_switches(pid: int) -> int | None:
    """How many times the process has been switched out so far (proc(5))."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return None
    return int(fields["voluntary_ctxt_switches"]) + int(fields["nonvoluntary_ctxt_switches"])


def mib(n: int) -> str:
    return f"{n} bytes ({n / MiB:g} MiB)"


def exists_hint(name: str, engine, what: str) -> str:
    others = sorted(c.name for c in engine.containers.list(all=True))
    seen = f" The containers here are: {', '.join(others)}." if others else ""
    return (f"No container named {name} exists in the Dockyard root {engine.root}.{seen} {what} "
            f"Did you use --name {name}? Do not use --rm: the checker inspects the container "
            f"itself, so it must remain. If you ran dockyard with another root (DOCKYARD_ROOT or "
            f"--root), run this checker with the same DOCKYARD_ROOT. (`dockyard ps -a` lists the "
            f"containers that exist.)")


# -- fixtures: what the tests look at --------------------------------------------


def _container(engine, name: str):
    container = find(engine, name)
    if container is None:
        pytest.skip(f"there is no container named {name} yet (see test_{name}_exists)")
    return container


@pytest.fixture
def mem64(lab_engine):
    return _container(lab_engine, "mem64")


@pytest.fixture
def frozen(lab_engine):
    return _container(lab_engine, "frozen")


@pytest.fixture
def paused(frozen):
    """``frozen``, once Dockyard records it as paused."""
    if not frozen.attrs["State"].get("Paused"):
        pytest.skip("frozen is not paused (see test_frozen_is_paused)")
    if os.geteuid() != 0:
        pytest.skip("reading another process's cgroup and /proc needs root")
    return frozen


@pytest.fixture
def web(lab_engine):
    return _container(lab_engine, "web")


@pytest.fixture
def hello(web) -> Path:
    """The file /tmp/hello in web's writable layer."""
    path = Path(web.attrs["GraphDriver"]["Data"]["UpperDir"]) / "tmp" / "hello"
    if not path.is_file():
        pytest.skip("web has no /tmp/hello (see test_hello_in_web)")
    return path


# -- mem64: 资源限制, the limit, and the OOM killer --------------------------------


def test_mem64_exists(lab_engine):
    require(find(lab_engine, "mem64") is not None, exists_hint(
        "mem64", lab_engine, "It is the container limited to 64 MiB that gets OOM-killed."))


def test_mem64_memory_limit(mem64):
    memory = mem64.attrs["HostConfig"].get("Memory") or 0
    require(memory, (
        "mem64 has no memory limit (HostConfig.Memory is 0): without one, the container may use "
        "all the host's memory. Set it when you make the container: -m 64m (or --memory 64m), "
        f"e.g. `{GOOD_MEM64}`. (`dockyard rm mem64` first: the name is taken.)"))
    require(memory == LIMIT, (
        f"mem64's memory limit is {mib(memory)}, not 64 MiB ({LIMIT} bytes). The units of -m are "
        f"b, k, m and g (powers of 1024): -m 64m. (`dockyard inspect -f '{{{{.HostConfig.Memory}}}}' "
        f"mem64` shows it.)"))


def test_mem64_no_swap(mem64):
    hc = mem64.attrs["HostConfig"]
    if not hc.get("Memory"):
        pytest.skip("mem64 has no memory limit (see test_mem64_memory_limit)")
    swap = hc.get("MemorySwap") or 0
    require(swap != 0, (
        "mem64 may swap: without --memory-swap, memory + swap defaults to twice -m (128 MiB in "
        "all, as with docker), and on a host with swap the kernel would push the container to "
        "swap instead of OOM-killing it. --memory-swap is memory PLUS swap: make it equal to -m "
        f"for no swap at all: -m 64m --memory-swap 64m (`{GOOD_MEM64}`)."))
    require(swap != -1, (
        "mem64 may use unlimited swap (--memory-swap -1). --memory-swap is memory PLUS swap: make "
        "it equal to -m for no swap at all: -m 64m --memory-swap 64m."))
    require(swap == LIMIT, (
        f"mem64's memory + swap limit (HostConfig.MemorySwap) is {mib(swap)}, so it may swap "
        f"{mib(swap - hc['Memory'])}. --memory-swap is memory PLUS swap: equal to -m, there is no "
        f"swap: --memory-swap 64m."))


def test_mem64_was_oom_killed(mem64):
    state = mem64.attrs["State"]
    status, code, oom = state["Status"], state["ExitCode"], state["OOMKilled"]
    command = command_line(mem64)
    require(status != "created", (
        "mem64 was created but never started: `dockyard start mem64` (or make it with "
        "`dockyard run -d ...`, which creates and starts)."))
    require(not state["Running"], (
        f"mem64 is still {status}: its command `{command}` has not gone past the limit (yet). "
        f"`dockyard stats --no-stream mem64` shows how much memory it uses. The command must KEEP "
        f"more than 64 MiB in memory, e.g. busybox's `tail /dev/zero`: `tail` keeps the last "
        f"lines it reads, and /dev/zero never ends its first line. (Remove it with "
        f"`dockyard rm -f mem64` and make it again.)"))
    if oom and code != 137:
        pytest.fail(
            f"The OOM killer did kill a process of mem64 (State.OOMKilled is true), but not its "
            f"main process: mem64 exited with status {code}, not 137. Its command is "
            f"`{command}`: the kernel chose a child, and the shell went on without it. Make the "
            f"memory-hungry program the container's main process, e.g. `{GOOD_MEM64}` (or put "
            f"it last in `sh -c '...'`: busybox's sh then runs it in its own place, with exec).",
            pytrace=False)
    if code == 137 and not oom:
        pytest.fail(
            "mem64 exited with status 137 (128 + 9: killed by SIGKILL), but State.OOMKilled is "
            "false: it was not the kernel's OOM killer that killed it. `dockyard kill` and "
            "`dockyard stop` give 137 too. Leave the container alone and let its command grow past "
            f"its limit by itself, e.g. `{GOOD_MEM64}`, then `dockyard wait mem64`.", pytrace=False)
    require(oom and code == 137, (
        f"mem64 exited with status {code} and was not OOM-killed (State.OOMKilled is false): its "
        f"command `{command}` never held more than 64 MiB at once. Data that only passes through "
        f"(`head -c 100m /dev/zero > /dev/null`, `dd ... of=/dev/null`, a pipe) needs a small "
        f"buffer, not 100 MB. The command must KEEP what it reads: busybox's `tail /dev/zero` does "
        f"(`{GOOD_MEM64}`)."))


def test_mem64_oom_event(mem64, lab_engine):
    if not mem64.attrs["State"]["OOMKilled"]:
        pytest.skip("mem64 was not OOM-killed (see test_mem64_was_oom_killed)")
    seen = actions(lab_engine, mem64)
    require("oom" in seen, (
        f"mem64's record says it was OOM-killed, but the event log of {lab_engine.root} has no "
        f"`oom` event for it (only: {', '.join(seen) or 'nothing'}). The container's monitor "
        f"writes it when the kernel reports the kill: was events.jsonl deleted or edited? "
        f"(`dockyard events --since 1h --until 0s --filter container=mem64` lists them.)"))


# -- frozen: 控制, the cgroup freezer ------------------------------------------------


def test_frozen_exists(lab_engine):
    require(find(lab_engine, "frozen") is not None, exists_hint(
        "frozen", lab_engine, "It is the running container that you pause."))


def test_frozen_is_paused(frozen, lab_engine):
    state = frozen.attrs["State"]
    if state.get("Paused"):
        return
    command = command_line(frozen)
    require(state["Status"] != "created", (
        "frozen was created but never started: `dockyard start frozen`, then "
        "`dockyard pause frozen`."))
    if not state["Running"]:
        code = state["ExitCode"]
        seen = actions(lab_engine, frozen)
        if "stop" in seen or "kill" in seen or code in (137, 143):
            pytest.fail(
                f"frozen has exited (status {code}): it was stopped or killed. `dockyard stop` "
                f"ENDS a container's processes (SIGTERM, then SIGKILL after 10 s); `dockyard "
                f"pause` freezes them, and they stay alive, where they were. `dockyard start "
                f"frozen` runs its command again; then `dockyard pause frozen`.", pytrace=False)
        pytest.fail(
            f"frozen has exited (status {code}) on its own: its command `{command}` ended, and a "
            f"container lives only as long as its main process -- with -d or without. (`dockyard "
            f"run -d busybox` runs `sh`, which finds no input and exits at once.) Remove it "
            f"(`dockyard rm frozen`) and give the new one a command that prints for ever, e.g. "
            f"`dockyard run -d --name frozen busybox {TICKER}`, then `dockyard pause frozen`.",
            pytrace=False)
    stopped = [pid for pid in processes(frozen) if proc_state(pid) == "T"]
    if stopped:
        pytest.fail(
            f"frozen's processes ({', '.join(map(str, stopped))}) are stopped by a SIGNAL (state T "
            f"in /proc/PID/stat): that is SIGSTOP (`dockyard kill -s STOP`), not the freezer. A "
            f"stopped process is still visible as stopped (its parent is told, SIGCONT resumes "
            f"it); `dockyard pause` freezes the whole cgroup instead, children included, and "
            f"records it (State.Paused). Undo the signal with `dockyard kill -s CONT frozen`, "
            f"then `dockyard pause frozen`.", pytrace=False)
    again = " It was paused before, then unpaused." if "unpause" in actions(lab_engine, frozen) else ""
    pytest.fail(f"frozen is running, not paused (State.Paused is false).{again} "
                f"`dockyard pause frozen` freezes it.", pytrace=False)


def test_frozen_cgroup_is_frozen(paused):
    from engine.runtime import cgroups

    cg = cgroups.for_container(paused)
    if cg.version == "2":
        path = Path(cg.dir()) / "cgroup.events"
        want = "the line `frozen 1`"
    else:
        path = Path(cg.dir("freezer") or "/nonexistent") / "freezer.state"
        want = "FROZEN"
    require(path.exists(), (
        f"frozen is recorded as paused, but its cgroup file {path} does not exist: its processes "
        f"are gone from under Dockyard. `dockyard rm -f frozen` and make it again."))
    text = path.read_text().strip()
    frozen_now = ("frozen 1" in text.splitlines()) if cg.version == "2" else text == "FROZEN"
    require(frozen_now, (
        f"frozen is recorded as paused, but the kernel does not consider its cgroup frozen: "
        f"{path} says {text!r}, not {want}. Was it thawed by hand (writing to that file)? "
        f"`dockyard unpause frozen`, then `dockyard pause frozen`, freezes it again."))


def test_frozen_processes_do_not_run(paused):
    pids = processes(paused)
    require(pids, (
        "frozen is recorded as paused, but its cgroup holds no process: nothing is left to "
        "freeze. `dockyard rm -f frozen` and make it again."))
    before = {pid: context_switches(pid) for pid in pids}
    time.sleep(0.3)
    after = {pid: context_switches(pid) for pid in pids}
    ran = [pid for pid in pids if before[pid] is not None and before[pid] != after[pid]]
    states = ", ".join(f"{pid} {proc_state(pid) or 'gone'}" for pid in pids)
    require(not ran, (
        f"frozen is recorded as paused, but its processes {', '.join(map(str, ran))} were "
        f"scheduled during the last 0.3 s (their context-switch counters in /proc/PID/status "
        f"moved; states: {states}): they are not frozen. `dockyard unpause frozen`, then "
        f"`dockyard pause frozen`."))


def test_frozen_printed_before_it_was_paused(frozen):
    log = frozen.logs()
    require(log.strip(), (
        f"frozen's log is empty: its command `{command_line(frozen)}` prints nothing, so nothing "
        f"shows that pausing stops it. The task asks for a command that prints at least once a "
        f"second, for ever, e.g. `dockyard run -d --name frozen busybox {TICKER}` (remove this "
        f"one first: `dockyard rm -f frozen`). Let it print a line or two before you pause it; "
        f"`dockyard logs frozen` shows what it printed."))


# -- web: 进入容器, exec ----------------------------------------------------------------


def test_web_exists(lab_engine):
    require(find(lab_engine, "web") is not None, exists_hint(
        "web", lab_engine, "It is the running container you exec into."))


def test_web_is_running(web):
    state = web.attrs["State"]
    require(state["Status"] != "paused", "web is paused: `dockyard unpause web`.")
    require(state["Status"] != "created", "web was created but never started: `dockyard start web`.")
    if state["Running"]:
        return
    command = command_line(web)
    daemon = (" busybox's httpd without -f goes to the background: its main process returns at "
              "once, and the container ends with it (-f keeps it in the foreground)."
              if "httpd" in command and "-f" not in web.attrs["Args"] else "")
    pytest.fail(
        f"web has exited (status {state['ExitCode']}): its command `{command}` ended.{daemon} "
        f"`dockyard exec` needs a RUNNING container, and the checker looks for a file written "
        f"into one. Remove it (`dockyard rm web`) and give the new one a command that runs for "
        f"ever: `dockyard run -d --name web busybox sleep 3600` (or `busybox httpd -f -p 8080 -h "
        f"/tmp`), then `{GOOD_EXEC}`.", pytrace=False)


def test_hello_in_web(web, lab_engine):
    upper = Path(web.attrs["GraphDriver"]["Data"]["UpperDir"])
    path = upper / "tmp" / "hello"
    if not path.is_file():
        execs = [exec_command(e) for e in exec_starts(lab_engine, web)]
        redirected = [c for c in execs if "hello" in c and ">" not in c]
        if redirected:
            pytest.fail(
                f"web has no /tmp/hello. You exec'ed `{redirected[-1]}` in it: the `>` was not "
                f"part of that command. It was YOUR shell, on the host, that handled `> "
                f"/tmp/hello`, so the text went to the host's /tmp/hello (look: `cat /tmp/hello` "
                f"on the host) instead of the container's. Let a shell IN the container do the "
                f"redirection, inside single quotes: `{GOOD_EXEC}`.", pytrace=False)
        elsewhere = sorted("/" + str(p.relative_to(upper)) for p in upper.rglob("hello*") if p.is_file())
        if elsewhere:
            pytest.fail(
                f"web has no /tmp/hello, but its writable layer has {', '.join(elsewhere)}: the "
                f"file must be /tmp/hello exactly: `{GOOD_EXEC}`.", pytrace=False)
        if not execs:
            pytest.fail(
                f"web has no /tmp/hello, and nothing was exec'ed in it yet (`dockyard events "
                f"--since 1h --until 0s --filter container=web` shows no exec_start): "
                f"`{GOOD_EXEC}`.", pytrace=False)
        pytest.fail(
            f"web has no /tmp/hello in its writable layer ({upper}). What you exec'ed in it: "
            f"{'; '.join(f'`{c}`' for c in execs)}. `{GOOD_EXEC}` writes it.", pytrace=False)
    text = path.read_text(errors="replace")
    require(text != HELLO.rstrip("\n"), (
        f"web's /tmp/hello holds {text!r}: the final newline is missing. `echo` adds one "
        f"(`echo -n` and `printf '...'` without \\n do not): `{GOOD_EXEC}`."))
    require(text == HELLO, (
        f"web's /tmp/hello holds {text!r}, not {HELLO!r}. Write exactly that text, e.g. "
        f"`{GOOD_EXEC}` (the double quotes keep the words together for the container's echo; the "
        f"single quotes keep the whole line away from your own shell)."))


def test_hello_written_by_exec(web, hello, lab_engine):
    command = command_line(web)
    require("hello" not in command, (
        f"web's own command wrote /tmp/hello: `{command}`. The task is to write it from outside, "
        f"into the running container, with `dockyard exec` (进入容器). Make web with a command "
        f"that does not touch the file (`dockyard rm -f web; dockyard run -d --name web busybox "
        f"sleep 3600`), then `{GOOD_EXEC}`."))
    written_ns = hello.stat().st_mtime_ns
    execs = exec_starts(lab_engine, web)
    # The exec must have started before the file was last written (1 s of slack for clocks).
    before = [e for e in execs if e.get("timeNano", 0) <= written_ns + 1_000_000_000]
    require(before, (
        f"No `dockyard exec` ran in web before /tmp/hello was written "
        f"({'it has no exec_start event at all' if not execs else 'its exec_start events came later'}). "
        f"Did you write the file into web's UpperDir from the host? That is the same directory, so "
        f"it works -- but the task is to enter the running container: `{GOOD_EXEC}` (or "
        f"`dockyard exec -it web sh`, and type the echo there)."))
