"""The plan is data: its rendering and its ops come from the same steps.

Also here, because the plan is built from them: docker's security profile
(capabilities, masked and read-only paths), the run options that become
steps (volumes, --tmpfs, --read-only, --user, --ulimit, --init, -t) and the
``--user`` lookup in the image's files (runtime/user.py).
"""

import os
import stat
import sys

import pytest

from engine.errors import EngineError, UsageError
from engine.runtime import plan as P
from engine.runtime import profile
from engine.runtime.container import runtime_env
from engine.runtime.options import host_config
from engine.runtime.profile import container_plan, tmpfs_options
from engine.runtime.user import ExecUser, RootView, UnsafeMountTarget, UserNotFound, resolve_user
from engine.snapshot import Overlay

OVERLAY = Overlay(("/r/snapshots/init", "/r/snapshots/abc"), "/r/containers/c1/upper",
                  "/r/containers/c1/work", "/r/containers/c1/rootfs")
ROOT = OVERLAY.target
DOCKER_DEFAULT_CAPS = 0xA80425FB


def make_plan(workdir="/", hostname="box", user=None, tty=False, available_caps=None, **options):
    config = {"Hostname": hostname, "WorkingDir": workdir, "User": ""}
    return container_plan(OVERLAY, ["sh", "-c", "echo hi"], ["PATH=/bin", "HOME=/root"], config,
                          host_config(**options), user=user, tty=tty, available_caps=available_caps,
                          title="# test")


def steps_of(plan, kind):
    return [s for s in plan.steps if isinstance(s, kind)]


def index_of(plan, kind):
    return next(i for i, s in enumerate(plan.steps) if isinstance(s, kind))


def test_makedev_matches_glibc():
    for major, minor in [(1, 3), (5, 0), (136, 7), (4095, 255), (4096, 256), (259, 1 << 19)]:
        assert P.makedev(major, minor) == os.makedev(major, minor)


def test_clone_flags_cover_the_five_namespaces():
    flags = make_plan().clone_flags
    for flag in (P.CLONE_NEWPID, P.CLONE_NEWNS, P.CLONE_NEWUTS, P.CLONE_NEWIPC, P.CLONE_NEWNET):
        assert flags & flag
    assert not flags & P.CLONE_NEWUSER


@pytest.fixture
def built_init(monkeypatch):
    """--init without depending on the build: the plan only names the binary."""
    monkeypatch.setattr(profile, "init_binary", lambda: "/opt/dockyard-init")


def full_plan(tmp_path):
    """A plan with every kind of step."""
    (tmp_path / "data").mkdir()
    return make_plan("/app", user=ExecUser(1000, 100, (100, 27), "/home/u"), tty=True,
                     volumes=[f"{tmp_path}/data:/data:ro"], tmpfs=["/run:size=1m"], read_only=True,
                     ulimits=["nofile=1024:2048"], init=True)


def test_every_step_is_rendered_in_order_with_its_syscall(tmp_path, built_init):
    for plan in (make_plan(), full_plan(tmp_path)):
        text = plan.render()
        position = -1
        for step in plan.steps:
            shell = plan._shorten(step.shell())
            syscall = plan._shorten(step.syscall())
            at = text.index(shell, position + 1)
            assert text.index(syscall, at) > at
            position = at
        assert "unshare --pid --mount --uts --ipc --net --fork" in text
        assert "clone(CLONE_VM|CLONE_VFORK|CLONE_NEWPID|CLONE_NEWNS|CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWNET|SIGCHLD)" in text
    assert "exec env -i PATH=/bin HOME=/root sh -c 'echo hi'" in make_plan().render()


def test_rendering_uses_short_variables_but_ops_keep_real_paths():
    plan = make_plan()
    text = plan.render()
    assert "ROOT=$CTR/rootfs" in text
    assert "CTR=/r/containers/c1" in text
    assert "mount -t proc proc -o nosuid,nodev,noexec $ROOT/proc" in text
    assert "pivot_root . ." in text
    ops = plan.ops()
    proc = [op for op in ops if op.code == P.OP_MOUNT and op.fstype == b"proc"]
    assert proc[0].path == b"/r/containers/c1/rootfs/proc"
    assert proc[0].flags == P.MS_NOSUID | P.MS_NOEXEC | P.MS_NODEV


def test_overlay_mount_lists_layers_top_first():
    plan = make_plan()
    overlay = [op for op in plan.ops() if op.fstype == b"overlay"][0]
    assert overlay.data == (b"lowerdir=/r/snapshots/init:/r/snapshots/abc,"
                            b"upperdir=/r/containers/c1/upper,workdir=/r/containers/c1/work")


def test_sys_is_read_only_and_private_propagation_comes_first():
    ops = make_plan().ops()
    mounts = [op for op in ops if op.code == P.OP_MOUNT]
    assert mounts[0].flags == P.MS_REC | P.MS_PRIVATE and mounts[0].path == b"/"
    sysfs = [op for op in mounts if op.fstype == b"sysfs"][0]
    assert sysfs.flags & P.MS_RDONLY


def test_device_nodes_are_the_safe_set():
    devices = {op.path.rsplit(b"/", 1)[1]: op.dev for op in make_plan().ops() if op.code == P.OP_MKNOD}
    assert devices == {b"null": P.makedev(1, 3), b"zero": P.makedev(1, 5), b"full": P.makedev(1, 7),
                       b"random": P.makedev(1, 8), b"urandom": P.makedev(1, 9),
                       b"tty": P.makedev(5, 0)}


@pytest.mark.parametrize("workdir, expect_mkdir", [("/", False), ("/app/src", True)])
def test_working_directory_is_created_then_entered(workdir, expect_mkdir):
    plan = make_plan(workdir)
    codes = [op.code for op in plan.ops()]
    chdir = [op for op in plan.ops() if op.code == P.OP_CHDIR]
    assert len(chdir) == 1 and chdir[0].path == workdir.encode()
    assert (P.OP_MKDIR_P in codes) == expect_mkdir
    # Everything after pivot_root is relative to the new root.
    assert codes.index(P.OP_PIVOT_ROOT) < codes.index(P.OP_CHDIR)


def test_describe_names_failing_steps():
    plan = make_plan()
    assert plan.describe(len(plan.steps)) == "exec sh -c echo hi"
    assert plan.describe(0).startswith("#") or plan.describe(0)


def test_native_op_codes_match_the_plan():
    native = pytest.importorskip("engine._native.spawn")
    assert native.OPS == {name: value for value, name in P.OP_NAMES.items()}


# -- the order of the child's steps (profile.py's table) ---------------------------


def test_steps_come_in_the_documented_order(tmp_path, built_init):
    plan = full_plan(tmp_path)
    kinds = [type(s).__name__ for s in plan.steps]
    order = ["PivotRoot", "SetHostname", "LoopbackUp", "ChangeDir", "SetRlimit",
             "DropBoundingSet", "SetUser", "SetCapabilities", "SetsidCtty"]
    assert [kinds.index(k) for k in order] == sorted(kinds.index(k) for k in order)
    assert kinds[-1] == "SetsidCtty", "the controlling terminal comes right before exec"
    pivot = index_of(plan, P.PivotRoot)
    # Every mount that needs a host path happens before pivot_root...
    assert all(i < pivot for i, s in enumerate(plan.steps) if isinstance(s, P.MountInRoot))
    masks = [i for i, s in enumerate(plan.steps) if isinstance(s, P.Mount) and s.if_exists]
    assert masks and max(masks) < pivot
    # ...and the workdir is created before the root becomes read-only.
    remount_root = next(i for i, s in enumerate(plan.steps)
                        if isinstance(s, P.Mount) and s.target == "/" and s.flags & P.MS_RDONLY)
    mkdir_workdir = next(i for i, s in enumerate(plan.steps) if isinstance(s, P.MakeDir) and s.parents)
    assert pivot < mkdir_workdir < remount_root < index_of(plan, P.ChangeDir)


# -- capabilities -------------------------------------------------------------------


def caps_of(plan):
    (bounding,) = steps_of(plan, P.DropBoundingSet)
    (process,) = steps_of(plan, P.SetCapabilities)
    return bounding.op().flags, process.op().flags


def test_default_capabilities_are_dockers_14():
    plan = make_plan()
    assert caps_of(plan) == (DOCKER_DEFAULT_CAPS, DOCKER_DEFAULT_CAPS)
    (bounding,) = steps_of(plan, P.DropBoundingSet)
    assert bounding.op().mode == profile.last_cap()
    assert len(bounding.dropped) == profile.last_cap() + 1 - 14
    assert bounding.shell().startswith("setpriv --bounding-set=-all,+chown,+dac_override,")
    assert "effective=permitted=0xa80425fb, inheritable=0" in steps_of(plan, P.SetCapabilities)[0].syscall()
    assert "PR_CAP_AMBIENT_CLEAR_ALL" in steps_of(plan, P.SetCapabilities)[0].syscall()


@pytest.mark.parametrize("options, expected", [
    ({"cap_add": ["NET_ADMIN"]}, DOCKER_DEFAULT_CAPS | 1 << 12),
    ({"cap_drop": ["CHOWN"]}, DOCKER_DEFAULT_CAPS & ~1),
    ({"cap_drop": ["ALL"], "cap_add": ["KILL"]}, 1 << 5),
])
def test_cap_add_and_drop(options, expected):
    assert caps_of(make_plan(**options)) == (expected, expected)


def test_privileged_gets_what_the_engine_has():
    everything = (1 << (profile.last_cap() + 1)) - 1
    assert caps_of(make_plan(privileged=True)) == (everything, everything)
    without_24 = set(range(41)) - {24}
    bounding, process = caps_of(make_plan(privileged=True, available_caps=without_24))
    assert bounding == process == everything & ~(1 << 24)


def test_asking_for_a_capability_the_engine_lacks_is_dockers_error():
    with pytest.raises(EngineError, match='not available in the current environment: "CAP_SYS_RESOURCE"'):
        make_plan(cap_add=["SYS_RESOURCE"], available_caps=set(range(41)) - {24})


def test_a_non_root_user_keeps_the_bounding_set_but_no_capabilities():
    plan = make_plan(user=ExecUser(1000, 1000, (1000,), "/home/u"))
    assert caps_of(plan) == (DOCKER_DEFAULT_CAPS, 0)
    assert steps_of(plan, P.SetCapabilities)[0].shell() == "capsh --caps=="
    # setresuid cleared the parent-death signal: it is armed again after it.
    deaths = [i for i, s in enumerate(plan.steps) if isinstance(s, P.DieWithParent)]
    assert len(deaths) == 2 and deaths[1] == index_of(plan, P.SetUser) + 1


# -- masked and read-only paths, --privileged -------------------------------------


def test_masked_and_read_only_paths_are_dockers():
    plan = make_plan()
    skipped = [s for s in steps_of(plan, P.Mount) if s.if_exists]
    assert all(s.op().code == P.OP_MOUNT_IF_EXISTS for s in skipped)
    masked = {s.target[len(ROOT):]: s for s in skipped if not s.flags & P.MS_REMOUNT
              and s.source != s.target}
    assert set(masked) == set(profile.MASKED_PATHS) and len(masked) == 12
    for path, step in masked.items():
        if path in ("/proc/acpi", "/proc/asound", "/proc/scsi", "/sys/firmware",
                    "/sys/devices/virtual/powercap"):
            assert (step.fstype, step.flags) == ("tmpfs", P.MS_RDONLY), path
        else:
            assert (step.source, step.flags) == (f"{ROOT}/dev/null", P.MS_BIND), path
    readonly = [s for s in skipped if s.flags & P.MS_REMOUNT]
    assert [s.target[len(ROOT):] for s in readonly] == list(profile.READONLY_PATHS)
    for step in readonly:
        assert step.flags == P.MS_BIND | P.MS_REMOUNT | P.MS_RDONLY | P.MS_NOSUID | P.MS_NODEV | P.MS_NOEXEC
    binds = [s for s in skipped if s.source == s.target]
    assert [s.flags for s in binds] == [P.MS_BIND | P.MS_REC] * 5
    text = plan.render()
    assert "test -e $ROOT/proc/kcore && mount --bind $ROOT/dev/null $ROOT/proc/kcore" in text
    assert "test -e $ROOT/proc/sys && mount -o remount,bind,ro,nosuid,nodev,noexec $ROOT/proc/sys" in text


def test_privileged_skips_masks_and_mounts_sys_read_write():
    plan = make_plan(privileged=True)
    assert not [s for s in steps_of(plan, P.Mount) if s.if_exists]
    (sysfs,) = [s for s in steps_of(plan, P.Mount) if s.fstype == "sysfs"]
    assert not sysfs.flags & P.MS_RDONLY


# -- volumes, --tmpfs, --read-only -----------------------------------------------------


def test_volumes_are_bound_inside_the_root_parents_first(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    plan = make_plan(volumes=[f"{tmp_path}/dir:/srv/deep/er", f"{tmp_path}/file:/etc/file:ro",
                              f"{tmp_path}/dir:/srv:ro"], tmpfs=["/srv/deep/tmp:size=1m"])
    mounts = steps_of(plan, P.MountInRoot)
    # Sorted by depth (stable): a mount never hides one made before it.
    assert [(m.target, m.flags & P.MS_REMOUNT != 0) for m in mounts] == [
        ("/srv", False), ("/srv", True), ("/etc/file", False), ("/etc/file", True),
        ("/srv/deep/er", False), ("/srv/deep/tmp", False)]
    ops = [m.op() for m in mounts]
    assert all(op.code == P.OP_MOUNT_IN_ROOT and op.root == ROOT.encode() for op in ops)
    assert ops[0].mode == P.S_IFDIR
    assert ops[2].source == f"{tmp_path}/file".encode() and ops[2].mode == P.S_IFREG
    assert ops[2].flags == P.MS_BIND | P.MS_REC
    assert ops[3].flags & (P.MS_BIND | P.MS_REMOUNT | P.MS_RDONLY) == P.MS_BIND | P.MS_REMOUNT | P.MS_RDONLY
    assert ops[3].mode == 0 and not ops[3].source, "a remount creates nothing"
    tmpfs = ops[5]
    assert (tmpfs.source, tmpfs.fstype, tmpfs.data) == (b"tmpfs", b"tmpfs", b"size=1m")
    assert tmpfs.flags == P.MS_NOEXEC | P.MS_NOSUID | P.MS_NODEV
    text = plan.render()
    assert f"mount --rbind {tmp_path}/dir $ROOT/srv" in text
    assert "mount -o remount,bind,ro" in text
    assert 'open_in_root("$ROOT", "/srv/deep/er", mkdir missing); mount(' in text
    assert '"/proc/self/fd/<fd>"' in text


def test_bad_mounts_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(EngineError, match="bind source path does not exist: /no/such/dir"):
        make_plan(volumes=["/no/such/dir:/data"])
    with pytest.raises(UsageError, match="destination can't be '/'"):
        make_plan(tmpfs=["/"])


@pytest.mark.parametrize("options, flags, data", [
    ("", P.MS_NOEXEC | P.MS_NOSUID | P.MS_NODEV, ""),
    ("rw,size=64m,mode=1770", P.MS_NOEXEC | P.MS_NOSUID | P.MS_NODEV, "size=64m,mode=1770"),
    ("exec,size=1m,size=2m", P.MS_NOSUID | P.MS_NODEV, "size=2m"),
    ("ro,noatime,rprivate", P.MS_NOEXEC | P.MS_NOSUID | P.MS_NODEV | P.MS_RDONLY | P.MS_NOATIME, ""),
])
def test_tmpfs_options_start_from_dockers_defaults(options, flags, data):
    assert tmpfs_options(options) == (flags, data)


def test_read_only_root_is_a_remount_after_pivot_root():
    plan = make_plan(read_only=True)
    (remount,) = [s for s in steps_of(plan, P.Mount) if s.target == "/" and s.flags & P.MS_REMOUNT]
    assert remount.flags == P.MS_BIND | P.MS_REMOUNT | P.MS_RDONLY
    assert remount.shell() == "mount -o remount,bind,ro /"
    assert index_of(plan, P.PivotRoot) < plan.steps.index(remount)
    assert not [s for s in steps_of(make_plan(), P.Mount) if s.target == "/" and s.flags & P.MS_REMOUNT]


# -- user, ulimits, --init, tty ------------------------------------------------------------


def test_the_user_step_sets_groups_gid_and_uid():
    step = steps_of(make_plan(user=ExecUser(1000, 100, (100, 27), "/home/u")), P.SetUser)[0]
    assert step.shell() == "setpriv --reuid=1000 --regid=100 --groups=100,27"
    assert step.syscall() == "setgroups(2, [100, 27]); setresgid(100, 100, 100); setresuid(1000, 1000, 1000)"
    op = step.op()
    assert (op.code, op.flags, op.mode) == (P.OP_SETUSER, 1000, 100)
    assert op.data == (100).to_bytes(4, sys.byteorder) + (27).to_bytes(4, sys.byteorder)
    root = steps_of(make_plan(), P.SetUser)[0]
    assert (root.uid, root.gid, root.groups) == (0, 0, (0,))
    assert P.SetUser(5, 5).shell() == "setpriv --reuid=5 --regid=5 --clear-groups"


def test_ulimits_become_setrlimit_steps():
    plan = make_plan(ulimits=["nofile=1024:2048", "core=-1"])
    nofile, core = steps_of(plan, P.SetRlimit)
    assert nofile.op() == P.Op(P.OP_SETRLIMIT, mode=7, flags=1024, dev=2048)
    assert nofile.shell() == "prlimit --pid $$ --nofile=1024:2048"
    assert nofile.syscall() == "setrlimit(RLIMIT_NOFILE, {1024, 2048})"
    assert core.op().flags == core.op().dev == P.RLIM_INFINITY
    assert core.shell() == "prlimit --pid $$ --core=unlimited:unlimited"


def test_init_is_bound_read_only_and_runs_the_command(built_init):
    plan = make_plan(init=True)
    assert plan.exec.argv == ("/dev/init", "--", "sh", "-c", "echo hi")
    bind, remount = [s for s in steps_of(plan, P.MountInRoot) if s.target == "/dev/init"]
    assert (bind.source, bind.flags, bind.create) == ("/opt/dockyard-init", P.MS_BIND, "file")
    assert remount.flags & P.MS_RDONLY and remount.flags & P.MS_REMOUNT and remount.create == ""
    assert "/dev/init" not in make_plan().render()


def test_tty_adds_setsid_and_controlling_terminal_last():
    plan = make_plan(tty=True)
    assert isinstance(plan.steps[-1], P.SetsidCtty)
    assert plan.steps[-1].op() == P.Op(P.OP_SETSID_CTTY)
    assert plan.steps[-1].syscall() == "setsid(); ioctl(0, TIOCSCTTY, 0)"
    assert not steps_of(make_plan(), P.SetsidCtty)


def test_environment_gets_term_with_a_tty_and_home_from_the_user():
    config = {"Hostname": "box", "Env": ["A=1"], "Tty": True}
    assert runtime_env(config, home="/home/u") == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=box",
        "TERM=xterm", "A=1", "HOME=/home/u"]
    config = {"Hostname": "box", "Env": ["HOME=/mine", "TERM=dumb"], "Tty": True}
    assert runtime_env(config, home="/home/u")[2:] == ["TERM=dumb", "HOME=/mine"]
    assert "TERM=xterm" not in runtime_env({"Hostname": "box", "Env": []})


# -- --user: the image's /etc/passwd and /etc/group ---------------------------------

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1:daemon:/usr/sbin:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/home:/bin/false
"""
GROUP = """\
root:x:0:
wheel:x:10:root,app
app:x:1000:
audio:x:29:app
nogroup:x:65534:
"""


@pytest.fixture
def image_root(tmp_path):
    """Two 'layers': passwd in the lower one, group in the upper one."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "etc").mkdir(parents=True)
    (upper / "etc").mkdir(parents=True)
    (lower / "etc" / "passwd").write_text(PASSWD)
    (lower / "etc" / "group").write_text("root:x:0:\n")
    (upper / "etc" / "group").write_text(GROUP)
    return RootView([upper, lower])


@pytest.mark.parametrize("spec, expected", [
    ("", ExecUser(0, 0, (0, 10), "/root")),
    ("root", ExecUser(0, 0, (0, 10), "/root")),
    ("0", ExecUser(0, 0, (0, 10), "/root")),
    ("app", ExecUser(1000, 1000, (1000, 10, 29), "/home/app")),
    ("1000", ExecUser(1000, 1000, (1000, 10, 29), "/home/app")),
    ("1234", ExecUser(1234, 0, (0,), "/")),          # numeric, no entry: fine (gid 0, home /)
    ("1234:55", ExecUser(1234, 55, (55,), "/")),
    ("nobody:nogroup", ExecUser(65534, 65534, (65534,), "/home")),
    ("app:audio", ExecUser(1000, 29, (29,), "/home/app")),  # an explicit group: no supplementary ones
    ("nobody:0", ExecUser(65534, 0, (0,), "/home")),
])
def test_user_specs_follow_dockers_rules(image_root, spec, expected):
    assert resolve_user(image_root, spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("nosuch", "unable to find user nosuch: no matching entries in passwd file"),
    ("app:nosuch", "unable to find group nosuch: no matching entries in group file"),
    ("99999999999", "uids and gids must be in range 0-2147483647"),
])
def test_unknown_users_and_groups_are_errors(image_root, spec, message):
    with pytest.raises(UserNotFound, match=message) as e:
        resolve_user(image_root, spec)
    assert e.value.exit_code == 125


def test_symlinks_are_followed_inside_the_image_only(tmp_path):
    layer = tmp_path / "layer"
    (layer / "etc").mkdir(parents=True)
    (layer / "usr" / "lib").mkdir(parents=True)
    (layer / "usr" / "lib" / "passwd").write_text("app:x:7:7::/app:/bin/sh\n")
    # An absolute link means the image's /usr/lib, never the host's; ".." stops at the root.
    os.symlink("/../../usr/lib/passwd", layer / "etc" / "passwd")
    os.symlink("/etc/group", layer / "etc" / "group-link")
    view = RootView([layer])
    assert view.resolve("/etc/passwd") == "/usr/lib/passwd"
    assert resolve_user(view, "app") == ExecUser(7, 7, (7,), "/app")
    # A link to a host file that the image lacks reads as absent, not as the host's.
    os.symlink("/etc/hostname", layer / "etc" / "group")
    assert view.read_file("/etc/group") is None
    os.symlink("loop", layer / "loop")
    with pytest.raises(OSError, match="Too many levels"):
        view.resolve("/loop")


def test_a_fifo_or_a_huge_file_is_not_read(tmp_path):
    layer = tmp_path / "layer"
    (layer / "etc").mkdir(parents=True)
    os.mkfifo(layer / "etc" / "passwd")            # reading it would block the engine
    assert RootView([layer]).read_file("/etc/passwd") is None
    with pytest.raises(UserNotFound):
        resolve_user(RootView([layer]), "app")
    os.unlink(layer / "etc" / "passwd")
    with open(layer / "etc" / "passwd", "wb") as f:
        f.truncate(5 << 20)
    with pytest.raises(EngineError, match="larger than"):
        RootView([layer]).read_file("/etc/passwd")


@pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts are device nodes, opaque dirs need trusted.* xattrs")
def test_whiteouts_and_opaque_directories_are_respected(tmp_path):
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for layer in (lower, upper):
        (layer / "etc").mkdir(parents=True)
    (lower / "etc" / "passwd").write_text(PASSWD)
    (lower / "etc" / "group").write_text(GROUP)
    os.mknod(upper / "etc" / "passwd", stat.S_IFCHR | 0o600, 0)   # deleted in the container
    view = RootView([upper, lower])
    assert view.read_file("/etc/passwd") is None
    assert view.read_file("/etc/group") == GROUP.encode()
    os.unlink(upper / "etc" / "passwd")
    os.setxattr(upper / "etc", "trusted.overlay.opaque", b"y")     # /etc replaced as a whole
    assert view.read_file("/etc/passwd") is None and view.read_file("/etc/group") is None
    (upper / "etc" / "passwd").write_text("solo:x:5:5::/s:/bin/sh\n")
    assert resolve_user(view, "solo").uid == 5


def test_mount_targets_through_a_symlink_are_refused(tmp_path):
    layer = tmp_path / "layer"
    (layer / "srv").mkdir(parents=True)
    os.symlink("/etc", layer / "data")
    os.symlink("../etc", layer / "srv" / "link")
    view = RootView([layer])
    assert view.symlink_in("/data/x") == ("/data", "/etc")
    assert view.symlink_in("/srv/link") == ("/srv/link", "../etc")
    assert view.symlink_in("/srv/new/dir") is None
    config = {"Hostname": "h", "WorkingDir": "/"}
    with pytest.raises(UnsafeMountTarget, match="mount target /data/sub goes through a symlink: /data -> /etc"):
        container_plan(OVERLAY, ["true"], [], config, host_config(tmpfs=["/data/sub"]), view=view)
    container_plan(OVERLAY, ["true"], [], config, host_config(tmpfs=["/srv/sub"]), view=view)


# -- exec: joining a running container (runtime/exec.py) ----------------------------

from engine.runtime import exec as X  # noqa: E402


def make_exec_plan(argv=("sh",), **kw):
    config = {"Hostname": "box", "WorkingDir": "/srv", "Env": ["A=1", "PATH=/bin:/sbin"], "User": ""}
    hc = kw.pop("host_config", None) or host_config(ulimits=["nofile=100:200"], cap_drop=["CHOWN"])
    namespaces = [P.SetNamespace(kind, f"/proc/42/ns/{kind}", 10 + n)
                  for n, kind in enumerate(("ipc", "uts", "net", "pid", "mnt"))]
    return X.build_exec_plan(config, hc, list(argv), namespaces=namespaces, **kw)


def test_exec_plan_joins_then_forks_then_narrows_like_the_container():
    plan = make_exec_plan()
    assert plan.clone_flags == 0, "exec makes no new namespace"
    kinds = [type(s).__name__ for s in plan.steps]
    assert kinds == ["WaitForEngine"] + ["SetNamespace"] * 5 + [
        "ForkIntoPidNamespace", "ChangeDir", "SetRlimit", "DropBoundingSet", "SetUser",
        "SetCapabilities"]
    joined = [(s.kind, s.fd) for s in steps_of(plan, P.SetNamespace)]
    assert joined == [("ipc", 10), ("uts", 11), ("net", 12), ("pid", 13), ("mnt", 14)]
    # The mount namespace last: after it, /proc/<pid> might name something else.
    assert joined[-1][0] == "mnt"
    (chdir,) = steps_of(plan, P.ChangeDir)
    assert chdir.path == "/srv", "the container's WorkingDir by default"
    assert index_of(plan, P.ForkIntoPidNamespace) < index_of(plan, P.ChangeDir)
    (rlimit,) = steps_of(plan, P.SetRlimit)
    assert (rlimit.name, rlimit.soft, rlimit.hard) == ("nofile", 100, 200)
    bounding, process = caps_of(plan)
    assert bounding == process == DOCKER_DEFAULT_CAPS & ~1, "the container's --cap-drop CHOWN"


def test_exec_ops_carry_the_descriptors_and_namespace_types():
    ops = make_exec_plan().ops()
    setns = [op for op in ops if op.code == P.OP_SETNS]
    assert [(op.flags, op.mode) for op in setns] == [
        (10, P.CLONE_NEWIPC), (11, P.CLONE_NEWUTS), (12, P.CLONE_NEWNET), (13, P.CLONE_NEWPID),
        (14, P.CLONE_NEWNS)]
    assert setns[-1].path == b"/proc/42/ns/mnt"
    assert P.Op(P.OP_FORK_INTO_PIDNS) in ops


def test_exec_options_user_workdir_env_tty_detach_privileged():
    plan = make_exec_plan(["id"], user=ExecUser(1000, 100, (100,), "/home/u"), workdir="/tmp",
                          env=["A=2", "B=3"], tty=True)
    (user,) = steps_of(plan, P.SetUser)
    assert (user.uid, user.gid, user.groups) == (1000, 100, (100,))
    assert caps_of(plan)[1] == 0, "a non-root user keeps no capabilities"
    assert steps_of(plan, P.ChangeDir)[0].path == "/tmp"
    assert plan.exec.env == ("PATH=/bin:/sbin", "HOSTNAME=box", "TERM=xterm", "A=2", "HOME=/home/u", "B=3")
    assert plan.exec.search_path == "/bin:/sbin", "the container's PATH finds the command"
    assert isinstance(plan.steps[-1], P.SetsidCtty)

    detached = make_exec_plan(detach=True)
    assert index_of(detached, P.NewSession) == index_of(detached, P.ForkIntoPidNamespace) + 1
    assert not steps_of(make_exec_plan(), P.NewSession)
    assert detached.steps[index_of(detached, P.NewSession)].op() == P.Op(P.OP_SETSID)

    privileged = make_exec_plan(privileged=True, available_caps={0, 1, 21})
    assert caps_of(privileged) == (0b11 | 1 << 21, 0b11 | 1 << 21), "what dockyard itself has"


def test_exec_plan_refuses_a_relative_workdir_and_an_empty_command():
    with pytest.raises(UsageError, match="needs to be an absolute path"):
        make_exec_plan(workdir="tmp")
    with pytest.raises(UsageError, match="No exec command"):
        make_exec_plan([])


def test_exec_plan_renders_every_step_and_a_plain_fork():
    plan = make_exec_plan(tty=True)
    text = plan.render()
    assert "clone(SIGCHLD)" in text and "unshare" not in text
    assert "nsenter --mount=/proc/42/ns/mnt" in text
    assert 'setns(open("/proc/42/ns/pid", O_RDONLY), CLONE_NEWPID)' in text
    assert "nsenter --fork" in text
    position = -1
    for step in plan.steps:
        at = text.index(step.shell(), position + 1)
        assert text.index(step.syscall(), at) > at
        position = at
    # Printed without descriptors: the steps name the files and hold fd -1.
    described = X.described_namespaces(7)
    assert [s.fd for s in described] == [-1] * 5 and described[0].path == "/proc/7/ns/ipc"


def test_report_pid_and_new_op_codes_match_the_compiled_spawner():
    native = pytest.importorskip("engine._native.spawn")
    assert native.PID_REPORT == P.REPORT_PID
    for name in ("OP_SETNS", "OP_FORK_INTO_PIDNS", "OP_SETSID"):
        assert native.OPS[name] == getattr(P, name)


def test_child_subreaper_twins_agree():
    """prctl(PR_SET_CHILD_SUBREAPER) from the compiled core and its twin, back to where it was."""
    from engine.runtime import spawn as twin

    native = pytest.importorskip("engine._native.spawn")
    start = twin.child_subreaper(0)
    try:
        for first, second in ((native, twin), (twin, native)):
            first.child_subreaper(1)
            assert second.child_subreaper(0) == 1
            assert first.child_subreaper(0) == 0
    finally:
        twin.child_subreaper(start)


def test_the_child_joins_its_cgroup_first_and_never_waits_for_the_engine():
    procs = ["/sys/fs/cgroup/memory/dockyard/c1/cgroup.procs", "/sys/fs/cgroup/pids/dockyard/c1/cgroup.procs"]
    config = {"Hostname": "box", "WorkingDir": "/", "User": ""}
    plan = container_plan(OVERLAY, ["true"], ["PATH=/bin"], config, host_config(), cgroup_procs=procs)
    assert [type(s).__name__ for s in plan.steps[:3]] == ["DieWithParent", "JoinCgroup", "JoinCgroup"]
    assert plan.steps[1].op() == P.Op(P.OP_WRITE, path=procs[0].encode(), data=b"0")
    assert plan.steps[1].shell() == f"echo 0 > {procs[0]}"
    assert not steps_of(plan, P.WaitForEngine), "nothing to wait for: the compiled spawner may vfork"
    assert "clone(CLONE_VM|CLONE_VFORK|" in plan.render()
    # Without cgroups (a host without them), no join.
    assert not steps_of(make_plan(), P.JoinCgroup)


def test_op_write_in_the_twin(tmp_path):
    """OP_WRITE writes into an existing file and never creates one."""
    from engine.runtime import spawn as twin

    target = tmp_path / "procs"
    target.write_text("")
    twin.run_op(P.Op(P.OP_WRITE, path=bytes(target), data=b"0"), -1)
    assert target.read_text() == "0"
    with pytest.raises(FileNotFoundError):
        twin.run_op(P.Op(P.OP_WRITE, path=bytes(tmp_path / "absent"), data=b"0"), -1)
