"""Network commands: ``network create``, ``ls``, ``inspect``, ``rm``, ``prune``,
``connect``, ``disconnect`` -- docker's flags, columns and wording
(docker/cli cli/command/network/).

``network`` is a management group of its own (there is no top-level
``networks``), so ``register`` adds the ``network`` parser and its
sub-commands. ``connect``/``disconnect`` are there when
engine/network/sandbox.py is (it attaches running containers).
"""

from __future__ import annotations

import re
import sys
from datetime import datetime, timezone

from .rows import Row, truncate_id

NETWORK_FORMAT = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"
NETWORK_HEADERS = {
    "ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE", "IPv4": "IPV4",
    "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS", "CreatedAt": "CREATED AT",
}
PRUNE_WARNING = ("WARNING! This will remove all custom networks not used by at least one container.\n"
                 "Are you sure you want to continue? [y/N] ")


def register(commands) -> None:
    import importlib.util

    from . import Parser

    group = commands.add_parser("network", help="Manage networks")
    sub = group.add_subparsers(dest="network_command", metavar="COMMAND", parser_class=Parser,
                               required=True)

    p = sub.add_parser("create", help="Create a network")
    p.add_argument("-d", "--driver", default="bridge", help="driver to manage the network (default bridge)")
    p.add_argument("--subnet", action="append", default=[], metavar="CIDR",
                   help="subnet in CIDR format that represents a network segment")
    p.add_argument("--gateway", action="append", default=[], metavar="IP",
                   help="IPv4 gateway for the subnet")
    p.add_argument("--ip-range", action="append", default=[], metavar="CIDR",
                   help="allocate container IPs from a sub-range")
    p.add_argument("--internal", action="store_true", help="restrict external access to the network")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="set metadata on a network")
    p.add_argument("name", metavar="NETWORK")
    p.set_defaults(func=cmd_create)

    p = sub.add_parser("ls", aliases=["list"], help="List networks")
    p.add_argument("-q", "--quiet", action="store_true", help="only display network IDs")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate the output")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="FILTER",
                   help='provide filter values (e.g. "driver=bridge"): name, id, driver, label, '
                        "scope, type=custom|builtin, dangling=true|false")
    p.add_argument("--format", metavar="TEMPLATE", default="",
                   help="format output with a Go template ('table ...', 'json', '{{.Name}}')")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("inspect", help="Display detailed information on one or more networks")
    p.add_argument("-f", "--format", metavar="TEMPLATE", default=None,
                   help="format output using a Go template")
    p.add_argument("-v", "--verbose", action="store_true", help="verbose output for diagnostics")
    p.add_argument("names", metavar="NETWORK", nargs="+")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("rm", aliases=["remove"], help="Remove one or more networks")
    p.add_argument("-f", "--force", action="store_true", help="do not error if the network does not exist")
    p.add_argument("names", metavar="NETWORK", nargs="+")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("prune", help="Remove all unused networks")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.add_argument("--filter", action="append", default=[], metavar="FILTER",
                   help='provide filter values (e.g. "label=<key>=<value>")')
    p.set_defaults(func=cmd_prune)

    # Attaching containers is engine/network/sandbox.py's work: offered when it is there.
    if importlib.util.find_spec("engine.network.sandbox") is not None:
        p = sub.add_parser("connect", help="Connect a container to a network")
        p.add_argument("--alias", action="append", default=[], metavar="ALIAS",
                       help="add network-scoped alias for the container")
        p.add_argument("--ip", metavar="IP", help="IPv4 address (e.g. 172.30.100.104)")
        p.add_argument("network", metavar="NETWORK")
        p.add_argument("container", metavar="CONTAINER")
        p.set_defaults(func=cmd_connect)

        p = sub.add_parser("disconnect", help="Disconnect a container from a network")
        p.add_argument("-f", "--force", action="store_true",
                       help="force the container to disconnect from a network")
        p.add_argument("network", metavar="NETWORK")
        p.add_argument("container", metavar="CONTAINER")
        p.set_defaults(func=cmd_disconnect)


# -- rows for --format -------------------------------------------------------------------------


def go_time_nanos(text: str) -> str:
    """Go's ``time.Time.String()`` of an RFC 3339 time in UTC, as docker prints
    ``.CreatedAt`` of a network: ``2026-05-07 12:00:00.123456789 +0000 UTC``
    (trailing zeros of the fraction dropped, no fraction if it is zero)."""
    main, _, frac = text.rstrip("Z").partition(".")
    moment = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    frac = frac.rstrip("0")
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (f".{frac}" if frac else "") + " +0000 UTC"


class NetworkRow(Row):
    """One line of ``network ls`` (docker/cli cli/command/network/formatter.go)."""

    FIELDS = ("CreatedAt", "Driver", "ID", "IPv4", "IPv6", "Internal", "Labels", "Name", "Scope")

    def __init__(self, record: dict, *, no_trunc: bool = False):
        self._record = record
        self._no_trunc = no_trunc

    @property
    def ID(self) -> str:
        return self._record["Id"] if self._no_trunc else truncate_id(self._record["Id"])

    @property
    def Name(self) -> str:
        return self._record["Name"]

    @property
    def Driver(self) -> str:
        return self._record["Driver"]

    @property
    def Scope(self) -> str:
        return self._record["Scope"]

    @property
    def IPv4(self) -> str:
        return "true"

    @property
    def IPv6(self) -> str:
        return "true" if self._record.get("EnableIPv6") else "false"

    @property
    def Internal(self) -> str:
        return "true" if self._record.get("Internal") else "false"

    @property
    def Labels(self) -> str:
        return ",".join(f"{k}={v}" for k, v in (self._record.get("Labels") or {}).items())

    def Label(self, name: str) -> str:
        """``{{.Label "com.example.key"}}``: one label's value, "" if unset."""
        return (self._record.get("Labels") or {}).get(name, "")

    @property
    def CreatedAt(self) -> str:
        return go_time_nanos(self._record["Created"])


def natural_key(name: str):
    """fvbommel/sortorder's NaturalLess, which ``network ls`` sorts by: digit runs
    compare as numbers ("net2" before "net10")."""
    return [(0, int(part), part) if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", name) if part]


# -- the commands --------------------------------------------------------------------------------


def cmd_create(engine, args) -> int:
    from ..errors import UsageError
    from ..runtime.options import parse_labels

    if len(args.subnet) < len(args.ip_range) or len(args.subnet) < len(args.gateway):
        raise UsageError("every ip-range or gateway must have a corresponding subnet")
    if len(args.subnet) > 1:
        raise UsageError("Dockyard networks have one IPv4 subnet: give --subnet once")
    ipam = None
    if args.subnet:
        ipam = {"Driver": "default", "Config": [{
            "Subnet": args.subnet[0],
            "Gateway": args.gateway[0] if args.gateway else None,
            "IPRange": args.ip_range[0] if args.ip_range else None}]}
    network = engine.networks.create(args.name, driver=args.driver, ipam=ipam,
                                     internal=args.internal, labels=parse_labels(args.label))
    print(network.id)
    return 0


def cmd_ls(engine, args) -> int:
    from ..network.store import filter_records, parse_filters
    from .template import render

    records = filter_records(engine.networks.store.list(), parse_filters(args.filter))
    records.sort(key=lambda r: natural_key(r["Name"]))
    rows = [NetworkRow(r, no_trunc=args.no_trunc) for r in records]
    if args.quiet:
        for row in rows:
            print(row.ID)
        return 0
    text = render(args.format, rows, NETWORK_HEADERS, default=NETWORK_FORMAT)
    if text:
        print(text)
    return 0


def cmd_inspect(engine, args) -> int:
    from ..errors import NotFound
    from .output import print_json

    found, status = [], 0
    for name in args.names:
        try:
            found.append(engine.networks.store.get(name))
        except NotFound:
            sys.stderr.write(f"dockyard: Error: No such network: {name}\n")
            status = 125
    if args.format is not None:
        from .template import render_one
        for record in found:
            print(render_one(args.format, record))
        return status
    print_json(found)
    return status


def cmd_rm(engine, args) -> int:
    from ..errors import EngineError, NotFound

    status = 0
    for name in args.names:
        try:
            engine.networks.store.remove(name)
        except NotFound as e:
            if not args.force:
                sys.stderr.write(f"dockyard: {e}\n")
                status = e.exit_code
            continue
        except EngineError as e:
            sys.stderr.write(f"dockyard: {e}\n")
            status = e.exit_code
            continue
        print(name)
    return status


def cmd_prune(engine, args) -> int:
    if not args.force:
        sys.stdout.write(PRUNE_WARNING)
        sys.stdout.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            return 0
    deleted = engine.networks.prune(filters=args.filter)["NetworksDeleted"]
    if deleted:
        print("Deleted Networks:")
        for name in deleted:
            print(name)
        print()
    return 0


def cmd_connect(engine, args) -> int:
    network = engine.networks.get(args.network)
    container = engine.containers.get(args.container)
    network.connect(container, aliases=args.alias, ipv4_address=args.ip)
    return 0


def cmd_disconnect(engine, args) -> int:
    network = engine.networks.get(args.network)
    container = engine.containers.get(args.container)
    network.disconnect(container, force=args.force)
    return 0
