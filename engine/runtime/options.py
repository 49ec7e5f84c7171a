"""Run options: docker's flag values parsed, checked, and stored as docker stores them.

Every ``run``/``create`` option ends up in the container record under the
name the Docker Engine API uses (``HostConfig.Memory``, ``Config.User``...),
so ``inspect`` shows it where a Docker user looks for it. This module only
parses and validates; the runtime reads the record to act on it (cgroups,
the plan's mounts and capabilities, the monitor's restart policy).

Value formats follow the docker CLI (github.com/docker/cli, opts/ and
go-units):

- sizes: ``64m``, ``1g``, ``512k``, ``100`` (bytes); units are powers of 1024
  (go-units ``RAMInBytes``);
- ``--cpus 1.5``: ``NanoCpus`` = 1.5e9;
- ``--ulimit nofile=1024:2048`` (soft:hard; one number sets both);
- ``--tmpfs /run:rw,size=64m``; ``-v /host:/ctr:ro``;
- ``--restart no|always|unless-stopped|on-failure[:N]``;
- ``--cap-add NET_ADMIN`` (``CAP_`` prefix optional, ``ALL`` allowed).
"""

from __future__ import annotations

import os
import re
import signal

from ..errors import UsageError

# Docker's default capability set (moby oci/caps/defaults.go), 14 of them.
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)

# Capability numbers from <linux/capability.h>.
CAPABILITIES = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
    "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
    "CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}

# setrlimit(2) resources by the names docker's --ulimit uses.
ULIMITS = {
    "core": 4, "cpu": 0, "data": 2, "fsize": 1, "locks": 10, "memlock": 8, "msgqueue": 12,
    "nice": 13, "nofile": 7, "nproc": 6, "rss": 5, "rtprio": 14, "rttime": 15,
    "sigpending": 11, "stack": 3,
}

RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")


def parse_bytes(text, flag: str = "size") -> int:
    """go-units RAMInBytes: ``64m`` = 64 MiB; a bare number is bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)b?\s*", str(text), re.IGNORECASE)
    if not m:
        raise UsageError(f"invalid argument {text!r} for \"{flag}\" flag: invalid size: '{text}'")
    value, unit = float(m.group(1)), m.group(2).lower()
    return int(value * 1024 ** " kmgtp".index(unit or " "))


def parse_cpus(text) -> int:
    """``--cpus 1.5`` -> NanoCpus 1500000000."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UsageError(f"invalid argument {text!r} for \"--cpus\" flag: failed to parse {text} as a "
                         "rational number") from None
    if value < 0:
        raise UsageError("invalid argument for \"--cpus\": the value must not be negative")
    return int(round(value * 1e9))


def parse_ulimit(text) -> dict:
    """``nofile=1024:2048`` -> {"Name": "nofile", "Soft": 1024, "Hard": 2048}."""
    if isinstance(text, dict):
        return {"Name": text["Name"], "Soft": int(text["Soft"]), "Hard": int(text["Hard"])}
    name, eq, values = str(text).partition("=")
    if not eq or name not in ULIMITS:
        raise UsageError(f"invalid ulimit argument: {text}")
    soft, _, hard = values.partition(":")
    try:
        soft_n = int(soft)
        hard_n = int(hard) if hard else soft_n
    except ValueError:
        raise UsageError(f"invalid ulimit argument: {text}") from None
    if soft_n > hard_n:
        raise UsageError(f"ulimit soft limit must be less than or equal to hard limit: {soft_n} > {hard_n}")
    return {"Name": name, "Soft": soft_n, "Hard": hard_n}


def parse_restart(text) -> dict:
    """``on-failure:3`` -> {"Name": "on-failure", "MaximumRetryCount": 3}."""
    if isinstance(text, dict):
        return {"Name": text.get("Name", "no") or "no",
                "MaximumRetryCount": int(text.get("MaximumRetryCount", 0))}
    name, _, count = str(text).partition(":")
    if name not in RESTART_POLICIES:
        raise UsageError(f"invalid restart policy '{text}'")
    if count and name != "on-failure":
        raise UsageError(f"maximum retry count cannot be used with restart policy '{name}'")
    try:
        retries = int(count) if count else 0
    except ValueError:
        raise UsageError(f"maximum retry count must be an integer: {count}") from None
    return {"Name": name, "MaximumRetryCount": retries}


def capability(name: str) -> str:
    """Normalize ``net_admin`` / ``CAP_NET_ADMIN`` / ``ALL``."""
    up = name.strip().upper()
    if up == "ALL":
        return "ALL"
    if not up.startswith("CAP_"):
        up = "CAP_" + up
    if up not in CAPABILITIES:
        raise UsageError(f"unknown capability: \"{name}\"")
    return up


def capability_set(cap_add=(), cap_drop=(), privileged: bool = False) -> list[str]:
    """The capabilities the container gets, docker's rules (oci/caps TweakCapabilities):
    start from the default 14 (all of them with --privileged), drop, then add."""
    if privileged:
        return sorted(CAPABILITIES, key=CAPABILITIES.get)
    adds = [capability(c) for c in cap_add]
    drops = [capability(c) for c in cap_drop]
    caps = set(DEFAULT_CAPABILITIES)
    if "ALL" in drops:
        caps = set()
    caps -= set(drops)
    if "ALL" in adds:
        caps = set(CAPABILITIES)
    caps |= {c for c in adds if c != "ALL"}
    return sorted(caps, key=CAPABILITIES.get)


def parse_volume(text: str) -> dict:
    """``-v /host:/ctr[:ro|rw]`` -> a bind mount record (docker's MountPoint shape)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise UsageError(f"invalid volume specification: '{text}'")
    source, target = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if not os.path.isabs(source):
        raise UsageError(f"invalid volume specification: '{text}': named volumes are not supported "
                         "yet; give an absolute host path")
    if not os.path.isabs(target):
        raise UsageError(f"invalid volume specification: '{text}': mount path must be absolute")
    if mode not in ("ro", "rw"):
        raise UsageError(f"invalid mode: {mode}")
    return {"Type": "bind", "Source": os.path.normpath(source), "Destination": os.path.normpath(target),
            "Mode": mode, "RW": mode == "rw", "Propagation": "rprivate"}


def parse_tmpfs(text: str) -> tuple[str, str]:
    """``/run:rw,size=64m`` -> ("/run", "rw,size=64m")."""
    path, _, opts = text.partition(":")
    if not os.path.isabs(path):
        raise UsageError(f"invalid mount path {path!r}: must be absolute")
    return os.path.normpath(path), opts


def signal_number(text) -> int:
    """``SIGTERM``, ``TERM``, ``15`` -> 15 (docker's signal.ParseSignal)."""
    if isinstance(text, int):
        return text
    t = str(text).upper()
    if t.isdigit():
        n = int(t)
        if 0 < n < signal.NSIG:
            return n
    else:
        name = t if t.startswith("SIG") else "SIG" + t
        if hasattr(signal.Signals, name):
            return int(signal.Signals[name])
    raise UsageError(f"Invalid signal: {text}")


def parse_env_file(path: str) -> list[str]:
    """docker's --env-file: KEY=value per line, ``#`` comments, KEY alone copies ours."""
    out = []
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UsageError(f"open {path}: {e.strerror.lower()}") from None
    for n, line in enumerate(lines, 1):
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        key = line.split("=", 1)[0]
        if not key or re.search(r"\s", key):
            raise UsageError(f"{path}:{n}: variable '{key}' contains whitespaces")
        out.append(line)
    return out


def parse_labels(labels) -> dict:
    if labels is None:
        return {}
    if isinstance(labels, dict):
        return {str(k): str(v) for k, v in labels.items()}
    out = {}
    for item in labels:
        key, _, value = str(item).partition("=")
        if not key:
            raise UsageError(f"invalid label: {item!r}")
        out[key] = value
    return out


def host_config(*, auto_remove: bool = False, mem_limit=None, memswap_limit=None, nano_cpus=None,
                cpus=None, cpu_shares=None, cpu_period=None, cpu_quota=None, cpuset_cpus=None,
                pids_limit=None, ulimits=None, cap_add=(), cap_drop=(), privileged: bool = False,
                read_only: bool = False, tmpfs=None, volumes=None, init: bool = False,
                restart_policy=None, log_config=None, network_mode: str | None = None,
                ports=None, publish_all_ports: bool = False, links=None, extra_hosts=None,
                dns=None, dns_search=None, dns_opt=None) -> dict:
    """The ``HostConfig`` of a new container, docker's field names, checked.

    ``network_mode``: "bridge" (the default), a user-defined network's name,
    "host", "none" or "container:<name|id>" (checked against what exists when
    the container is created: engine/network/sandbox.py). ``ports``: docker-py's
    ``{"80/tcp": 8080}`` or ``-p`` specs; ``links``: ``{"db": "alias"}`` or
    ``["db:alias"]``; ``extra_hosts``: ``{"name": "ip"}`` or ``["name:ip"]``.
    """
    network_mode = network_mode or "bridge"
    if network_mode == "default":
        network_mode = "bridge"
    port_bindings = parse_ports(ports)
    link_list = [f"{k}:{v}" for k, v in links.items()] if isinstance(links, dict) else list(links or [])
    hosts = [f"{k}:{v}" for k, v in extra_hosts.items()] if isinstance(extra_hosts, dict) \
        else list(extra_hosts or [])
    for item in hosts:
        name, sep, ip = item.partition(":")
        if not sep or not name or not _is_ip(ip):
            raise UsageError(f"invalid argument {item!r} for \"--add-host\" flag: "
                             "invalid IP address in add-host: " + repr(ip))
    for server in dns or []:
        if not _is_ip(server):
            raise UsageError(f"{server} is not an ip address")
    memory = parse_bytes(mem_limit, "--memory") if mem_limit not in (None, "", 0) else 0
    if memory and memory < 6 * 1024 * 1024:
        raise UsageError("Minimum memory limit allowed is 6MB")
    swap = 0
    if memswap_limit not in (None, "", 0):
        swap = -1 if str(memswap_limit) == "-1" else parse_bytes(memswap_limit, "--memory-swap")
        if not memory:
            raise UsageError("You should always set the Memory limit when using Memoryswap limit, "
                             "see usage")
        if swap != -1 and swap < memory:
            raise UsageError("Minimum memoryswap limit should be larger than memory limit, see usage")
    if cpus is not None:
        nano_cpus = parse_cpus(cpus)
    if nano_cpus and (cpu_period or cpu_quota):
        raise UsageError("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if nano_cpus and nano_cpus > (os.cpu_count() or 1) * 1_000_000_000:
        raise UsageError(f"Range of CPUs is from 0.01 to {os.cpu_count()}.00, as there are only "
                         f"{os.cpu_count()} CPUs available")
    if cpu_shares is not None and int(cpu_shares) not in range(0, 262145):
        raise UsageError("invalid CPU shares value (allowed 2 to 262144)")
    binds = []
    for v in volumes or []:
        record = parse_volume(v) if isinstance(v, str) else v
        binds.append(f"{record['Source']}:{record['Destination']}" + (":ro" if not record["RW"] else ""))
    tmpfs_map = {}
    for item in (tmpfs.items() if isinstance(tmpfs, dict) else tmpfs or []):
        path, opts = item if isinstance(item, tuple) else parse_tmpfs(item)
        tmpfs_map[path] = opts
    restart = parse_restart(restart_policy or "no")
    if auto_remove and restart["Name"] != "no":
        raise UsageError("Conflicting options: --restart and --rm")
    capability_set(cap_add, cap_drop, privileged)  # refuses unknown names now, not at start
    return {
        "AutoRemove": bool(auto_remove),
        "NetworkMode": network_mode,
        "PortBindings": port_bindings or {},
        "PublishAllPorts": bool(publish_all_ports),
        "Links": [_docker_link(item) for item in link_list] or None,
        "ExtraHosts": hosts or None,
        "Dns": list(dns or []),
        "DnsSearch": list(dns_search or []),
        "DnsOptions": list(dns_opt or []),
        "Privileged": bool(privileged),
        "ReadonlyRootfs": bool(read_only),
        "CapAdd": [capability(c) for c in cap_add] or None,
        "CapDrop": [capability(c) for c in cap_drop] or None,
        "Binds": binds or None,
        "Tmpfs": tmpfs_map or None,
        "Init": bool(init),
        "RestartPolicy": restart,
        "LogConfig": log_config or {"Type": "json-file", "Config": {}},
        "Memory": memory,
        "MemorySwap": swap,
        "NanoCpus": int(nano_cpus or 0),
        "CpuShares": int(cpu_shares or 0),
        "CpuPeriod": int(cpu_period or 0),
        "CpuQuota": int(cpu_quota or 0),
        "CpusetCpus": cpuset_cpus or "",
        "PidsLimit": int(pids_limit) if pids_limit not in (None, "") else None,
        "Ulimits": [parse_ulimit(u) for u in ulimits or []] or None,
    }


def _is_ip(text: str) -> bool:
    import ipaddress
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _docker_link(item: str) -> str:
    """``db`` or ``db:alias`` -> ``db:alias`` (docker keeps ``/db:/<name>/alias``;
    the container's own name is not known yet here, so the short form is kept)."""
    name, _, alias = item.partition(":")
    if not name:
        raise UsageError(f"invalid link: {item!r}")
    return f"{name}:{alias or name}"


def parse_ports(ports) -> dict:
    """``-p`` specs (a list) or docker-py's ``{"80/tcp": 8080 | ("127.0.0.1", 8080) | None}``
    -> HostConfig.PortBindings (engine/network/ports.py has docker's rules)."""
    if not ports:
        return {}
    from ..network import ports as port_specs

    if isinstance(ports, dict):
        out = {}
        for key, value in ports.items():
            key = str(key) if "/" in str(key) else f"{key}/tcp"
            values = value if isinstance(value, list) else [value]
            for v in values:
                if v is None:
                    host_ip, host_port = "", ""
                elif isinstance(v, tuple):
                    host_ip = v[0] or ""
                    host_port = str(v[1]) if len(v) > 1 and v[1] is not None else ""
                else:
                    host_ip, host_port = "", str(v)
                out.setdefault(key, []).append({"HostIp": host_ip, "HostPort": host_port})
        return out
    _, bindings = port_specs.parse_publish(list(ports))
    return bindings


def parse_expose(items) -> list[str]:
    """``--expose 80``, ``8000-8002``, ``53/udp`` -> ["80/tcp", ...]."""
    out = []
    for item in items:
        port, _, proto = str(item).partition("/")
        proto = (proto or "tcp").lower()
        start, _, end = port.partition("-")
        try:
            first, last = int(start), int(end or start)
            if not (0 < first <= last <= 65535):
                raise ValueError
        except ValueError:
            raise UsageError(f"invalid range format for --expose: {item}") from None
        out += [f"{p}/{proto}" for p in range(first, last + 1)]
    return out


def parse_mac(text: str) -> str:
    """``--mac-address``: six hex octets; a unicast address (the group bit of
    the first octet clear), as the kernel requires for an interface."""
    import re
    if not re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", text):
        raise UsageError(f"{text} is not a valid mac address")
    if int(text[:2], 16) & 1:
        raise UsageError(f"{text} is a multicast address: a container needs a unicast one")
    return text.lower()
