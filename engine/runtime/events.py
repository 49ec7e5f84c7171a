"""Events: what happened to containers, kept in ``<root>/events.jsonl``.

One JSON object per line, in the shape of docker's events API
(``api/types/events.Message``)::

    {"status": "die", "id": "3f2a...", "from": "busybox", "Type": "container",
     "Action": "die", "Actor": {"ID": "3f2a...", "Attributes": {"exitCode": "0",
     "image": "busybox", "name": "web"}}, "scope": "local",
     "time": 1795453200, "timeNano": 1795453200123456789}

Two kinds of writers append to the file: the engine (create, start, stop,
kill, pause, unpause, destroy, rename, attach, restart) and each container's
monitor (die, oom), which outlives any dockyard command. Every event is one
``write(2)`` to a file opened with ``O_APPEND``, so lines from different
processes never interleave (open(2): the offset moves to the end and the
write happens as one atomic step).

``dockyard events`` prints them the way ``docker events`` does::

    2026-11-23T17:00:00.000000000Z container die 3f2a... (exitCode=0, image=busybox, name=web)
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone

FILE = "events.jsonl"


def path(layout):
    return layout.root / FILE


def record(layout, action: str, container_id: str, attributes: dict) -> dict:
    """Append one container event; returns it."""
    ns = time.time_ns()
    attrs = {k: str(v) for k, v in sorted(attributes.items())}
    event = {"status": action, "id": container_id, "from": attrs.get("image", ""),
             "Type": "container", "Action": action,
             "Actor": {"ID": container_id, "Attributes": attrs},
             "scope": "local", "time": ns // 1_000_000_000, "timeNano": ns}
    line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
    try:
        fd = os.open(path(layout), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        return event  # no root yet: nothing happened worth keeping
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return event


def template_fields(event: dict) -> dict:
    """An event under the Go field names that ``docker events --format``
    templates use (``{{.ID}}``, ``{{.Status}}``, ``{{.Actor.Attributes.name}}``...);
    the JSON keys of the API are partly lower case."""
    return {"Status": event.get("status", ""), "ID": event.get("id", ""), "From": event.get("from", ""),
            "Type": event.get("Type", ""), "Action": event.get("Action", ""),
            "Actor": {"ID": event["Actor"]["ID"], "Attributes": dict(event["Actor"]["Attributes"])},
            "Scope": event.get("scope", ""), "Time": event.get("time", 0),
            "TimeNano": event.get("timeNano", 0)}


def container_event(container, action: str, **extra) -> dict:
    """Record ``action`` for ``container`` with docker's attributes (image, name, ...)."""
    attrs = {"image": container.attrs["Config"].get("Image", ""), "name": container.name}
    attrs.update({k: v for k, v in extra.items() if v is not None})
    return record(container._engine.layout, action, container.id, attrs)


# -- reading ----------------------------------------------------------------------


# Actions that carry their details after a colon ("exec_start: sh -c ls"):
# docker's event=exec_start matches them by the part before it
# (moby daemon/events/filter.go, matchEvent).
PREFIXED_ACTIONS = ("exec_create", "exec_start", "health_status")


def action_matches(action: str, wanted: str) -> bool:
    if action == wanted:
        return True
    return wanted in PREFIXED_ACTIONS and action.startswith(wanted + ":")


def matches(event: dict, filters: dict[str, list[str]]) -> bool:
    """docker's event filters: container= (ID prefix or name), event=, image=, type=."""
    actor = event.get("Actor", {})
    attrs = actor.get("Attributes", {})
    if "type" in filters and event.get("Type") not in filters["type"]:
        return False
    if "event" in filters and not any(action_matches(event.get("Action", ""), v) for v in filters["event"]):
        return False
    if "container" in filters:
        ident, name = actor.get("ID", ""), attrs.get("name", "")
        if not any(ident.startswith(v) or name == v.lstrip("/") for v in filters["container"]):
            return False
    if "image" in filters:
        image = attrs.get("image", event.get("from", ""))
        bare = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
        if not any(v in (image, bare) for v in filters["image"]):
            return False
    return True


def parse_filters(items) -> dict[str, list[str]]:
    """``["event=die", "container=web"]`` (or a dict) -> {"event": ["die"], ...}."""
    from ..errors import UsageError

    if isinstance(items, dict):
        return {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in items.items()}
    out: dict[str, list[str]] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or key not in ("container", "event", "image", "type"):
            raise UsageError(f"invalid filter '{item}'")
        out.setdefault(key, []).append(value)
    return out


def read(layout, *, since_ns: int | None = None, until_ns: int | None = None,
         filters: dict | None = None, follow: bool = False, poll: float = 0.05,
         stop=None):
    """Yield events (dicts) in order; with ``follow``, keep waiting for new ones
    until ``until_ns`` passes (forever without it) or ``stop()`` returns True."""
    filters = filters or {}
    offset = 0
    partial = b""
    while True:
        try:
            with open(path(layout), "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            data = b""
        offset += len(data)
        data = partial + data
        lines = data.split(b"\n")
        partial = lines.pop()  # a line still being written
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            ns = event.get("timeNano", 0)
            if since_ns is not None and ns < since_ns:
                continue
            if until_ns is not None and ns > until_ns:
                return
            if matches(event, filters):
                yield event
        if not follow or (until_ns is not None and time.time_ns() > until_ns):
            return
        if stop is not None and stop():
            return
        time.sleep(poll)


def format_line(event: dict) -> str:
    """docker's text form: time, type, action, ID, (attributes sorted by key)."""
    ns = event.get("timeNano") or event.get("time", 0) * 1_000_000_000
    seconds, nanos = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{nanos:09d}Z"
    actor = event.get("Actor", {})
    attrs = actor.get("Attributes") or {}
    text = f"{stamp} {event.get('Type', 'container')} {event.get('Action', event.get('status'))} {actor.get('ID', event.get('id', ''))}"
    if attrs:
        text += " (" + ", ".join(f"{k}={v}" for k, v in sorted(attrs.items())) + ")"
    return text
