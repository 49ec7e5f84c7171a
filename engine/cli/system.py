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
