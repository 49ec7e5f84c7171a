"""Run the labs' checkers the way a learner does, against real engine state.

For each lab: the untouched starting point must make the checker fail with
its hint, the reference solution must make it pass, and typical mistakes
must each get the hint that explains them. Every case uses its own fresh
``DOCKYARD_ROOT`` (the solution makes busybox itself, as a learner's first
``dockyard run`` does) and removes its containers afterwards.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAB01 = REPO / "labs" / "01-first-container"
DOCKYARD = [sys.executable, "-m", "engine"]

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="labs run real containers: needs root (namespaces, mounts)")


class Lab:
    """One lab attempt on its own root: run scripts or commands, then the checker."""

    def __init__(self, labdir: Path, root: Path):
        self.labdir = labdir
        self.root = root

    def env(self) -> dict:
        env = dict(os.environ)
        env["DOCKYARD_ROOT"] = str(self.root)
        env["DOCKYARD"] = shlex.join(DOCKYARD)
        env.pop("PYTEST_ADDOPTS", None)  # the checker runs as a learner would run it
        return env

    def script(self, name: str) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(self.labdir / name)], capture_output=True, text=True,
                              env=self.env(), cwd=REPO, timeout=60)

    def dockyard(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*DOCKYARD, *args], capture_output=True, text=True,
                              env=self.env(), cwd=REPO, timeout=60)

    def check(self) -> subprocess.CompletedProcess:
        """The checker, exactly as the README says to run it."""
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", str(self.labdir), "-p", "no:cacheprovider"],
            capture_output=True, text=True, env=self.env(), cwd=REPO, timeout=120)

    def cleanup(self) -> None:
        self.dockyard("rm", "-f", "lab01")
        if (self.root / "containers").exists():
            from engine import Engine

            for container in Engine(self.root).containers.list(all=True):
                container.remove(force=True)
        if (self.root / "networks").exists():
            from engine import Engine

            Engine(self.root).networks.prune()  # user networks, and the root's idle bridges


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


@pytest.fixture
def lab01(tmp_path):
    lab = Lab(LAB01, tmp_path / "dockyard-root")
    yield lab
    lab.cleanup()
    assert not mounts_under(lab.root), f"mounts left behind: {mounts_under(lab.root)}"


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def test_lab01_layout():
    for name in ("README.md", "start.sh", "solution.sh", "test_lab01.py"):
        assert (LAB01 / name).is_file(), f"labs/01-first-container/{name} is missing"
    assert not (LAB01 / "conftest.py").exists(), "a lab must not carry a conftest.py"


@needs_root
@pytest.mark.root
def test_lab01_start_fails_with_a_hint(lab01):
    started = lab01.script("start.sh")
    assert started.returncode == 0, output(started)

    checked = lab01.check()
    text = output(checked)
    assert checked.returncode == 1, f"the checker should fail on the starting point:\n{text}"
    assert "No container named lab01 exists" in text, text
    assert "Did you use --name lab01?" in text, text
    assert "Did you use --rm" in text, text
    assert "1 failed" in text and "skipped" in text, text


@needs_root
@pytest.mark.root
def test_lab01_solution_passes(lab01):
    runs = []
    for attempt in (1, 2):  # re-runnable: the second run replaces the first container
        solved = lab01.script("solution.sh")
        assert solved.returncode == 0, f"solution.sh (run {attempt}) failed:\n{output(solved)}"
        runs.append(solved)
    # On a fresh root, the first `dockyard run` makes busybox itself, as `docker run` pulls.
    assert "Unable to find image 'busybox:latest' locally" in runs[0].stderr, output(runs[0])
    assert "Unable to find image" not in runs[1].stderr, output(runs[1])

    checked = lab01.check()
    text = output(checked)
    assert checked.returncode == 0, f"the checker should pass on the solution:\n{text}"
    assert "failed" not in text and "skipped" not in text, text

    ps = lab01.dockyard("ps", "-a", "-q")
    assert len(ps.stdout.split()) == 1, f"expected exactly one container:\n{ps.stdout}"


# Typical mistakes and the hint each one must get: (run arguments, expected hint texts).
MISTAKES = {
    "rm-flag": (["--rm", "--name", "lab01", "-h", "dockyard-lab", "-e", "GREETING=hello", "busybox",
                 "sh", "-c", 'echo "$GREETING from $(hostname)" > /greeting.txt'],
                ["No container named lab01 exists", "Did you use --rm"]),
    "no-hostname-no-env": (["--name", "lab01", "busybox",
                            "sh", "-c", 'echo "$GREETING from $(hostname)" > /greeting.txt'],
                           ["(that is the default: the short container ID)", "-h dockyard-lab",
                            "-e GREETING=hello", "The greeting is missing"]),
    # What `sh -c "echo $GREETING from $(hostname) > /greeting.txt"` becomes when the
    # *host's* shell expands it: GREETING unset there, and the host's hostname.
    "host-expansion": (["--name", "lab01", "-h", "dockyard-lab", "-e", "GREETING=hello", "busybox",
                        "sh", "-c", f"echo  from {os.uname().nodename} > /greeting.txt"],
                       ["is the *host's* name", "single quotes",
                        "instead of writing it literally"]),
    "wrong-place-and-status": (["--name", "lab01", "-h", "dockyard-lab", "-e", "GREETING=hello",
                                "busybox", "sh", "-c",
                                'echo "$GREETING from $(hostname)" > /tmp/greeting.txt; exit 3'],
                               ["exited with status 3, not 0", "You wrote /tmp/greeting.txt"]),
}


@needs_root
@pytest.mark.root
@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_lab01_mistakes_get_hints(lab01, mistake):
    args, hints = MISTAKES[mistake]
    ran = lab01.dockyard("run", *args)
    assert ran.returncode in (0, 3), output(ran)

    checked = lab01.check()
    text = output(checked)
    assert checked.returncode == 1, f"the checker should fail for {mistake}:\n{text}"
    for hint in hints:
        assert hint in text, f"{mistake}: hint {hint!r} missing from:\n{text}"


# -- lab 02: layers by hand ------------------------------------------------------

LAB02 = REPO / "labs" / "02-layers"


def lab_shell(lab: Lab, script: str) -> subprocess.CompletedProcess:
    """Run a few shell lines as a learner would type them ($DOCKYARD is the dockyard command)."""
    return subprocess.run(["sh", "-ec", script], capture_output=True, text=True,
                          env=lab.env(), cwd=REPO, timeout=120)


@pytest.fixture
def lab02(tmp_path):
    lab = Lab(LAB02, tmp_path / "dockyard-root")
    yield lab
    lab.cleanup()
    assert not mounts_under(lab.root), f"mounts left behind: {mounts_under(lab.root)}"


def test_lab02_layout():
    for name in ("README.md", "start.sh", "solution.sh", "test_lab02.py"):
        assert (LAB02 / name).is_file(), f"labs/02-layers/{name} is missing"
    assert not (LAB02 / "conftest.py").exists(), "a lab must not carry a conftest.py"


@needs_root
@pytest.mark.root
def test_lab02_start_fails_with_a_hint(lab02):
    started = lab02.script("start.sh")
    assert started.returncode == 0, output(started)

    checked = lab02.check()
    text = output(checked)
    assert checked.returncode == 1, f"the checker should fail on the starting point:\n{text}"
    assert "No image named lab02/app:v2 exists" in text, text
    assert "dockyard commit CONTAINER lab02/app:v2" in text, text
    assert "1 failed" in text and "skipped" in text, text


@needs_root
@pytest.mark.root
def test_lab02_solution_passes(lab02):
    for attempt in (1, 2):  # re-runnable: the second run replaces what the first made
        solved = lab02.script("solution.sh")
        assert solved.returncode == 0, f"solution.sh (run {attempt}) failed:\n{output(solved)}"

    checked = lab02.check()
    text = output(checked)
    assert checked.returncode == 0, f"the checker should pass on the solution:\n{text}"
    assert "failed" not in text and "skipped" not in text, text

    # What is left: busybox, lab02/app:v2 and its untagged parent (intermediate, not dangling).
    assert len(lab02.dockyard("images", "-q").stdout.split()) == 2
    assert len(lab02.dockyard("images", "-a", "-q").stdout.split()) == 3
    assert lab02.dockyard("images", "-q", "-f", "dangling=true").stdout.split() == []
    assert lab02.dockyard("ps", "-a", "-q").stdout.split() == []
    history = lab02.dockyard("history", "-q", "lab02/app:v2").stdout.split()
    assert len(history) == 4 and history.count("<missing>") == 1, history  # 2 new + busybox's 2


# The first layer of a correct attempt, and a correct second container: the mistakes vary the rest.
ADD = """$DOCKYARD run --name lab02-add busybox sh -c 'mkdir -p /app && head -c 1048576 /dev/urandom > /app/data.bin'
$DOCKYARD commit lab02-add lab02/app:v1
"""
DELETE = """$DOCKYARD run --name lab02-del lab02/app:v1 sh -c 'rm /app/data.bin && echo hello > /app/README'
"""
CHANGES = """-c 'CMD ["cat", "/app/README"]' -c 'LABEL course=dockyard'"""

# Typical mistakes and the hints each one must get: (shell lines, expected hint texts).
MISTAKES02 = {
    # Add and delete in one container: one layer, and the file never reaches it.
    "one-container": (
        """$DOCKYARD run --name lab02-all busybox sh -c 'mkdir /app && head -c 1048576 /dev/urandom > /app/data.bin && rm /app/data.bin && echo hello > /app/README'
$DOCKYARD commit """ + CHANGES + " lab02-all lab02/app:v2\n",
        ["has only 1 new layer above busybox's, not 2", "run a SECOND container from that new image",
         "did you create and delete data.bin in the SAME container?"]),
    # Forgot -c: the image keeps the container's command, and has no label.
    "no-changes": (
        ADD + DELETE + "$DOCKYARD commit lab02-del lab02/app:v2\n",
        ["A commit keeps the container's own configuration",
         """-c 'CMD ["cat", "/app/README"]'""", "-c 'LABEL course=dockyard'"]),
    # Committed twice to the same tag: the first v2 is left dangling.
    "committed-twice": (
        ADD + DELETE + "$DOCKYARD commit lab02-del lab02/app:v2\n"
        + "$DOCKYARD commit " + CHANGES + " lab02-del lab02/app:v2\n",
        ["1 dangling image(s)", "dockyard images -f dangling=true", "dockyard image prune"]),
    # rm -rf /app && mkdir /app: an opaque directory instead of a whiteout for data.bin.
    "opaque-dir": (
        ADD + """$DOCKYARD run --name lab02-del lab02/app:v1 sh -c 'rm -rf /app && mkdir /app && echo hello > /app/README'
$DOCKYARD commit """ + CHANGES + " lab02-del lab02/app:v2\n",
        ["marks /app *opaque*", "Delete only the file: `rm /app/data.bin`"]),
    # CMD in shell form.
    "shell-form-cmd": (
        ADD + DELETE + "$DOCKYARD commit -c 'CMD cat /app/README' -c 'LABEL course=dockyard' "
        "lab02-del lab02/app:v2\n",
        ["is the *shell form*", "Use the JSON (exec) form"]),
}


@needs_root
@pytest.mark.root
@pytest.mark.parametrize("mistake", list(MISTAKES02))
def test_lab02_mistakes_get_hints(lab02, mistake):
    script, hints = MISTAKES02[mistake]
    ran = lab_shell(lab02, script)
    assert ran.returncode == 0, output(ran)

    checked = lab02.check()
    text = output(checked)
    assert checked.returncode == 1, f"the checker should fail for {mistake}:\n{text}"
    for hint in hints:
        assert hint in text, f"{mistake}: hint {hint!r} missing from:\n{text}"


# -- lab 03: processes, cgroups and exec -------------------------------------------

LAB03 = REPO / "labs" / "03-processes"


def lab03_leftovers(root: Path) -> tuple[list[int], list[str]]:
    """Monitors of ``root`` still alive, and cgroups of its containers still there."""
    from support import cgroup_leftovers, created_containers, processes_mentioning

    return processes_mentioning(str(root)), sorted(set(cgroup_leftovers()) & created_containers(root))


@pytest.fixture
def lab03(tmp_path):
    lab = Lab(LAB03, tmp_path / "dockyard-root")
    yield lab
    lab.cleanup()  # rm -f every container: running, paused, SIGSTOPped or exited
    deadline = time.monotonic() + 5
    while (left := lab03_leftovers(lab.root)) != ([], []) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == ([], []), f"left behind (monitors, cgroups): {left}"
    assert not mounts_under(lab.root), f"mounts left behind: {mounts_under(lab.root)}"


def test_lab03_layout():
    for name in ("README.md", "start.sh", "solution.sh", "test_lab03.py"):
        assert (LAB03 / name).is_file(), f"labs/03-processes/{name} is missing"
    assert not (LAB03 / "conftest.py").exists(), "a lab must not carry a conftest.py"


@needs_root
@pytest.mark.root
def test_lab03_start_fails_with_a_hint(lab03):
    started = lab03.script("start.sh")
    assert started.returncode == 0, output(started)

    checked = lab03.check()
    text = output(checked)
    assert checked.returncode == 1, f"the checker should fail on the starting point:\n{text}"
    for name in ("mem64", "frozen", "web"):
        assert f"No container named {name} exists" in text, text
    assert "Do not use --rm" in text, text
    assert "3 failed" in text and "skipped" in text, text


@needs_root
@pytest.mark.root
def test_lab03_solution_passes(lab03):
    for attempt in (1, 2):  # re-runnable: the second run replaces what the first made
        solved = lab03.script("solution.sh")
        assert solved.returncode == 0, f"solution.sh (run {attempt}) failed:\n{output(solved)}"
        assert "OOMKilled=true ExitCode=137" in solved.stdout, output(solved)
        assert "hello from exec" in solved.stdout, output(solved)

    checked = lab03.check()
    text = output(checked)
    assert checked.returncode == 0, f"the checker should pass on the solution:\n{text}"
    assert "failed" not in text and "skipped" not in text, text

    ps = lab03.dockyard("ps", "-a", "--format", "{{.Names}} {{.Status}}")
    states = dict(line.split(" ", 1) for line in ps.stdout.splitlines())
    assert set(states) == {"mem64", "frozen", "web"}, ps.stdout
    assert states["mem64"].startswith("Exited (137)") and states["frozen"].endswith("(Paused)"), states


# Typical mistakes and the hints each one must get: (shell lines, expected hint texts).
# $LAB_TMP is a scratch directory on the host (the host-redirection mistake writes there).
TICKER03 = """sh -c 'i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.2; done'"""
MEM64 = "$DOCKYARD run -d --name mem64 -m 64m --memory-swap 64m busybox"
SLEEPY_WEB = "$DOCKYARD run -d --name web busybox sleep 3600\n"
MISTAKES03 = {
    # -- mem64
    "mem64-no-limit": (
        "$DOCKYARD run --name mem64 busybox true\n",
        ["mem64 has no memory limit", "-m 64m"]),
    "mem64-default-swap": (
        "$DOCKYARD run -d --name mem64 -m 64m busybox tail /dev/zero\n$DOCKYARD wait mem64\n",
        ["mem64 may swap", "--memory-swap is memory PLUS swap", "-m 64m --memory-swap 64m"]),
    "mem64-streams": (
        MEM64 + " sh -c 'head -c 100m /dev/zero > /dev/null'\n$DOCKYARD wait mem64\n",
        ["exited with status 0 and was not OOM-killed", "never held more than 64 MiB at once",
         "tail /dev/zero"]),
    "mem64-killed-by-hand": (
        MEM64 + " sleep 3600\n$DOCKYARD kill mem64\n$DOCKYARD wait mem64\n",
        ["killed by SIGKILL), but State.OOMKilled is false", "`dockyard kill`"]),
    "mem64-shell-survives": (
        MEM64 + " sh -c 'tail /dev/zero; echo survived'\n$DOCKYARD wait mem64\n",
        ["The OOM killer did kill a process of mem64", "exited with status 0, not 137",
         "main process"]),
    # -- frozen
    "frozen-stopped": (
        f"$DOCKYARD run -d --name frozen busybox {TICKER03}\n$DOCKYARD stop -t 0 frozen\n",
        ["frozen has exited (status 137): it was stopped or killed", "ENDS a container's processes",
         "`dockyard start frozen`"]),
    "frozen-sigstop": (
        f"$DOCKYARD run -d --name frozen busybox {TICKER03}\n$DOCKYARD kill -s STOP frozen\n",
        ["are stopped by a SIGNAL (state T", "`dockyard kill -s CONT frozen`"]),
    "frozen-sh-exits": (
        "$DOCKYARD run -d --name frozen busybox\nsleep 0.3\n$DOCKYARD pause frozen || true\n",
        ["frozen has exited (status 0) on its own", "finds no input and exits at once"]),
    "frozen-unpaused": (
        f"$DOCKYARD run -d --name frozen busybox {TICKER03}\n$DOCKYARD pause frozen\n"
        "$DOCKYARD unpause frozen\n",
        ["frozen is running, not paused", "It was paused before, then unpaused."]),
    "frozen-silent": (
        "$DOCKYARD run -d --name frozen busybox sleep 3600\n$DOCKYARD pause frozen\n",
        ["frozen's log is empty"]),
    # -- web
    "web-host-redirect": (
        SLEEPY_WEB + '$DOCKYARD exec web echo hello from exec > "$LAB_TMP/hello"\n',
        ["You exec'ed `echo hello from exec` in it", "YOUR shell, on the host"]),
    "web-by-command": (
        """$DOCKYARD run -d --name web busybox sh -c 'echo "hello from exec" > /tmp/hello; exec sleep 3600'\n""",
        ["web's own command wrote /tmp/hello"]),
    "web-exited": (
        """$DOCKYARD run --name web busybox sh -c 'echo "hello from exec" > /tmp/hello'\n""",
        ["web has exited (status 0)", "needs a RUNNING container"]),
    "web-httpd-background": (
        "$DOCKYARD run -d --name web busybox httpd -p 8080 -h /tmp\nsleep 0.3\n",
        ["httpd without -f goes to the background"]),
    "web-wrong-path": (
        SLEEPY_WEB + """$DOCKYARD exec web sh -c 'echo "hello from exec" > /hello'\n""",
        ["web has no /tmp/hello, but its writable layer has /hello"]),
    "web-no-newline": (
        SLEEPY_WEB + """$DOCKYARD exec web sh -c 'echo -n "hello from exec" > /tmp/hello'\n""",
        ["the final newline is missing"]),
    "web-from-host": (
        SLEEPY_WEB + """upper=$($DOCKYARD inspect -f '{{.GraphDriver.Data.UpperDir}}' web)
mkdir -p "$upper/tmp" && echo "hello from exec" > "$upper/tmp/hello"\n""",
        ["No `dockyard exec` ran in web before /tmp/hello was written", "UpperDir from the host"]),
}


@needs_root
@pytest.mark.root
@pytest.mark.parametrize("mistake", list(MISTAKES03))
def test_lab03_mistakes_get_hints(lab03, mistake, tmp_path):
    script, hints = MISTAKES03[mistake]
    ran = lab_shell(lab03, f"LAB_TMP={shlex.quote(str(tmp_path))}\n" + script)
    assert ran.returncode == 0, output(ran)

    checked = lab03.check()
    text = output(checked)
    assert checked.returncode == 1, f"the checker should fail for {mistake}:\n{text}"
    for hint in hints:
        assert hint in text, f"{mistake}: hint {hint!r} missing from:\n{text}"


# -- lab 04: a Dockerfile -----------------------------------------------------------

LAB04 = REPO / "labs" / "04-build"


class Lab04(Lab):
    """Lab 04 on a copy of labs/04-build/app, the learner's build context ($LAB04_CONTEXT):
    start.sh, solution.sh and the checker all use it, so the repository stays untouched."""

    def __init__(self, labdir: Path, root: Path, context: Path):
        super().__init__(labdir, root)
        self.context = context

    def env(self) -> dict:
        env = super().env()
        env["LAB04_CONTEXT"] = str(self.context)
        return env


@pytest.fixture
def lab04(tmp_path):
    import shutil

    context = tmp_path / "app"
    shutil.copytree(LAB04 / "app", context, symlinks=True)
    lab = Lab04(LAB04, tmp_path / "dockyard-root", context)
    yield lab
    # The checker runs containers (the app, its health check): it must remove them itself.
    containers = lab.dockyard("ps", "-a", "-q").stdout.split() if lab.root.exists() else []
    lab.cleanup()
    deadline = time.monotonic() + 5
    while (left := lab03_leftovers(lab.root)) != ([], []) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not containers, f"containers left behind: {containers}"
    assert left == ([], []), f"left behind (monitors, cgroups): {left}"
    assert not mounts_under(lab.root), f"mounts left behind: {mounts_under(lab.root)}"


def test_lab04_layout():
    for name in ("README.md", "start.sh", "solution.sh", "test_lab04.py", "app/Dockerfile",
                 "app/requirements.txt", "app/install-deps.sh", "app/build.sh", "app/src/app.sh",
                 "app/src/www/style.css", "app/config/app.conf", "app/secrets/api-token"):
        assert (LAB04 / name).is_file(), f"labs/04-build/{name} is missing"
    assert not (LAB04 / "conftest.py").exists(), "a lab must not carry a conftest.py"
    # The starting point is the notes' kind of Dockerfile, and there is no .dockerignore yet.
    assert "MAINTAINER" in (LAB04 / "app" / "Dockerfile").read_text()
    assert not (LAB04 / "app" / ".dockerignore").exists()


@needs_root
@pytest.mark.root
def test_lab04_start_fails_with_a_hint(lab04):
    started = lab04.script("start.sh")
    assert started.returncode == 0, output(started)
    assert "Successfully tagged lab04/app:1" in started.stdout, output(started)

    checked = lab04.check()
    text = output(checked)
    assert checked.returncode == 1, f"the checker should fail on the starting point:\n{text}"
    for hint in ("lab04/app:1 is not a multi-stage build", "It ships the build's inputs",
                 "runs as root", "The ENTRYPOINT is in *shell form*",
                 "MAINTAINER is deprecated", "There is no", "Create .dockerignore",
                 "The secret is in a layer of lab04/app:1: /app/secrets",
                 "the slow dependency step `RUN sh install-deps.sh && sh build.sh` ran again",
                 "RUN: parent changed", "COPY .: content changed (src/app.sh)"):
        assert hint in text, f"hint {hint!r} missing from:\n{text}"
    assert "10 failed" in text and "skipped" in text, text


@needs_root
@pytest.mark.root
def test_lab04_solution_passes(lab04):
    mine = (lab04.context / "Dockerfile").read_text()
    for attempt in (1, 2):  # re-runnable: the second run is all cached
        solved = lab04.script("solution.sh")
        assert solved.returncode == 0, f"solution.sh (run {attempt}) failed:\n{output(solved)}"
    assert "miss" not in solved.stdout and "Successfully tagged lab04/app:1" in solved.stdout, \
        output(solved)
    # The learner's own Dockerfile is kept, not overwritten.
    assert (lab04.context / "Dockerfile.mine").read_text() == mine

    images = lab04.dockyard("images", "-a", "-q", "--no-trunc").stdout.split()
    checked = lab04.check()
    text = output(checked)
    assert checked.returncode == 0, f"the checker should pass on the solution:\n{text}"
    assert "failed" not in text and "skipped" not in text, text
    # What the checker built and ran is gone again.
    assert lab04.dockyard("images", "-a", "-q", "--no-trunc").stdout.split() == images
    assert lab04.dockyard("ps", "-a", "-q").stdout.split() == []

    ran = lab04.dockyard("run", "--rm", "lab04/app:1", "--once")
    assert ran.returncode == 0, output(ran)
    assert "written as user nobody; serving on port 8080" in ran.stdout, output(ran)
    history = lab04.dockyard("history", "lab04/app:1").stdout
    assert "COPY --from=build" in history and "USER nobody" in history, history


# Typical mistakes, each made on top of the reference solution: (edits of files of the
# build context as (file, old, new) -- new None deletes the file --, whether the edits
# come after the build (a Dockerfile changed but not rebuilt), expected hint texts).
RUNTIME_COPY = "COPY --from=build --chown=nobody:nogroup /build/dist/ ./"
MISTAKES04 = {
    "root-user": (
        [("Dockerfile", "USER nobody\n", "")], False,
        ["lab04/app:1 runs as root (its User is not set)", "add `USER nobody`"]),
    "no-chown": (
        [("Dockerfile", "--chown=nobody:nogroup ", "")], False,
        ["Files of the app belong to another user than the one it runs as (uid 65534)",
         "/app/www (uid 0)", "`COPY --chown=nobody:nogroup ...`", "Permission denied",
         "The app cannot write its page"]),
    "shell-form-entrypoint": (
        [("Dockerfile", 'ENTRYPOINT ["sh", "/app/app.sh"]', "ENTRYPOINT sh /app/app.sh")], False,
        ["The ENTRYPOINT is in *shell form*: it became "
         '["/bin/sh", "-c", "sh /app/app.sh"]', "never reach app.sh"]),
    # The notes' way: the whole command as one shell-form line.
    "shell-form-cmd": (
        [("Dockerfile", 'ENTRYPOINT ["sh", "/app/app.sh"]\nCMD ["--port", "8080"]',
          "CMD sh /app/app.sh --port 8080")], False,
        ["The CMD is in *shell form*: it became "
         '["/bin/sh", "-c", "sh /app/app.sh --port 8080"]',
         '`CMD ["--port", "8080"]` -- then `dockyard run lab04/app:1 --once` replaces just',
         "The image's Entrypoint is null"]),
    # The whole command in CMD: `run lab04/app:1 --once` would replace all of it.
    "no-entrypoint": (
        [("Dockerfile", 'ENTRYPOINT ["sh", "/app/app.sh"]\nCMD ["--port", "8080"]',
          'CMD ["sh", "/app/app.sh", "--port", "8080"]')], False,
        ["The image's Entrypoint is null", "its default arguments go in CMD",
         'The image\'s Cmd is ["sh", "/app/app.sh", "--port", "8080"]']),
    "maintainer": (
        [("Dockerfile", 'LABEL maintainer="Lab 04 <lab04@example.com>" \\\n     ',
          "MAINTAINER Lab 04 <lab04@example.com>\nLABEL")], False,
        ["The image has no label maintainer", "The image has an Author (Lab 04 <lab04@example.com>)",
         "MAINTAINER is deprecated"]),
    "no-dockerignore": (
        [(".dockerignore", "", None)], False,
        ["There is no", "secrets/api-token included", "with the line `secrets/`"]),
    "dockerignore-typo": (
        [(".dockerignore", "secrets/\n", "secret/\n")], False,
        ["does not keep secrets/api-token out of the build context"]),
    "cache-unfriendly": (
        [("Dockerfile", "COPY requirements.txt install-deps.sh ./\n", "COPY . .\n"),
         ("Dockerfile", "COPY build.sh ./\nCOPY src/ src/\n", "")], False,
        ["the slow dependency step `RUN sh install-deps.sh` ran again (the cache said: "
         "RUN: parent changed)", "The first step that missed was `COPY . .` "
         "(COPY .: content changed (src/app.sh))", "COPY only requirements.txt and install-deps.sh"]),
    "wrong-workdir": (
        [("Dockerfile", "WORKDIR /app\n", "WORKDIR /srv/app\n"),
         ("Dockerfile", '"/app/app.sh"', '"/srv/app/app.sh"')], False,
        ["The image's WorkingDir is /srv/app, not /app", "set `WORKDIR /app`"]),
    "expose-80": (
        [("Dockerfile", "EXPOSE 8080", "EXPOSE 80")], False,
        ["The image exposes 80/tcp, not 8080/tcp"]),
    "no-healthcheck": (
        [("Dockerfile", "HEALTHCHECK --interval=10s --timeout=3s CMD wget -q -O /dev/null "
                        "http://127.0.0.1:8080/ || exit 1\n", "")], False,
        ["The image has no HEALTHCHECK"]),
    "healthcheck-wrong-port": (
        [("Dockerfile", "http://127.0.0.1:8080/", "http://127.0.0.1:80/")], False,
        ["fails against the running app", "It must ask the app's own port, 8080"]),
    "ships-the-build": (
        [("Dockerfile", RUNTIME_COPY, RUNTIME_COPY.replace("/build/dist/", "/build/"))], False,
        ["lab04/app:1 ships files of the build", "/app/install-deps.sh", "/app/src/app.sh",
         "exited with status 2"]),
    "not-rebuilt": (
        [("Dockerfile", "EXPOSE 8080\n", "EXPOSE 8080 9090\n")], True,
        ["lab04/app:1 is not what", "The first step that differs", "EXPOSE map[8080/tcp:{}]",
         "Build again with `sh labs/04-build/start.sh`"]),
}


@needs_root
@pytest.mark.root
@pytest.mark.parametrize("mistake", list(MISTAKES04))
def test_lab04_mistakes_get_hints(lab04, mistake):
    edits, after_build, hints = MISTAKES04[mistake]
    solved = lab04.script("solution.sh")
    assert solved.returncode == 0, output(solved)
    for name, old, new in edits:
        path = lab04.context / name
        if new is None:
            path.unlink()
            continue
        text = path.read_text()
        assert old in text, f"{mistake}: {old!r} is not in the reference {name}"
        path.write_text(text.replace(old, new))
    if not after_build:
        built = lab04.script("start.sh")
        assert built.returncode == 0, output(built)

    checked = lab04.check()
    text = output(checked)
    assert checked.returncode == 1, f"the checker should fail for {mistake}:\n{text}"
    for hint in hints:
        assert hint in text, f"{mistake}: hint {hint!r} missing from:\n{text}"


# -- lab 05: networks, names and published ports ------------------------------------

LAB05 = REPO / "labs" / "05-network"


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port: int) -> bool:
    """Does anything accept a TCP connection on 127.0.0.1:port?"""
    import socket

    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Lab05(Lab):
    """Lab 05 with host ports of its own: $LAB05_PORT (what start.sh, solution.sh and the
    checker use) and $OTHER_PORT (for a mistake: publishing on the wrong one), both free."""

    def __init__(self, labdir: Path, root: Path):
        super().__init__(labdir, root)
        self.port, self.other_port = free_port(), free_port()

    def env(self) -> dict:
        env = super().env()
        env["LAB05_PORT"] = str(self.port)
        env["OTHER_PORT"] = str(self.other_port)
        return env

    def bridges(self) -> set[str]:
        """The bridge devices this root's networks name (its default bridge included)."""
        import json

        from engine.network.config import root_defaults

        names = {root_defaults(self.root)["bridge"]}
        for path in (self.root / "networks").glob("*.json"):
            options = json.loads(path.read_text()).get("Options") or {}
            if options.get("com.docker.network.bridge.name"):
                names.add(options["com.docker.network.bridge.name"])
        return names


@pytest.fixture
def lab05(tmp_path):
    lab = Lab05(LAB05, tmp_path / "dockyard-root")
    yield lab
    bridges = lab.bridges() if lab.root.exists() else set()
    lab.cleanup()
    if lab.root.exists():  # appnet, and the bridges no container uses any more
        pruned = lab.dockyard("network", "prune", "-f")
        assert pruned.returncode == 0, output(pruned)
    deadline = time.monotonic() + 5
    while (left := lab03_leftovers(lab.root)) != ([], []) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == ([], []), f"left behind (monitors, cgroups): {left}"
    assert not mounts_under(lab.root), f"mounts left behind (namespaces?): {mounts_under(lab.root)}"
    leaked = sorted(name for name in bridges if os.path.exists(f"/sys/class/net/{name}"))
    assert not leaked, f"bridges left behind: {leaked}"
    assert not answers(lab.port), f"127.0.0.1:{lab.port} still answers: a port proxy left behind"
    from support import processes_mentioning
    assert not processes_mentioning(f"127.0.0.1:{lab.port}:"), "a port proxy left behind"


def test_lab05_layout():
    for name in ("README.md", "start.sh", "solution.sh", "test_lab05.py"):
        assert (LAB05 / name).is_file(), f"labs/05-network/{name} is missing"
    assert not (LAB05 / "conftest.py").exists(), "a lab must not carry a conftest.py"
    # The starting point is the notes' way: --link on the default bridge, -p HOST:CONTAINER.
    start = (LAB05 / "start.sh").read_text()
    assert "--link db:db" in start and "--network" not in start


@needs_root
@pytest.mark.root
def test_lab05_start_fails_with_a_hint(lab05):
    started = lab05.script("start.sh")
    assert started.returncode == 0, output(started)

    checked = lab05.check()
    text = output(checked)
    assert checked.returncode == 1, f"the checker should fail on the starting point:\n{text}"
    for hint in ("No network named appnet exists", "`dockyard network create appnet`",
                 "db is on the default network, bridge, not on appnet",
                 "web is on the default network, bridge, not on appnet",
                 "On the default bridge containers get no names",
                 "web uses --link (db:db)", "one-way",
                 "web's port 80 is published on every address of the host",
                 "db cannot resolve the name `www`",
                 "web has a --link to db (db:db): that gives web a name for db, and db nothing"):
        assert hint in text, f"hint {hint!r} missing from:\n{text}"
    assert "6 failed" in text and "skipped" in text, text


@needs_root
@pytest.mark.root
def test_lab05_solution_passes(lab05):
    for attempt in (1, 2):  # re-runnable: the second run replaces what the first made
        solved = lab05.script("solution.sh")
        assert solved.returncode == 0, f"solution.sh (run {attempt}) failed:\n{output(solved)}"
        assert "db: ok" in solved.stdout and "hello from web" in solved.stdout, output(solved)
        assert f"80/tcp -> 127.0.0.1:{lab05.port}" in solved.stdout, output(solved)

    checked = lab05.check()
    text = output(checked)
    assert checked.returncode == 0, f"the checker should pass on the solution:\n{text}"
    assert "failed" not in text and "skipped" not in text, text
    # The checker started and removed nothing: the same two containers, both running.
    ps = lab05.dockyard("ps", "-a", "--format", "{{.Names}} {{.Status}}")
    states = dict(line.split(" ", 1) for line in ps.stdout.splitlines())
    assert set(states) == {"db", "web"} and all(s.startswith("Up") for s in states.values()), states
    networks = lab05.dockyard("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert sorted(networks) == ["appnet", "bridge", "host", "none"], networks


# Typical mistakes and the hints each one must get: (shell lines, expected hint texts).
# $PORT is the lab's host port, $OTHER_PORT another free one; "{port}"/"{other}" in the
# hints stand for them.
NET05 = "$DOCKYARD network create appnet\n"
DB05 = '$DOCKYARD run -d --name db --network appnet busybox nc -ll -p 5432 -e echo "db: ok"\n'
PAGE05 = """'mkdir -p /www && echo "hello from web" > /www/index.html && exec httpd -f -p 80 -h /www'"""


def web05(flags: str, script: str = PAGE05) -> str:
    return f"$DOCKYARD run -d --name web {flags} busybox sh -c {script}\n"


ON_APPNET = "--network appnet --network-alias www"
MISTAKES05 = {
    # Both on the default bridge (the network made, then forgotten): no names at all.
    "default-bridge": (
        NET05 + '$DOCKYARD run -d --name db busybox nc -ll -p 5432 -e echo "db: ok"\n'
        + web05("-p 127.0.0.1:$PORT:80"),
        ["db is on the default network, bridge, not on appnet", "web cannot resolve the name `db`",
         "(`bad address 'db'`)", "`dockyard network connect appnet web`"]),
    "network-misnamed": (
        "$DOCKYARD network create app-net\n"
        + '$DOCKYARD run -d --name db --network app-net busybox nc -ll -p 5432 -e echo "db: ok"\n'
        + web05("--network app-net --network-alias www -p 127.0.0.1:$PORT:80"),
        ["No network named appnet exists", "app-net is not appnet", "db is on app-net, not on appnet"]),
    "no-publish": (
        NET05 + DB05 + web05(ON_APPNET),
        ["web publishes no port", "-p 127.0.0.1:{port}:80",
         "Nothing answers at http://127.0.0.1:{port}/ (connection refused)"]),
    "expose-only": (
        NET05 + DB05 + web05(ON_APPNET + " --expose 80"),
        ["web exposes 80/tcp but publishes nothing", "这里只是声明"]),
    "wrong-host-port": (
        NET05 + DB05 + web05(ON_APPNET + " -p 127.0.0.1:$OTHER_PORT:80"),
        ["on host port {other}, not {port}", "the host port is the middle part"]),
    "wrong-container-port": (
        NET05 + DB05 + web05(ON_APPNET + " -p 127.0.0.1:$PORT:8080"),
        ["but not its port 80/tcp, where httpd listens", "the RIGHT side the container's",
         "accepted the connection, then closed it without an answer"]),
    "all-addresses": (
        NET05 + DB05 + web05(ON_APPNET + " -p $PORT:80"),
        ["web's port 80 is published on every address of the host (0.0.0.0:{port}->80/tcp)",
         "publish on the loopback only"]),
    # The notes' way, with the network made but not used.
    "link-instead": (
        NET05 + '$DOCKYARD run -d --name db busybox nc -ll -p 5432 -e echo "db: ok"\n'
        + web05("--link db:db -p 127.0.0.1:$PORT:80"),
        ["web uses --link (db:db)", "one-way", "db cannot resolve the name `www`",
         "web has a --link to db (db:db)"]),
    "no-alias": (
        NET05 + DB05 + web05("--network appnet -p 127.0.0.1:$PORT:80"),
        ["web has no alias www on appnet", "db cannot resolve the name `www`",
         "web has no alias www on appnet: `--network-alias www`"]),
    "alias-on-db": (
        NET05 + '$DOCKYARD run -d --name db --network appnet --network-alias www busybox '
        'nc -ll -p 5432 -e echo "db: ok"\n' + web05("--network appnet -p 127.0.0.1:$PORT:80"),
        ["The alias www is db's, not web's", "`www` resolves to"]),
    "db-elsewhere": (
        NET05 + '$DOCKYARD run -d --name db busybox nc -ll -p 5432 -e echo "db: ok"\n'
        + web05(ON_APPNET + " -p 127.0.0.1:$PORT:80"),
        ["web cannot resolve the name `db`", "db is not on appnet, so web gets no line for it",
         "db is on the default network, bridge, not on appnet"]),
    "httpd-background": (
        NET05 + DB05 + web05(ON_APPNET + " -p 127.0.0.1:$PORT:80", PAGE05.replace("httpd -f", "httpd"))
        + "sleep 0.3\n",
        ["web has exited (status 0)", "httpd without -f goes to the background"]),
    "no-page": (
        NET05 + DB05 + web05(ON_APPNET + " -p 127.0.0.1:$PORT:80",
                             "'mkdir -p /www && exec httpd -f -p 80 -h /www'"),
        ["web answered `404 Not Found`", "web answered 404 Not Found: there is no /www/index.html"]),
    "wrong-page": (
        NET05 + DB05 + web05(ON_APPNET + " -p 127.0.0.1:$PORT:80", PAGE05.replace("hello from web", "hi")),
        ["says 'hi', not 'hello from web': web writes its page with", "did not get the page"]),
    "nc-one-shot": (
        NET05 + '$DOCKYARD run -d --name db --network appnet busybox nc -l -p 5432 -e echo "db: ok"\n'
        + web05(ON_APPNET + " -p 127.0.0.1:$PORT:80"),
        ["got `db: ok` once, but not a second time", "`nc -l` (one l) serves ONE connection"]),
    "internal-network": (
        "$DOCKYARD network create --internal appnet\n" + DB05 + web05(ON_APPNET + " -p 127.0.0.1:$PORT:80"),
        ["appnet was created with --internal", "an --internal network",
         "the checker does not even try"]),
}


@needs_root
@pytest.mark.root
@pytest.mark.parametrize("mistake", list(MISTAKES05))
def test_lab05_mistakes_get_hints(lab05, mistake):
    script, hints = MISTAKES05[mistake]
    ran = lab_shell(lab05, script.replace("$PORT", str(lab05.port))
                    .replace("$OTHER_PORT", str(lab05.other_port)))
    assert ran.returncode == 0, output(ran)

    checked = lab05.check()
    text = output(checked)
    assert checked.returncode == 1, f"the checker should fail for {mistake}:\n{text}"
    for hint in hints:
        hint = hint.format(port=lab05.port, other=lab05.other_port)
        assert hint in text, f"{mistake}: hint {hint!r} missing from:\n{text}"
