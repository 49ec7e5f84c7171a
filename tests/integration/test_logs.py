"""Container logs: docker's json-file format written by the monitor, read back by
``dockyard logs`` (stdout/stderr apart, -t, --tail, --since/--until, -f) and
rotated by ``--log-opt max-size/max-file``."""

import json
import re
import subprocess
import time

import pytest

from monitor_fixtures import monitor, no_monitor_leftovers, state, wait_until  # noqa: F401 -- fixtures
from support import DOCKYARD, REPO

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("no_monitor_leftovers")]

TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z"


def log_file(cli, root, name):
    cid = cli("inspect", "-f", "{{.Id}}", name).stdout.strip()
    return root / "containers" / cid / f"{cid}-json.log"


def test_the_log_is_dockers_json_file_format(cli, root, monitor):
    cli("run", "--name", "fmt", "busybox", "sh", "-c", "echo one; echo two >&2; printf 'no newline'")
    lines = log_file(cli, root, "fmt").read_bytes().splitlines()
    assert len(lines) == 3
    for line in lines:
        assert re.fullmatch(rb'\{"log":".*","stream":"std(out|err)","time":"' + TIME.encode() + rb'"\}', line)
    entries = [json.loads(line) for line in lines]
    assert sorted((e["stream"], e["log"]) for e in entries) == [
        ("stderr", "two\n"), ("stdout", "no newline"), ("stdout", "one\n")]
    r = cli("logs", "fmt")
    assert (r.stdout, r.stderr) == ("one\nno newline", "two\n")


def test_json_escaping_is_dockers(cli, root, monitor):
    """Both monitors escape exactly as docker's jsonlog does (Go's encoder rules):
    control characters, quote and backslash, <, > and & as \\u00XX, U+2028,
    and one U+FFFD per byte that is not UTF-8."""
    script = r"""printf 'a\001\t"\\<>&\342\200\250\303\251\377\342\202z\n'"""
    cli("run", "-d", "--name", "esc", "busybox", "sh", "-c", script)
    cli("wait", "esc")
    raw = log_file(cli, root, "esc").read_bytes()
    body = raw.split(b'"log":"', 1)[1].split(b'","stream"', 1)[0]
    assert body == (b'a\\u0001\\t\\"\\\\\\u003c\\u003e\\u0026\\u2028' + "é".encode()
                    + b"\\ufffd\\ufffd\\ufffdz\\n")
    assert json.loads(raw)["log"] == 'a\x01\t"\\<>&\u2028é\ufffd\ufffd\ufffdz\n'


def test_long_lines_are_split_at_16k(cli, root):
    cli("run", "--name", "long", "busybox", "sh", "-c", "head -c 40000 /dev/zero | tr '\\0' x; echo")
    entries = [json.loads(line) for line in log_file(cli, root, "long").read_bytes().splitlines()]
    assert [len(e["log"]) for e in entries] == [16384, 16384, 40000 - 2 * 16384 + 1]
    assert cli("logs", "long").stdout == "x" * 40000 + "\n"


def test_tail_timestamps_since_and_until(cli, root):
    cli("run", "--name", "timed", "busybox", "sh", "-c",
        "for i in 1 2 3 4; do echo line$i; sleep 0.3; done")
    lines = cli("logs", "-t", "timed").stdout.splitlines()
    assert [re.fullmatch(TIME + r" (line\d)", line).group(1) for line in lines] == \
        ["line1", "line2", "line3", "line4"]
    stamps = [line.split()[0] for line in lines]
    assert cli("logs", "--tail", "2", "timed").stdout == "line3\nline4\n"
    assert cli("logs", "-n", "0", "timed").stdout == ""
    assert cli("logs", "--since", stamps[2], "timed").stdout == "line3\nline4\n"
    assert cli("logs", "--until", stamps[1], "timed").stdout == "line1\nline2\n"
    assert cli("logs", "--since", stamps[1], "--until", stamps[2], "timed").stdout == "line2\nline3\n"
    # A Unix timestamp and a duration ("how long ago") work too.
    from engine.runtime.logs import rfc3339_ns
    ns = rfc3339_ns(stamps[3])
    assert cli("logs", "--since", f"{ns // 10**9}.{ns % 10**9:09d}", "timed").stdout == "line4\n"
    assert cli("logs", "--since", "1h", "timed").stdout.count("line") == 4
    assert cli("logs", "--until", "1h", "timed").stdout == ""
    r = cli("logs", "--since", "yesterday-ish", "timed")
    assert r.returncode == 125


@pytest.mark.parametrize("max_file", [3, 1])
def test_rotation_by_max_size_and_max_file(cli, root, monitor, max_file):
    cli("run", "--name", "rot", "--log-opt", "max-size=300", "--log-opt", f"max-file={max_file}",
        "busybox", "sh", "-c", "for i in $(seq 1 40); do echo line$i; done")
    current = log_file(cli, root, "rot")
    rotated = sorted(p.name for p in current.parent.glob(current.name + ".*"))
    if max_file == 1:
        assert rotated == []  # the file starts over
    else:
        assert rotated == [current.name + ".1", current.name + ".2"]
    entry = len(current.read_bytes().splitlines()[0]) + 1
    for p in [current] + [current.parent / n for n in rotated]:
        assert p.stat().st_size <= 300 + entry  # docker rotates once the size is reached
    shown = [int(x[4:]) for x in cli("logs", "rot").stdout.split()]
    assert shown[-1] == 40 and shown == list(range(shown[0], 41)), "the newest, in order, no gap"
    assert shown[0] > 1, "the oldest lines were rotated away"


def test_logs_follow_ends_when_the_container_stops(cli, monitor):
    cli("run", "-d", "--name", "follow", "busybox", "sh", "-c",
        "echo first; sleep 0.5; for i in 1 2 3; do echo more$i; sleep 0.1; done; echo gone >&2")
    proc = subprocess.Popen([*DOCKYARD, "logs", "-f", "follow"], env=cli.env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert out == "first\nmore1\nmore2\nmore3\n" and err == "gone\n"


def test_logs_follow_across_rotations(cli):
    cli("run", "-d", "--name", "rf", "--log-opt", "max-size=200", "--log-opt", "max-file=2",
        "busybox", "sh", "-c", "sleep 0.5; for i in $(seq 1 30); do echo n$i; sleep 0.02; done")
    proc = subprocess.Popen([*DOCKYARD, "logs", "-f", "rf"], env=cli.env(), cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=20)
    assert out.split() == [f"n{i}" for i in range(1, 31)]
