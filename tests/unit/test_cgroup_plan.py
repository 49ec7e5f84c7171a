"""The cgroup driver's plans are data: the writes for a HostConfig, v1 and v2, without root.

The host is described by a hand-made :class:`CgroupLayout` (mount points,
swap accounting, root cpuset, v2 controllers), so these tests never read
the real /sys/fs/cgroup. The read side (stats, OOM count, freezer state)
is checked against fake cgroup trees in a temporary directory.
"""

from dataclasses import replace

import pytest

from engine.errors import EngineError
from engine.runtime import cgroups as C
from engine.runtime.cgroups import Cgroup, CgroupLayout, Write

MiB = 1024 * 1024

# A hybrid-style v1 host where cpu and cpuacct share one mount, as on most distributions.
V1 = CgroupLayout("1", {
    "cpuset": "/sys/fs/cgroup/cpuset", "memory": "/sys/fs/cgroup/memory",
    "cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
    "pids": "/sys/fs/cgroup/pids", "blkio": "/sys/fs/cgroup/blkio", "freezer": "/sys/fs/cgroup/freezer",
}, swap=True, cpuset_cpus="0-3", cpuset_mems="0")
V2 = CgroupLayout("2", {"unified": "/sys/fs/cgroup"}, swap=True,
                  controllers=("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc"))
LAYOUTS = {"1": V1, "2": V2}


def writes(version, host_config, layout=None, **kw):
    """{file: value} of the writes into the container's own directory."""
    cg = Cgroup("abc", layout=layout or LAYOUTS[version], **kw)
    own = {d for d in cg.dirs}
    return {w.file: w.value for w in cg.plan(host_config) if w.path in own}


# -- the table: HostConfig -> the files each version writes ----------------------

CASES = [
    # (HostConfig, v1 writes expected, v2 writes expected); None = must not be written
    ({"Memory": 64 * MiB},
     {"memory.limit_in_bytes": "67108864", "memory.memsw.limit_in_bytes": "134217728"},
     {"memory.max": "67108864", "memory.swap.max": "67108864"}),
    ({"Memory": 64 * MiB, "MemorySwap": -1},
     {"memory.limit_in_bytes": "67108864", "memory.memsw.limit_in_bytes": "-1"},
     {"memory.max": "67108864", "memory.swap.max": "max"}),
    ({"Memory": 64 * MiB, "MemorySwap": 128 * MiB},
     {"memory.memsw.limit_in_bytes": "134217728"},
     {"memory.swap.max": "67108864"}),
    ({"Memory": 64 * MiB, "MemorySwap": 64 * MiB},  # swap off
     {"memory.memsw.limit_in_bytes": "67108864"},
     {"memory.swap.max": "0"}),
    ({},
     {"memory.limit_in_bytes": None, "memory.memsw.limit_in_bytes": None, "cpu.shares": None,
      "cpu.cfs_quota_us": None, "cpu.cfs_period_us": None, "pids.max": "max"},
     {"memory.max": None, "memory.swap.max": None, "cpu.weight": None, "cpu.max": None,
      "cpuset.cpus": None, "pids.max": "max"}),
    ({"NanoCpus": 1_500_000_000},
     {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "150000"},
     {"cpu.max": "150000 100000"}),
    ({"NanoCpus": 500_000_000},
     {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "50000"},
     {"cpu.max": "50000 100000"}),
    ({"CpuPeriod": 50000, "CpuQuota": 25000},
     {"cpu.cfs_period_us": "50000", "cpu.cfs_quota_us": "25000"},
     {"cpu.max": "25000 50000"}),
    ({"CpuQuota": 25000},  # the kernel's default period stays
     {"cpu.cfs_period_us": None, "cpu.cfs_quota_us": "25000"},
     {"cpu.max": "25000 100000"}),
    ({"CpuPeriod": 200000},
     {"cpu.cfs_period_us": "200000", "cpu.cfs_quota_us": None},
     {"cpu.max": "max 200000"}),
    ({"CpuShares": 512},
     {"cpu.shares": "512"},
     {"cpu.weight": "20"}),
    ({"PidsLimit": 0}, {"pids.max": "max"}, {"pids.max": "max"}),
    ({"PidsLimit": -1}, {"pids.max": "max"}, {"pids.max": "max"}),
    ({"PidsLimit": None}, {"pids.max": "max"}, {"pids.max": "max"}),
    ({"PidsLimit": 100}, {"pids.max": "100"}, {"pids.max": "100"}),
    ({"CpusetCpus": "0-1"}, {"cpuset.cpus": "0-1", "cpuset.mems": "0"}, {"cpuset.cpus": "0-1"}),
    ({"CpusetCpus": ""}, {"cpuset.cpus": "0-3", "cpuset.mems": "0"}, {"cpuset.cpus": None}),
]


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("host_config,v1,v2", CASES, ids=[str(c[0]) for c in CASES])
def test_plan_table(version, host_config, v1, v2):
    got = writes(version, host_config)
    for file, value in (v1 if version == "1" else v2).items():
        assert got.get(file) == value, f"{file}: {got}"


def test_a_whole_docker_run_on_v1_in_order():
    hc = {"Memory": 32 * MiB, "NanoCpus": 500_000_000, "PidsLimit": 16, "CpusetCpus": "0"}
    lines = [w.shell() for w in Cgroup("abc", layout=V1).plan(hc)]
    assert lines == [
        "echo 0-3 > /sys/fs/cgroup/cpuset/dockyard/cpuset.cpus",
        "echo 0 > /sys/fs/cgroup/cpuset/dockyard/cpuset.mems",
        "echo 0 > /sys/fs/cgroup/cpuset/dockyard/abc/cpuset.cpus",
        "echo 0 > /sys/fs/cgroup/cpuset/dockyard/abc/cpuset.mems",
        "echo 33554432 > /sys/fs/cgroup/memory/dockyard/abc/memory.limit_in_bytes",
        "echo 67108864 > /sys/fs/cgroup/memory/dockyard/abc/memory.memsw.limit_in_bytes",
        "echo 100000 > /sys/fs/cgroup/cpu,cpuacct/dockyard/abc/cpu.cfs_period_us",
        "echo 50000 > /sys/fs/cgroup/cpu,cpuacct/dockyard/abc/cpu.cfs_quota_us",
        "echo 16 > /sys/fs/cgroup/pids/dockyard/abc/pids.max",
    ]


def test_a_whole_docker_run_on_v2_in_order():
    hc = {"Memory": 32 * MiB, "NanoCpus": 500_000_000, "PidsLimit": 16, "CpusetCpus": "0", "CpuShares": 1024}
    lines = [w.shell() for w in Cgroup("abc", layout=V2).plan(hc)]
    assert lines == [
        "echo '+cpuset +cpu +io +memory +pids' > /sys/fs/cgroup/cgroup.subtree_control",
        "echo '+cpuset +cpu +io +memory +pids' > /sys/fs/cgroup/dockyard/cgroup.subtree_control",
        "echo 16 > /sys/fs/cgroup/dockyard/abc/pids.max",
        "echo 33554432 > /sys/fs/cgroup/dockyard/abc/memory.swap.max",
        "echo 33554432 > /sys/fs/cgroup/dockyard/abc/memory.max",
        "echo 39 > /sys/fs/cgroup/dockyard/abc/cpu.weight",
        "echo '50000 100000' > /sys/fs/cgroup/dockyard/abc/cpu.max",
        "echo 0 > /sys/fs/cgroup/dockyard/abc/cpuset.cpus",
    ]


def test_write_renders_as_shell_and_syscall():
    w = Write("/sys/fs/cgroup/memory/dockyard/abc", "memory.limit_in_bytes", "67108864")
    assert w.target == "/sys/fs/cgroup/memory/dockyard/abc/memory.limit_in_bytes"
    assert w.shell() == "echo 67108864 > /sys/fs/cgroup/memory/dockyard/abc/memory.limit_in_bytes"
    assert w.syscall() == ('write(open("/sys/fs/cgroup/memory/dockyard/abc/memory.limit_in_bytes", '
                           'O_WRONLY), "67108864", 8)')


@pytest.mark.parametrize("shares,weight", [(2, 1), (512, 20), (1024, 39), (2048, 79), (262144, 10000)])
def test_cpu_weight_formula(shares, weight):
    # REFERENCES.md: 1 + ((shares - 2) * 9999) / 262142, integer division.
    assert C.cpu_weight(shares) == weight == 1 + ((shares - 2) * 9999) // 262142


def test_without_swap_accounting_no_swap_file_is_written():
    for layout in (replace(V1, swap=False), replace(V2, swap=False)):
        got = writes(layout.version, {"Memory": 64 * MiB, "MemorySwap": -1}, layout=layout)
        assert "memory.memsw.limit_in_bytes" not in got and "memory.swap.max" not in got
        assert got.get("memory.limit_in_bytes", got.get("memory.max")) == "67108864"


def test_v1_cpuset_parents_are_filled_from_the_root_before_the_container():
    plan = Cgroup("abc", parent="dockyard/nested", layout=V1).plan({"CpusetCpus": "1"})
    cpus = [(w.path, w.value) for w in plan if w.file == "cpuset.cpus"]
    assert cpus == [("/sys/fs/cgroup/cpuset/dockyard", "0-3"),
                    ("/sys/fs/cgroup/cpuset/dockyard/nested", "0-3"),
                    ("/sys/fs/cgroup/cpuset/dockyard/nested/abc", "1")]


def test_v2_enables_only_the_controllers_the_host_offers():
    layout = replace(V2, controllers=("cpu", "memory", "pids"))
    plan = Cgroup("abc", layout=layout).plan({})
    assert [w.value for w in plan if w.file == "cgroup.subtree_control"] == ["+cpu +memory +pids"] * 2


def test_v1_directories_are_per_hierarchy_and_co_mounts_are_shared():
    cg = Cgroup("abc", layout=V1)
    assert cg.dir("cpu") == cg.dir("cpuacct") == "/sys/fs/cgroup/cpu,cpuacct/dockyard/abc"
    assert cg.dirs == [f"/sys/fs/cgroup/{h}/dockyard/abc"
                       for h in ("cpuset", "memory", "cpu,cpuacct", "pids", "blkio", "freezer")]
    made = cg.directories()
    assert made.index("/sys/fs/cgroup/memory/dockyard") < made.index("/sys/fs/cgroup/memory/dockyard/abc")
    assert cg.oom_files() == ["/sys/fs/cgroup/memory/dockyard/abc/memory.oom_control"]


def test_v2_has_one_directory():
    cg = Cgroup("abc", layout=V2, parent="dockyard-test")
    assert cg.dirs == ["/sys/fs/cgroup/dockyard-test/abc"]
    assert cg.dir("memory") == cg.dir("pids") == cg.dir("freezer") == cg.dirs[0]
    assert cg.directories() == ["/sys/fs/cgroup/dockyard-test", "/sys/fs/cgroup/dockyard-test/abc"]
    assert cg.oom_files() == ["/sys/fs/cgroup/dockyard-test/abc/memory.events"]


@pytest.mark.parametrize("host_config,flag", [
    ({"PidsLimit": 10}, "--pids-limit"), ({"Memory": 64 * MiB}, "--memory"),
    ({"NanoCpus": 10 ** 9}, "--cpus"), ({"CpusetCpus": "0"}, "--cpuset-cpus"),
])
def test_a_limit_whose_controller_is_missing_is_refused(host_config, flag):
    v1 = replace(V1, mounts={"freezer": "/sys/fs/cgroup/freezer"})
    v2 = replace(V2, controllers=("io",))
    for layout in (v1, v2):
        with pytest.raises(EngineError, match=flag):
            Cgroup("abc", layout=layout).plan(host_config)


def test_no_cgroups_means_no_writes_unless_limits_are_asked_for():
    none = CgroupLayout("none")
    cg = Cgroup("abc", layout=none)
    assert cg.plan({"PidsLimit": None}) == [] and cg.dirs == [] and cg.directories() == []
    with pytest.raises(EngineError):
        cg.plan({"Memory": 64 * MiB})


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".", "..", "-x", "a b"])
def test_names_cannot_escape_the_hierarchy(bad):
    with pytest.raises(ValueError):
        Cgroup(bad, layout=V1)
    if bad != "a/b":  # a nested parent is fine; each part is checked
        with pytest.raises(ValueError):
            Cgroup("abc", parent=bad or "/", layout=V1)


def test_memory_writes_are_ordered_so_memsw_stays_above_the_limit():
    def plan(memory, swap):
        return [w for w in Cgroup("abc", layout=V1).plan({"Memory": memory, "MemorySwap": swap})
                if w.file.startswith("memory.")]

    def files(ws):
        return [w.file for w in ws]

    up = C.order_memory_writes(plan(128 * MiB, 256 * MiB), current_limit=32 * MiB)
    assert files(up) == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
    down = C.order_memory_writes(plan(32 * MiB, 64 * MiB), current_limit=128 * MiB)
    assert files(down) == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
    unlimited = C.order_memory_writes(plan(32 * MiB, -1), current_limit=128 * MiB)
    assert files(unlimited) == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]


# -- finding the hierarchies -------------------------------------------------------

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 23 0:40 / /mnt/my\\040cgroups rw - cgroup cgroup rw,freezer
"""

PURE_V2 = """\
25 23 0:22 / /sys rw,nosuid - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""


def test_mountinfo_hybrid():
    v1, v2 = C.cgroup_mounts(HYBRID)
    assert v1 == {"cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
                  "cpuset": "/sys/fs/cgroup/cpuset", "memory": "/sys/fs/cgroup/memory",
                  "pids": "/sys/fs/cgroup/pids", "freezer": "/mnt/my cgroups"}
    assert v2 == ["/sys/fs/cgroup/unified"]


def test_mountinfo_pure_v2():
    assert C.cgroup_mounts(PURE_V2) == ({}, ["/sys/fs/cgroup"])


def test_detect_on_this_host_agrees_with_doctor():
    from engine.doctor import cgroup_info
    doctor = cgroup_info()[0]
    assert C.version() == doctor.split()[0]


# -- the read side, against fake cgroup trees ----------------------------------


def fake_tree(tmp_path, files: dict[str, str]):
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_v2_reads(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "host_memory", lambda: 8 << 30)
    d = "dockyard/abc/"
    fake_tree(tmp_path, {
        d + "cgroup.procs": "12\n34\n",
        d + "cgroup.events": "populated 1\nfrozen 1\n",
        d + "memory.events": "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n",
        d + "memory.current": "1048576\n",
        d + "memory.max": "max\n",
        d + "memory.stat": "anon 4096\nfile 8192\ninactive_file 4096\n",
        d + "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        d + "pids.current": "2\n",
        d + "pids.max": "16\n",
        d + "io.stat": "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n"
                       "8:16 rbytes=1 wbytes=2 rios=1 wios=1 dbytes=0 dios=0\n",
    })
    cg = Cgroup("abc", layout=replace(V2, mounts={"unified": str(tmp_path)}))
    assert cg.exists() and cg.pids() == [12, 34] and cg.frozen()
    assert cg.oom_kills() == 1
    s = cg.stats()
    assert s["cpu_usage_ns"] == 1_500_000 and s["memory_usage"] == 1048576
    assert s["memory_limit"] == 8 << 30  # "max" shows as the host's memory, as in docker stats
    assert (s["memory_cache"], s["inactive_file"]) == (8192, 4096)
    assert (s["pids_current"], s["pids_limit"]) == (2, 16)
    assert (s["blkio_read"], s["blkio_write"]) == (101, 202)
    assert s["system_cpu_ns"] > 0 and s["online_cpus"] >= 1


def test_v1_reads(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "host_memory", lambda: 8 << 30)
    mounts = {c: str(tmp_path / c) for c in ("memory", "cpuacct", "pids", "blkio", "freezer")}
    fake_tree(tmp_path, {
        "memory/dockyard/abc/cgroup.procs": "12\n",
        "memory/dockyard/abc/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        "memory/dockyard/abc/memory.usage_in_bytes": "2097152\n",
        "memory/dockyard/abc/memory.limit_in_bytes": "9223372036854771712\n",  # what -1 reads back as
        "memory/dockyard/abc/memory.stat":
            "cache 1\ninactive_file 2\ntotal_cache 4096\ntotal_inactive_file 1024\n",
        "cpuacct/dockyard/abc/cgroup.procs": "12\n56\n",
        "cpuacct/dockyard/abc/cpuacct.usage": "123456789\n",
        "pids/dockyard/abc/cgroup.procs": "",
        "pids/dockyard/abc/pids.current": "2\n",
        "pids/dockyard/abc/pids.max": "max\n",
        "blkio/dockyard/abc/cgroup.procs": "",
        "blkio/dockyard/abc/blkio.throttle.io_service_bytes_recursive":
            "8:0 Read 10\n8:0 Write 20\n8:0 Sync 30\n8:0 Async 0\n8:0 Discard 0\n8:0 Total 30\nTotal 30\n",
        "freezer/dockyard/abc/cgroup.procs": "",
        "freezer/dockyard/abc/freezer.state": "THAWED\n",
    })
    cg = Cgroup("abc", layout=replace(V1, mounts=mounts))
    assert cg.pids() == [12, 56] and not cg.frozen()
    assert cg.oom_kills() == 2
    s = cg.stats()
    assert s["cpu_usage_ns"] == 123456789 and s["memory_usage"] == 2097152
    assert s["memory_limit"] == 8 << 30
    assert (s["memory_cache"], s["inactive_file"]) == (4096, 1024)
    assert (s["pids_current"], s["pids_limit"]) == (2, None)
    assert (s["blkio_read"], s["blkio_write"]) == (10, 20)


def test_a_missing_cgroup_reads_as_empty(tmp_path):
    cg = Cgroup("gone", layout=replace(V2, mounts={"unified": str(tmp_path)}))
    assert not cg.exists() and cg.pids() == [] and cg.oom_kills() == 0 and not cg.frozen()
    cg.remove()  # idempotent
    cg.kill_all()  # nothing to signal


def test_leftovers_lists_container_dirs_in_any_hierarchy(tmp_path):
    for path in ("memory/dockyard/a", "pids/dockyard/a", "pids/dockyard/b", "memory/other/c"):
        (tmp_path / path).mkdir(parents=True)
    layout = replace(V1, mounts={"memory": str(tmp_path / "memory"), "pids": str(tmp_path / "pids")})
    assert C.leftovers(layout=layout) == ["a", "b"]
    assert C.leftovers("other", layout=layout) == ["c"]
    assert C.leftovers("nothing-here", layout=layout) == []


def test_write_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        C.perform(Write(str(tmp_path), "memory.max", "1", why="--memory"))
    assert err.value.filename == str(tmp_path / "memory.max")
    assert "writing '1' to" in err.value.__notes__[0] and "--memory" in err.value.__notes__[0]


def test_for_container_uses_the_id():
    class Box:
        id = "f" * 64
    assert C.for_container(Box()).container_id == "f" * 64
