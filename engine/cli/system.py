"""System commands: ``version``, ``info``, ``doctor``, and ``pull`` (base images)."""

from __future__ import annotations

import sys

from .output import binary_size


def register(commands) -> None:
    p = commands.add_parser("pull", help="Get an image (here: make busybox from the host's busybox-static)")
    p.add_argument("name", metavar="NAME[:TAG]")
    p.add_argument("--busybox", metavar="PATH", help="the static busybox binary to use (default /bin/busybox)")
    p.set_defaults(func=cmd_pull)

    p = commands.add_parser("version", help="Show the Dockyard version information")
    p.set_defaults(func=cmd_version)

    p = commands.add_parser("info", help="Display system-wide information")
    p.set_defaults(func=cmd_info)

    p = commands.add_parser("doctor", help="Check that this host can run containers, and say why each part matters")
    p.set_defaults(func=cmd_doctor)

    p = commands.add_parser("df", help="Show Dockyard disk usage")
    p.add_argument("-v", "--verbose", action="store_true", help="show detailed information on space usage")
    p.set_defaults(func=cmd_df)

    p = commands.add_parser("check", help="Re-hash every blob, resolve every reference, report leftovers")
    p.add_argument("--repair", action="store_true", help="remove the leftovers (orphans, interrupted work)")
    p.add_argument("--fast", action="store_true", help="do not re-hash the blobs")
    p.set_defaults(func=cmd_check)


def cmd_pull(engine, args) -> int:
    from ..errors import ImageNotFound
    from ..image import reference

    ref = reference.parse(args.name)
    if ref.familiar_name != "busybox" or ref.tag != "latest":
        raise ImageNotFound(f"cannot pull {ref}: there is no registry configured; "
                            "only busybox:latest can be made locally")
    try:
        before = engine.images.get(str(ref)).id
    except ImageNotFound:
        before = None
    print(f"{ref.tag}: Making {ref} from {args.busybox or '/bin/busybox'}")
    image = engine.images.build_busybox(args.busybox)
    print(f"Digest: {image.manifest_digest}")
    if before == image.id:
        print(f"Status: Image is up to date for {ref}")
    else:
        print(f"Status: Downloaded newer image for {ref}")
    print(str(ref))
    return 0


def cmd_version(engine, args) -> int:
    from ..system import version

    v = version(engine)
    native = ", ".join(f"{k} {s}" for k, s in v["NativeCore"].items())
    print("Dockyard:")
    for label, value in [("Version", v["Version"]), ("Python", f"{v['PythonVersion']} ({v['Python']})"),
                         ("Native core", native), ("OS/Arch", f"{v['Os']}/{v['Arch']}"),
                         ("Kernel", v["KernelVersion"]), ("Root", v["Root"])]:
        print(f" {label + ':':<16}{value}")
    return 0


def cmd_info(engine, args) -> int:
    from ..system import info

    i = info(engine)
    native = ", ".join(f"{k} {s}" for k, s in i["NativeCore"].items())
    lines = [
        f"Containers: {i['Containers']}",
        f" Running: {i['ContainersRunning']}",
        f" Paused: {i['ContainersPaused']}",
        f" Stopped: {i['ContainersStopped']}",
        f"Images: {i['Images']}",
        f"Storage Driver: {i['Driver']}",
        f" Backing Filesystem: {i['BackingFilesystem']}",
        f"Cgroup Driver: {i['CgroupDriver']}",
        f"Cgroup Version: {i['CgroupVersion']}",
        f"Kernel Version: {i['KernelVersion']}",
        f"Operating System: {i['OperatingSystem']}",
        f"OSType: {i['OSType']}",
        f"Architecture: {i['Architecture']}",
        f"CPUs: {i['NCPU']}",
        f"Total Memory: {binary_size(i['MemTotal'])}",
        f"Name: {i['Name']}",
        f"Dockyard Root Dir: {i['DockyardRootDir']}",
        f"Native Core: {native}",
    ]
    print("\n".join(lines))
    return 0


def cmd_doctor(engine, args) -> int:
    from ..doctor import FAIL, run_checks

    checks = run_checks(engine)
    print(f"Dockyard doctor (root {engine.layout.root})")
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"  {c.status:<5} {c.name:<{width}}  {c.detail}")
        print(f"        {'':<{width}}  why: {c.why}")
    failed = [c for c in checks if c.status == FAIL]
    if failed:
        sys.stderr.write(f"dockyard: {len(failed)} check(s) failed: "
                         + ", ".join(c.name for c in failed) + "\n")
        return 1
    print("This host can run Dockyard containers.")
    return 0


def _reclaimable(size: int, total: int) -> str:
    from .output import human_size
    percent = int(size * 100 / total) if total else 0
    return f"{human_size(size)} ({percent}%)" if total else human_size(size)


def cmd_df(engine, args) -> int:
    from ..runtime.container import parse_time
    from ..system import disk_usage
    from .output import ago, ellipsis, human_size, table

    du = disk_usage(engine)
    images, containers = du["Images"], du["Containers"]
    if not args.verbose:
        rw = sum(c["SizeRw"] for c in containers)
        rw_idle = sum(c["SizeRw"] for c in containers if c["State"] != "running")
        table(["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], [
            ["Images", str(len(images)), str(sum(1 for i in images if i["Containers"])),
             human_size(du["LayersSize"]), _reclaimable(du["ReclaimableLayersSize"], du["LayersSize"])],
            ["Containers", str(len(containers)), str(sum(1 for c in containers if c["State"] == "running")),
             human_size(rw), _reclaimable(rw_idle, rw)],
            ["Local Volumes", "0", "0", "0B", "0B"],
            ["Build Cache", "0", "0", "0B", "0B"],
        ])
        return 0
    print("Images space usage:\n")
    rows = []
    for i in images:
        from ..image import reference
        for tag in i["RepoTags"] or [None]:
            ref = reference.parse(tag) if tag else None
            rows.append([ref.familiar_name if ref else "<none>", ref.tag if ref else "<none>",
                         i["Id"][7:19], ago(parse_time(i["Created"])), human_size(i["Size"]),
                         human_size(i["SharedSize"]), human_size(i["Size"] - i["SharedSize"]),
                         str(i["Containers"])])
    table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "CONTAINERS"], rows)
    print("\nContainers space usage:\n")
    table(["CONTAINER ID", "IMAGE", "COMMAND", "LOCAL VOLUMES", "SIZE", "CREATED", "STATUS", "NAMES"],
          [[c["Id"][:12], c["Image"] or "", '"' + ellipsis(c["Command"], 20) + '"', "0",
            human_size(c["SizeRw"]), ago(parse_time(c["Created"])), c["State"], c["Names"][0][1:]]
           for c in containers])
    print("\nLocal Volumes space usage:\n")
    table(["VOLUME NAME", "LINKS", "SIZE"], [])
    print("\nBuild cache usage: 0B\n")
    table(["CACHE ID", "CACHE TYPE", "SIZE", "CREATED", "LAST USED", "USAGE", "SHARED"], [])
    return 0


def cmd_check(engine, args) -> int:
    from ..check import check, repair

    if args.repair:
        for finding in repair(engine):
            print(f"removed {finding}")
    findings = check(engine, rehash=not args.fast)
    problems = [f for f in findings if f.kind == "problem"]
    leftovers = [f for f in findings if f.kind == "leftover"]
    for f in problems:
        print(f"problem   {f}")
    for f in leftovers:
        print(f"leftover  {f}")
    blobs = sum(1 for _ in engine.content.digests())
    summary = (f"checked {blobs} blobs: {len(problems)} problem(s), {len(leftovers)} leftover(s)")
    if leftovers and not problems:
        summary += " (run 'dockyard system check --repair' to remove the leftovers)"
    print(summary)
    if problems:
        sys.stderr.write(f"dockyard: the store has {len(problems)} problem(s)\n")
        return 1
    return 0
