"""Checker for lab 01, "Your first container".

Run it after your own attempt (see README.md)::

    pytest labs/01-first-container

It reads the real state of your Dockyard root ($DOCKYARD_ROOT, or
/var/lib/dockyard) through the ``lab_engine`` fixture of Dockyard's pytest
plugin, and says what is still wrong. Each test checks one thing; when the
container itself is missing, the others are skipped until it exists.
"""

from __future__ import annotations

import os
import shlex
import socket
from pathlib import Path

import pytest

NAME = "lab01"
HOSTNAME = "dockyard-lab"
VARIABLE = "GREETING=hello"
FILENAME = "greeting.txt"
EXPECTED = "hello from dockyard-lab\n"


def find_lab01(engine):
    from engine.errors import NotFound

    try:
        return engine.containers.get(NAME)
    except NotFound:
        return None


@pytest.fixture
def lab01(lab_engine):
    """The learner's container ``lab01``; the test is skipped while it does not exist."""
    container = find_lab01(lab_engine)
    if container is None:
        pytest.skip(f"there is no container named {NAME} yet (see test_container_exists)")
    return container


def require(condition, hint: str) -> None:
    """Fail with just the hint: the learner needs what to do, not the checker's code."""
    if not condition:
        pytest.fail(hint, pytrace=False)


def upper_dir(container) -> Path:
    return Path(container.attrs["GraphDriver"]["Data"]["UpperDir"])


def lower_dirs(container) -> list[Path]:
    lower = container.attrs["GraphDriver"]["Data"].get("LowerDir") or ""
    return [Path(p) for p in lower.split(":") if p]


def command_line(container) -> str:
    return shlex.join([container.attrs["Path"], *container.attrs["Args"]])


# -- the checks, in the order you will meet them ---------------------------------


def test_container_exists(lab_engine):
    container = find_lab01(lab_engine)
    require(container is not None, (
        f"No container named {NAME} exists in the Dockyard root {lab_engine.root}. "
        f"Did you use --name {NAME}? Did you use --rm (the container must remain after it "
        f"exits, so do not use --rm)? If you ran dockyard with another root (DOCKYARD_ROOT or "
        f"--root), run this checker with the same DOCKYARD_ROOT. "
        f"(`dockyard ps -a` lists the containers that exist.)"
    ))


def test_made_from_busybox(lab01, lab_engine):
    busybox = lab_engine.images.get("busybox")
    require(lab01.attrs["Image"] == busybox.id, (
        f"{NAME} was made from the image {lab01.attrs['Config']['Image']!r}, not busybox. "
        f"Put the image name right after the options: dockyard run [OPTIONS] busybox COMMAND..."
    ))


def test_exited_with_status_0(lab01):
    state = lab01.attrs["State"]
    if state["Status"] == "created":
        pytest.fail(
            f"{NAME} never ran its command: {state['Error'] or 'it was created but not started'} "
            f"(exit code {state['ExitCode']}). Check the command after the image name; "
            f"remove the container with `dockyard rm {NAME}` and try again.", pytrace=False)
    require(state["Status"] == "exited", (
        f"{NAME} is {state['Status']}, not exited. Its command must finish by itself "
        f"(write the file, then end)."))
    require(state["ExitCode"] == 0, (
        f"{NAME} exited with status {state['ExitCode']}, not 0: its command `{command_line(lab01)}` "
        f"failed. Try the same command with --rm (and without --name) to see its error message, "
        f"then `dockyard rm {NAME}` and run it again."))


def test_hostname(lab01):
    hostname = lab01.attrs["Config"]["Hostname"]
    default = " (that is the default: the short container ID)" if hostname == lab01.short_id else ""
    require(hostname == HOSTNAME, (
        f"{NAME}'s hostname is {hostname!r}{default}, not {HOSTNAME!r}. "
        f"Give it one with -h {HOSTNAME} (or --hostname {HOSTNAME}); "
        f"then `dockyard rm {NAME}` and run it again."))


def test_environment_variable(lab01):
    env = lab01.attrs["Config"]["Env"]
    require(VARIABLE in env, (
        f"{VARIABLE} is not in {NAME}'s environment {env}. "
        f"Set it with -e {VARIABLE} (before the image name); "
        f"then `dockyard rm {NAME}` and run it again."))


def test_greeting_file_in_the_container_layer(lab01):
    upper = upper_dir(lab01)
    path = upper / FILENAME
    if not path.is_file():
        written = sorted("/" + str(p.relative_to(upper)) for p in upper.rglob("*") if p.is_file())
        elsewhere = [p for p in written if p.endswith("/" + FILENAME)]
        hint = (f" You wrote {elsewhere[0]}: it must be at the root, /{FILENAME}." if elsewhere
                else f" Files your container wrote: {written or 'none'}.")
        pytest.fail(
            f"/{FILENAME} is not in {NAME}'s writable layer ({upper}).{hint} "
            f"The command must write it, e.g. sh -c 'echo ... > /{FILENAME}'.", pytrace=False)
    content = path.read_text(errors="replace")
    host = socket.gethostname()
    hint = ""
    if content == EXPECTED.rstrip("\n"):
        hint = " The line must end with a newline (echo adds one)."
    elif host != HOSTNAME and content.split()[-1:] == [host]:
        hint = (f" {host!r} is the *host's* name: your shell expanded $(hostname) "
                "before the container ran. Put the container's command in single quotes: "
                "sh -c 'echo \"$GREETING from $(hostname)\" > /greeting.txt'.")
    elif content.split()[:1] == ["from"] or "$GREETING" in content:
        hint = (" The greeting is missing: $GREETING was empty or not expanded. Set it with "
                "-e GREETING=hello, and let the container's shell expand it (single quotes "
                "around the sh -c command, double quotes inside).")
    require(content == EXPECTED, (
        f"/{FILENAME} holds {content!r}, expected {EXPECTED!r}.{hint}"))


def test_greeting_built_inside_the_container(lab01):
    command = command_line(lab01)
    require("GREETING" in command and "hostname" in command.lower(), (
        f"{NAME}'s command is `{command}`. Build the text inside the container from the "
        f"variable and the hostname, e.g. sh -c 'echo \"$GREETING from $(hostname)\" > "
        f"/greeting.txt', instead of writing it literally."))


def test_image_layers_unchanged(lab01):
    lowers = lower_dirs(lab01)
    require(lowers, f"{NAME} has no image layers recorded (GraphDriver.Data.LowerDir).")
    touched = [str(d / FILENAME) for d in lowers if os.path.lexists(d / FILENAME)]
    require(not touched, (
        f"{FILENAME} is in the image's read-only layer: {touched}. The image must never change; "
        f"a container writes only to its own layer. Did something write into "
        f"the snapshots directory directly?"))
