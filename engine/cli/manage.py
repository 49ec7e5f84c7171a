"""Management commands: ``image ls``, ``container rm``, ``system df``...

Docker groups its commands by object (``docker image ls`` is ``docker
images``, ``docker container rm`` is ``docker rm``). Here each spelling is
registered from the same command module, so both run the same code.
"""

from __future__ import annotations

import importlib

from . import Only, Parser

# group -> {name under the group: (module, the module's name for the command)}
GROUPS = {
    "image": ("Manage images", {
        "ls": ("image", "images"), "rm": ("image", "rmi"), "inspect": ("container", "inspect"),
        "history": ("image", "history"), "tag": ("image", "tag"), "prune": ("image", "prune"),
        "save": ("archive", "save"), "load": ("archive", "load"), "import": ("archive", "import"),
        "pull": ("system", "pull"), "build": ("build", "build"),
    }),
    "container": ("Manage containers", {
        "ls": ("container", "ps"), "rm": ("container", "rm"), "inspect": ("container", "inspect"),
        "run": ("container", "run"), "commit": ("container", "commit"), "diff": ("container", "diff"),
        "export": ("archive", "export"), "create": ("container", "create"),
        "start": ("container", "start"), "stop": ("container", "stop"),
        "restart": ("container", "restart"), "kill": ("container", "kill"),
        "wait": ("container", "wait"), "rename": ("container", "rename"), "port": ("container", "port"),
        "attach": ("container", "attach"), "logs": ("container", "logs"),
        "pause": ("container", "pause"), "unpause": ("container", "unpause"),
        "exec": ("processes", "exec"), "top": ("processes", "top"), "stats": ("processes", "stats"), "update": ("processes", "update"),
    }),
    "system": ("Manage Dockyard", {
        "df": ("system", "df"), "check": ("system", "check"), "info": ("system", "info"),
    }),
}


def register(commands) -> None:
    for group, (help_text, members) in GROUPS.items():
        parser = commands.add_parser(group, help=help_text)
        sub = parser.add_subparsers(dest=f"{group}_command", metavar="COMMAND", parser_class=Parser,
                                    required=True)
        for module in dict.fromkeys(m for m, _ in members.values()):
            wanted = {original: name for name, (m, original) in members.items() if m == module}
            try:
                importlib.import_module(f"{__package__}.{module}").register(Only(sub, wanted))
            except ImportError:
                continue  # a command family not built yet
        if "inspect" in sub.choices and group in ("image", "container"):
            sub.choices["inspect"].set_defaults(type=group)
