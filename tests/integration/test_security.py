"""Docker's security profile and the run options that act inside the container,
checked from inside real containers.

Most tests run twice (the ``spawner`` fixture): with the compiled spawner and
with its Python twin, which must behave the same. The values asserted are
docker's (../shared/REFERENCES.md): ``docker run busybox grep Cap
/proc/self/status`` prints ``CapEff: 00000000a80425fb``.
"""

import errno
import os
import resource
import signal
import time

import pytest

from engine.errors import ContainerError, EngineError, SpawnError
from engine.runtime.user import UnsafeMountTarget, UserNotFound

root = pytest.mark.root
DEFAULT_CAPS = "00000000a80425fb"


def run(engine, *command, **kw) -> str:
    return engine.containers.run("busybox", list(command), remove=True, **kw).decode()


def capabilities(text: str) -> dict:
    """``grep Cap /proc/self/status`` -> {"CapEff": "00000000a80425fb", ...}."""
    return dict(line.split(":\t") for line in text.splitlines() if line.startswith("Cap"))


def engine_capabilities() -> str:
    """What --privileged can get: the engine's own permitted set (this host may lack some)."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        everything = (1 << (int(f.read()) + 1)) - 1
    with open("/proc/self/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("CapPrm:"))
    return f"{mask & everything:016x}"


def commit_image(engine, tag: str, script: str) -> None:
    """busybox plus what ``script`` changes, as a new image (a derived layer)."""
    c = engine.containers.create("busybox", ["sh", "-c", script])
    assert c.run() == 0
    c.commit(tag)
    c.remove()


# -- capabilities ----------------------------------------------------------------------


@root
def test_default_capabilities_are_dockers(engine, spawner):
    caps = capabilities(run(engine, "grep", "Cap", "/proc/self/status"))
    assert caps == {"CapInh": "0000000000000000", "CapPrm": DEFAULT_CAPS, "CapEff": DEFAULT_CAPS,
                    "CapBnd": DEFAULT_CAPS, "CapAmb": "0000000000000000"}
    # What they mean: root may chown, but not reconfigure the network.
    assert run(engine, "sh", "-c", "chown 1 /tmp && echo chowned") == "chowned\n"
    out = run(engine, "sh", "-c", "ip link set lo down 2>&1; true")
    assert "Operation not permitted" in out


@root
@pytest.mark.parametrize("options, expected", [
    ({"cap_add": ["NET_ADMIN"]}, "00000000a80435fb"),
    ({"cap_drop": ["CHOWN"]}, "00000000a80425fa"),
    ({"cap_drop": ["ALL"]}, "0000000000000000"),
    ({"privileged": True}, None),  # None: everything the engine itself has
])
def test_cap_add_cap_drop_and_privileged(engine, spawner, options, expected):
    expected = expected or engine_capabilities()
    caps = capabilities(run(engine, "grep", "Cap", "/proc/self/status", **options))
    assert (caps["CapPrm"], caps["CapEff"], caps["CapBnd"]) == (expected, expected, expected)
    assert caps["CapInh"] == caps["CapAmb"] == "0000000000000000"


@root
def test_dropped_capabilities_are_really_gone(engine, spawner):
    out = run(engine, "sh", "-c", "chown 1 /tmp 2>&1; true", cap_drop=["CHOWN"])
    assert "Operation not permitted" in out
    out = run(engine, "sh", "-c", "ip link set lo down && echo down", cap_add=["NET_ADMIN"])
    assert out == "down\n"


@root
def test_a_capability_the_engine_lacks_cannot_be_granted(engine):
    missing = [n for n in range(41) if not int(engine_capabilities(), 16) >> n & 1]
    if not missing:
        pytest.skip("the engine has every capability here")
    from engine.runtime.options import CAPABILITIES
    name = next(k for k, v in CAPABILITIES.items() if v == missing[0])
    with pytest.raises(EngineError, match=f'not available in the current environment: "{name}"'):
        run(engine, "true", cap_add=[name])


@root
def test_a_non_root_user_has_no_capabilities_but_the_same_bounding_set(engine, spawner):
    caps = capabilities(run(engine, "grep", "Cap", "/proc/self/status", user="1000"))
    assert (caps["CapPrm"], caps["CapEff"], caps["CapBnd"]) == ("0" * 16, "0" * 16, DEFAULT_CAPS)
    out = run(engine, "sh", "-c", "touch /root/x 2>&1; true", user="nobody")
    assert "Permission denied" in out   # no CAP_DAC_OVERRIDE


# -- masked and read-only paths, /sys -------------------------------------------------


@root
def test_masked_paths_show_nothing(engine, spawner):
    script = ("for f in /proc/kcore /proc/keys /proc/timer_list /proc/interrupts; do "
              "  if [ -e $f ]; then echo $f $(wc -c < $f); else echo $f absent; fi; done; "
              "echo firmware: $(ls -A /sys/firmware); echo acpi: $(ls -A /proc/acpi 2>&1); "
              "touch /proc/acpi/x 2>&1 | grep -o 'Read-only file system'")
    lines = run(engine, "sh", "-c", script).splitlines()
    for line, path in zip(lines, ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/interrupts"]):
        assert line in (f"{path} 0", f"{path} absent")
        assert line == (f"{path} 0" if os.path.exists(path) else f"{path} absent")
    assert "firmware:" in lines and ("acpi:" in lines or not os.path.exists("/proc/acpi"))
    if os.path.exists("/proc/acpi"):
        assert lines[-1] == "Read-only file system"
    mounts = run(engine, "cat", "/proc/mounts")
    assert "tmpfs /sys/firmware tmpfs ro," in mounts
    if os.path.exists("/proc/keys"):
        assert " /proc/keys " in mounts


@root
def test_read_only_paths_refuse_writes(engine, spawner):
    # Writing the value it already has: harmless even if the path were writable.
    out = run(engine, "sh", "-c", "cat /proc/sys/vm/swappiness > /proc/sys/vm/swappiness; true",
              stdout=False, stderr=True)
    assert "Read-only file system" in out
    mounts = run(engine, "cat", "/proc/mounts").splitlines()
    for path in ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"):
        if os.path.exists(path):
            assert f"proc {path} proc ro,nosuid,nodev,noexec,relatime 0 0" in mounts, path
    assert any(line.startswith("sysfs /sys sysfs ro,") for line in mounts)


@root
def test_privileged_unmasks_and_mounts_sys_read_write(engine, spawner):
    mounts = run(engine, "cat", "/proc/mounts", privileged=True).splitlines()
    assert {line.split()[1] for line in mounts} == {"/", "/proc", "/sys", "/dev", "/dev/pts", "/dev/shm",
                                                    "/dev/mqueue", "/etc/hosts", "/etc/resolv.conf",
                                                    "/etc/hostname"}
    assert any(line.startswith("sysfs /sys sysfs rw,") for line in mounts)
    if os.listdir("/sys/firmware"):
        assert run(engine, "ls", "/sys/firmware", privileged=True).split() == sorted(os.listdir("/sys/firmware"))


# -- volumes, --tmpfs, --read-only ----------------------------------------------------


@root
def test_bind_mounts_read_write_and_read_only(engine, spawner, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in").write_text("from the host\n")
    (tmp_path / "single").write_text("one file\n")
    out = run(engine, "sh", "-c",
              "cat /data/in; echo from the container > /data/out; "
              "echo no > /ro/x; cat /deep/er/file; echo no > /deep/er/file; true",
              volumes=[f"{shared}:/data", f"{shared}:/ro:ro", f"{tmp_path}/single:/deep/er/file:ro"],
              stderr=True)
    assert out.splitlines()[0] == "from the host"
    assert "one file" in out
    assert out.count("Read-only file system") == 2
    assert (shared / "out").read_text() == "from the container\n"
    assert sorted(os.listdir(shared)) == ["in", "out"]


@root
def test_mount_targets_are_created_in_the_container_layer(engine, spawner, tmp_path):
    (tmp_path / "vol").mkdir()
    c = engine.containers.create("busybox", ["true"], volumes=[f"{tmp_path}/vol:/new/dir"])
    assert c.run() == 0
    assert (c.path / "upper" / "new" / "dir").is_dir()
    assert os.listdir(tmp_path / "vol") == [], "nothing was written to the host directory"
    c.remove()


@root
@pytest.mark.parametrize("target", ["/data", "/data/below", "/srv/link/x"])
def test_a_mount_target_through_a_symlink_is_refused(engine, target, tmp_path):
    commit_image(engine, "linked:1", "ln -s /etc /data; mkdir /srv; ln -s ../etc /srv/link")
    with pytest.raises(UnsafeMountTarget, match=f"mount target {target} goes through a symlink"):
        engine.containers.run("linked:1", ["true"], volumes=[f"{tmp_path}:{target}"], remove=True)
    with pytest.raises(UnsafeMountTarget):
        engine.containers.run("linked:1", ["true"], tmpfs=[target], remove=True)
    assert os.listdir(engine.layout.containers) == []


@root
@pytest.mark.parametrize("target", ["/data", "/etc-file", "/srv/link/x"])
def test_the_child_refuses_a_symlink_even_when_unchecked(engine, spawner, monkeypatch, tmp_path, target):
    """The check that counts is the child's (CVE-2021-30465: a symlink may be
    swapped in after any check the engine makes): with the engine's own
    check switched off, the child still refuses with ELOOP."""
    from engine.runtime import profile

    commit_image(engine, "linked:1", "ln -s /etc /data; ln -s /etc/passwd /etc-file; mkdir /srv; "
                                     "ln -s ../etc /srv/link")
    monkeypatch.setattr(profile, "check_mount_target", lambda view, target: None)
    source = tmp_path / "file" if target == "/etc-file" else tmp_path
    (tmp_path / "file").write_text("x")
    c = engine.containers.create("linked:1", ["cat", "/etc/passwd"], volumes=[f"{source}:{target}"])
    with pytest.raises(SpawnError) as e:
        c.run()
    assert e.value.errno == errno.ELOOP
    assert "mount --rbind" in e.value.stage
    c.reload()
    assert c.status == "created"
    c.remove()


@root
def test_tmpfs_is_dockers_and_leaves_nothing_behind(engine, spawner):
    c = engine.containers.create("busybox", ["sh", "-c",
                                             "echo hi > /scratch/f && cat /scratch/f; "
                                             "grep ' /scratch ' /proc/mounts; grep ' /small ' /proc/mounts; "
                                             "cp /bin/busybox /scratch/b; /scratch/b true 2>&1"],
                                 tmpfs={"/scratch": "", "/small": "size=1m,mode=700"})
    out = []
    assert c.run(output=lambda stream, data: out.append(data)) == 126  # the last command's status
    lines = b"".join(out).decode().splitlines()
    assert lines[0] == "hi"
    assert lines[1].startswith("tmpfs /scratch tmpfs rw,nosuid,nodev,noexec,")
    assert lines[2].startswith("tmpfs /small tmpfs rw,nosuid,nodev,noexec,")
    assert "size=1024k" in lines[2] and "mode=700" in lines[2]
    assert "Permission denied" in lines[3], "noexec, as docker's --tmpfs"
    assert os.listdir(c.path / "upper" / "scratch") == [], "the files lived in memory only"
    c.remove()


@root
def test_read_only_root(engine, spawner):
    out = run(engine, "sh", "-c", "touch /x 2>&1; touch /tmp/y && echo tmp ok; "
                                  "touch /dev/shm/z && echo shm ok; pwd",
              read_only=True, tmpfs=["/tmp"], working_dir="/created/before")
    assert out.splitlines() == ["touch: /x: Read-only file system", "tmp ok", "shm ok", "/created/before"]
    mounts = run(engine, "grep", " / ", "/proc/mounts", read_only=True)
    assert mounts.startswith("overlay / overlay ro,")


# -- the user -----------------------------------------------------------------------------


@root
@pytest.mark.parametrize("user, identity, home", [
    (None, "uid=0(root) gid=0(root) groups=0(root),10(wheel)", "/root"),
    ("0", "uid=0(root) gid=0(root) groups=0(root),10(wheel)", "/root"),
    ("1000", "uid=1000 gid=0(root) groups=0(root)", "/"),
    ("1000:1000", "uid=1000 gid=1000 groups=1000", "/"),
    ("nobody", "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)", "/home"),
    ("nobody:nogroup", "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)", "/home"),
    ("www-data:users", "uid=33(www-data) gid=100(users) groups=100(users)", "/var/www"),
])
def test_user_forms(engine, spawner, user, identity, home):
    assert run(engine, "sh", "-c", "id; echo $HOME", user=user).splitlines() == [identity, home]


@root
def test_home_from_the_environment_wins(engine, spawner):
    assert run(engine, "sh", "-c", "echo $HOME", user="nobody", environment=["HOME=/mine"]) == "/mine\n"


@root
def test_an_unknown_user_is_an_error_and_nothing_starts(engine, cli):
    c = engine.containers.create("busybox", ["true"], user="nosuch")
    with pytest.raises(UserNotFound, match="unable to find user nosuch: no matching entries in passwd file") as e:
        c.run()
    assert e.value.exit_code == 125
    c.reload()
    assert c.status == "created" and c.attrs["State"]["Pid"] == 0
    c.remove()
    r = cli("run", "--rm", "--user", "nobody:nosuch", "busybox", "true")
    assert r.returncode == 125
    assert "unable to find group nosuch: no matching entries in group file" in r.stderr
    assert cli("ps", "-aq").stdout == ""


# -- ulimits -------------------------------------------------------------------------------


@root
def test_ulimit(engine, spawner):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip("this host's hard nofile limit is below 2048")
    out = run(engine, "sh", "-c", "ulimit -n; ulimit -Hn", ulimits=["nofile=1024:2048"])
    assert out == "1024\n2048\n"


# -- --init ----------------------------------------------------------------------------------


@root
def test_init_is_pid_1_and_runs_the_command(engine, spawner):
    out = run(engine, "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo; echo $$; ls /proc/1/fd",
              init=True)
    lines = out.splitlines()
    assert lines[0].startswith("/dev/init -- sh -c ")
    assert lines[1] == "2"
    assert lines[2:] == ["0", "1", "2"], "the init holds nothing but stdio"
    with pytest.raises(ContainerError) as e:
        run(engine, "sh", "-c", "exit 3", init=True)
    assert e.value.exit_status == 3
    with pytest.raises(ContainerError) as e:
        run(engine, "nosuch", init=True)
    assert e.value.exit_status == 127
    assert b"dockyard-init: exec nosuch: No such file or directory" in e.value.stderr


def zombies_below(pid: int) -> list[int]:
    from support import descendants
    found = []
    for child in descendants(pid):
        try:
            with open(f"/proc/{child}/stat") as f:
                stat = f.read()
        except FileNotFoundError:
            continue
        if stat[stat.rindex(")") + 2] == "Z":
            found.append(child)
    return found


@root
@pytest.mark.parametrize("init", [False, True])
def test_init_reaps_orphans(engine, spawner, init):
    # The subshell exits at once, so its background sleep is an orphan: the
    # kernel gives it to PID 1. Without --init PID 1 is `sleep 1.5`, which
    # never waits for it: a zombie. dockyard-init reaps it.
    c = engine.containers.create("busybox", ["sh", "-c", "(sleep 0.1 &); exec sleep 1.5"], init=init)
    seen = {}

    def look(process):
        time.sleep(0.8)
        seen["zombies"] = zombies_below(process.pid)

    assert c.run(on_start=look) == 0
    assert bool(seen["zombies"]) == (not init)
    c.remove()


@root
def test_init_forwards_sigterm(engine, spawner):
    # Without an init, `sleep` as PID 1 ignores SIGTERM (test_run.py shows it).
    c = engine.containers.create("busybox", ["sleep", "30"], init=True)
    started = time.monotonic()

    def stop(process):
        time.sleep(0.3)
        os.kill(process.pid, signal.SIGTERM)

    assert c.run(on_start=stop) == 128 + signal.SIGTERM
    assert time.monotonic() - started < 10
    c.remove()


def test_dockyard_init_is_built_and_static():
    from engine.image.base import is_static_elf
    from engine.runtime.profile import init_binary

    path = init_binary()
    assert os.access(path, os.X_OK)
    assert is_static_elf(path), "dockyard-init must not need a C library from the image"


# -- fds, cwd, terminal -------------------------------------------------------------------


@root
def test_only_stdio_survives_exec_and_the_cwd_is_inside(engine, spawner):
    # `ls` itself holds one more descriptor: the directory it lists.
    assert run(engine, "ls", "/proc/self/fd").split() == ["0", "1", "2", "3"]
    assert run(engine, "sh", "-c", "ls -l /proc/self/cwd /proc/1/cwd | sed 's/.* -> //'") == "/\n/\n"
    assert run(engine, "readlink", "/proc/self/cwd", working_dir="/srv/app") == "/srv/app\n"
    assert run(engine, "ls", "/proc/self/fd", user="nobody", init=True).split() == ["0", "1", "2", "3"]


@root
def test_a_tty_becomes_the_controlling_terminal(engine, spawner):
    """With -t the container's stdio is a pty (its monitor holds the master) and
    the plan's last step makes it the controlling terminal of a new session."""
    script = "cut -d' ' -f6,7 /proc/$$/stat; echo TERM=$TERM"
    results = {}
    for tty in (True, False):
        c = engine.containers.create("busybox", ["sh", "-c", script], tty=True)
        out = []
        assert c.run(plan=c.plan(tty=tty), output=lambda stream, data: out.append(data)) == 0
        results[tty] = b"".join(out).decode().replace("\r\n", "\n").splitlines()
        c.remove()
    session, tty_nr = results[True][0].split()
    assert session == "1", "sh is PID 1 and leads its own session"
    assert os.major(int(tty_nr)) == 136, "a pty (Unix98 pty slaves are major 136) is its terminal"
    assert results[False][0].split()[1] == "0", "without the step: no controlling terminal"
    assert results[True][1] == results[False][1] == "TERM=xterm"
