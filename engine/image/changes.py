"""``-c/--change``: Dockerfile instructions applied to an image's run config.

``docker import -c 'CMD ["sh"]'`` and ``docker commit -c 'ENV A=1'`` take a
few Dockerfile instructions and apply them to the new image's ``config``
section, as a build would. Which instructions are allowed is moby's
``validCommitCommands`` (builder/dockerfile/builder.go): CMD, ENTRYPOINT,
ENV, EXPOSE, HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME and
WORKDIR. Anything else (RUN, COPY, FROM...) fails with moby's own words,
``run is not a valid change command``.

How it works (``BuildFromConfig`` in the same file): all changes are
joined with newlines and parsed as one Dockerfile -- so a change may
continue on the next line with a trailing backslash, and ``#`` lines are
comments -- then each instruction is dispatched in order against a copy of
the run config. The rules of each instruction are the Dockerfile
reference's (https://docs.docker.com/reference/dockerfile/):

- CMD / ENTRYPOINT: the *exec form* is a JSON array of strings; anything
  else is the *shell form*, run as ``["/bin/sh", "-c", "<text>"]`` (or the
  config's ``Shell``). ENTRYPOINT clears CMD unless a CMD came earlier in
  the same set of changes.
- ENV ``k=v ...`` (or the legacy ``ENV k v``), LABEL ``k=v ...``: quotes and
  backslashes group words, ``$VAR`` / ``${VAR}`` / ``${VAR:-x}`` /
  ``${VAR:+x}`` expand from the environment *before* this instruction.
- EXPOSE ``80 443/tcp 53/udp 8000-8002``: ``ExposedPorts`` keys
  ``"<port>/<proto>"``.
- VOLUME: a JSON array or words; ``Volumes`` keys.
- WORKDIR: a relative path is joined to the previous WorkingDir.
- USER, STOPSIGNAL: one word, expanded.
- ONBUILD: another instruction, stored as text in ``OnBuild``.
- HEALTHCHECK ``NONE`` or ``[--interval=D --timeout=D --start-period=D
  --start-interval=D --retries=N] CMD ...``: durations are stored in
  nanoseconds, as Go's ``time.Duration``.

Lifecycle: :func:`parse` (text -> :class:`Instruction` list, checking the
instructions are allowed) then :func:`apply` (config dict -> a new config
dict; the input is never modified). Both raise
:class:`~engine.errors.UsageError` with one line naming the change.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
import signal
from dataclasses import dataclass

from ..errors import UsageError

ALLOWED = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "HEALTHCHECK", "LABEL", "ONBUILD",
           "STOPSIGNAL", "USER", "VOLUME", "WORKDIR")
NOT_ONBUILD = ("ONBUILD", "FROM", "MAINTAINER")  # moby: "isn't allowed as an ONBUILD trigger"
DEFAULT_SHELL = ["/bin/sh", "-c"]


@dataclass(frozen=True)
class Instruction:
    keyword: str   # upper case: "ENV"
    args: str      # the text after the keyword, continuation lines joined
    original: str  # the whole instruction as written


def parse(changes: list[str] | str) -> list[Instruction]:
    """Parse changes as Dockerfile lines; refuse instructions a change may not use."""
    if isinstance(changes, str):
        changes = [changes]
    text = "\n".join(changes)
    instructions = []
    pending = ""
    for line in text.split("\n"):
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\") and not stripped.endswith("\\\\"):
            pending += stripped[:-1]  # a trailing backslash continues the instruction
            continue
        whole = (pending + stripped).strip()
        pending = ""
        if whole:
            instructions.append(_instruction(whole))
    if pending.strip():
        instructions.append(_instruction(pending.strip()))
    return instructions


def _instruction(whole: str) -> Instruction:
    keyword, _, args = whole.partition(" ")
    if "\t" in keyword:
        keyword, _, rest = keyword.partition("\t")
        args = rest + " " + args
    if keyword.upper() not in ALLOWED:
        raise UsageError(f"{keyword.lower()} is not a valid change command")
    return Instruction(keyword.upper(), args.strip(), whole)


def apply(config: dict, changes) -> dict:
    """A copy of the run ``config`` with ``changes`` (strings or Instructions) applied."""
    if changes and isinstance(changes[0], Instruction):
        instructions = list(changes)
    else:
        instructions = parse(changes or [])
    out = copy.deepcopy(config or {})
    state = {"cmd_set": False}
    for ins in instructions:
        try:
            _DISPATCH[ins.keyword](out, ins, state)
        except UsageError as e:
            raise UsageError(f"change {ins.original!r}: {e}") from None
    return out


# -- words: quotes, escapes and $VARIABLES (moby's shell lexer, the useful part) --


def _env_map(config: dict) -> dict[str, str]:
    env = {}
    for item in config.get("Env") or []:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def _split_words(text: str) -> list[str]:
    """Split on unquoted whitespace, keeping quotes and escapes for :func:`_process`."""
    words, word, quote, i = [], "", None, 0
    in_word = False
    while i < len(text):
        c = text[i]
        if quote:
            word += c
            if c == "\\" and quote == '"' and i + 1 < len(text):
                word += text[i + 1]
                i += 1
            elif c == quote:
                quote = None
        elif c in " \t":
            if in_word:
                words.append(word)
                word, in_word = "", False
        else:
            in_word = True
            word += c
            if c in "'\"":
                quote = c
            elif c == "\\" and i + 1 < len(text):
                word += text[i + 1]
                i += 1
        i += 1
    if quote:
        raise UsageError(f"unmatched {quote} quote")
    if in_word:
        words.append(word)
    return words


_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<op>[-+])(?P<word>[^}]*))?\}"
                  r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def _expand(text: str, env: dict[str, str]) -> str:
    def one(m: re.Match) -> str:
        name = m.group("braced") or m.group("plain")
        value = env.get(name, "")
        op = m.group("op")
        if op == "-":
            return value if value else _expand(m.group("word"), env)
        if op == "+":
            return _expand(m.group("word"), env) if value else ""
        return value
    return _VAR.sub(one, text)


def _process(word: str, env: dict[str, str] | None) -> str:
    """Remove quotes and escapes; expand variables outside single quotes."""
    try:
        return _unquote(word, env)
    except (ValueError, IndexError):
        raise UsageError(f"unmatched quote in {word!r}") from None


def _unquote(word: str, env: dict[str, str] | None) -> str:
    out, i, literal = [], 0, ""

    def flush(expand: bool):
        nonlocal literal
        out.append(_expand(literal, env) if (expand and env is not None) else literal)
        literal = ""

    while i < len(word):
        c = word[i]
        if c == "'":
            flush(True)
            end = word.index("'", i + 1)
            out.append(word[i + 1:end])
            i = end + 1
            continue
        if c == '"':
            flush(True)
            i += 1
            while word[i] != '"':
                if word[i] == "\\" and word[i + 1] in '"\\$':
                    if word[i + 1] == "$":
                        flush(True)
                        out.append("$")
                    else:
                        literal += word[i + 1]
                    i += 2
                    continue
                literal += word[i]
                i += 1
            flush(True)
            i += 1
            continue
        if c == "\\" and i + 1 < len(word):
            flush(True)
            out.append(word[i + 1])
            i += 2
            continue
        literal += c
        i += 1
    flush(True)
    return "".join(out)


def _pairs(ins: Instruction, env: dict[str, str], *, legacy: bool) -> list[tuple[str, str]]:
    """``k=v k2="v 2"`` pairs (or the legacy ``k value with spaces`` form)."""
    words = _split_words(ins.args)
    if not words:
        raise UsageError(f"{ins.keyword} requires at least one argument")
    if "=" not in words[0]:
        if not legacy or len(words) < 2:
            if ins.keyword == "ENV":
                raise UsageError("ENV must have two arguments")
            raise UsageError(f"Syntax error - can't find = in {words[0]!r}. "
                             "Must be of the form: name=value")
        # Legacy form: the first word is the key, the rest of the line is the value.
        key = _process(words[0], env)
        value = ins.args[len(words[0]):].strip()
        return [(key, _process(value, env))]
    pairs = []
    for word in words:
        if "=" not in word:
            raise UsageError(f"Syntax error - can't find = in {word!r}. Must be of the form: name=value")
        key, _, value = word.partition("=")
        key = _process(key, env)
        if not key:
            raise UsageError(f"{ins.keyword} names can not be blank")
        pairs.append((key, _process(value, env)))
    return pairs


def _json_array(args: str) -> list[str] | None:
    """The exec form: a JSON array of strings, else None (the shell form)."""
    if not args.startswith("["):
        return None
    try:
        value = json.loads(args)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _command(config: dict, args: str) -> list[str]:
    if not args:
        raise UsageError("requires at least one argument")
    exec_form = _json_array(args)
    if exec_form is not None:
        return exec_form
    return list(config.get("Shell") or DEFAULT_SHELL) + [args]


def _one_word(ins: Instruction, env) -> str:
    words = _split_words(ins.args)
    if len(words) != 1:
        raise UsageError(f"{ins.keyword} requires exactly one argument")
    return _process(words[0], env)


# -- the instructions ----------------------------------------------------------


def _cmd(config: dict, ins: Instruction, state: dict) -> None:
    config["Cmd"] = _command(config, ins.args)
    state["cmd_set"] = True


def _entrypoint(config: dict, ins: Instruction, state: dict) -> None:
    config["Entrypoint"] = _command(config, ins.args)
    if not state["cmd_set"]:
        config["Cmd"] = None  # a new entrypoint makes the old default arguments meaningless


def _env(config: dict, ins: Instruction, state: dict) -> None:
    env = config.get("Env") or []
    for key, value in _pairs(ins, _env_map(config), legacy=True):
        item = f"{key}={value}"
        for i, existing in enumerate(env):
            if existing.partition("=")[0] == key:
                env[i] = item
                break
        else:
            env.append(item)
    config["Env"] = env


def _label(config: dict, ins: Instruction, state: dict) -> None:
    labels = config.get("Labels") or {}
    for key, value in _pairs(ins, _env_map(config), legacy=True):
        labels[key] = value
    config["Labels"] = labels


_PORT = re.compile(r"^(\d+)(?:-(\d+))?(?:/([A-Za-z]+))?$")


def _expose(config: dict, ins: Instruction, state: dict) -> None:
    env = _env_map(config)
    ports = config.get("ExposedPorts") or {}
    words = [_process(w, env) for w in _split_words(ins.args)]
    if not words:
        raise UsageError("EXPOSE requires at least one argument")
    for word in words:
        m = _PORT.match(word)
        if not m:
            raise UsageError(f"invalid containerPort: {word}")
        start = int(m.group(1))
        end = int(m.group(2) or start)
        proto = (m.group(3) or "tcp").lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise UsageError(f"invalid proto: {proto}")
        if not (0 < start <= end <= 65535):
            raise UsageError(f"invalid containerPort: {word}")
        for port in range(start, end + 1):
            ports[f"{port}/{proto}"] = {}
    config["ExposedPorts"] = ports


def _user(config: dict, ins: Instruction, state: dict) -> None:
    config["User"] = _one_word(ins, _env_map(config))


def _volume(config: dict, ins: Instruction, state: dict) -> None:
    paths = _json_array(ins.args)
    if paths is None:
        env = _env_map(config)
        paths = [_process(w, env) for w in _split_words(ins.args)]
    if not paths:
        raise UsageError("VOLUME requires at least one argument")
    volumes = config.get("Volumes") or {}
    for path in paths:
        if not path.strip():
            raise UsageError("VOLUME specified can not be an empty string")
        volumes[path] = {}
    config["Volumes"] = volumes


def _workdir(config: dict, ins: Instruction, state: dict) -> None:
    path = _one_word(ins, _env_map(config))
    if not path.startswith("/"):
        path = posixpath.join("/", config.get("WorkingDir") or "/", path)
    config["WorkingDir"] = posixpath.normpath(path)


def _stopsignal(config: dict, ins: Instruction, state: dict) -> None:
    sig = _one_word(ins, _env_map(config))
    name = sig.upper().removeprefix("SIG")
    if sig.isdigit():
        ok = 0 < int(sig) < 65
    else:
        ok = hasattr(signal, "SIG" + name) or re.fullmatch(r"RTM(IN|AX)([+-]\d+)?", name)
    if not ok:
        raise UsageError(f"Invalid signal: {sig}")
    config["StopSignal"] = sig


def _onbuild(config: dict, ins: Instruction, state: dict) -> None:
    trigger = ins.args.strip()
    keyword = trigger.split(None, 1)[0].upper() if trigger else ""
    if not keyword:
        raise UsageError("ONBUILD requires at least one argument")
    if keyword in NOT_ONBUILD:
        raise UsageError(f"{keyword} isn't allowed as an ONBUILD trigger")
    config["OnBuild"] = (config.get("OnBuild") or []) + [trigger]


_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
          "m": 60_000_000_000, "h": 3_600_000_000_000}


def parse_duration(text: str) -> int:
    """A Go duration ("1m30s", "500ms") in nanoseconds."""
    if text == "0":
        return 0
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise UsageError(f"time: invalid duration {text!r}")
    return int(total)


def _healthcheck(config: dict, ins: Instruction, state: dict) -> None:
    words = ins.args.split()
    if words and words[0].upper() == "NONE":
        if len(words) > 1:
            raise UsageError("HEALTHCHECK NONE takes no arguments")
        config["Healthcheck"] = {"Test": ["NONE"]}
        return
    check: dict = {}
    rest = ins.args
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        rest = rest.lstrip()
        name, eq, value = flag[2:].partition("=")
        if not eq:
            raise UsageError(f"flag --{name} needs a value (--{name}=VALUE)")
        if name in ("interval", "timeout", "start-period", "start-interval"):
            key = {"interval": "Interval", "timeout": "Timeout", "start-period": "StartPeriod",
                   "start-interval": "StartInterval"}[name]
            check[key] = parse_duration(value)
        elif name == "retries":
            if not value.isdigit():
                raise UsageError(f"invalid --retries value {value!r}")
            check["Retries"] = int(value)
        else:
            raise UsageError(f"unknown flag: --{name}")
    keyword, _, command = rest.partition(" ")
    if keyword.upper() != "CMD" or not command.strip():
        raise UsageError("HEALTHCHECK needs CMD followed by a command, or NONE")
    exec_form = _json_array(command.strip())
    test = ["CMD", *exec_form] if exec_form is not None else ["CMD-SHELL", command.strip()]
    config["Healthcheck"] = {"Test": test, **check}


_DISPATCH = {
    "CMD": _cmd, "ENTRYPOINT": _entrypoint, "ENV": _env, "EXPOSE": _expose,
    "HEALTHCHECK": _healthcheck, "LABEL": _label, "ONBUILD": _onbuild,
    "STOPSIGNAL": _stopsignal, "USER": _user, "VOLUME": _volume, "WORKDIR": _workdir,
}
