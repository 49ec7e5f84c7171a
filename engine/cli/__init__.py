"""The ``dockyard`` command: docker's commands, flags, columns and exit codes.

This package is the only code in Dockyard that prints or exits. Each command
family lives in its own module (``container``, ``image``, ``system``) and
registers its sub-commands on the parser; a command is a function
``(engine, args) -> exit status``.

Start-up is kept lean: nothing but argparse is imported until a command
runs, and each command imports only the engine parts it uses.

Exit statuses (docker's): 125 when dockyard itself fails or the command line
is wrong, 126/127 when the container command cannot be run / found, 128+n
when the container was killed by signal n, else the container's own status.
"""

from __future__ import annotations

import argparse
import os
import sys

PROG = "dockyard"


class UsageFailure(Exception):
    """Raised by the parser instead of exiting, so main() decides the status."""

    def __init__(self, message: str, prog: str):
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage and exit(2)
        if message.startswith("unrecognized arguments: "):
            message = "unknown flag: " + message.split(": ", 1)[1]
        raise UsageFailure(message.rstrip(".") + ".", self.prog)


# Which module defines each command; main() imports only the one it needs.
COMMANDS = {
    "run": "container", "ps": "container", "rm": "container", "inspect": "container",
    "commit": "container", "diff": "container", "create": "container",
    "start": "container", "stop": "container", "restart": "container", "kill": "container",
    "wait": "container", "rename": "container", "port": "container", "attach": "container", "logs": "container",
    "pause": "container", "unpause": "container", "events": "container",
    "exec": "processes", "top": "processes", "stats": "processes", "update": "processes",
    "images": "image", "tag": "image", "rmi": "image", "history": "image",
    "pull": "system", "version": "system", "info": "system", "doctor": "system",
    "build": "build",
    "save": "archive", "load": "archive", "import": "archive", "export": "archive",
    # management commands: `image ls`, `container rm`, `system df`...
    "image": "manage", "container": "manage", "system": "manage",
    "network": "network",  # a group of its own: network create/ls/inspect/rm/prune/connect...
}

# Commands nobody types: a container's monitor execs them when the container
# has exited (`python -m engine _restart ID`). They are only in the parser
# when asked for, so they appear in no help and no reference.
HIDDEN = {"_restart": "container", "_autoremove": "container", "_netdown": "container"}


class Only:
    """Stands in for an argparse sub-parsers object and keeps only some commands.

    Command modules register all their commands with ``add_parser``; this
    lets the same module serve ``dockyard images`` and ``dockyard image ls``
    (``wanted`` maps a module's name for a command to the name shown here)
    and leaves out commands that exist only under a management command
    (``image prune``, ``system df``).
    """

    def __init__(self, subparsers, wanted: dict[str, str]):
        self.subparsers = subparsers
        self.wanted = wanted

    def add_parser(self, name, **kw):
        if name in self.wanted:
            return self.subparsers.add_parser(self.wanted[name], **kw)
        return Parser(prog=name, add_help=False)  # a parser nobody will reach


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``only``, just that command's module is loaded."""
    import importlib

    parser = Parser(prog=PROG, description="A container engine for learning and testing containers.",
                    epilog=f"Run '{PROG} COMMAND --help' for more information on a command.")
    parser.add_argument("--root", metavar="DIR",
                        help="Dockyard's state directory (default: $DOCKYARD_ROOT or /var/lib/dockyard)")
    parser.add_argument("-D", "--debug", action="store_true", help="show tracebacks of engine errors")
    parser.add_argument("-v", "--version", action="store_true", help="print version information and quit")
    commands = parser.add_subparsers(dest="command_name", metavar="COMMAND", parser_class=Parser)
    if only in HIDDEN:
        importlib.import_module(f"{__name__}.{HIDDEN[only]}").register_hidden(commands)
        return parser
    modules = dict.fromkeys(COMMANDS.values()) if only not in COMMANDS else [COMMANDS[only]]
    for module in modules:
        top_level = {name: name for name, owner in COMMANDS.items() if owner == module}
        importlib.import_module(f"{__name__}.{module}").register(Only(commands, top_level))
    return parser


def _command_name(argv: list[str]) -> str | None:
    """The first word that is not a global option (``--root DIR`` takes a value)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--root":
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def _error(message: str) -> None:
    sys.stderr.write(f"{PROG}: {message}\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dockyard`` console script; returns the exit status."""
    from ..errors import EXIT_ENGINE, EngineError

    argv = sys.argv[1:] if argv is None else argv
    name = _command_name(argv)
    parser = build_parser(name)
    try:
        args = parser.parse_args(argv)
    except UsageFailure as e:
        # argparse reports unknown flags from the top-level parser; point to
        # the command's own help when there is a command.
        prog = f"{PROG} {name}" if name in COMMANDS else e.prog
        _error(f"{e} See '{prog} --help'.")
        return EXIT_ENGINE
    if args.version:
        from .. import __version__
        print(f"Dockyard version {__version__}")
        return 0
    if not args.command_name:
        parser.print_help()
        return 0
    from ..api import Engine

    engine = Engine(args.root or os.environ.get("DOCKYARD_ROOT") or None)
    try:
        return args.func(engine, args)
    except EngineError as e:
        if args.debug:
            raise
        _error(str(e))
        return e.exit_code
    except UsageFailure as e:
        _error(f"{e} See '{e.prog} --help'.")
        return EXIT_ENGINE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `dockyard ps | head`: the reader left; that is not an error.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except OSError as e:
        if args.debug:
            raise
        notes = "; ".join(getattr(e, "__notes__", []))
        _error(f"{e}" + (f" ({notes})" if notes else ""))
        return EXIT_ENGINE
