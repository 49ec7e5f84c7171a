"""Watching and changing a running container: ``top``, ``stats`` and ``update``.

All three read or write what the kernel keeps about the container's
processes, without entering the container:

- ``top`` lists the processes of the container's PID namespace, as the
  *host's* ``ps`` shows them (docker's approach: nothing from the
  container's filesystem runs, ``ps`` only reads ``/proc``);
- ``stats`` reads the container's cgroup (CPU time, memory, PIDs, block
  I/O: runtime/cgroups.py ``Cgroup.stats``) and its network namespace's
  interface counters (``/proc/<pid>/net/dev``), and computes what ``docker
  stats`` shows with the docker CLI's own formulas (:func:`cpu_percent`,
  :func:`memory_usage`...), from frames shaped like the Docker API's;
- ``update`` changes the resource limits in the record (``HostConfig``)
  and in the live cgroup (``Cgroup.update``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

from ..errors import Conflict, EngineError, UsageError
from .container import ZERO_TIME, now

DEFAULT_PS_ARGS = "-ef"


# -- top ------------------------------------------------------------------------------


def container_pids(container) -> list[int]:
    """The host PIDs of every process in the container's PID namespace.

    Found by comparing each ``/proc/<pid>/ns/pid`` with the one of the
    container's PID 1: that includes ``exec``'d processes, and leaves out
    any helper outside the namespace (the Python twin spawner's middle
    process, which waits outside the container for its PID 1).
    """
    from .exec import init_pid

    init = init_pid(container, paused_ok=True)
    try:
        target = os.readlink(f"/proc/{init}/ns/pid")
    except OSError:
        raise Conflict(f"container {container.id} is not running") from None
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{name}/ns/pid") == target:
                found.append(int(name))
        except OSError:
            continue    # gone meanwhile, or a kernel thread
    return sorted(found)


def validate_ps_args(ps_args: str) -> None:
    """dockerd's check: a ``-o`` field may only be renamed to PID if it *is* the pid
    (``-o pid=PID`` is fine, ``-o ppid=PID`` would fool the filter)."""
    for key, value in re.findall(r"\s+([^\s]*)=\s*(PID[^\s]*)", ps_args):
        if key != "pid":
            raise UsageError(f'specifying "{key}={value}" is not allowed')


def parse_ps_output(output: str, pids: list[int]) -> dict:
    """Keep the lines of ``ps`` output whose PID column is one of ``pids``
    (moby daemon/top_unix.go parsePSOutput): the last column (the command)
    keeps its spaces; thread lines (``-`` as PID, ``ps -T``/``m``) follow
    the process they belong to."""
    lines = output.split("\n")
    titles = lines[0].split()
    if "PID" not in titles:
        raise EngineError("Couldn't find PID field in ps output")
    index = titles.index("PID")
    wanted = set(pids)
    processes = []
    previous_kept = False
    for line in lines[1:]:
        fields = line.split()
        if not fields:
            continue
        if index >= len(fields):
            previous_kept = False
            continue
        if fields[index] == "-":
            if previous_kept:
                processes.append(_row(fields, len(titles)))
            continue
        try:
            pid = int(fields[index])
        except ValueError:
            raise EngineError(f"Unexpected pid '{fields[index]}'") from None
        previous_kept = pid in wanted
        if previous_kept:
            processes.append(_row(fields, len(titles)))
    return {"Titles": titles, "Processes": processes}


def _row(fields: list[str], columns: int) -> list[str]:
    return fields[:columns - 1] + [" ".join(fields[columns - 1:])]


def top(container, ps_args=None) -> dict:
    """``docker top``: the container's processes as the host's ``ps`` shows them.

    ``ps_args``: ps options as one string (``"aux"``, ``"-o pid,comm"``) or a
    list; ``-ef`` by default. Returns ``{"Titles": [...], "Processes":
    [[...], ...]}`` (docker-py's ``container.top()``). Raises Conflict when
    the container does not run.
    """
    if ps_args is None or ps_args == "" or ps_args == []:
        ps_args = DEFAULT_PS_ARGS
    text = ps_args if isinstance(ps_args, str) else " ".join(ps_args)
    validate_ps_args(" " + text)
    args = text.split()
    container.reload()
    pids = container_pids(container)
    # Like dockerd: ask ps for these processes only (-q, "quick": no scan of
    # /proc), and without -q when the options do not combine with it.
    try:
        result = _ps(args + ["-q", ",".join(map(str, pids))])
    except EngineError:
        result = _ps(args)
    return parse_ps_output(result, pids)


def _ps(args: list[str]) -> str:
    try:
        done = subprocess.run(["ps", *args], capture_output=True, text=True, errors="replace",
                              env={**os.environ, "LC_ALL": "C"})
    except FileNotFoundError:
        raise EngineError("ps: executable file not found in $PATH (install procps)") from None
    if done.returncode != 0:
        first = done.stderr.split("\n", 1)[0] or f"exit status {done.returncode}"
        raise EngineError(f"ps: {first}")
    return done.stdout


# -- stats: one sample, as the Docker API's stats frames --------------------------------


def _net_dev(pid: int) -> dict:
    """``/proc/<pid>/net/dev`` (proc(5)): the counters of every interface of
    the process's network namespace but ``lo`` -- docker counts the
    interfaces of a container's network endpoints, never its loopback."""
    names = ("rx_bytes", "rx_packets", "rx_errors", "rx_dropped",
             "tx_bytes", "tx_packets", "tx_errors", "tx_dropped")
    out = {}
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return out
    for line in lines:
        name, _, numbers = line.partition(":")
        name = name.strip()
        values = numbers.split()
        if name == "lo" or len(values) < 16:
            continue
        # receive: bytes packets errs drop fifo frame compressed multicast; transmit: the same
        rx, tx = values[0:4], values[8:12]
        out[name] = dict(zip(names, (int(v) for v in rx + tx)))
    return out


def _empty_cpu() -> dict:
    return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}


def sample(container) -> dict:
    """One stats frame for ``container``, in the Docker API's shape
    (``read``, ``cpu_stats``, ``memory_stats``, ``pids_stats``,
    ``blkio_stats``, ``networks``, ``name``, ``id``); ``precpu_stats`` is
    empty: :class:`Sampler` fills it from the previous frame. A container
    that does not run gives a frame of zeros, as dockerd sends."""
    from .cgroups import for_container

    frame = {"read": ZERO_TIME, "preread": ZERO_TIME, "pids_stats": {}, "blkio_stats": {},
             "num_procs": 0, "storage_stats": {}, "cpu_stats": _empty_cpu(),
             "precpu_stats": _empty_cpu(), "memory_stats": {},
             "name": container.attrs["Name"], "id": container.id}
    state = container.attrs["State"]
    if not state.get("Running") or state.get("Status") == "restarting":
        return frame
    cgroup = for_container(container)
    try:
        raw = cgroup.stats()
    except (FileNotFoundError, EngineError):
        return frame    # it stopped meanwhile: its cgroup is gone
    v1 = cgroup.version == "1"
    frame["read"] = now()
    frame["cpu_stats"] = {
        "cpu_usage": {"total_usage": raw["cpu_usage_ns"]},
        "system_cpu_usage": raw["system_cpu_ns"],
        "online_cpus": raw["online_cpus"],
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    }
    # total_inactive_file on v1 (total_*: with sub-cgroups), inactive_file on v2:
    # the keys the docker CLI looks for.
    frame["memory_stats"] = {
        "usage": raw["memory_usage"], "limit": raw["memory_limit"],
        "stats": ({"total_inactive_file": raw["inactive_file"], "total_cache": raw["memory_cache"]} if v1
                  else {"inactive_file": raw["inactive_file"], "file": raw["memory_cache"]}),
    }
    frame["pids_stats"] = {"current": raw["pids_current"]}
    if raw["pids_limit"] is not None:
        frame["pids_stats"]["limit"] = raw["pids_limit"]
    frame["blkio_stats"] = {"io_service_bytes_recursive": [
        {"major": 0, "minor": 0, "op": "read", "value": raw["blkio_read"]},
        {"major": 0, "minor": 0, "op": "write", "value": raw["blkio_write"]},
    ]}
    try:
        from .exec import init_pid
        networks = _net_dev(init_pid(container, paused_ok=True))
    except Conflict:
        networks = {}
    if networks:
        frame["networks"] = networks
    return frame


class Sampler:
    """Successive frames of one container, each with the previous one's CPU
    numbers as ``precpu_stats`` (the two samples CPU % needs)."""

    def __init__(self, container):
        self.container = container
        self._previous: dict | None = None

    def next(self) -> dict:
        try:
            self.container.reload()
        except EngineError:
            pass    # removed: report what we knew, with zeros
        frame = sample(self.container)
        if self._previous is not None:
            frame["precpu_stats"] = self._previous["cpu_stats"]
            frame["preread"] = self._previous["read"]
        self._previous = frame
        return frame


def stats(engine, container, stream: bool = True, decode: bool = True, interval: float = 1.0):
    """``docker stats``, as docker-py's ``container.stats()``.

    With ``stream`` (the default): a generator of frames, one per
    ``interval`` seconds, until the container stops -- dicts with
    ``decode``, else JSON bytes (docker-py's default gives bytes; pass
    ``decode=True`` for dicts). Without ``stream``: one frame (a dict),
    taken ``interval`` seconds after a first sample so that its CPU numbers
    have something to be compared with (dockerd does the same).

    A frame has the Docker API's shape; compute what ``docker stats`` shows
    with :func:`cpu_percent`, :func:`memory_usage`, :func:`memory_limit`,
    :func:`network_io`, :func:`block_io` and :func:`pids`.
    """
    del engine
    sampler = Sampler(container)
    if not stream:
        sampler.next()
        time.sleep(interval)
        return sampler.next()
    return _stream(sampler, decode, interval)


def _stream(sampler: Sampler, decode: bool, interval: float):
    sampler.next()
    while True:
        time.sleep(interval)
        frame = sampler.next()
        yield frame if decode else json.dumps(frame).encode()
        if frame["read"] == ZERO_TIME:
            return  # the container stopped


# -- what the docker CLI computes from a frame (cli/command/container/stats_helpers.go) --


def cpu_percent(frame: dict) -> float:
    """(Δ container CPU time / Δ host CPU time) x online CPUs x 100: 100 % is one CPU busy."""
    cpu, pre = frame.get("cpu_stats") or {}, frame.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - \
        (pre.get("cpu_usage") or {}).get("total_usage", 0)
    system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    online = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or [])
    if system_delta > 0 and cpu_delta > 0:
        return cpu_delta / system_delta * online * 100.0
    return 0.0


def memory_usage(frame: dict) -> float:
    """Usage without the inactive page cache (docker >= 19.03): file data the
    kernel can drop at any time is not counted against the container."""
    memory = frame.get("memory_stats") or {}
    usage, stat = memory.get("usage", 0), memory.get("stats") or {}
    if "total_inactive_file" in stat and stat["total_inactive_file"] < usage:
        return float(usage - stat["total_inactive_file"])
    if stat.get("inactive_file", 0) < usage:
        return float(usage - stat.get("inactive_file", 0))
    return float(usage)


def memory_limit(frame: dict) -> float:
    return float((frame.get("memory_stats") or {}).get("limit", 0))


def memory_percent(frame: dict) -> float:
    limit = memory_limit(frame)
    return memory_usage(frame) / limit * 100.0 if limit else 0.0


def network_io(frame: dict) -> tuple[int, int]:
    """(received, sent) bytes, summed over the interfaces."""
    networks = frame.get("networks") or {}
    return (sum(n.get("rx_bytes", 0) for n in networks.values()),
            sum(n.get("tx_bytes", 0) for n in networks.values()))


def block_io(frame: dict) -> tuple[int, int]:
    """(read, written) bytes."""
    read = write = 0
    for entry in (frame.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
        op = entry.get("op", "").lower()
        if op == "read":
            read += entry.get("value", 0)
        elif op == "write":
            write += entry.get("value", 0)
    return read, write


def pids(frame: dict) -> int:
    return (frame.get("pids_stats") or {}).get("current", 0)


# -- update ------------------------------------------------------------------------------


def _update_changes(hc: dict, *, mem_limit=None, memswap_limit=None, cpus=None, nano_cpus=None,
                    cpu_shares=None, cpu_period=None, cpu_quota=None, cpuset_cpus=None,
                    pids_limit=None, restart_policy=None) -> dict:
    """The HostConfig fields to change, parsed; docker's rules for what may
    not change together (moby container/container_unix.go UpdateContainer).
    A value of None (or 0, as docker) leaves the field alone."""
    from .options import parse_bytes, parse_cpus, parse_restart

    changes: dict = {}
    if mem_limit not in (None, "", 0):
        changes["Memory"] = parse_bytes(mem_limit, "--memory")
    if memswap_limit not in (None, "", 0):
        changes["MemorySwap"] = -1 if str(memswap_limit) == "-1" else parse_bytes(memswap_limit,
                                                                                   "--memory-swap")
    if cpus is not None:
        nano_cpus = parse_cpus(cpus)
    if nano_cpus:
        changes["NanoCpus"] = int(nano_cpus)
    if cpu_shares:
        changes["CpuShares"] = int(cpu_shares)
    if cpu_period:
        changes["CpuPeriod"] = int(cpu_period)
    if cpu_quota:
        changes["CpuQuota"] = int(cpu_quota)
    if cpuset_cpus:
        changes["CpusetCpus"] = str(cpuset_cpus)
    if pids_limit is not None:
        changes["PidsLimit"] = int(pids_limit)
    if restart_policy is not None:
        changes["RestartPolicy"] = parse_restart(restart_policy)
        if hc.get("AutoRemove") and changes["RestartPolicy"]["Name"] != "no":
            raise UsageError("Restart policy cannot be updated because AutoRemove is enabled for the "
                             "container")
    if not changes:
        raise UsageError("you must provide one or more flags when using this command")
    return changes


def _check_conflicts(hc: dict, changes: dict) -> None:
    """What dockerd refuses to combine with the container's current settings."""
    # NanoCpus stands for a period and a quota: once one way is used, the other is refused.
    if changes.get("NanoCpus") and hc.get("CpuPeriod"):
        raise Conflict("Conflicting options: CPU Period cannot be updated as NanoCPUs has already been set")
    if changes.get("NanoCpus") and hc.get("CpuQuota"):
        raise Conflict("Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set")
    if changes.get("CpuPeriod") and hc.get("NanoCpus"):
        raise Conflict("Conflicting options: CPU Period cannot be updated as NanoCPUs has already been set")
    if changes.get("CpuQuota") and hc.get("NanoCpus"):
        raise Conflict("Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set")
    # An explicit --memory-swap stays: a larger --memory alone would be above it.
    swap = hc.get("MemorySwap") or 0
    if "Memory" in changes and "MemorySwap" not in changes and swap > 0 and changes["Memory"] > swap:
        raise Conflict("Memory limit should be smaller than already set memoryswap limit, update the "
                       "memoryswap at the same time")


def _check_values(changes: dict) -> None:
    """Run's rules on the new values alone (ranges, minimums), checked first as dockerd does."""
    from .options import host_config

    host_config(mem_limit=changes.get("Memory") or None, nano_cpus=changes.get("NanoCpus") or None,
                cpu_shares=changes.get("CpuShares"), cpu_period=changes.get("CpuPeriod"),
                cpu_quota=changes.get("CpuQuota"))


def _validated(hc: dict) -> dict:
    """Run's rules (runtime/options.py host_config) on the resulting HostConfig."""
    from .options import host_config

    checked = host_config(
        auto_remove=bool(hc.get("AutoRemove")), mem_limit=hc.get("Memory") or None,
        memswap_limit=hc.get("MemorySwap") or None, nano_cpus=hc.get("NanoCpus") or None,
        cpu_shares=hc.get("CpuShares") or None, cpu_period=hc.get("CpuPeriod") or None,
        cpu_quota=hc.get("CpuQuota") or None, cpuset_cpus=hc.get("CpusetCpus") or None,
        pids_limit=hc.get("PidsLimit"), restart_policy=hc.get("RestartPolicy"))
    keys = ("Memory", "MemorySwap", "NanoCpus", "CpuShares", "CpuPeriod", "CpuQuota", "CpusetCpus",
            "PidsLimit", "RestartPolicy")
    return {**hc, **{k: checked[k] for k in keys}}


def update(engine, container, **kwargs) -> dict:
    """``docker update``: change resource limits (and the restart policy).

    Keyword arguments, as docker-py's ``container.update()`` plus ``cpus``
    and ``pids_limit``: ``mem_limit`` (``"64m"`` or bytes),
    ``memswap_limit`` (memory + swap, ``-1`` unlimited), ``cpus`` (``1.5``)
    or ``nano_cpus``, ``cpu_shares``, ``cpu_period``, ``cpu_quota`` (µs),
    ``cpuset_cpus`` (``"0-1"``), ``pids_limit`` (0 or -1: unlimited),
    ``restart_policy`` (``"on-failure:3"`` or docker-py's dict). They are
    checked as ``run`` checks them, written to the container's
    ``HostConfig`` and, if it runs, applied to its cgroup at once. If the
    kernel refuses (a memory limit below what the container uses and
    cannot give back: EBUSY) nothing is recorded and EngineError says why.
    Returns ``{"Warnings": []}``.

    A new restart policy is recorded; the container's monitor applies the
    policy it was started with until the next start.
    """
    del engine
    unknown = set(kwargs) - {"mem_limit", "memswap_limit", "cpus", "nano_cpus", "cpu_shares",
                             "cpu_period", "cpu_quota", "cpuset_cpus", "pids_limit", "restart_policy"}
    if unknown:
        raise UsageError(f"update: unsupported option(s): {', '.join(sorted(unknown))}")
    container.reload()
    hc = container.attrs["HostConfig"]
    changes = _update_changes(hc, **kwargs)
    _check_values(changes)
    _check_conflicts(hc, changes)
    new = _validated({**hc, **changes})
    changes = {k: new[k] for k in changes}
    state = container.attrs["State"]
    if state.get("Running") and state.get("Status") != "restarting":
        from .cgroups import for_container
        cgroup = for_container(container)
        if cgroup.exists():
            try:
                cgroup.update(new)
            except OSError as e:
                raise _update_error(container, e, new) from None
    container.update_record(lambda attrs: attrs["HostConfig"].update(changes))
    from .exec import _event
    _event(container, "update")
    return {"Warnings": []}


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.4g}MiB"


def _update_error(container, error: OSError, hc: dict) -> EngineError:
    import errno

    target = os.path.basename(error.filename or "")
    if error.errno == errno.EBUSY and target.startswith("memory."):
        from .cgroups import for_container
        try:
            used = for_container(container).stats()["memory_usage"]
            usage = f"it uses {_mib(used)}, "
        except (OSError, EngineError):
            usage = ""
        return EngineError(
            f"Cannot update container {container.id}: cannot set the memory limit to "
            f"{_mib(hc.get('Memory') or 0)}: {usage}which the kernel could not reclaim "
            f"below the new limit (EBUSY writing {target})")
    return EngineError(f"Cannot update container {container.id}: {error.strerror} "
                       f"(writing {error.filename})")
