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
