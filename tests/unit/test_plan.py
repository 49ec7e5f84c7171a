"""The plan is data: its rendering and its ops come from the same steps."""

import pytest

from engine.runtime import plan as P
from engine.runtime.profile import container_plan
from engine.snapshot import Overlay


def make_plan(workdir="/", hostname="box"):
    overlay = Overlay(("/r/snapshots/init", "/r/snapshots/abc"), "/r/containers/c1/upper",
                      "/r/containers/c1/work", "/r/containers/c1/rootfs")
    return container_plan(overlay, hostname, ["sh", "-c", "echo hi"], ["PATH=/bin", "HOME=/root"],
                          workdir, title="# test")


def test_makedev_matches_glibc():
    import os
    for major, minor in [(1, 3), (5, 0), (136, 7), (4095, 255), (4096, 256), (259, 1 << 19)]:
        assert P.makedev(major, minor) == os.makedev(major, minor)


def test_clone_flags_cover_the_five_namespaces():
    flags = make_plan().clone_flags
    for flag in (P.CLONE_NEWPID, P.CLONE_NEWNS, P.CLONE_NEWUTS, P.CLONE_NEWIPC, P.CLONE_NEWNET):
        assert flags & flag
    assert not flags & P.CLONE_NEWUSER


def test_every_step_is_rendered_in_order_with_its_syscall():
    plan = make_plan()
    text = plan.render()
    position = -1
    for step in plan.steps:
        shell = plan._shorten(step.shell())
        syscall = plan._shorten(step.syscall())
        at = text.index(shell, position + 1)
        assert text.index(syscall, at) > at
        position = at
    assert "unshare --pid --mount --uts --ipc --net --fork" in text
    assert "clone(CLONE_NEWPID|CLONE_NEWNS|CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWNET|SIGCHLD)" in text
    assert "exec env -i PATH=/bin HOME=/root sh -c 'echo hi'" in text


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
    assert codes[-1] == P.OP_CHDIR and plan.ops()[-1].path == workdir.encode()
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
