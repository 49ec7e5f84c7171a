"""How docker prints things: aligned tables, human durations and sizes.

The rules are go-units' (github.com/docker/go-units: ``HumanDuration``,
``HumanSizeWithPrecision``) and the CLI's tabwriter settings (padding 3),
so columns and wording match ``docker ps`` / ``docker images``.
"""

from __future__ import annotations

import json
import sys
import time

PADDING = 3


def table(headers: list[str], rows: list[list[str]], out=None) -> None:
    """Print columns padded to the widest cell plus three spaces (docker's tabwriter)."""
    out = out or sys.stdout
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    for row in [headers, *rows]:
        cells = [cell.ljust(widths[i] + PADDING) if i < len(row) - 1 else cell
                 for i, cell in enumerate(row)]
        out.write("".join(cells).rstrip() + "\n")


def human_duration(seconds: float) -> str:
    """go-units HumanDuration: "Less than a second", "5 minutes", "About an hour"..."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def ago(timestamp: float) -> str:
    return human_duration(max(0.0, time.time() - timestamp)) + " ago"


def human_size(size: float, precision: int = 3) -> str:
    """go-units HumanSizeWithPrecision: decimal units, 3 significant digits ("4.26MB")."""
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
    i = 0
    while size >= 1000.0 and i < len(units) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.{precision}g}{units[i]}"


def binary_size(size: float) -> str:
    """go-units BytesSize: binary units with two decimals ("23.48GiB")."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    i = 0
    while size >= 1024.0 and i < len(units) - 1:
        size /= 1024.0
        i += 1
    return f"{size:.4g}{units[i]}"


def ellipsis(text: str, width: int) -> str:
    """Shorten to ``width`` characters ending in "…" (docker's stringutils.Ellipsis)."""
    if len(text) <= width:
        return text
    return text[:width - 1] + "…"


def print_json(obj, out=None) -> None:
    """JSON as docker inspect prints it: 4-space indent."""
    out = out or sys.stdout
    out.write(json.dumps(obj, indent=4, ensure_ascii=False) + "\n")


# -- Go's spellings, for ``--format`` templates and their row objects ---------


def go_time(timestamp: float, tz=None) -> str:
    """Go's ``time.Time.String()`` of a whole-second Unix time, as ``docker
    images``/``ps`` print ``.CreatedAt``: ``2026-05-07 12:00:00 +0000 UTC``.

    Docker's CLI formats ``time.Unix(created, 0)`` in the client's local time
    zone, so ``tz=None`` means the local zone here too (UTC in most containers).
    """
    from datetime import datetime

    moment = datetime.fromtimestamp(int(timestamp), tz).astimezone(tz)
    return moment.strftime("%Y-%m-%d %H:%M:%S %z ") + (moment.tzname() or moment.strftime("%z"))


# strconv.Quote's short escapes (https://pkg.go.dev/strconv#Quote).
_GO_ESCAPES = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t",
               "\v": r"\v", "\\": r"\\", '"': r"\""}


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote``: double quotes, backslash escapes, printable
    Unicode kept as is (``docker ps`` quotes the COMMAND column with it)."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'
