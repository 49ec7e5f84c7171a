"""Container logs: docker's json-file format, read back.

The monitor writes what the container prints to
``containers/<id>/<id>-json.log``, one JSON object per line::

    {"log":"hello\\n","stream":"stdout","time":"2026-11-23T17:00:00.123456789Z"}

With ``--log-opt max-size=N`` the monitor rotates the file when it reaches N
bytes: ``<id>-json.log.1`` is the previous file, ``.2`` the one before, up
to ``max-file - 1`` of them (with ``max-file`` 1, the default, the file
starts over). Reading in order therefore means: the highest number first,
the current file last.

Times given to ``--since`` / ``--until`` are parsed as docker's CLI does
(``api/types/time.GetTimestamp``): RFC 3339 (``2026-11-23T17:00:00Z``,
with or without fractions or an offset, or just a date), a Unix timestamp
(``1795453200`` or ``1795453200.5``), or a duration back from now (``10m``,
``1h30m``, ``45s``).
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timezone

from ..errors import UsageError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
          "m": 60_000_000_000, "h": 3_600_000_000_000}


def rfc3339_ns(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time (exact, unlike a float)."""
    text = text.strip()
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})(?:[Tt ](\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,9}))?)?"
                     r"(Z|z|[+-]\d{2}:?\d{2})?", text)
    if not m:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    day, clock, frac, zone = m.groups()
    clock = clock or "00:00:00"
    if clock.count(":") == 1:
        clock += ":00"
    base = datetime.strptime(f"{day}T{clock}", "%Y-%m-%dT%H:%M:%S")
    if zone in (None, "Z", "z"):
        # Without a zone docker takes local time; with Z, UTC.
        base = base.replace(tzinfo=timezone.utc) if zone else base.astimezone()
        offset = 0
    else:
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        offset = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
        base = base.replace(tzinfo=timezone.utc)
    seconds = int(base.timestamp()) - offset
    return seconds * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


def parse_time_arg(value, now_ns: int | None = None) -> int | None:
    """A --since/--until value -> nanoseconds since the epoch (None for empty)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return int(value.timestamp() * 1e9)
    if isinstance(value, (int, float)):
        return int(value * 1_000_000_000)
    text = str(value).strip()
    now_ns = time.time_ns() if now_ns is None else now_ns
    if re.fullmatch(r"\d+(\.\d+)?", text):
        whole, _, frac = text.partition(".")
        return int(whole) * 1_000_000_000 + int(frac.ljust(9, "0")[:9] or 0)
    parts = _DURATION.findall(text)
    if parts and "".join(n + u for n, u in parts) == text:
        return now_ns - int(sum(float(n) * _UNITS[u] for n, u in parts))
    try:
        return rfc3339_ns(text)
    except ValueError:
        raise UsageError(f'invalid value for "since"/"until": {text!r} is neither an RFC 3339 time, '
                         "a Unix timestamp nor a duration") from None


def log_path(container):
    return container.path / f"{container.id}-json.log"


def files(container) -> list:
    """The log files, oldest first."""
    current = log_path(container)
    rotated = []
    for entry in os.listdir(container.path) if container.path.exists() else []:
        prefix = current.name + "."
        if entry.startswith(prefix) and entry[len(prefix):].isdigit():
            rotated.append((int(entry[len(prefix):]), container.path / entry))
    return [p for _, p in sorted(rotated, reverse=True)] + [current]


def parse_line(line: bytes) -> tuple[str, bytes, str] | None:
    """One log line -> (stream, data, time); None if it is not a whole entry."""
    try:
        entry = json.loads(line)
        return entry["stream"], entry["log"].encode("utf-8", "surrogatepass"), entry["time"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _parse_lines(data: bytes, wanted: set, since_ns, until_ns):
    """Entries of whole log lines, filtered by stream and time."""
    out = []
    for line in data.split(b"\n"):
        entry = parse_line(line)
        if entry is None or entry[0] not in wanted:
            continue
        if since_ns is not None or until_ns is not None:
            ns = rfc3339_ns(entry[2])
            if (since_ns is not None and ns < since_ns) or (until_ns is not None and ns > until_ns):
                continue
        out.append(entry)
    return out


def stream(container, *, stdout: bool = True, stderr: bool = True, tail=None, since_ns=None,
           until_ns=None, follow: bool = False, poll: float = 0.05):
    """Yield ``(stream, data, time)`` entries: what is logged now (only the last
    ``tail`` of them), then, with ``follow``, new ones until the container stops.

    The current file is opened first and read through that descriptor, so
    nothing written between "what is there" and "what comes next" is lost
    or repeated. A rotation while following (the file renamed to .1, or
    truncated with max-file 1) is noticed by inode or size.
    """
    wanted = ({"stdout"} if stdout else set()) | ({"stderr"} if stderr else set())
    current = log_path(container)
    try:
        f = open(current, "rb")
    except FileNotFoundError:
        f = None
    try:
        inode = os.fstat(f.fileno()).st_ino if f is not None else None
        now = []
        for p in files(container)[:-1]:
            try:
                with open(p, "rb") as old:
                    now += _parse_lines(old.read(), wanted, since_ns, until_ns)
            except FileNotFoundError:
                continue
        partial = b""
        if f is not None:
            data = f.read()
            cut = data.rfind(b"\n") + 1
            now += _parse_lines(data[:cut], wanted, since_ns, until_ns)
            partial = data[cut:]
        if tail not in (None, "all", -1):
            now = now[-int(tail):] if int(tail) > 0 else []
        yield from now
        if not follow:
            return
        while True:
            stopped = not _running(container)
            if f is None:
                try:
                    f = open(current, "rb")
                    inode = os.fstat(f.fileno()).st_ino
                except FileNotFoundError:
                    pass
            if f is not None:
                data = partial + f.read()
                try:
                    st = os.stat(current)
                except FileNotFoundError:
                    st = None
                if st is not None and (st.st_ino != inode or st.st_size < f.tell()):
                    # Rotated: the rest of the old file was read above; the new one from its start.
                    f.close()
                    f = open(current, "rb")
                    inode = os.fstat(f.fileno()).st_ino
                    data += f.read()
                cut = data.rfind(b"\n") + 1
                for entry in _parse_lines(data[:cut], wanted, since_ns, until_ns):
                    yield entry
                partial = data[cut:]
                if until_ns is not None and time.time_ns() > until_ns:
                    return
            if stopped:
                return
            time.sleep(poll)
    finally:
        if f is not None:
            f.close()


def select(container, **kw) -> list[tuple[str, bytes, str]]:
    """The entries ``logs`` shows without ``-f``."""
    return list(stream(container, follow=False, **kw))


def render(entry: tuple[str, bytes, str], timestamps: bool) -> bytes:
    stream_name, data, stamp = entry
    return (stamp.encode() + b" " + data) if timestamps else data


def _running(container) -> bool:
    """Is the container still running (its monitor has not recorded the exit)?"""
    try:
        container.reload()
    except Exception:  # removed: nothing more will be written
        return False
    return container.attrs["State"]["Running"]
