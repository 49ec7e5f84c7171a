"""``dockyard build``: an image from a Dockerfile, with docker's flags.

Two progress displays, both fed by the builder's events (build/builder.py):

- ``auto`` (the default): docker's classic builder log, ``Step N/M : ...``
  then ``---> CACHED`` or ``---> miss: <reason>``, the step's output, and
  ``---> <image id> (<seconds>s)``; ``Successfully built`` / ``tagged``.
- ``plain``: BuildKit's plain log for CI, one ``#N`` block per step, each
  output line prefixed with its time since the step started.

``-q`` prints only the image ID (``sha256:...``) on success; on failure the
failing step's output is still shown on stderr, so the error can be read.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from .output import human_size as format_size


def register(commands) -> None:
    p = commands.add_parser("build", help="Build an image from a Dockerfile")
    p.add_argument("-t", "--tag", action="append", default=[], metavar="NAME[:TAG]", type=_pflag_value,
                   help="name and optionally a tag for the image (repeatable)")
    p.add_argument("-f", "--file", metavar="FILE", type=_pflag_value,
                   help="the Dockerfile (default: CONTEXT/Dockerfile; '-' reads it from STDIN)")
    p.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="set a build-time variable declared with ARG (repeatable; KEY alone "
                        "takes the value from the environment)")
    p.add_argument("--target", metavar="STAGE", help="build this stage of a multi-stage Dockerfile")
    p.add_argument("--no-cache", action="store_true", help="do not use the cache: run every step")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="set a label on the image (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print only the image ID on success")
    p.add_argument("--progress", choices=("auto", "plain"), default="auto",
                   help="progress output: auto (docker's classic log) or plain (BuildKit's, for CI)")
    p.add_argument("--iidfile", metavar="FILE", help="write the image ID to FILE")
    p.add_argument("--network", default="none", metavar="MODE",
                   help="network mode of RUN steps: none (default), bridge (or default) or host")
    p.add_argument("context", metavar="CONTEXT",
                   help="a directory, or '-' to read a Dockerfile or a context tar from STDIN")
    p.set_defaults(func=cmd_build)


def _pflag_value(text: str) -> str:
    """``-t=name:tag`` (as the seeds write ``docker build -t="仓库:标记" /dir``):
    docker's flag parser takes ``-t=x`` as the value ``x``; argparse would keep the ``=``."""
    return text[1:] if text.startswith("=") else text


def _build_args(items: list[str]) -> dict:
    from ..errors import UsageError

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid argument {item!r} for \"--build-arg\" flag: no name")
        if not eq:
            if key not in os.environ:
                continue  # docker: an unset variable is simply not passed
            value = os.environ[key]
        out[key] = value
    return out


def _stdin_context(engine, args):
    """``CONTEXT`` is ``-``: a tar stream (recognized by its first bytes) or a Dockerfile."""
    from ..build.context import BuildContext, looks_like_archive
    from ..errors import UsageError

    if args.file == "-":
        raise UsageError("the Dockerfile and the context cannot both come from STDIN")
    data = sys.stdin.buffer.read()
    if looks_like_archive(data[:512]):
        import io

        engine.layout.builds.mkdir(parents=True, exist_ok=True)
        scratch = engine.layout.builds / f"context-{os.getpid()}-{os.urandom(6).hex()}"
        return BuildContext.from_tar(io.BytesIO(data), str(scratch), args.file or "Dockerfile")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError("STDIN is neither a tar archive nor a UTF-8 Dockerfile") from None
    return BuildContext.without_files(text)


def cmd_build(engine, args) -> int:
    from ..build.builder import Builder, BuildError
    from ..build.context import BuildContext

    buildargs = _build_args(args.build_arg)
    engine.check_host()
    if args.context == "-":
        context = _stdin_context(engine, args)
    elif args.file == "-":
        context = BuildContext.from_directory(args.context, dockerfile_text=sys.stdin.read())
    else:
        context = BuildContext.from_directory(args.context, args.file)
    display = _Quiet() if args.quiet else _Plain() if args.progress == "plain" else _Classic()
    # SIGTERM (docker stop of a CI job, kill): unwind like Ctrl-C, so the builder
    # removes its intermediate container and scratch space; exit 143 (128 + 15).
    signal.signal(signal.SIGTERM, _terminated)
    with context:
        builder = Builder(engine, context, tags=args.tag, buildargs=buildargs, target=args.target,
                          nocache=args.no_cache, labels=args.label, network_mode=args.network,
                          progress=display.event)
        try:
            image, _ = builder.build()
        except BuildError as e:
            display.failed(e)
            raise
    display.finished(image)
    if args.iidfile:
        with open(args.iidfile, "w") as f:
            f.write(image.id)
    return 0


class Terminated(SystemExit):
    """SIGTERM arrived: leave through every ``finally`` with status 143."""


def _terminated(signum, frame):
    raise Terminated(128 + signum)


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


class _Classic:
    """docker's classic builder log, with the cache's reasons and each step's time."""

    def __init__(self):
        self.at_line_start = True

    def event(self, ev) -> None:
        if ev.kind == "context":
            _out(f"Sending build context to Dockyard  {format_size(ev.data)}\n")
        elif ev.kind == "note":
            _out(f"{ev.data}\n")
        elif ev.kind == "step":
            if ev.step.number:
                _out(f"{ev.step.title}\n")
            else:
                _out(f" ---> Trigger: {ev.step.instruction}\n")
        elif ev.kind == "cache":
            _out(" ---> CACHED\n" if ev.step.cached else f" ---> miss: {ev.step.reason}\n")
        elif ev.kind == "running":
            _out(f" ---> Running in {ev.data[:12]}\n")
        elif ev.kind == "output":
            text = ev.data.decode("utf-8", "replace")
            _out(text)
            self.at_line_start = text.endswith("\n")
        elif ev.kind == "removed":
            self._newline()
            _out(f" ---> Removed intermediate container {ev.data[:12]}\n")
        elif ev.kind == "done":
            self._newline()
            timing = f" ({ev.step.duration:.2f}s)" if ev.step.cached is False else ""
            _out(f" ---> {ev.step.image_id.partition(':')[2][:12]}{timing}\n")
        elif ev.kind == "tagged":
            self.tags = getattr(self, "tags", []) + [ev.data]

    def _newline(self) -> None:
        if not self.at_line_start:
            _out("\n")
            self.at_line_start = True

    def failed(self, error) -> None:
        self._newline()

    def finished(self, image) -> None:
        _out(f"Successfully built {image.short_id}\n")
        for tag in getattr(self, "tags", []):
            _out(f"Successfully tagged {tag}\n")


class _Plain:
    """BuildKit's ``--progress plain``: ``#N`` blocks, output lines with their times."""

    def __init__(self):
        self.n = 0
        self.started = time.monotonic()
        self.tags = []
        self.pending = b""

    def event(self, ev) -> None:
        if ev.kind == "context":
            self._block("[internal] load build context")
            _out(f"#{self.n} transferring context: {format_size(ev.data)}\n#{self.n} DONE 0.0s\n")
        elif ev.kind == "note":
            _out(f"{ev.data}\n")
        elif ev.kind == "step":
            step = ev.step
            stage = "" if step.stage.startswith("stage-") else step.stage + " "
            where = f"{stage}{step.number}/{step.total}" if step.number else f"{stage}trigger"
            self._block(f"[{where}] {step.instruction}")
        elif ev.kind == "cache":
            if ev.step.cached:
                _out(f"#{self.n} CACHED\n")
            else:
                _out(f"#{self.n} miss: {ev.step.reason}\n")
        elif ev.kind == "running":
            self.started = time.monotonic()
        elif ev.kind == "output":
            self.pending += ev.data
            *lines, self.pending = self.pending.split(b"\n")
            for line in lines:
                self._line(line)
        elif ev.kind == "done":
            if self.pending:
                self._line(self.pending)
                self.pending = b""
            if ev.step.cached is not True:
                _out(f"#{self.n} DONE {ev.step.duration:.1f}s\n")
        elif ev.kind == "tagged":
            self.tags.append(ev.data)

    def _line(self, line: bytes) -> None:
        _out(f"#{self.n} {time.monotonic() - self.started:.3f} {line.decode('utf-8', 'replace')}\n")

    def _block(self, title: str) -> None:
        self.n += 1
        self.started = time.monotonic()
        _out(f"\n#{self.n} {title}\n")

    def failed(self, error) -> None:
        if self.pending:
            self._line(self.pending)
        _out(f"#{self.n} ERROR: {error}\n")

    def finished(self, image) -> None:
        self._block("exporting to image")
        _out(f"#{self.n} writing image {image.id} done\n")
        for tag in self.tags:
            _out(f"#{self.n} naming to {tag} done\n")
        _out(f"#{self.n} DONE 0.0s\n")


class _Quiet:
    """``-q``: nothing but the image ID; a failed step's output goes to stderr."""

    def event(self, ev) -> None:
        pass

    def failed(self, error) -> None:
        if error.output:
            sys.stderr.write(error.output.decode("utf-8", "replace"))
            if not error.output.endswith(b"\n"):
                sys.stderr.write("\n")

    def finished(self, image) -> None:
        _out(f"{image.id}\n")
