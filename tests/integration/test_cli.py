"""The ``dockyard`` command line: docker's flags, columns, wording and exit codes."""

import json
import os
import re
import signal
import subprocess

import pytest

pytestmark = pytest.mark.root


@pytest.mark.parametrize("pure", ["", "1"], ids=["compiled", "twin"])
@pytest.mark.parametrize("command, code", [
    (["true"], 0),
    (["sh", "-c", "exit 3"], 3),
    (["sh", "-c", "exit 255"], 255),
    (["nosuchcommand"], 127),
    (["/etc"], 126),
])
def test_exit_status_is_the_containers(cli, command, code, pure):
    r = cli("run", "--rm", "busybox", *command, env=cli.env(DOCKYARD_PURE=pure))
    assert r.returncode == code, r.stderr
    if code == 127:
        assert r.stderr == 'dockyard: exec: "nosuchcommand": executable file not found in $PATH\n'
    if code == 126:
        assert r.stderr == 'dockyard: exec: "/etc": permission denied\n'


def test_stdout_and_stderr_pass_through(cli):
    r = cli("run", "--rm", "busybox", "sh", "-c", "echo to-out; echo to-err >&2")
    assert (r.stdout, r.stderr) == ("to-out\n", "to-err\n")


def test_stdin_is_dev_null_without_i(cli):
    r = cli("run", "--rm", "busybox", "cat", input="should not be read\n")
    assert r.returncode == 0 and r.stdout == ""


def test_options_after_the_image_belong_to_the_command(cli):
    r = cli("run", "--rm", "-e", "A=1", "-w", "/tmp", "-h", "box", "busybox",
            "sh", "-c", 'echo "$A $(pwd) $(hostname) $0"', "--rm")
    assert r.stdout == "1 /tmp box --rm\n", r.stderr


def test_entrypoint_flag(cli):
    r = cli("run", "--rm", "--entrypoint", "echo", "busybox", "a", "b")
    assert r.stdout == "a b\n"


def test_killed_container_exits_128_plus_signal(cli):
    proc = cli.popen("run", "--name", "victim", "busybox", "sleep", "30")
    try:
        pid = cli.wait_for("victim")["State"]["Pid"]
        os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == 137
    finally:
        proc.kill()
    state = json.loads(cli("inspect", "victim").stdout)[0]["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 137)
    assert cli("rm", "victim").returncode == 0


def test_run_explain_prints_the_plan_then_runs_it(cli):
    r = cli("run", "--rm", "--explain", "-h", "explained", "busybox", "hostname")
    assert r.returncode == 0
    assert r.stdout == "explained\n"
    engine_side, _, plan = r.stderr.partition("# plan for container")
    # The default network is bridge: the engine makes the namespace (lo and the
    # veth up, the default route) and the child joins it; the clone makes none.
    engine_expected = [
        "# first, in the engine: the container's network (--network bridge)",
        "touch $NS && unshare --net=$NS true",
        "type veth peer name eth0 netns $NS",
        "nsenter --net=$NS ip link set lo up",
        "nsenter --net=$NS ip route add default via ",
    ]
    expected_in_order = [
        "unshare --pid --mount --uts --ipc --fork",
        "clone(CLONE_VM|CLONE_VFORK|CLONE_NEWPID|CLONE_NEWNS|CLONE_NEWUTS|CLONE_NEWIPC|SIGCHLD)",
        "nsenter --net=$NS",
        'setns(open("$NS", O_RDONLY), CLONE_NEWNET)',
        "mount --make-rprivate /",
        "mount -t overlay overlay -o lowerdir=$LAYERS/init:$LAYERS/",
        "mount -t proc proc -o nosuid,nodev,noexec $ROOT/proc",
        "mount -t sysfs sysfs -o ro,nosuid,nodev,noexec $ROOT/sys",
        "mount -t tmpfs tmpfs -o nosuid,strictatime,mode=755,size=65536k $ROOT/dev",
        "mount -t devpts devpts -o nosuid,noexec,newinstance,ptmxmode=0666,mode=0620,gid=5 $ROOT/dev/pts",
        "mknod -m 666 $ROOT/dev/null c 1 3",
        "ln -s /proc/self/fd $ROOT/dev/fd",
        "mount --bind $CTR/hosts $ROOT/etc/hosts",
        "mount --bind $CTR/resolv.conf $ROOT/etc/resolv.conf",
        "mount --bind $CTR/hostname $ROOT/etc/hostname",
        "cd $ROOT && pivot_root . . && umount -l . && cd /",
        'pivot_root(".", ".")',
        "hostname explained",
        'sethostname("explained", 9)',
        "exec env -i PATH=",
        'execve("hostname", ["hostname"]',
    ]
    for where, expected in ((engine_side, engine_expected), (plan, expected_in_order)):
        position = 0
        for text in expected:
            found = where.find(text, position)
            assert found >= 0, f"{text!r} missing (or out of order) in:\n{r.stderr}"
            position = found
    assert "ip link set lo up" not in plan, "lo is up already: the engine's step"
    assert re.search(r"^ROOT=\$CTR/rootfs$", plan, re.M)
    assert re.search(rf"^NS={re.escape(str(cli.root))}/netns/[0-9a-f]{{64}}$", plan, re.M)


def test_run_explain_with_network_none_clones_a_network_namespace(cli):
    r = cli("run", "--rm", "--explain", "--network", "none", "busybox", "true")
    assert r.returncode == 0, r.stderr
    engine_side, _, plan = r.stderr.partition("# plan for container")
    assert "the clone makes a new, empty network namespace (only lo)" in engine_side
    assert "unshare --pid --mount --uts --ipc --net --fork" in plan
    assert "CLONE_NEWIPC|CLONE_NEWNET|SIGCHLD" in plan
    assert "nsenter --net" not in plan
    # the files are bound all the same; lo is brought up by the child itself
    assert plan.index("mount --bind $CTR/hosts $ROOT/etc/hosts") < plan.index("pivot_root") \
        < plan.index("ip link set lo up") < plan.index("exec env -i")


def test_explain_shows_the_engines_cgroup_side(cli):
    from engine.runtime import cgroups

    r = cli("create", "--explain", "-m", "64m", "--pids-limit", "20", "busybox", "true")
    cid = r.stdout.strip()
    group = cgroups.Cgroup(cid)
    if group.version == "none":
        pytest.skip("no cgroups on this host")
    assert f"\nCG=dockyard/{cid}\n" in r.stderr
    memory = group.dir("memory").replace(f"dockyard/{cid}", "$CG")
    limit = f"echo 67108864 > {memory}/memory.{'limit_in_bytes' if group.version == '1' else 'max'}"
    join = f"$ echo 0 > {memory}/cgroup.procs"     # a step of the child's plan
    assert limit in r.stderr and join in r.stderr
    assert r.stderr.index(limit) < r.stderr.index("# plan for container") < r.stderr.index(join)
    assert not group.exists(), "--explain with create only describes"
    cli("rm", cid)


def test_ps_columns_and_states(cli):
    cli("run", "--name", "done3", "busybox", "sh", "-c", "exit 3")
    cli("run", "--name", "broken", "busybox", "nosuch")
    r = cli("ps")
    assert r.stdout.split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    r = cli("ps", "-a")
    lines = r.stdout.splitlines()
    assert lines[0].startswith("CONTAINER ID   IMAGE     COMMAND")
    rows = {line.split()[-1]: line for line in lines[1:]}
    assert set(rows) == {"done3", "broken"}
    assert re.search(r'busybox +"sh -c \'exit 3\'" +.* ago +Exited \(3\) .* ago +done3$', rows["done3"])
    assert re.search(r'"nosuch" .* Created +broken$', rows["broken"])
    ids = cli("ps", "-aq").stdout.split()
    assert len(ids) == 2 and all(len(i) == 12 for i in ids)
    full = cli("ps", "-aq", "--no-trunc").stdout.split()
    assert all(len(i) == 64 for i in full) and {i[:12] for i in full} == set(ids)
    r = cli("rm", *ids)
    assert r.stdout.split() == ids and r.returncode == 0
    assert cli("ps", "-aq").stdout == ""


def test_ps_last_latest_and_size(cli):
    for name in ("one", "two", "three"):
        cli("create", "--name", name, "busybox", "sh", "-c", "echo hi > /grown")
    cli("start", "-a", "two")
    names = lambda *flags: [line.split()[-1] for line in cli("ps", *flags).stdout.splitlines()[1:]]
    assert names() == []                         # none runs
    assert names("-n", "2") == ["three", "two"]  # -n looks at every state, newest first
    assert names("-l") == ["three"]
    assert cli("ps", "-lq").stdout.strip() == cli("inspect", "-f", "{{.Id}}", "three").stdout.strip()[:12]
    lines = cli("ps", "-a", "-s").stdout.splitlines()
    assert lines[0].split()[-1] == "SIZE"
    sizes = dict(re.search(r"(\S+) +(\S+ \(virtual \S+\))$", line).groups() for line in lines[1:])
    # "two" wrote 3 bytes into its writable layer; the others nothing.
    assert re.fullmatch(r"3B \(virtual [0-9.]+[kM]B\)", sizes["two"])
    assert re.fullmatch(r"0B \(virtual [0-9.]+[kM]B\)", sizes["one"])
    r = cli("ps", "-n", "x")
    assert r.returncode == 125 and "invalid int value" in r.stderr
    cli("rm", "one", "two", "three")


def test_long_commands_are_truncated_like_docker(cli):
    cli("run", "--name", "long", "busybox", "sh", "-c", "echo a long command line here")
    line = cli("ps", "-a").stdout.splitlines()[1]
    assert '"sh -c \'echo a long …"' in line
    assert '"sh -c \'echo a long command line here\'"' in cli("ps", "-a", "--no-trunc").stdout
    cli("rm", "long")


def test_rm_errors_and_force(cli, root):
    r = cli("rm", "nosuch")
    assert r.returncode == 125 and r.stderr == "dockyard: No such container: nosuch\n"
    proc = cli.popen("run", "--name", "busy", "busybox", "sleep", "30")
    try:
        cli.wait_for("busy")
        assert "busy" in cli("ps").stdout
        r = cli("rm", "busy")
        assert r.returncode == 125
        assert "container is running: stop the container before removing or force remove" in r.stderr
        r = cli("rm", "-f", "busy")
        assert r.returncode == 0 and r.stdout == "busy\n"
        assert proc.wait(timeout=10) == 137
    finally:
        proc.kill()
    assert os.listdir(root / "containers") == []


def test_images_and_image_inspect(cli):
    r = cli("images")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert re.match(r"busybox +latest +[0-9a-f]{12} +.* ago +\d(\.\d+)?MB$", lines[1])
    image_id = cli("images", "-q").stdout.strip()
    info = json.loads(cli("inspect", "busybox").stdout)[0]
    assert info["Id"].startswith("sha256:" + image_id)
    assert info["RepoTags"] == ["busybox:latest"]
    assert info["Config"]["Cmd"] == ["sh"]
    assert info["RootFS"]["Type"] == "layers" and len(info["RootFS"]["Layers"]) == 1
    assert cli("images", "nosuch").stdout.splitlines()[1:] == []


def test_container_inspect_is_docker_shaped(cli):
    cli("run", "--name", "shape", "-e", "X=1", "busybox", "true")
    (c,) = json.loads(cli("inspect", "shape").stdout)
    for key in ("Id", "Created", "Path", "Args", "State", "Image", "Name", "HostConfig",
                "GraphDriver", "Mounts", "Config", "NetworkSettings"):
        assert key in c
    assert c["Name"] == "/shape" and c["Path"] == "true" and c["Args"] == []
    assert c["State"]["Status"] == "exited" and c["State"]["ExitCode"] == 0
    assert "X=1" in c["Config"]["Env"] and c["Config"]["Image"] == "busybox"
    assert c["GraphDriver"]["Data"]["UpperDir"].endswith(c["Id"] + "/upper")
    r = cli("inspect", "shape", "nosuch")
    assert r.returncode == 125 and r.stderr == "dockyard: Error: No such object: nosuch\n"
    assert len(json.loads(r.stdout)) == 1
    cli("rm", "shape")


def test_version_info_and_doctor(cli):
    r = cli("version")
    expected = "spawn python twin" if os.environ.get("DOCKYARD_PURE") else "spawn compiled"
    assert r.returncode == 0 and "Version:" in r.stdout and expected in r.stdout
    r = cli("info")
    assert r.returncode == 0
    for line in ("Containers: 0", "Images: 1", "Storage Driver: overlay", "Cgroup Version:",
                 f"Dockyard Root Dir: {cli.root}"):
        assert line in r.stdout
    r = cli("doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("running as root", "native core", "overlayfs", "pid namespace", "mnt namespace",
                 "uts namespace", "ipc namespace", "net namespace", "pivot_root", "cgroups",
                 "busybox image"):
        assert re.search(rf"^  ok +{re.escape(name)} ", r.stdout, re.M), (name, r.stdout)
    assert r.stdout.count("why: ") >= 11


def test_python_m_engine_and_console_script_agree(cli):
    import shutil
    import sys
    script = shutil.which("dockyard", path=os.path.dirname(sys.executable))
    assert script, "the console script is installed next to the interpreter"
    a = subprocess.run([script, "--version"], capture_output=True, text=True)
    b = cli("--version")
    assert a.stdout == b.stdout and a.stdout.startswith("Dockyard version ")


@pytest.mark.parametrize("args, message", [
    (["run"], '"run" requires at least 1 argument.'),
    (["run", "--bogus", "busybox"], "unknown flag: --bogus"),
    (["run", "Busybox"], "repository name (library/Busybox) must be lowercase"),
    (["run", "nosuch"], "No such image: nosuch:latest"),
    (["run", "busybox:"], "invalid reference format"),
    (["run", "scratch"], "No command specified"),
    (["run", "-w", "relative", "busybox", "true"], "needs to be an absolute path"),
    (["run", "--name", "bad/name", "busybox", "true"], "Invalid container name"),
    (["nosuchcommand"], "invalid choice"),
])
def test_bad_input_is_one_line_and_125(cli, root, args, message):
    from support import tree_digest

    before = tree_digest(root)
    r = cli(*args)
    assert r.returncode == 125
    errors = [line for line in r.stderr.splitlines() if line.startswith("dockyard:")]
    assert len(errors) == 1 and message in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    assert tree_digest(root) == before, "the store changed"
