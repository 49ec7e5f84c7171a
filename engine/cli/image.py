"""Image commands: ``images``."""

from __future__ import annotations

from .output import ago, human_size, table


def register(commands) -> None:
    p = commands.add_parser("images", help="List images")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("repository", metavar="REPOSITORY[:TAG]", nargs="?", help="only images of this repository")
    p.set_defaults(func=cmd_images)


def image_rows(images, no_trunc: bool) -> list[list[str]]:
    """One row per (image, tag); an untagged image is one <none> row (docker's layout)."""
    from ..image import reference
    from ..runtime.container import parse_time

    rows = []
    for im in images:
        image_id = im.id if no_trunc else im.short_id
        created = ago(parse_time(im.created))
        size = human_size(im.size)
        for tag in im.tags or [None]:
            if tag is None:
                repo, tag_text = "<none>", "<none>"
            else:
                ref = reference.parse(tag)
                repo, tag_text = ref.familiar_name, ref.tag or "<none>"
            rows.append([repo, tag_text, image_id, created, size])
    return rows


def cmd_images(engine, args) -> int:
    images = engine.images.list(name=args.repository)
    rows = image_rows(images, args.no_trunc)
    if args.quiet:
        for row in rows:
            print(row[2])
        return 0
    table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], rows)
    return 0
