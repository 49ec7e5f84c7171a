"""What ``--format`` templates see: one object per row of a list command.

Each class exposes exactly docker's placeholder names (``{{.ID}}``,
``{{.Repository}}``...) with the strings docker prints for them. The
reference is docker/cli's cli/command/formatter (image.go, container.go,
history.go). The placeholders are properties, computed only when a template
uses them (a container's ``.Size`` walks its writable layer), and they are
spelled in CamelCase on purpose: they are docker's names.

Wiring a command is one line once the rows exist::

    rows = [ImageRow(im, tag, no_trunc=args.no_trunc) for im in images for tag in im.tags or [None]]
    print(render(args.format, rows, IMAGE_HEADERS, default=IMAGE_FORMAT))

(``render`` is in template.py; with ``default``, ``--format table`` or an
empty format gives the command's usual columns.)
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from ..image import reference
from .output import ago, ellipsis, go_quote, go_time, human_duration, human_size

ZERO_TIME_TEXT = "0001-01-01 00:00:00 +0000 UTC"  # Go's zero time.Time, printed

# Docker's default columns (the Go sources' formats, tabs included).
IMAGE_FORMAT = ("table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t"
                "{{if .CreatedSince }}{{.CreatedSince}}{{else}}N/A{{end}}\t{{.Size}}")
CONTAINER_FORMAT = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
HISTORY_FORMAT = "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
HISTORY_FORMAT_NOT_HUMAN = "table {{.ID}}\t{{.CreatedAt}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"

# The header of each placeholder's column in a ``table`` format.
IMAGE_HEADERS = {
    "ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST",
    "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE",
    "Containers": "CONTAINERS", "VirtualSize": "SIZE", "SharedSize": "SHARED SIZE",
    "UniqueSize": "UNIQUE SIZE",
}
CONTAINER_HEADERS = {
    "ID": "CONTAINER ID", "Names": "NAMES", "Image": "IMAGE", "Command": "COMMAND",
    "CreatedAt": "CREATED AT", "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE",
    "Status": "STATUS", "Size": "SIZE", "Labels": "LABELS", "Mounts": "MOUNTS",
    "LocalVolumes": "LOCAL VOLUMES", "Networks": "NETWORKS",
}
HISTORY_HEADERS = {
    "ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
    "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT",
}


def truncate_id(full_id: str) -> str:
    """docker's stringid.TruncateID: drop "sha256:", keep 12 characters."""
    return full_id.partition(":")[2][:12] if ":" in full_id else full_id[:12]


def _seconds(created) -> int | None:
    """Whole seconds since the epoch (docker's APIs give times as those), None if unset."""
    if isinstance(created, (int, float)):
        return int(created)
    if not created or created.startswith("0001-"):
        return None
    from ..runtime.container import parse_time
    return int(parse_time(created))


class Row:
    """Base of the row objects: ``FIELDS`` are the placeholders without arguments."""

    FIELDS: tuple[str, ...] = ()

    def json_fields(self) -> dict:
        """What ``{{json .}}`` shows (docker marshals every such method of its row)."""
        return {name: getattr(self, name) for name in self.FIELDS}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.ID}>"


class ImageRow(Row):
    """One line of ``images``: an image under one of its tags (``tag=None``: <none>)."""

    FIELDS = ("Containers", "CreatedAt", "CreatedSince", "Digest", "ID", "Repository",
              "SharedSize", "Size", "Tag", "UniqueSize", "VirtualSize")

    def __init__(self, image, tag: str | None = None, *, no_trunc: bool = False):
        self._image = image
        self._no_trunc = no_trunc
        self._repository, self._tag = "<none>", "<none>"
        if tag is not None:
            ref = reference.parse(tag)
            self._repository, self._tag = ref.familiar_name, ref.tag or "<none>"

    @property
    def ID(self) -> str:
        return self._image.id if self._no_trunc else truncate_id(self._image.id)

    @property
    def Repository(self) -> str:
        return self._repository

    @property
    def Tag(self) -> str:
        return self._tag

    @property
    def Digest(self) -> str:
        # A registry digest ("busybox@sha256:...") comes from a push or pull;
        # Dockyard talks to no registry, so there is none to show.
        return "<none>"

    @property
    def CreatedSince(self) -> str:
        created = _seconds(self._image.created)
        return "" if created is None else ago(created)  # "" makes the default format say N/A

    @property
    def CreatedAt(self) -> str:
        created = _seconds(self._image.created)
        return ZERO_TIME_TEXT if created is None else go_time(created)

    @property
    def Size(self) -> str:
        return human_size(self._image.size)

    @property
    def VirtualSize(self) -> str:
        # Deprecated in docker, equal to Size, but printed with go-units'
        # HumanSize, which keeps 4 significant digits instead of 3.
        return human_size(self._image.size, 4)

    # docker computes these three only for `system df`; `images` shows N/A.
    @property
    def SharedSize(self) -> str:
        return "N/A"

    @property
    def UniqueSize(self) -> str:
        return "N/A"

    @property
    def Containers(self) -> str:
        return "N/A"


class ContainerRow(Row):
    """One line of ``ps``."""

    FIELDS = ("Command", "CreatedAt", "ID", "Image", "Labels", "LocalVolumes", "Mounts",
              "Names", "Networks", "Ports", "RunningFor", "Size", "State", "Status")

    def __init__(self, container, *, no_trunc: bool = False):
        self._container = container
        self._attrs = container.attrs
        self._no_trunc = no_trunc

    @property
    def ID(self) -> str:
        return self._container.id if self._no_trunc else truncate_id(self._container.id)

    @property
    def Image(self) -> str:
        """The image as the user named it; truncated when it was an ID."""
        name = self._attrs["Config"].get("Image") or self._attrs["Image"]
        if not name:
            return "<no image>"
        if not self._no_trunc and truncate_id(self._attrs["Image"]) == truncate_id(name):
            return truncate_id(name)
        return name

    @property
    def Command(self) -> str:
        # The daemon joins Path and Args, quoting the arguments that hold a
        # space; the CLI shortens that to 20 characters and Go-quotes it.
        args = [f"'{a}'" if " " in a else a for a in self._attrs["Args"]]
        command = " ".join([self._attrs["Path"], *args])
        return go_quote(command if self._no_trunc else ellipsis(command, 20))

    @property
    def CreatedAt(self) -> str:
        created = _seconds(self._attrs["Created"])
        return ZERO_TIME_TEXT if created is None else go_time(created)

    @property
    def RunningFor(self) -> str:
        return ago(_seconds(self._attrs["Created"]) or 0)

    @property
    def Ports(self) -> str:
        ports = (self._attrs.get("NetworkSettings") or {}).get("Ports") or {}
        if not ports:
            return ""
        from ..network.ports import format_ps_ports
        return format_ps_ports(ports)

    @property
    def State(self) -> str:
        return self._attrs["State"]["Status"]

    @property
    def Status(self) -> str:
        """"Up 5 minutes", "Exited (0) 3 seconds ago", "Created" (moby's State.String)."""
        state = self._attrs["State"]
        status = state["Status"]
        now = time.time()
        if status in ("running", "paused"):
            up = "Up " + human_duration(now - (_seconds(state["StartedAt"]) or now))
            return up + " (Paused)" if status == "paused" else up
        if status == "restarting":
            return f"Restarting ({state['ExitCode']}) {ago(_seconds(state['FinishedAt']) or now)}"
        if status == "removing":
            return "Removal In Progress"
        if status == "dead":
            return "Dead"
        if status == "exited":
            finished = _seconds(state["FinishedAt"])
            return "" if finished is None else f"Exited ({state['ExitCode']}) {ago(finished)}"
        return "Created"

    @property
    def Size(self) -> str:
        """"2B (virtual 4.26MB)": the writable layer, then with the image under it."""
        from ..errors import EngineError
        from ..snapshot import tree_size

        try:
            rw = tree_size(self._container.path / "upper")
        except (OSError, AttributeError):
            rw = 0
        try:
            image_size = self._container.image.size
        except (EngineError, OSError, AttributeError, KeyError):
            image_size = 0
        text = human_size(rw)
        return f"{text} (virtual {human_size(rw + image_size)})" if image_size else text

    @property
    def Names(self) -> str:
        return self._container.name

    @property
    def Labels(self) -> str:
        labels = self._attrs["Config"].get("Labels") or {}
        return ",".join(sorted(f"{k}={v}" for k, v in labels.items()))

    def Label(self, name: str) -> str:
        """``{{.Label "com.example.key"}}``: one label's value, "" if unset."""
        return (self._attrs["Config"].get("Labels") or {}).get(name, "")

    @property
    def Mounts(self) -> str:
        names = [m.get("Name") or m.get("Source", "") for m in self._attrs.get("Mounts") or []]
        return ",".join(n if self._no_trunc else ellipsis(n, 15) for n in names)

    @property
    def LocalVolumes(self) -> str:
        return str(sum(1 for m in self._attrs.get("Mounts") or [] if m.get("Driver") == "local"))

    @property
    def Networks(self) -> str:
        networks = (self._attrs.get("NetworkSettings") or {}).get("Networks") or {}
        return ",".join(sorted(networks))


def _entry(entry: dict, key: str):
    """A history entry's value by our name (``created_by``) or docker's API name (``CreatedBy``)."""
    if key in entry:
        return entry[key]
    return entry.get("".join(part.capitalize() for part in key.split("_")))


class HistoryRow(Row):
    """One line of ``history``: one entry of the image config's history.

    ``entry`` holds ``id`` (``<missing>`` for a step that is not an image of
    its own), ``created`` (RFC 3339 text or seconds), ``created_by``,
    ``size`` and ``comment``; docker's API names (``Id``, ``CreatedBy``...)
    work too. ``human=False`` is ``history --human=false``.
    """

    FIELDS = ("Comment", "CreatedAt", "CreatedBy", "CreatedSince", "ID", "Size")

    def __init__(self, entry: dict, *, no_trunc: bool = False, human: bool = True):
        self._entry = entry
        self._no_trunc = no_trunc
        self._human = human

    @property
    def ID(self) -> str:
        image_id = _entry(self._entry, "id") or "<missing>"
        return image_id if self._no_trunc or image_id == "<missing>" else truncate_id(image_id)

    @property
    def CreatedAt(self) -> str:
        # history prints RFC 3339 in UTC, not Go's default time format
        created = _seconds(_entry(self._entry, "created")) or 0
        return datetime.fromtimestamp(created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    @property
    def CreatedSince(self) -> str:
        if not self._human:
            return self.CreatedAt
        return ago(_seconds(_entry(self._entry, "created")) or 0)

    @property
    def CreatedBy(self) -> str:
        created_by = (_entry(self._entry, "created_by") or "").replace("\t", " ")
        return created_by if self._no_trunc else ellipsis(created_by, 45)

    @property
    def Size(self) -> str:
        size = _entry(self._entry, "size") or 0
        return human_size(size) if self._human else str(size)

    @property
    def Comment(self) -> str:
        return _entry(self._entry, "comment") or ""
