"""Image commands: ``images``."""

from __future__ import annotations

from .output import ago, human_size, table


def parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool, which docker's boolean flags use (``-H=false``)."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(text)


def register(commands) -> None:
    p = commands.add_parser("images", help="List images")
    p.add_argument("-a", "--all", action="store_true", help="show all images (default hides intermediate images)")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("repository", metavar="REPOSITORY[:TAG]", nargs="?", help="only images of this repository")
    p.set_defaults(func=cmd_images)

    p = commands.add_parser("tag", help="Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE")
    p.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    p.add_argument("target", metavar="TARGET_IMAGE[:TAG]")
    p.set_defaults(func=cmd_tag)

    p = commands.add_parser("rmi", help="Remove one or more images")
    p.add_argument("-f", "--force", action="store_true", help="force removal of the image")
    p.add_argument("--no-prune", action="store_true", help="do not delete untagged parents")
    p.add_argument("images", metavar="IMAGE", nargs="+")
    p.set_defaults(func=cmd_rmi)

    p = commands.add_parser("history", help="Show the history of an image")
    p.add_argument("-H", "--human", type=parse_bool, nargs="?", const=True, default=True,
                   metavar="BOOL", help="print sizes and dates in human readable format (default true)")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.add_argument("image", metavar="IMAGE")
    p.set_defaults(func=cmd_history)

    p = commands.add_parser("prune", help="Remove unused images")
    p.add_argument("-a", "--all", action="store_true", help="remove all unused images, not just dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.set_defaults(func=cmd_prune)


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
    images = engine.images.list(name=args.repository, all=args.all)
    rows = image_rows(images, args.no_trunc)
    if args.quiet:
        for row in rows:
            print(row[2])
        return 0
    table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], rows)
    return 0


def cmd_tag(engine, args) -> int:
    engine.images.tag(args.source, args.target)
    return 0


def cmd_rmi(engine, args) -> int:
    import sys

    from ..errors import EngineError

    status = 0
    for name in args.images:
        try:
            records = engine.images.remove(name, force=args.force, noprune=args.no_prune)
        except EngineError as e:
            sys.stderr.write(f"dockyard: {e}\n")
            status = e.exit_code
            continue
        for record in records:
            for verb, what in record.items():
                print(f"{verb}: {what}")
    return status


def cmd_history(engine, args) -> int:
    import datetime

    from .output import ellipsis

    rows = []
    for entry in engine.images.history(args.image):
        image_id = entry["Id"]
        if image_id != "<missing>" and not args.no_trunc:
            image_id = image_id.removeprefix("sha256:")[:12]
        if args.quiet:
            print(image_id)
            continue
        created_by = entry["CreatedBy"].replace("\t", " ").replace("\n", " ")
        if not args.no_trunc:
            created_by = ellipsis(created_by, 45)
        if args.human:
            created = ago(entry["Created"])
            size = human_size(entry["Size"])
        else:
            created = datetime.datetime.fromtimestamp(entry["Created"], datetime.timezone.utc) \
                .strftime("%Y-%m-%dT%H:%M:%SZ")
            size = str(entry["Size"])
        rows.append([image_id, created, created_by, size, entry["Comment"]])
    if not args.quiet:
        table(["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], rows)
    return 0


def cmd_prune(engine, args) -> int:
    import sys

    if not args.force:
        warning = ("WARNING! This will remove all images without at least one container associated to them."
                   if args.all else "WARNING! This will remove all dangling images.")
        sys.stdout.write(f"{warning}\nAre you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            return 0
    result = engine.images.prune(all=args.all)
    if result["ImagesDeleted"]:
        print("Deleted Images:")
        for record in result["ImagesDeleted"]:
            for verb, what in record.items():
                print(f"{verb.lower()}: {what}")
        print()
    print(f"Total reclaimed space: {human_size(result['SpaceReclaimed'])}")
    return 0
