"""Parse a Dockerfile into a list of instructions.

Lifecycle of a Dockerfile's text, following the Dockerfile reference and
BuildKit's parser (moby/buildkit ``frontend/dockerfile/parser`` and
``instructions``), which is what ``docker build`` runs:

1. **Parser directives.** Lines of the form ``# name=value`` at the very top
   (``escape`` and ``syntax``) are read until the first line that is not one.
2. **Logical lines.** Comments (``#`` as the first non-blank character) and
   blank lines are dropped; a line ending with the escape character (plus
   optional blanks) continues on the next one. Comment lines and blank lines
   inside a continuation are skipped (docker warns about the blank ones).
3. **Instructions.** Each logical line is ``KEYWORD [--flag=value...] rest``;
   the keyword decides how ``rest`` is cut into arguments (a JSON array, a
   single string, whitespace-separated words, or ``key=value`` pairs).
4. **Checks.** Argument counts, flags, HEALTHCHECK options and "FROM first"
   are checked here, so that the builder gets only well-formed instructions.

Nothing is substituted here: ``$VAR`` stays as written and quotes in
ENV/LABEL/ARG values are kept. The builder expands the instructions listed in
:data:`engine.build.expand.EXPANDED_INSTRUCTIONS` with their current
variables, exactly as docker does it at build time.

Every error is a :class:`DockerfileError` whose message names the file and
line, e.g. ``Dockerfile:12: unknown instruction: FOOBAR``.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Optional, Union

from engine.errors import UsageError


class DockerfileError(UsageError):
    """The Dockerfile is malformed; ``filename`` and ``line`` say where (1-based)."""

    def __init__(self, filename: str, line: int, reason: str):
        super().__init__(f"{filename}:{line}: {reason}")
        self.filename = filename
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class Healthcheck:
    """A parsed HEALTHCHECK, in the image config's shape (durations in nanoseconds).

    ``test`` is ``["NONE"]``, ``["CMD", arg...]`` (exec form) or
    ``["CMD-SHELL", command]`` (shell form), as the image spec stores it.
    A duration or retry count of 0 means "not set: use the default".
    """

    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@dataclass(frozen=True)
class Instruction:
    """One instruction of a Dockerfile, as written (nothing substituted yet).

    ``args`` depends on the keyword, as in BuildKit's parse tree:

    * RUN, CMD, ENTRYPOINT, SHELL: the JSON array's strings when ``json`` is
      true (exec form), else one string, the command line (shell form);
    * COPY, ADD, VOLUME: the JSON array's strings, or whitespace-separated words;
    * FROM, EXPOSE: whitespace-separated words (``("img", "AS", "name")``);
    * ENV, LABEL: ``(key1, value1, key2, value2, ...)``; values keep their
      quotes, which substitution removes (see :meth:`pairs`);
    * ARG: one word per argument, ``name`` or ``name=default``;
    * MAINTAINER, USER, WORKDIR, STOPSIGNAL: one string, the rest of the line;
    * HEALTHCHECK: ``("NONE",)`` or ``("CMD", ...command as for CMD...)``;
      the checked result is in ``healthcheck``;
    * ONBUILD: one string, the trigger as written (what goes in the image
      config's ``OnBuild`` list); the trigger parsed is in ``trigger``.

    ``flags`` holds the ``--name=value`` options that were given (booleans
    such as ``--link`` as ``True``/``False``). ``start_line`` and ``end_line``
    are 1-based and include continuation lines.
    """

    keyword: str
    original: str
    args: tuple[str, ...]
    flags: Mapping[str, Union[str, bool]] = field(default_factory=dict, hash=False)
    json: bool = False
    start_line: int = 0
    end_line: int = 0
    trigger: Optional["Instruction"] = None
    healthcheck: Optional[Healthcheck] = None

    def __post_init__(self):
        # Freeze the flags too, so an Instruction is a plain immutable value.
        object.__setattr__(self, "flags", MappingProxyType(dict(self.flags)))

    def pairs(self) -> list[tuple[str, str]]:
        """ENV and LABEL arguments as (key, value) pairs, values still unexpanded."""
        return list(zip(self.args[0::2], self.args[1::2]))

    @property
    def stage_name(self) -> Optional[str]:
        """For ``FROM image AS name``: the stage name, lower-cased as docker does."""
        if self.keyword == "FROM" and len(self.args) == 3:
            return self.args[2].lower()
        return None


@dataclass(frozen=True)
class Dockerfile:
    """The parsed file: its instructions plus what the directives said.

    Iterate over it (or index it) to get the instructions. ``syntax`` is the
    ``# syntax=`` directive if present: docker would fetch that frontend
    image; Dockyard accepts and ignores it, and the builder can print a note.
    ``warnings`` are the non-fatal findings docker also reports.
    """

    filename: str
    instructions: tuple[Instruction, ...]
    escape: str = "\\"
    syntax: Optional[str] = None
    warnings: tuple[str, ...] = ()

    def __iter__(self):
        return iter(self.instructions)

    def __len__(self):
        return len(self.instructions)

    def __getitem__(self, index):
        return self.instructions[index]


# Every instruction of the Dockerfile reference.
KEYWORDS = (
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
    "WORKDIR",
)

# The flags each instruction accepts ("bool" flags may be given without a
# value). These are the reference's flags that Dockyard implements.
_FLAGS: dict[str, dict[str, str]] = {
    "FROM": {"platform": "string"},
    "COPY": {"from": "string", "chown": "string", "chmod": "string", "link": "bool"},
    "ADD": {"chown": "string", "chmod": "string", "checksum": "string", "link": "bool"},
    "HEALTHCHECK": {"interval": "string", "timeout": "string", "start-period": "string",
                    "start-interval": "string", "retries": "string"},
}

# Flags the reference documents that Dockyard does not implement. Refusing
# them by name is clearer than docker's generic "unknown flag" and better than
# silently building something else than the Dockerfile asks for.
_UNSUPPORTED_FLAGS = {
    "RUN": {"mount", "network", "security", "device"},
    "COPY": {"parents", "exclude"},
    "ADD": {"keep-git-dir", "exclude", "unpack"},
}

# The reference, "Parser directives": `# directive=value`, case-insensitive,
# blanks allowed around the `=`. Only these two are known; any other
# comment ends the directives.
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_KNOWN_DIRECTIVES = ("escape", "syntax")

# A stage name: BuildKit's validStageName (after lower-casing).
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")

# A heredoc word such as <<EOF, <<-EOF or <<"EOF" (BuildKit's heredoc syntax).
_HEREDOC = re.compile(r"<<-?\s*([\"']?)[A-Za-z_][A-Za-z0-9_]*\1(\s|$)")

# Go's time.ParseDuration units, in nanoseconds.
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
          "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}

# docker's container.MinimumDuration for HEALTHCHECK intervals.
_MIN_HEALTH_DURATION = 1_000_000  # 1ms


def parse(text: str, filename: str = "Dockerfile") -> Dockerfile:
    """Parse the text of a Dockerfile; raise :class:`DockerfileError` if it is malformed."""
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()  # a final newline ends the last line; it does not start a new one
    # Like Go's bufio.ScanLines: a "\r" before the newline is not part of the line.
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]  # a UTF-8 byte-order mark is not content

    escape, syntax, first = _read_directives(lines, filename)
    continuation = re.compile(re.escape(escape) + r"[ \t]*$")

    instructions: list[Instruction] = []
    warnings: list[str] = []
    i = first
    while i < len(lines):
        start = i + 1
        line = lines[i].lstrip()
        i += 1
        if _is_comment(line) or not line.strip():
            continue
        # Join continuation lines. Inside a continuation, comment lines are
        # dropped and blank lines skipped (docker warns: "Empty continuation
        # lines will become errors in a future release"). A continuation
        # still open at the end of the file simply ends there, as in docker.
        empty_continuation = False
        more = continuation.search(line)
        if more:
            line = line[:more.start()]
        joined = line
        while more and i < len(lines):
            line = lines[i]
            i += 1
            if _is_comment(line):
                continue
            if not line.strip():
                empty_continuation = True
                continue
            more = continuation.search(line)
            if more:
                line = line[:more.start()]
            joined += line
        if empty_continuation:
            warnings.append(f"{filename}:{start}: empty continuation line found in: {joined.strip()}")
        if not joined.strip():
            continue  # a lone escape character: nothing to do
        instructions.append(_instruction(joined, escape, filename, start, i))

    if not instructions:
        raise DockerfileError(filename, max(len(lines), 1), "file with no instructions")
    _check_order(instructions, filename)
    return Dockerfile(filename, tuple(instructions), escape, syntax, tuple(warnings))


def _is_comment(line: str) -> bool:
    # The reference: "BuildKit treats lines that begin with # as a comment,
    # unless the line is a valid parser directive"; leading whitespace is
    # allowed. A # anywhere else is an ordinary argument character.
    return line.lstrip().startswith("#")


def _read_directives(lines: list[str], filename: str) -> tuple[str, Optional[str], int]:
    """Read the parser directives; return (escape, syntax, index of the first other line)."""
    escape, syntax, seen = "\\", None, set()
    for index, line in enumerate(lines):
        match = _DIRECTIVE.match(line.lstrip())
        # The reference: once a comment, empty line or instruction has been
        # processed, directives are no longer looked for; an unknown
        # directive is just a comment and ends them too.
        if not match or match.group(1).lower() not in _KNOWN_DIRECTIVES:
            return escape, syntax, index
        name, value = match.group(1).lower(), match.group(2)
        if name in seen:
            raise DockerfileError(filename, index + 1, f"only one {name} parser directive can be used")
        seen.add(name)
        if name == "escape":
            if value not in ("\\", "`"):
                raise DockerfileError(
                    filename, index + 1, f"invalid escape token '{value}' does not match ` or \\")
            escape = value
        else:
            syntax = value
    return escape, syntax, len(lines)


def _check_order(instructions: list[Instruction], filename: str) -> None:
    # The reference ("Understand how ARG and FROM interact"): ARG is the only
    # instruction that may precede the first FROM; those are global build
    # arguments, usable in FROM lines.
    for ins in instructions:
        if ins.keyword == "FROM":
            return
        if ins.keyword != "ARG":
            raise DockerfileError(
                filename, ins.start_line,
                f"no build stage in current context: {ins.keyword} must come after FROM "
                "(only ARG may come before the first FROM)")
    raise DockerfileError(filename, instructions[-1].start_line,
                          "dockerfile contains no stages to build (no FROM instruction)")


# -- one instruction ---------------------------------------------------------


def _instruction(line: str, escape: str, filename: str, start: int, end: int) -> Instruction:
    """Build the Instruction for one logical line (lines start..end of the file)."""

    def fail(reason: str):
        return DockerfileError(filename, start, reason)

    parts = line.strip().split(None, 1)
    keyword = parts[0].upper()
    rest = parts[1] if len(parts) == 2 else ""
    if keyword not in KEYWORDS:
        reason = f"unknown instruction: {keyword}"
        close = difflib.get_close_matches(keyword, KEYWORDS, n=1)
        if close:
            reason += f" (did you mean {close[0].lower()}?)"
        raise fail(reason)

    raw_flags, rest = _split_flags(rest)
    rest = rest.strip()
    flags = _parse_flags(keyword, raw_flags, fail)
    is_json = False
    trigger = healthcheck = None

    if keyword in ("RUN", "CMD", "ENTRYPOINT", "SHELL"):
        args, is_json = _maybe_json(rest, fail)
        if keyword == "SHELL":
            # The reference: "The SHELL instruction must be written in JSON form".
            if rest and not is_json:
                raise fail("SHELL requires the arguments to be in JSON form")
            if not args:
                raise fail("SHELL requires at least one argument")
        if keyword == "RUN" and not args:
            # docker accepts an empty RUN and then fails running `/bin/sh -c`;
            # saying so here, with the line, is clearer.
            raise fail("RUN requires at least one argument")
        if keyword == "RUN" and not is_json:
            _refuse_heredoc(rest, fail)
    elif keyword in ("COPY", "ADD", "VOLUME"):
        args, is_json = _maybe_json(rest, fail)
        if not is_json:
            args = tuple(rest.split())
        if keyword == "VOLUME":
            if not args:
                raise fail("VOLUME requires at least one argument")
            if any(not a.strip() for a in args):
                raise fail("VOLUME specified can not be an empty string")
        elif len(args) < 2:
            raise fail(f"{keyword} requires at least two arguments, but only one was "
                       "provided. Destination could not be determined")
        elif not is_json:
            _refuse_heredoc(rest, fail)
    elif keyword == "FROM":
        args = tuple(rest.split())
        if len(args) == 3 and args[1].lower() == "as":
            if not _STAGE_NAME.match(args[2].lower()):
                raise fail(f'invalid name for build stage: "{args[2]}", name can\'t start '
                           "with a number or contain symbols")
        elif len(args) != 1:
            raise fail("FROM requires either one or three arguments")
    elif keyword == "EXPOSE":
        args = tuple(rest.split())
        if not args:
            raise fail("EXPOSE requires at least one argument")
    elif keyword in ("ENV", "LABEL"):
        args = _name_values(keyword, rest, escape, fail)
    elif keyword == "ARG":
        words = _words(rest, escape, fail)
        if not words:
            raise fail("ARG requires at least one argument")
        if any(w.startswith("=") for w in words):
            raise fail("ARG names can not be blank")
        args = tuple(words)
    elif keyword in ("MAINTAINER", "USER", "WORKDIR", "STOPSIGNAL"):
        if not rest:
            raise fail(f"{keyword} requires exactly one argument")
        args = (rest,)
    elif keyword == "HEALTHCHECK":
        args, is_json, healthcheck = _healthcheck(rest, flags, fail)
    else:  # ONBUILD
        args, trigger = _onbuild(rest, escape, filename, start, end, fail)

    return Instruction(keyword, line, tuple(args), flags, is_json, start, end, trigger, healthcheck)


def _split_flags(rest: str) -> tuple[list[str], str]:
    """Take the leading ``--name[=value]`` words off ``rest`` (BuildKit's extractBuilderFlags).

    Flag values may be quoted (``--chown="app user"``); ``\\`` escapes one
    character there whatever the escape directive says. A lone ``--`` ends
    the flags.
    """
    flags: list[str] = []
    pos = 0
    while True:
        while pos < len(rest) and rest[pos].isspace():
            pos += 1
        if not rest.startswith("--", pos):
            return flags, rest[pos:]
        word, quote = "", ""
        while pos < len(rest) and (quote or not rest[pos].isspace()):
            ch = rest[pos]
            pos += 1
            if quote and ch == quote:
                quote = ""
            elif not quote and ch in "'\"":
                quote = ch
            elif ch == "\\" and pos < len(rest):
                word += rest[pos]
                pos += 1
            elif ch != "\\":
                word += ch
        if word == "--":
            return flags, rest[pos:]
        flags.append(word)


def _parse_flags(keyword: str, raw: list[str], fail) -> dict[str, Union[str, bool]]:
    """Check each ``--name=value`` against the instruction's flags (BuildKit's BFlags)."""
    known = _FLAGS.get(keyword, {})
    flags: dict[str, Union[str, bool]] = {}
    for word in raw:
        name, has_value, value = word[2:].partition("=")
        if name in _UNSUPPORTED_FLAGS.get(keyword, ()):
            raise fail(f"{keyword} --{name} is not supported by dockyard")
        if name not in known:
            raise fail(f"unknown flag: {name}")
        if name in flags:
            raise fail(f"duplicate flag specified: {name}")
        if known[name] == "bool":
            if has_value and value.lower() not in ("true", "false"):
                raise fail(f"expecting boolean value for flag {name}, not: {value}")
            flags[name] = not has_value or value.lower() == "true"
        else:
            if not has_value:
                raise fail(f"missing a value on flag: {name}")
            flags[name] = value
    return flags


def _maybe_json(rest: str, fail) -> tuple[tuple[str, ...], bool]:
    """The exec (JSON array) form if ``rest`` is one, else the shell form ``(rest,)``.

    The reference: "The exec form is parsed as a JSON array, which means that
    you must use double-quotes (") around words, not single-quotes (')."
    Text that is not valid JSON is silently taken as shell form, as docker
    does; a valid array holding something other than strings is an error.
    """
    if not rest:
        return (), False
    if rest.startswith("["):
        try:
            value = json.loads(rest)
        except ValueError:
            value = None
        if isinstance(value, list):
            if not all(isinstance(item, str) for item in value):
                raise fail("when using JSON array syntax, arrays must be comprised of strings only")
            return tuple(value), True
    return (rest,), False


def _refuse_heredoc(rest: str, fail) -> None:
    # Heredocs (RUN <<EOF ... EOF) need the parser to read the following lines
    # as data; Dockyard does not implement them yet.
    found = _HEREDOC.search(rest)
    if found and "<<<" not in rest:  # `<<<` is a bash here-string, not a heredoc
        raise fail(f"heredocs are not supported (found {found.group(0).strip()})")


def _words(rest: str, escape: str, fail) -> list[str]:
    """Split on unquoted whitespace, keeping quotes and escapes (BuildKit's parseWords).

    Quotes are removed later, by substitution. An unterminated quote is
    reported here, with the instruction's line.
    """
    words: list[str] = []
    word, quote, quoted = "", "", False
    pos = 0
    while pos < len(rest):
        ch = rest[pos]
        pos += 1
        if not quote and ch.isspace():
            if word or quoted:
                words.append(word)
            word, quoted = "", False
            continue
        if ch == escape and quote != "'":
            # An escape keeps the next character (even a quote) in the word;
            # one at the very end is dropped.
            if pos < len(rest):
                word += ch + rest[pos]
                pos += 1
            continue
        if quote and ch == quote:
            quote = ""
        elif not quote and ch in "'\"":
            quote, quoted = ch, True
        word += ch
    if quote:
        kind = "double-quote" if quote == '"' else "single-quote"
        raise fail(f"unexpected end of statement while looking for matching {kind}")
    if word or quoted:
        words.append(word)
    return words


def _name_values(keyword: str, rest: str, escape: str, fail) -> tuple[str, ...]:
    """ENV and LABEL: ``k=v k2="v 2"``, or the legacy ``k value with spaces``.

    The reference (ENV): "The alternative syntax ENV MY_VAR my-value ... does
    not allow for multiple environment-variables to be set in a single ENV
    instruction". Which form is used depends on whether the first word has
    an ``=``.
    """
    words = _words(rest, escape, fail)
    if not words:
        raise fail(f"{keyword} requires at least one argument")
    if "=" not in words[0]:
        parts = rest.split(None, 1)
        if len(parts) < 2:
            raise fail(f"{keyword} must have two arguments")
        return (parts[0], parts[1])
    args: list[str] = []
    for word in words:
        if "=" not in word:
            raise fail(f"Syntax error - can't find = in \"{word}\". Must be of the form: name=value")
        key, _, value = word.partition("=")
        if not key:
            raise fail(f"{keyword} names can not be blank")
        args += [key, value]
    return tuple(args)


def _healthcheck(rest: str, flags, fail) -> tuple[tuple[str, ...], bool, Healthcheck]:
    """``HEALTHCHECK NONE`` or ``HEALTHCHECK [options] CMD command`` (the reference)."""
    parts = rest.split(None, 1)
    if not parts:
        raise fail("HEALTHCHECK requires at least one argument")
    kind = parts[0].upper()
    command, is_json = _maybe_json(parts[1].strip() if len(parts) == 2 else "", fail)
    if kind == "NONE":
        if command:
            raise fail("HEALTHCHECK NONE takes no arguments")
        return ("NONE",), False, Healthcheck(("NONE",))
    if kind != "CMD":
        raise fail(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)')
    if not command:
        raise fail("Missing command after HEALTHCHECK CMD")
    # The image config stores exec form as ["CMD", args...] and shell form as
    # ["CMD-SHELL", "command"] (the image spec's Healthcheck.Test).
    test = ("CMD" if is_json else "CMD-SHELL",) + command

    def duration(name: str) -> int:
        text = flags.get(name, "")
        if not text:
            return 0
        try:
            value = parse_duration(text)
        except ValueError as e:
            raise fail(str(e)) from None
        if value == 0:
            return 0
        # docker: "Interval %#v cannot be less than %s" (container.MinimumDuration).
        if value < _MIN_HEALTH_DURATION:
            raise fail(f'Interval "{name}" cannot be less than 1ms')
        return value

    retries = 0
    if flags.get("retries"):
        text = flags["retries"]
        if not re.fullmatch(r"[+-]?[0-9]+", text) or not -2**31 <= int(text) < 2**31:
            raise fail(f'strconv.ParseInt: parsing "{text}": invalid syntax')
        retries = int(text)
        if retries < 0:
            raise fail(f"--retries cannot be negative ({retries})")
    check = Healthcheck(test, duration("interval"), duration("timeout"),
                        duration("start-period"), duration("start-interval"), retries)
    return ("CMD",) + command, is_json, check


def _onbuild(rest: str, escape: str, filename: str, start: int, end: int, fail):
    """``ONBUILD INSTRUCTION``: the trigger is parsed now, run in a child build."""
    if not rest:
        raise fail("ONBUILD requires at least one argument")
    inner = rest.split(None, 1)[0].upper()
    # The reference: "Chaining ONBUILD instructions using ONBUILD ONBUILD
    # isn't allowed" and "The ONBUILD instruction may not trigger FROM or
    # MAINTAINER instructions."
    if inner == "ONBUILD":
        raise fail("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if inner in ("FROM", "MAINTAINER"):
        raise fail(f"{inner} isn't allowed as an ONBUILD trigger")
    trigger = _instruction(rest, escape, filename, start, end)
    return (rest,), trigger


def parse_duration(text: str) -> int:
    """Parse a duration like Go's ``time.ParseDuration``; return nanoseconds.

    A sequence of decimal numbers, each with an optional fraction and a unit
    (``ns``, ``us``/``µs``, ``ms``, ``s``, ``m``, ``h``), with an optional sign:
    ``"1h30m"``, ``"1.5s"``, ``"-2ms"``. ``"0"`` alone needs no unit. Errors
    are ``ValueError`` with Go's wording (``time: invalid duration "x"``).
    """
    quoted = json.dumps(text, ensure_ascii=False)
    s = text
    negative = False
    if s[:1] in ("-", "+"):
        negative = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f"time: invalid duration {quoted}")
    total = 0
    while s:
        number = re.match(r"([0-9]*)(\.([0-9]*))?", s)
        whole, fraction = number.group(1), number.group(3) or ""
        if not whole and not fraction:
            # No digits at all before or after the point.
            raise ValueError(f"time: invalid duration {quoted}")
        s = s[number.end():]
        unit = re.match(r"[^0-9.]*", s).group(0)
        if not unit:
            raise ValueError(f"time: missing unit in duration {quoted}")
        if unit not in _UNITS:
            raise ValueError(f'time: unknown unit {json.dumps(unit, ensure_ascii=False)} '
                             f"in duration {quoted}")
        s = s[len(unit):]
        scale = _UNITS[unit]
        # Exact integer arithmetic; Go truncates the fraction to whole nanoseconds.
        value = int(whole or "0") * scale
        if fraction:
            value += int(fraction) * scale // 10 ** len(fraction)
        total += value
        if total > 2**63 - 1 + negative:
            raise ValueError(f"time: invalid duration {quoted}")
    return -total if negative else total
