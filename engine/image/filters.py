"""``images --filter``: which images a listing shows, by docker's rules.

Pure logic, no printing. ``parse_filters`` turns the ``-f key=value`` words
into ``{key: [values]}``; ``match_image`` then decides image by image. The
rules are the daemon's (moby daemon/images/image_list.go, and
api/types/filters/parse.go for the parsing):

``dangling=true|false``
    ``true``: only untagged images that no other image was made from;
    ``false``: only tagged images.
``label=KEY`` / ``label=KEY=VALUE``
    the image config's Labels has KEY (with that VALUE); several must all match.
``before=IMAGE`` / ``since=IMAGE``
    created strictly before / after that image (a reference or an ID).
``reference=PATTERN``
    a glob (Go's path.Match: ``*`` stops at ``/``) matched against each
    tag as ``repo:tag``, then as ``repo`` alone; several: any may match.
    Only the matching tags are listed (see :func:`matching_tags`).

Different keys must all hold. Docker's ``until`` (a timestamp) is not
supported yet and is refused by name.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Callable

from ..errors import UsageError
from . import reference

IMAGE_FILTERS = ("before", "dangling", "label", "reference", "since")
NOT_YET = ("until",)  # valid for docker, not for Dockyard


def parse(args: list[str], accepted, not_yet=()) -> dict[str, list[str]]:
    """``["label=a", "label=b=c"]`` -> ``{"label": ["a", "b=c"]}``, as docker's CLI and
    daemon read ``--filter``: the key is lower-cased, both sides trimmed, an
    empty word ignored, a repeated value kept once."""
    filters: dict[str, list[str]] = {}
    for arg in args:
        if arg == "":
            continue
        if "=" not in arg:
            raise UsageError("bad format of filter (expected name=value)")
        key, _, value = arg.partition("=")
        key, value = key.strip().lower(), value.strip()
        if key in not_yet:
            raise UsageError(f"invalid filter '{key}': docker has it, Dockyard does not (yet)")
        if key not in accepted:
            raise UsageError(f"invalid filter '{key}'")
        values = filters.setdefault(key, [])
        if value not in values:
            values.append(value)
    return filters


def parse_filters(args: list[str]) -> dict[str, list[str]]:
    """The ``images --filter`` words, checked (``dangling`` must be a boolean)."""
    filters = parse(args, IMAGE_FILTERS, NOT_YET)
    _dangling(filters)
    return filters


def _dangling(filters: dict) -> bool | None:
    """The dangling filter's value: None when absent. Docker's GetBoolOrDefault:
    "true"/"1" or "false"/"0", and not both."""
    if "dangling" not in filters:
        return None
    values = set(filters["dangling"])
    is_true, is_false = bool(values & {"true", "1"}), bool(values & {"false", "0"})
    if is_true == is_false:
        raise UsageError(f"invalid filter 'dangling=[{' '.join(filters['dangling'])}]'")
    return is_true


def match_labels(labels: dict | None, wanted: list[str]) -> bool:
    """Every ``KEY`` is a label, every ``KEY=VALUE`` a label with that value
    (docker's MatchKVList)."""
    labels = labels or {}
    for item in wanted:
        key, has_value, value = item.partition("=")
        if key not in labels or (has_value and labels[key] != value):
            return False
    return True


def glob_match(pattern: str, name: str) -> bool:
    """Go's path.Match: ``*`` is any run of characters but ``/``, ``?`` one such
    character, ``[a-z]`` / ``[^a-z]`` a class, ``\\`` escapes. A malformed
    pattern is an error ("syntax error in pattern"), as in docker."""
    return re.fullmatch(_glob_regex(pattern), name, re.S) is not None


def _glob_regex(pattern: str) -> str:
    bad = UsageError(f"syntax error in pattern: {pattern!r}")
    out, i = [], 0

    def class_char(i):  # one character of a [class], escaped or not
        if i >= len(pattern):
            raise bad
        if pattern[i] == "\\":
            if i + 1 >= len(pattern):
                raise bad
            return pattern[i + 1], i + 2
        if pattern[i] in "-]":
            raise bad
        return pattern[i], i + 1

    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "\\":
            if i + 1 >= len(pattern):
                raise bad
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif c == "[":
            i += 1
            negate = pattern[i:i + 1] == "^"
            if negate:
                i += 1
            ranges = []
            while True:
                if i < len(pattern) and pattern[i] == "]" and ranges:
                    i += 1
                    break
                lo, i = class_char(i)
                hi = lo
                if pattern[i:i + 1] == "-":
                    hi, i = class_char(i + 1)
                ranges.append((lo, hi))
            alternatives = "".join(f"{re.escape(lo)}-{re.escape(hi)}" for lo, hi in ranges if lo <= hi)
            if negate:
                out.append(f"[^{alternatives}]" if alternatives else "(?s:.)")
            else:
                out.append(f"[{alternatives}]" if alternatives else "(?!)")
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?"
                      r"(?:([Zz])|([+-])(\d\d):(\d\d))$")


def created_ns(text: str) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 time (docker's ``Created``);
    None when unset (empty, or Go's zero time 0001-01-01).

    Integers, not floats: two things created in the same microsecond still
    compare correctly, which before=/since= rely on.
    """
    if not text or text.startswith("0001-01-01"):
        return None
    m = _RFC3339.match(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    if m.group(9):  # an offset from UTC: subtract it
        offset = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        moment -= offset if m.group(9) == "+" else -offset
    seconds = int(moment.timestamp())
    return seconds * 1_000_000_000 + int((m.group(7) or "0")[:9].ljust(9, "0"))


def _children(image) -> bool:
    return bool(getattr(image, "children", None))


def match_image(image, filters: dict[str, list[str]], *, resolve: Callable,
                has_children: Callable | None = None) -> bool:
    """Does ``image`` belong in ``images --filter ...``?

    ``resolve(name) -> Image`` looks up a before=/since= image (its errors,
    such as ImageNotFound, propagate: docker fails the same way).
    ``has_children(image) -> bool`` tells whether other images were made
    from this one (default: the image's own ``children`` list).
    For a long listing, pass a cached ``resolve`` (functools.cache).
    """
    has_children = has_children or _children
    dangling = _dangling(filters)
    if dangling is True and (image.tags or has_children(image)):
        return False
    if dangling is False and not image.tags:
        return False
    if "label" in filters and not match_labels(image.run_config.get("Labels"), filters["label"]):
        return False
    if "reference" in filters and not matching_tags(image, filters):
        return False
    if "before" in filters or "since" in filters:
        created = created_ns(image.created)
        if created is None:
            return False  # docker skips images without a creation time here
        for name in filters.get("before", []):
            other = created_ns(resolve(name).created)
            if other is not None and not created < other:
                return False
        for name in filters.get("since", []):
            other = created_ns(resolve(name).created)
            if other is not None and not created > other:
                return False
    return True


def matching_tags(image, filters: dict[str, list[str]]) -> list[str]:
    """The tags of ``image`` to list: those a reference= pattern matches (all
    of them without that filter). Docker lists ``images -f reference=app:1``
    as one line even when the image has other tags too."""
    patterns = filters.get("reference")
    if not patterns:
        return list(image.tags)
    out = []
    for tag in image.tags:
        repository = reference.parse(tag).familiar_name
        if any(glob_match(p, tag) or glob_match(p, repository) for p in patterns):
            out.append(tag)
    return out
