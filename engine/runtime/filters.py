"""``ps --filter``: which containers a listing shows, by docker's rules.

Pure logic, no printing; the parsing is shared with the image filters
(engine/image/filters.py). The rules are the daemon's (moby daemon/list.go):

``id=PREFIX``
    the container ID starts with it.
``name=REGEX``
    a regular expression *searched* in the name, which the daemon keeps with
    a leading slash: ``name=web`` matches "/web" and "/my-web-1",
    ``name=^/web$`` only "/web".
``label=KEY`` / ``label=KEY=VALUE``
    as for images; several must all match.
``exited=CODE``
    stopped after having run, with that exit status.
``status=STATE``
    created, restarting, running, removing, paused, exited or dead.
``ancestor=IMAGE``
    made from that image: the same image ID, or an image of the same
    repository (any tag if the filter names none, else that tag).
``before=CONTAINER`` / ``since=CONTAINER``
    created strictly before / after that container.

Several values of one key: any may match (``label``, ``before``, ``since``:
all must). Different keys must all hold. A status filter lists stopped
containers too (:func:`shows_all`).
"""

from __future__ import annotations

import re
from typing import Callable

from ..errors import EngineError, UsageError
from ..image import reference
from ..image.filters import created_ns, match_labels, parse

CONTAINER_FILTERS = ("ancestor", "before", "exited", "id", "label", "name", "since", "status")
NOT_YET = ("expose", "health", "is-task", "isolation", "network", "publish", "volume")
STATES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def parse_filters(args: list[str]) -> dict[str, list[str]]:
    """The ``ps --filter`` words, checked (exit codes are integers, states known)."""
    filters = parse(args, CONTAINER_FILTERS, NOT_YET)
    for value in filters.get("exited", []):
        try:
            int(value)
        except ValueError:
            raise UsageError(f"invalid filter 'exited={value}': not an integer exit status") from None
    for value in filters.get("status", []):
        if value not in STATES:
            raise UsageError(f"invalid filter 'status={value}'")
    return filters


def shows_all(filters: dict[str, list[str]]) -> bool:
    """A status filter implies ``ps -a`` (docker: ``ps -f status=exited`` needs no -a)."""
    return bool(filters.get("status"))


def _name_matches(pattern: str, name: str) -> bool:
    try:
        return pattern == name or re.search(pattern, name) is not None
    except re.error:
        return False  # docker skips a pattern that is not a valid expression


def _explicit_tag(text: str) -> bool:
    """Did the user write a tag or digest (``app:1``), not just a repository?"""
    last = text.rsplit("/", 1)[-1]
    return ":" in last or "@" in text


def _ancestor_matches(value: str, container, resolve_image: Callable) -> bool:
    try:
        if resolve_image(value).id == container.attrs["Image"]:
            return True
    except EngineError:
        pass  # docker only warns about an ancestor it cannot find
    made_from = container.attrs["Config"].get("Image") or ""
    if value.startswith("sha256:") or made_from.startswith("sha256:"):
        return False  # an image ID is no repository name: only the test above applies
    try:
        wanted, made_from = reference.parse(value), reference.parse(made_from)
    except EngineError:
        return False
    if wanted.familiar_name != made_from.familiar_name:
        return False
    return not _explicit_tag(value) or (wanted.tag, wanted.digest) == (made_from.tag, made_from.digest)


def match_container(container, filters: dict[str, list[str]], *, resolve_container: Callable,
                    resolve_image: Callable) -> bool:
    """Does ``container`` belong in ``ps --filter ...``?

    ``resolve_container(name)`` finds a before=/since= container (its
    ContainerNotFound propagates, as docker fails); ``resolve_image(name)``
    finds an ancestor= image (not found: that value matches by name only).
    """
    attrs = container.attrs
    state = attrs["State"]
    if "id" in filters and not any(container.id.startswith(v) for v in filters["id"]):
        return False
    if "name" in filters and not any(_name_matches(v, "/" + container.name) for v in filters["name"]):
        return False
    if "label" in filters and not match_labels(attrs["Config"].get("Labels"), filters["label"]):
        return False
    if "exited" in filters:
        # Only a container that ran and stopped has an exit status to match: not a
        # running one, nor one still "created" (its command may have failed to start).
        ran = state["Status"] != "created" and created_ns(state.get("StartedAt", "")) is not None
        if state["Running"] or not ran or state["ExitCode"] not in {int(v) for v in filters["exited"]}:
            return False
    if "status" in filters and state["Status"] not in filters["status"]:
        return False
    if "ancestor" in filters and not any(_ancestor_matches(v, container, resolve_image)
                                         for v in filters["ancestor"]):
        return False
    created = created_ns(attrs["Created"])
    for name in filters.get("before", []):
        if not created < created_ns(resolve_container(name).attrs["Created"]):
            return False
    for name in filters.get("since", []):
        if not created > created_ns(resolve_container(name).attrs["Created"]):
            return False
    return True
