"""The cgroup driver on the real kernel: limits, joining, freezing, the pids limit, OOM kills.

Every cgroup made here is ``dockyard-test/test-<n>``, never under the
``dockyard`` parent real containers use, and every test cleans up after
itself (processes killed and reaped, cgroups removed); an autouse fixture
fails the test if a ``test-*`` cgroup is left in any hierarchy.

Most tests run on either version and read the version's own files; the
ones that exercise something only v2 has are skipped on a v1 host.
"""

import itertools
import os
import signal
import subprocess
import sys
import time

import pytest

from engine.doctor import cgroup_info
from engine.runtime import cgroups
from engine.runtime.cgroups import Cgroup

pytestmark = pytest.mark.root

PARENT = "dockyard-test"
MiB = 1024 * 1024
VERSION = cgroups.version()
HOST = cgroup_info()[0]  # "1 (hybrid)" on the development VM

needs_cgroups = pytest.mark.skipif(VERSION == "none", reason="needs cgroups (none mounted)")
needs_v1 = pytest.mark.skipif(VERSION != "1", reason=f"needs cgroup v1; this host is v{HOST}")
needs_v2 = pytest.mark.skipif(
    VERSION != "2", reason="needs cgroup v2 with controllers; this host is "
                           + ("v1 hybrid" if HOST == "1 (hybrid)" else f"v{HOST}"))

_ids = itertools.count()


# -- fixtures -------------------------------------------------------------------


def _test_dirs() -> list[str]:
    """Every test-* cgroup directory under dockyard-test or dockyard, in every hierarchy."""
    layout = cgroups.detect()
    found = []
    for parent in (PARENT, "dockyard"):
        found += [f"{parent}/{i}" for i in cgroups.leftovers(parent, layout=layout) if i.startswith("test-")]
    return found


@pytest.fixture(autouse=True)
def no_test_cgroups_left():
    yield
    assert not _test_dirs(), f"cgroups left behind: {_test_dirs()}"


@pytest.fixture(scope="module", autouse=True)
def remove_test_parent():
    """Remove the dockyard-test parents once the module is done (if nothing is in them)."""
    yield
    if VERSION == "none":
        return
    for path in Cgroup("x", parent=PARENT).directories():
        if not path.endswith("/" + PARENT):
            continue
        try:
            os.rmdir(path)
        except OSError:
            pass


class Lab:
    """Cgroups and processes made by one test, all undone at the end."""

    def __init__(self):
        self.cgroups: list[Cgroup] = []
        self.procs: list[subprocess.Popen] = []

    def cgroup(self, host_config=None) -> Cgroup:
        cg = Cgroup(f"test-{os.getpid()}-{next(_ids)}", parent=PARENT)
        self.cgroups.append(cg)
        cg.create(host_config or {})
        return cg

    def popen(self, argv, **kw) -> subprocess.Popen:
        p = subprocess.Popen(argv, **kw)
        self.procs.append(p)
        return p

    def start_in(self, cg: Cgroup, script: str) -> subprocess.Popen:
        """Run ``sh -c script`` *inside* ``cg``: the shell joins first and only
        then reads "go" and runs the script (as the spawner's sync pipe does)."""
        gate, go = os.pipe()
        try:
            p = self.popen(["sh", "-c", "read go; " + script], stdin=gate,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            cg.join(p.pid)
            os.write(go, b"go\n")
        finally:
            os.close(gate)
            os.close(go)
        return p

    def cleanup(self):
        """Kill, reap, remove -- every step tried even if an earlier one failed."""
        errors = []

        def attempt(fn, *args):
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 -- reported below
                errors.append(e)

        for cg in self.cgroups:
            if cg.exists():
                attempt(cg.kill_all, signal.SIGKILL)
        for p in self.procs:
            if p.poll() is None:
                attempt(p.kill)
            attempt(p.communicate)  # reap, close pipes
        for cg in self.cgroups:
            attempt(wait_empty, cg)
            attempt(cg.remove)
        if errors:
            raise errors[0]


@pytest.fixture
def lab():
    if VERSION == "none":
        pytest.skip("needs cgroups (none mounted)")
    lab = Lab()
    try:
        yield lab
    finally:
        lab.cleanup()


def wait_empty(cg: Cgroup, timeout=5.0):
    deadline = time.monotonic() + timeout
    while cg.pids() and time.monotonic() < deadline:
        time.sleep(0.01)


def read(cg: Cgroup, controller: str, v1_file: str, v2_file: str) -> str:
    name = v2_file if VERSION == "2" else v1_file
    with open(os.path.join(cg.dir(controller), name)) as f:
        return f.read().strip()


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` (fields 14 and 15 of /proc/<pid>/stat, proc(5))."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# -- the tests -------------------------------------------------------------------

LIMITS = {"Memory": 32 * MiB, "NanoCpus": 500_000_000, "PidsLimit": 16, "CpusetCpus": "0"}


def test_limits_are_written_and_a_process_joins(lab):
    cg = lab.cgroup(LIMITS)
    sleeper = lab.popen(["sleep", "30"])
    cg.join(sleeper.pid)

    assert read(cg, "memory", "memory.limit_in_bytes", "memory.max") == str(32 * MiB)
    if VERSION == "1":
        assert read(cg, "cpu", "cpu.cfs_quota_us", "") == "50000"
        assert read(cg, "cpu", "cpu.cfs_period_us", "") == "100000"
        if cg.layout.swap:  # docker's default: memory + swap = 2 x --memory
            assert read(cg, "memory", "memory.memsw.limit_in_bytes", "") == str(64 * MiB)
    else:
        assert read(cg, "cpu", "", "cpu.max") == "50000 100000"
    assert read(cg, "pids", "pids.max", "pids.max") == "16"
    assert read(cg, "cpuset", "cpuset.cpus", "cpuset.cpus") == "0"

    # The kernel agrees the process is in the cgroup, in every hierarchy...
    with open(f"/proc/{sleeper.pid}/cgroup") as f:
        lines = f.read().splitlines()
    ours = f"/{PARENT}/{cg.container_id}"
    if VERSION == "1":
        in_ours = {c for line in lines for c in line.split(":")[1].split(",") if line.endswith(":" + ours)}
        assert set(cg.layout.mounts) <= in_ours, lines
    else:
        assert f"0::{ours}" in lines
    # ...and applies the cpuset to it.
    with open(f"/proc/{sleeper.pid}/status") as f:
        assert "Cpus_allowed_list:\t0\n" in f.read()
    assert cg.pids() == [sleeper.pid]


def test_create_is_idempotent_and_the_plan_is_what_is_on_disk(lab):
    cg = lab.cgroup(LIMITS)
    cg.create(LIMITS)
    for write in cg.plan(LIMITS):
        if write.file == "cgroup.subtree_control":
            continue  # reads back as the enabled list, without "+"
        with open(write.target) as f:
            assert f.read().strip() == write.value, write.shell()


def test_freeze_stops_the_process_and_thaw_resumes_it(lab):
    cg = lab.cgroup({"NanoCpus": 500_000_000})
    busy = lab.start_in(cg, "while :; do :; done")
    wait_until(lambda: cpu_ticks(busy.pid) > 0)

    cg.freeze()
    assert cg.frozen()
    if VERSION == "1":
        assert read(cg, "freezer", "freezer.state", "") == "FROZEN"
        # A v1-frozen task sleeps uninterruptibly in the kernel's refrigerator.
        assert proc_state(busy.pid) == "D"
    before = cpu_ticks(busy.pid)
    time.sleep(0.3)
    assert cpu_ticks(busy.pid) == before, "a frozen process ran"

    cg.thaw()
    assert not cg.frozen()
    wait_until(lambda: cpu_ticks(busy.pid) > before)
    assert proc_state(busy.pid) in "RS"


def test_pids_limit_stops_the_sixth_process(lab):
    cg = lab.cgroup({"PidsLimit": 5})
    # The shell is process 1; it starts sleepers in the background and
    # prints how many it started. The fork for a 6th process fails with
    # EAGAIN and dash gives up ("Cannot fork"). (The sleepers let go of the
    # output pipes, so reading them ends when the shell does.)
    sh = lab.start_in(cg, "n=0; for i in 1 2 3 4 5 6 7 8; do sleep 30 >/dev/null 2>&1 & "
                          "n=$((n+1)); echo $n; done")
    out, err = sh.communicate(timeout=10)
    assert out.split() == ["1", "2", "3", "4"]
    assert sh.returncode != 0 and "fork" in err.lower()
    with open(os.path.join(cg.dir("pids"), "pids.events")) as f:
        assert int(cgroups._keyed(f.read())["max"]) >= 1  # failed forks, counted by the kernel
    # The four sleepers are still inside (reparented when the shell died).
    assert len(cg.pids()) == 4
    cg.kill_all(signal.SIGKILL)
    wait_empty(cg)
    assert cg.pids() == []


ALLOCATE_64M = "b = bytearray(64 << 20); b[::4096] = b'x' * (len(b) // 4096)"


def test_oom_kill_is_counted(lab):
    cg = lab.cgroup({"Memory": 16 * MiB})
    assert cg.oom_kills() == 0
    assert all(os.path.exists(f) for f in cg.oom_files())
    # exec so the allocating process is the one that joined: Python itself
    # starts inside the 16 MB, then touches 64 MB.
    hog = lab.start_in(cg, f'exec {sys.executable} -S -c "{ALLOCATE_64M}"')
    hog.communicate(timeout=30)
    assert hog.returncode == -signal.SIGKILL
    assert cg.oom_kills() == 1


def test_stats_are_sane(lab):
    cg = lab.cgroup(LIMITS | {"CpusetCpus": ""})
    # exec a fresh shell so its memory is charged to the cgroup (v1 does not
    # move the charges of a process that joins after it started).
    busy = lab.start_in(cg, "exec sh -c 'while :; do :; done'")
    wait_until(lambda: cpu_ticks(busy.pid) > 0)
    first = cg.stats()
    time.sleep(1.0)
    second = cg.stats()

    assert second["online_cpus"] == os.sysconf("SC_NPROCESSORS_ONLN")
    assert 0 < second["memory_usage"] < 32 * MiB
    assert second["memory_limit"] == 32 * MiB
    assert (second["pids_current"], second["pids_limit"]) == (1, 16)
    assert second["blkio_read"] >= 0 and second["blkio_write"] >= 0
    assert second["memory_cache"] >= 0 and second["inactive_file"] >= 0
    # docker's CPU %: Δcontainer / Δsystem × CPUs. The quota is half a CPU.
    cpu = second["cpu_usage_ns"] - first["cpu_usage_ns"]
    system = second["system_cpu_ns"] - first["system_cpu_ns"]
    percent = cpu / system * second["online_cpus"] * 100
    assert 20 < percent < 70, percent


def test_update_changes_the_limits_of_a_live_cgroup(lab):
    cg = lab.cgroup({"Memory": 32 * MiB, "PidsLimit": 16})
    sleeper = lab.popen(["sleep", "30"])
    cg.join(sleeper.pid)
    swap = VERSION == "1" and cg.layout.swap

    cg.update({"Memory": 64 * MiB, "PidsLimit": 16})  # up: memsw must be raised first
    assert read(cg, "memory", "memory.limit_in_bytes", "memory.max") == str(64 * MiB)
    if swap:
        assert read(cg, "memory", "memory.memsw.limit_in_bytes", "") == str(128 * MiB)

    cg.update({"Memory": 24 * MiB, "PidsLimit": 8})  # down: the limit must be lowered first
    assert read(cg, "memory", "memory.limit_in_bytes", "memory.max") == str(24 * MiB)
    if swap:
        assert read(cg, "memory", "memory.memsw.limit_in_bytes", "") == str(48 * MiB)
    assert read(cg, "pids", "pids.max", "pids.max") == "8"
    assert cg.pids() == [sleeper.pid]


def test_a_rejected_value_names_the_file(lab):
    cg = lab.cgroup({})
    with pytest.raises(OSError) as err:
        cg.update({"CpusetCpus": "4095"})  # no such CPU
    assert err.value.filename.endswith("/cpuset.cpus")
    assert "writing '4095'" in err.value.__notes__[0]


def test_kill_all_reaches_a_paused_container(lab):
    cg = lab.cgroup({})
    sh = lab.start_in(cg, "sleep 30 & sleep 30 & wait")
    wait_until(lambda: len(cg.pids()) == 3)
    cg.freeze()
    cg.kill_all(signal.SIGKILL)
    sh.communicate(timeout=5)
    assert sh.returncode == -signal.SIGKILL
    wait_empty(cg)
    assert cg.pids() == [] and not cg.frozen()


def test_kill_all_with_sigterm_keeps_a_paused_container_paused(lab):
    cg = lab.cgroup({})
    sleeper = lab.start_in(cg, "exec sleep 30")
    wait_until(lambda: cg.pids() == [sleeper.pid])
    cg.freeze()
    cg.kill_all(signal.SIGTERM)
    assert cg.frozen() and sleeper.poll() is None  # delivered, not yet acted on
    cg.thaw()
    sleeper.communicate(timeout=5)
    assert sleeper.returncode == -signal.SIGTERM


def test_remove_leaves_nothing_and_is_idempotent(lab):
    cg = lab.cgroup(LIMITS)
    sleeper = lab.start_in(cg, "exec sleep 30")
    assert cg.container_id in cgroups.leftovers(PARENT)
    cg.kill_all(signal.SIGKILL)
    sleeper.communicate(timeout=5)
    cg.remove()
    assert not cg.exists()
    assert all(not os.path.exists(d) for d in cg.dirs)
    assert cg.container_id not in cgroups.leftovers(PARENT)
    cg.remove()


def test_remove_refuses_a_cgroup_with_processes(lab, monkeypatch):
    monkeypatch.setattr(cgroups, "WAIT_SECONDS", 0.2)
    cg = lab.cgroup({})
    sleeper = lab.popen(["sleep", "30"])
    cg.join(sleeper.pid)
    with pytest.raises(OSError) as err:
        cg.remove()
    assert "still in it: " + str(sleeper.pid) in err.value.__notes__[-1]


@needs_v1
def test_v1_oom_kills_are_read_from_memory_oom_control():
    cg = Cgroup("test-x", parent=PARENT)
    assert cg.oom_files() == [os.path.join(cg.layout.mounts["memory"], PARENT, "test-x", "memory.oom_control")]


@needs_v2
def test_v2_parents_enable_the_controllers(lab):
    cg = lab.cgroup(LIMITS)
    unified = cg.layout.unified
    for path in (unified, os.path.join(unified, PARENT)):
        with open(os.path.join(path, "cgroup.subtree_control")) as f:
            enabled = f.read().split()
        assert {"cpu", "memory", "pids", "cpuset"} <= set(enabled)


@needs_v2
def test_v2_freeze_is_reported_in_cgroup_events(lab):
    cg = lab.cgroup({})
    lab.start_in(cg, "exec sleep 30")
    cg.freeze()
    with open(os.path.join(cg.dir(), "cgroup.events")) as f:
        assert "frozen 1" in f.read().splitlines()
    cg.thaw()
    with open(os.path.join(cg.dir(), "cgroup.freeze")) as f:
        assert f.read().strip() == "0"


@needs_v2
def test_v2_cgroup_kill_kills_everything(lab):
    cg = lab.cgroup({})
    sh = lab.start_in(cg, "sleep 30 & sleep 30 & wait")
    wait_until(lambda: len(cg.pids()) == 3)
    cg.kill_all(signal.SIGKILL)  # one write to cgroup.kill
    sh.communicate(timeout=5)
    wait_empty(cg)
    assert cg.pids() == []


@needs_v2
def test_v2_swap_is_limited_apart_from_memory(lab):
    cg = lab.cgroup({"Memory": 32 * MiB, "MemorySwap": 48 * MiB})
    if not cg.layout.swap:
        pytest.skip("no swap accounting (memory.swap.max absent)")
    assert read(cg, "memory", "", "memory.swap.max") == str(16 * MiB)


def test_warm_up_moves_us_only_where_we_are():
    """launcher's warm-up writes 0 to the cgroup.procs of our own cgroup: it
    must name an existing file and leave our membership as it was."""
    layout = cgroups.host_layout()
    if layout.version == "none":
        pytest.skip("no cgroups")
    procs = cgroups.own_procs_file(layout)
    assert procs is not None and os.path.isfile(procs)
    with open(procs) as f:
        assert str(os.getpid()) in f.read().split()
    before = open("/proc/self/cgroup").read()
    cgroups.warm_up(layout)
    assert open("/proc/self/cgroup").read() == before
    cgroups.warm_up(cgroups.CgroupLayout("none"))   # nothing to do, no error


@needs_cgroups
def test_the_last_container_takes_the_parent_directories_with_it():
    """Nothing of ours stays in /sys/fs/cgroup: removing the last container's
    cgroup removes the parent directories too; an earlier one leaves them."""
    parent = "dockyard-test-parents"
    first, second = (Cgroup(f"test-{next(_ids)}", parent=parent) for _ in range(2))
    first.create({})
    second.create({})
    parents = first.parent_dirs()
    assert parents and all(os.path.isdir(p) for p in parents)
    first.remove()
    assert all(os.path.isdir(p) for p in parents), "the second container still needs them"
    second.create({})            # idempotent, and with the parents there
    second.remove()
    assert not any(os.path.exists(p) for p in parents)
    first.create({})             # and they come back for the next container
    assert first.exists()
    first.remove()
    assert not any(os.path.exists(p) for p in parents)
