"""Image commands: ``images``."""

from __future__ import annotations

from .output import human_size


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
    p.add_argument("--digests", action="store_true", help="show digests")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="FILTER",
                   help="filter output: dangling=true|false, label=K[=V], before=IMAGE, since=IMAGE, "
                        "reference=PATTERN")
    p.add_argument("--format", metavar="TEMPLATE", default="",
                   help="format output with a Go template ('table ...', 'json', '{{.ID}}')")
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
    p.add_argument("--format", metavar="TEMPLATE", default="", help="format output with a Go template")
    p.add_argument("image", metavar="IMAGE")
    p.set_defaults(func=cmd_history)

    p = commands.add_parser("prune", help="Remove unused images")
    p.add_argument("-a", "--all", action="store_true", help="remove all unused images, not just dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.set_defaults(func=cmd_prune)


def cmd_images(engine, args) -> int:
    import functools

    from ..image.filters import match_image, matching_tags, parse_filters
    from .rows import IMAGE_FORMAT, IMAGE_HEADERS, ImageRow
    from .template import render

    filters = parse_filters(args.filter)
    resolve = functools.cache(engine.images.get)
    # A dangling=true filter looks at every image, as `docker images -f dangling=true`.
    listing_all = args.all or filters.get("dangling") == ["true"]
    images = [im for im in engine.images.list(name=args.repository, all=listing_all)
              if match_image(im, filters, resolve=resolve)]
    rows = []
    for im in images:
        tags = matching_tags(im, filters) if im.tags else [None]
        if args.repository:
            wanted = args.repository if ":" in args.repository.rsplit("/", 1)[-1] else None
            tags = [t for t in tags if t is None or _same_repository(t, args.repository, wanted)]
        rows.extend(ImageRow(im, tag, no_trunc=args.no_trunc) for tag in tags)
    if args.quiet:
        for row in rows:
            print(row.ID)
        return 0
    default = IMAGE_FORMAT
    if args.digests:
        default = default.replace("{{.Tag}}\t", "{{.Tag}}\t{{.Digest}}\t")
    text = render(args.format, rows, IMAGE_HEADERS, default=default)
    if text:
        print(text)
    return 0


def _same_repository(tag: str, wanted: str, with_tag: str | None) -> bool:
    from ..image import reference
    a, b = reference.parse(tag), reference.parse(wanted)
    return a.familiar_name == b.familiar_name and (with_tag is None or a.tag == b.tag)


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
    from .rows import HISTORY_FORMAT, HISTORY_FORMAT_NOT_HUMAN, HISTORY_HEADERS, HistoryRow
    from .template import render

    rows = [HistoryRow(entry, no_trunc=args.no_trunc, human=args.human)
            for entry in engine.images.history(args.image)]
    if args.quiet:
        for row in rows:
            print(row.ID)
        return 0
    default = HISTORY_FORMAT if args.human else HISTORY_FORMAT_NOT_HUMAN
    text = render(args.format, rows, HISTORY_HEADERS, default=default)
    if text:
        print(text)
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
