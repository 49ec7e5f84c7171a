"""Running containers on the real kernel, through the Python API.

Every test here runs twice (the ``spawner`` fixture): once with the compiled
spawner and once with its Python twin, so both are held to the same
behaviour.
"""

import ipaddress
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from engine.errors import (
    CommandNotExecutable, CommandNotFound, ContainerError, ImageNotFound, SpawnError, UsageError,
)

pytestmark = pytest.mark.root


def run(engine, *command, **kw):
    return engine.containers.run("busybox", list(command), remove=True, **kw).decode()


def test_output_and_exit_status(engine, spawner):
    assert run(engine, "echo", "hello from dockyard") == "hello from dockyard\n"
    with pytest.raises(ContainerError) as err:
        run(engine, "sh", "-c", "echo oops >&2; exit 3", stderr=True)
    assert err.value.exit_status == 3
    assert err.value.stderr == b"oops\n"
    assert "returned non-zero exit status 3: oops" in str(err.value)


def test_stdout_and_stderr_are_kept_apart(engine, spawner):
    out = engine.containers.run("busybox", ["sh", "-c", "echo out; echo err >&2"], remove=True)
    assert out == b"out\n"
    err = engine.containers.run("busybox", ["sh", "-c", "echo out; echo err >&2"], remove=True,
                                stdout=False, stderr=True)
    assert err == b"err\n"


def test_the_command_is_pid_1_and_sees_only_its_own_processes(engine, spawner):
    out = run(engine, "sh", "-c", "echo $$; ps -o pid,comm | tail -n +2")
    lines = out.split("\n")
    assert lines[0] == "1"
    pids = sorted(int(line.split()[0]) for line in lines[1:] if line.strip())
    assert pids[0] == 1 and len(pids) <= 3, out  # sh, ps (and the pipe's tail)


def test_hostname_defaults_to_the_short_id_and_can_be_set(engine, spawner):
    c = engine.containers.create("busybox", ["hostname"])
    out = []
    status = c.run(output=lambda stream, data: out.append((stream, data)))
    assert status == 0
    assert out == [(1, (c.short_id + "\n").encode())]
    c.remove()
    assert run(engine, "hostname", hostname="lab-box") == "lab-box\n"
    assert os.uname().nodename != "lab-box"


def test_host_mounts_are_invisible(engine, spawner):
    mounts = run(engine, "cat", "/proc/mounts")
    targets = [line.split()[1] for line in mounts.splitlines()]
    assert targets[0] == "/"
    # Docker's masked and read-only paths (/proc/kcore, /proc/sys, /sys/firmware...)
    # are mounts of their own inside /proc and /sys; nothing else from the host is.
    # The three files that name things are the engine's (the container's directory).
    own = {t for t in targets if not t.startswith(("/proc/", "/sys/"))}
    assert own == {"/", "/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue",
                   "/etc/hosts", "/etc/resolv.conf", "/etc/hostname"}
    assert "/proc/sys" in targets and "/sys/firmware" in targets


def test_root_filesystem_is_the_image(engine, spawner):
    listing = run(engine, "ls", "/").split()
    assert listing == sorted(["bin", "dev", "etc", "home", "proc", "root", "sys", "tmp", "usr", "var"])
    assert "root:x:0:0:root:/root:/bin/sh" in run(engine, "cat", "/etc/passwd")
    # The host's files are not there.
    assert run(engine, "sh", "-c", "test -e /work || test -e /usr/bin/python3 || echo absent") \
        == "absent\n"


def test_dev_has_only_the_safe_devices(engine, spawner):
    out = run(engine, "ls", "/dev")
    assert out.split() == sorted(["core", "fd", "full", "mqueue", "null", "ptmx", "pts", "random",
                                  "shm", "stderr", "stdin", "stdout", "tty", "urandom", "zero"])
    assert run(engine, "sh", "-c", "head -c 4 /dev/zero | wc -c").strip() == "4"
    assert run(engine, "sh", "-c", "echo x > /dev/null && echo ok") == "ok\n"
    out = run(engine, "sh", "-c", "echo x > /sys/kernel/x 2>&1 || true; grep ' /sys ' /proc/mounts")
    assert " ro," in out


def test_network_namespace_has_only_loopback_and_it_is_up(engine, spawner):
    out = run(engine, "ip", "-o", "link", network_mode="none")
    assert len(out.splitlines()) == 1 and "lo:" in out and "UP" in out


def test_the_default_bridge_gives_eth0_an_address_and_a_default_route(engine, spawner):
    from engine.network import config as netconfig

    bridge = netconfig.load(engine.layout).bridge_interface  # the root's default bridge
    out = run(engine, "sh", "-c", "ip -o link; echo --; ip -o -4 addr show dev eth0; echo --; ip route")
    links, addresses, routes = out.split("--\n")
    flags = {m[0]: m[1].split(",") for m in re.findall(r"^\d+: ([^:@]+)[^:]*: <([^>]*)>", links, re.M)}
    assert sorted(flags) == ["eth0", "lo"], links
    assert "UP" in flags["lo"] and {"UP", "LOWER_UP"} <= set(flags["eth0"]), links
    address = ipaddress.IPv4Interface(re.search(r" inet (\S+) ", addresses)[1])
    assert address.network == bridge.network and address.ip != bridge.ip, addresses
    mac = "02:42:" + ":".join(f"{b:02x}" for b in address.ip.packed)
    assert f"link/ether {mac} " in links, "docker's MAC: 02:42 and the address"
    assert f"default via {bridge.ip} dev eth0" in routes, routes


def test_environment_workdir_and_image_config(engine, spawner):
    env = run(engine, "env", environment=["GREETING=hi", "PATH=/bin"]).splitlines()
    assert env[:2] == ["PATH=/bin", f"HOSTNAME={env[1].split('=')[1]}"]
    assert "GREETING=hi" in env and "HOME=/root" in env
    assert run(engine, "pwd") == "/\n"
    assert run(engine, "pwd", working_dir="/made/for/you") == "/made/for/you\n"
    # The image's Cmd is ["sh"]: without a command, sh reads stdin (/dev/null) and exits 0.
    assert engine.containers.run("busybox", remove=True) == b""
    assert run(engine, "-c", "echo via entrypoint", entrypoint="sh") == "via entrypoint\n"


def test_writes_stay_in_the_container_layer(engine, spawner):
    image = engine.images.get("busybox")
    (lower,) = engine.snapshots.ensure(image)
    before = sorted(os.listdir(lower / "etc"))
    c = engine.containers.create("busybox", ["sh", "-c", "echo secret > /etc/note; rm /etc/group"])
    assert c.run() == 0
    upper = c.path / "upper"
    assert (upper / "etc" / "note").read_text() == "secret\n"
    assert os.stat(upper / "etc" / "group").st_rdev == 0  # an overlay whiteout
    assert sorted(os.listdir(lower / "etc")) == before, "the image layer was modified"
    assert run(engine, "cat", "/etc/group").startswith("root:x:0:")  # a new container: fresh copy
    c.remove()
    assert not c.path.exists()


@pytest.mark.parametrize("command, error, code", [
    (["nosuchcommand"], CommandNotFound, 127),
    (["/bin/nosuch"], CommandNotFound, 127),
    (["/etc"], CommandNotExecutable, 126),
    (["/etc/passwd"], CommandNotExecutable, 126),
])
def test_commands_that_cannot_run(engine, spawner, command, error, code):
    with pytest.raises(error) as e:
        engine.containers.run("busybox", command, remove=True)
    assert e.value.exit_code == code
    assert command[0] in str(e.value)
    assert os.listdir(engine.layout.containers) == [], "--rm removed the container"


def test_failed_start_is_recorded_like_docker(engine, spawner):
    c = engine.containers.create("busybox", ["nosuch"])
    with pytest.raises(CommandNotFound, match='exec: "nosuch": executable file not found in \\$PATH'):
        c.run()
    c.reload()
    assert c.status == "created"
    assert c.attrs["State"]["ExitCode"] == 127
    assert "executable file not found" in c.attrs["State"]["Error"]
    c.remove()


def test_a_failing_setup_step_is_reported_with_its_errno(engine, spawner):
    c = engine.containers.create("busybox", ["true"])
    plan = c.plan()
    # Break one step on purpose: mount a filesystem type the kernel does not know.
    from engine.runtime.plan import Mount
    index = next(i for i, s in enumerate(plan.steps) if isinstance(s, Mount) and s.fstype == "sysfs")
    plan.steps[index] = Mount("sysfs", plan.steps[index].target, "nosuchfs")
    with pytest.raises(SpawnError) as e:
        c.run(plan=plan)
    assert e.value.errno == 19  # ENODEV
    assert "mount -t nosuchfs" in e.value.stage
    assert "No such device" in str(e.value)
    c.remove()


def test_killed_by_a_signal_is_128_plus_n(engine, spawner):
    c = engine.containers.create("busybox", ["sleep", "30"])
    started = threading.Event()

    def killer(process):
        started.set()
        os.kill(process.pid, signal.SIGKILL)

    assert c.run(on_start=killer) == 128 + signal.SIGKILL
    c.reload()
    assert c.attrs["State"]["ExitCode"] == 137 and c.status == "exited"
    c.remove()


def test_pid_1_ignores_signals_it_has_no_handler_for(engine, spawner):
    # pid_namespaces(7): the init of a namespace only gets signals it handles,
    # which is why `docker stop` needs SIGKILL for many images.
    c = engine.containers.create("busybox", ["sh", "-c", "sleep 1; echo survived"])

    def term(process):
        time.sleep(0.2)
        os.kill(process.pid, signal.SIGTERM)

    assert c.run(on_start=term) == 0
    c.remove()


def test_unknown_image_and_missing_command(engine):
    with pytest.raises(ImageNotFound, match="No such image: nosuch:latest"):
        engine.containers.run("nosuch", ["true"])
    with pytest.raises(UsageError, match="No command specified"):
        engine.containers.run("scratch")
    assert not engine.layout.containers.exists(), "nothing is written for bad input"


def test_scratch_is_the_empty_image(engine):
    image = engine.images.get("scratch")
    assert image.layers == () and image.diff_ids == []
    with pytest.raises(CommandNotFound):
        engine.containers.run("scratch", ["/bin/sh"], remove=True)


def test_list_get_and_remove(engine):
    a = engine.containers.create("busybox", ["true"], name="first")
    b = engine.containers.create("busybox", ["true"])
    listed = engine.containers.list(all=True)
    assert [c.id for c in listed] == [b.id, a.id]
    assert engine.containers.list() == []  # none running
    assert engine.containers.get("first").id == a.id
    assert engine.containers.get(a.id[:8]).id == a.id
    assert engine.containers.get(b.name).id == b.id
    a.remove()
    b.remove()
    assert engine.containers.list(all=True) == []
    assert os.listdir(engine.layout.names) == []


def test_a_running_container_shows_as_running_and_needs_force(engine, tmp_path):
    from engine.errors import Conflict

    seen = {}

    def look(process):
        c = engine.containers.get("runner")
        seen["status"], seen["pid"] = c.status, c.attrs["State"]["Pid"]
        with pytest.raises(Conflict, match="container is running"):
            c.remove()
        assert [x.name for x in engine.containers.list()] == ["runner"]
        c.remove(force=True)

    c = engine.containers.create("busybox", ["sleep", "30"], name="runner")
    status = c.run(on_start=look)
    assert seen["status"] == "running" and seen["pid"] > 0
    assert status == 137
    assert engine.containers.list(all=True) == []


def test_a_dead_runner_leaves_the_container_to_its_monitor(engine, root):
    """The process running a container in the foreground is only a client of its
    monitor: killing it leaves the container running; killing the monitor kills
    the container too (PR_SET_PDEATHSIG) and the record says so."""
    import sys
    script = (
        "from engine import Engine; import sys\n"
        f"c = Engine({str(root)!r}).containers.create('busybox', ['sleep', '30'], name='orphan')\n"
        "c.run()\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            if engine.containers.get("orphan").status == "running":
                break
        except Exception:
            pass
        time.sleep(0.05)
    c = engine.containers.get("orphan")
    pid = c.attrs["State"]["Pid"]
    assert c.status == "running" and pid
    holder.kill()  # SIGKILL: no chance to record anything
    holder.wait()
    time.sleep(0.1)
    c = engine.containers.get("orphan")
    assert c.status == "running" and c.attrs["State"]["Pid"] == pid
    os.kill(c.attrs["Dockyard"]["MonitorPid"], signal.SIGKILL)
    deadline = time.time() + 10
    while os.path.exists(f"/proc/{pid}/stat") and time.time() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().split(") ")[1].startswith("Z"):
                break
        time.sleep(0.02)
    c = engine.containers.get("orphan")
    assert c.status == "exited"
    assert c.attrs["State"]["ExitCode"] == 255
    assert "monitor" in c.attrs["State"]["Error"] and "died" in c.attrs["State"]["Error"]
    c.remove()


def test_names_are_unique(engine):
    from engine.errors import Conflict

    a = engine.containers.create("busybox", ["true"], name="web")
    with pytest.raises(Conflict, match='The container name "/web" is already in use'):
        engine.containers.create("busybox", ["true"], name="web")
    a.remove()
    engine.containers.create("busybox", ["true"], name="web").remove()


def test_the_explained_plan_is_exactly_what_the_child_performs(engine, monkeypatch, tmp_path):
    """The ops handed to the spawner are the rendered plan's steps, one for one."""
    import pickle

    from engine.runtime import process
    from engine.runtime.plan import OP_SETNS, Op

    real, record = process.spawn, tmp_path / "seen.pickle"

    def spy(flags, ops, argv, envp, search_path, stdio):
        # This runs in the monitor's process (forked from us): report through a file.
        record.write_bytes(pickle.dumps(dict(flags=flags, ops=[tuple(o) for o in ops],
                                             argv=list(argv), envp=list(envp))))
        return real(flags, ops, argv, envp, search_path, stdio)

    monkeypatch.setattr(process, "spawn", spy)
    c = engine.containers.create("busybox", ["true"], hostname="exact")
    plan = c.plan()
    assert c.run(plan=plan) == 0
    seen = pickle.loads(record.read_bytes())
    assert seen["flags"] == plan.clone_flags
    # Alike but for the network namespace's descriptor, which the engine opens
    # at the start (-1 in a plan that is only printed).
    expected = [tuple(o) for o in plan.ops()]
    (setns,) = [i for i, o in enumerate(expected) if o[0] == OP_SETNS]
    assert seen["ops"][setns][4] >= 0
    for ops in (seen["ops"], expected):
        ops[setns] = tuple(Op(*ops[setns])._replace(flags=-1))
    assert seen["ops"] == expected and len(seen["ops"]) == len(plan.steps)
    assert seen["argv"] == [b"true"]
    assert b"HOSTNAME=exact" in seen["envp"]
    text = plan.render()
    for step in plan.steps:
        assert plan._shorten(step.shell()) in text
    c.remove()


def derived_image(engine, tag: str, **run_config):
    """busybox's layer under a new config (what a Dockerfile's metadata lines make)."""
    import json

    from engine.image import mediatype
    from engine.image.manifest import canonical

    base = engine.images.get("busybox")
    config = dict(base.config, config={**base.run_config, **run_config})
    config_bytes = canonical(config)
    manifest = canonical({
        "schemaVersion": 2, "mediaType": mediatype.OCI_MANIFEST,
        "config": {"mediaType": mediatype.OCI_CONFIG, "digest": engine.content.put(config_bytes),
                   "size": len(config_bytes)},
        "layers": [layer.to_json() for layer in base.layers],
    })
    engine.image_store.add(engine.content.put(manifest), tag)
    assert json.loads(engine.content.read(engine.images.get(tag).id))["config"]["WorkingDir"] \
        == run_config.get("WorkingDir", "")


def test_image_config_is_honoured_as_docker_does(engine, spawner):
    derived_image(engine, "tool:1", Entrypoint=["sh", "-c", 'echo "$0 $* in $(pwd) with $X"'],
                  Cmd=["default"], WorkingDir="/srv", Env=["PATH=/bin", "X=image"])
    run_ = lambda *cmd, **kw: engine.containers.run("tool:1", list(cmd) or None, remove=True, **kw).decode()
    assert run_() == "default  in /srv with image\n"            # Entrypoint + Cmd, WorkingDir, Env
    assert run_("given", "args") == "given args in /srv with image\n"  # CMD replaced, Entrypoint kept
    assert run_(environment=["X=user"]) == "default  in /srv with user\n"
    assert run_(working_dir="/tmp") == "default  in /tmp with image\n"
    # --entrypoint replaces the image's Entrypoint and drops its Cmd.
    assert run_(entrypoint="pwd") == "/srv\n"
    assert run_("x", entrypoint="echo") == "x\n"
