"""Input, output and terminals: ``attach`` (several at once), ``run -it`` through a
real pseudo-terminal (typing, Ctrl-C, exit codes, the detach keys), window
sizes, and --sig-proxy."""

import signal
import subprocess
import time

import pytest

from monitor_fixtures import monitor, no_monitor_leftovers, state, wait_until  # noqa: F401 -- fixtures
from support import DOCKYARD, REPO, Terminal

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("no_monitor_leftovers")]


def test_run_it_is_an_interactive_shell(cli, monitor):
    term = Terminal(cli.env(), "run", "-it", "--name", "shell", "busybox", "sh", rows=33, cols=101)
    term.read_until(b"/ # ")
    term.type(b"stty size; echo hi; exit 3\r")
    out = term.read_until(b"hi\r\n")
    assert b"33 101\r\n" in out, "the window size reached the container's terminal"
    assert term.wait() == 3
    st = state(cli, "shell")
    assert (st["Status"], st["ExitCode"]) == ("exited", 3)
    # With a tty, output is one stream (the terminal's \r\n read as \n in text mode).
    assert "33 101\nhi\n" in cli("logs", "shell").stdout


def test_ctrl_c_reaches_the_foreground_process_and_ctrl_d_ends_sh(cli):
    term = Terminal(cli.env(), "run", "-it", "--rm", "busybox", "sh")
    term.read_until(b"/ # ")
    term.type(b"sleep 30\r")
    time.sleep(0.3)
    t = time.time()
    term.type(b"\x03")  # ^C: the pty's line discipline sends SIGINT to sleep
    term.read_until(b"^C")
    term.type(b"echo after $?\r")
    term.read_until(b"after 130\r\n/ # ")
    assert time.time() - t < 5
    term.type(b"\x04")  # ^D: end of input for sh
    assert term.wait() == 0


def test_detach_keys_leave_the_container_running_and_attach_comes_back(cli, monitor):
    term = Terminal(cli.env(), "run", "-it", "--name", "away", "busybox", "sh")
    term.read_until(b"/ # ")
    term.type(b"echo one\r")
    term.read_until(b"one\r\n")
    term.type(b"\x10\x11")  # ctrl-p, ctrl-q
    assert term.wait() == 0
    assert state(cli, "away")["Status"] == "running"
    term = Terminal(cli.env(), "attach", "--detach-keys", "ctrl-x", "away")
    time.sleep(0.3)
    term.type(b"echo two\r")
    term.read_until(b"two\r\n")
    term.type(b"\x18")
    assert term.wait() == 0
    assert state(cli, "away")["Status"] == "running"
    term = Terminal(cli.env(), "attach", "away")
    time.sleep(0.3)
    term.type(b"\x10a\r")  # ctrl-p then something else: both keys go to the shell
    term.type(b"exit 4\r")
    assert term.wait() == 4
    assert state(cli, "away")["ExitCode"] == 4


def test_two_attachers_both_see_the_output(cli, monitor):
    cli("run", "-d", "--name", "shared", "busybox", "sh", "-c",
        "sleep 0.8; for i in 1 2 3; do echo tick$i; echo tock$i >&2; sleep 0.05; done; exit 6")
    procs = [subprocess.Popen([*DOCKYARD, "attach", "shared"], env=cli.env(), cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=15) + (p.returncode,) for p in procs]
    for out, err, code in results:
        assert out == "tick1\ntick2\ntick3\n" and err == "tock1\ntock2\ntock3\n"
        assert code == 6
    events = cli("events", "--since", "1m", "--until", "0s", "-f", "event=attach").stdout
    assert events.count("container attach") == 2


def test_attach_needs_a_running_container(cli):
    cli("create", "--name", "idle", "busybox", "true")
    r = cli("attach", "idle")
    assert r.returncode == 125
    assert r.stderr == "dockyard: You cannot attach to a stopped container, start it first\n"


def test_attach_with_stdin_to_a_run_di_container(cli):
    cli("run", "-di", "--name", "reader", "busybox", "sh", "-c", "while read l; do echo got:$l; done; echo eof")
    first = subprocess.Popen([*DOCKYARD, "attach", "reader"], env=cli.env(), cwd=REPO,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    first.stdin.write("x\ny\n")
    first.stdin.close()  # -d: StdinOnce is off, so the container's stdin stays open
    assert first.stdout.readline() == "got:x\n" and first.stdout.readline() == "got:y\n"
    time.sleep(0.2)
    assert state(cli, "reader")["Running"]
    proc = subprocess.Popen([*DOCKYARD, "attach", "--no-stdin", "reader"], env=cli.env(), cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    cli("kill", "reader")
    out, _ = proc.communicate("ignored\n", timeout=10)
    assert out == "" and proc.returncode == 137
    assert first.wait(timeout=10) == 137 and first.stdout.read() == ""


@pytest.mark.parametrize("proxy", [True, False])
def test_sig_proxy(cli, proxy):
    args = ["run", "--name", "proxied"] + ([] if proxy else ["--sig-proxy=false"])
    proc = subprocess.Popen([*DOCKYARD, *args, "busybox", "sh", "-c",
                             "trap 'echo got-int; exit 9' INT; echo ready; while true; do sleep 0.05; done"],
                            env=cli.env(), cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=10)
    if proxy:
        assert (proc.returncode, out) == (9, "got-int\n")
        assert state(cli, "proxied")["ExitCode"] == 9
    else:
        assert proc.returncode == 130  # we stopped; the container did not
        assert state(cli, "proxied")["Running"]
        cli("rm", "-f", "proxied")
