"""Archive commands: ``save``, ``load``, ``import``, ``export``.

The engine code is in engine/image/archive.py (save, load),
engine/image/tarball.py (import) and engine/runtime/export.py (export);
this module only opens files, refuses terminals and prints docker's lines.

Like docker, ``save`` and ``export`` refuse to write a tar to a terminal
(docker/cli: "cowardly refusing to save to a terminal. Use the -o flag or
redirect"), and ``load`` refuses to read one ("requested load from stdin,
but stdin is empty"). ``-o FILE`` is written to a temporary file in the same
directory and renamed over FILE at the end (as the docker CLI's
``CopyToFile``), so FILE never holds half an archive.
"""

from __future__ import annotations

import os
import sys

TERMINAL = "cowardly refusing to save to a terminal. Use the -o flag or redirect"


def register(commands) -> None:
    p = commands.add_parser("save", help="Save one or more images to a tar archive (streamed to STDOUT by default)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to a file, instead of STDOUT")
    p.add_argument("images", metavar="IMAGE", nargs="+")
    p.set_defaults(func=cmd_save)

    p = commands.add_parser("load", help="Load images from a tar archive or STDIN")
    p.add_argument("-i", "--input", metavar="FILE", help="read from tar archive file, instead of STDIN")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress the load output")
    p.set_defaults(func=cmd_load)

    p = commands.add_parser("import", help="Import the contents from a tarball to create a filesystem image")
    p.add_argument("-c", "--change", action="append", default=[], metavar="INSTRUCTION",
                   help="apply a Dockerfile instruction to the created image (repeatable)")
    p.add_argument("-m", "--message", default="", help="set commit message for imported image")
    p.add_argument("source", metavar="file|URL|-")
    p.add_argument("repository", metavar="REPOSITORY[:TAG]", nargs="?")
    p.set_defaults(func=cmd_import)

    p = commands.add_parser("export", help="Export a container's filesystem as a tar archive")
    p.add_argument("-o", "--output", metavar="FILE", help="write to a file, instead of STDOUT")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_export)


def _write(chunks, output: str | None) -> None:
    """Write chunks to ``output`` (atomically) or to stdout (never a terminal)."""
    from ..errors import UsageError

    if not output:
        if sys.stdout.isatty():
            raise UsageError(TERMINAL)
        out = sys.stdout.buffer
        for chunk in chunks:
            out.write(chunk)
        out.flush()
        return
    directory = os.path.dirname(os.path.abspath(output))
    tmp = os.path.join(directory, f".{os.path.basename(output)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
        os.rename(tmp, output)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def cmd_save(engine, args) -> int:
    from ..errors import UsageError

    if not args.output and sys.stdout.isatty():
        raise UsageError(TERMINAL)  # before resolving anything, as docker
    _write(engine.images.save(args.images), args.output)
    return 0


def cmd_load(engine, args) -> int:
    from ..errors import UsageError

    if args.input:
        result = engine.images.load_archive(args.input)
    else:
        if sys.stdin.isatty():
            raise UsageError("requested load from stdin, but stdin is empty")
        result = engine.images.load_archive(sys.stdin.buffer)
    for line in result.lines:
        print(line)
    return 0


def cmd_import(engine, args) -> int:
    source = sys.stdin.buffer if args.source == "-" else args.source
    image = engine.images.import_(source, args.repository, changes=args.change,
                                  message=args.message or None)
    print(image.id)
    return 0


def cmd_export(engine, args) -> int:
    from ..errors import UsageError

    if not args.output and sys.stdout.isatty():
        raise UsageError(TERMINAL)
    container = engine.containers.get(args.container)
    _write(container.export(), args.output)
    return 0
