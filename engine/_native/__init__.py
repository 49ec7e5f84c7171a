"""The compiled core (built from ``_native/*.pyx`` by ``pip install``).

Each compiled module has a readable Python twin with the same functions,
signatures and exceptions:

=====================  ==============================  =========================
compiled               Python twin                     what it does
=====================  ==============================  =========================
engine._native.spawn   engine/runtime/spawn.py         clone(2) + container setup + execve
engine._native.layers  engine/layer/tar.py             stream a tar into a directory, hashing it
                       engine/layer/create.py          write a directory as a reproducible tar
=====================  ==============================  =========================

:func:`load` returns the compiled module, or ``None`` when it is not built or
when ``DOCKYARD_PURE=1`` asks for the twins (the parity tests and curious
learners use that). A guard test fails if the compiled modules are missing,
so a broken build never passes silently.
"""

from __future__ import annotations

import importlib
import os

MODULES = ("spawn", "layers")


def pure() -> bool:
    """True when the environment asks for the Python twins."""
    return os.environ.get("DOCKYARD_PURE", "") not in ("", "0")


def load(name: str):
    """The compiled module ``engine._native.<name>``, or None (see module docstring)."""
    if pure():
        return None
    try:
        return importlib.import_module(f"engine._native.{name}")
    except ImportError:
        return None


def status() -> dict[str, str]:
    """For ``version``/``doctor``: which implementation each module uses."""
    out = {}
    for name in MODULES:
        try:
            importlib.import_module(f"engine._native.{name}")
            built = True
        except ImportError:
            built = False
        if built and not pure():
            out[name] = "compiled"
        elif built:
            out[name] = "python twin (DOCKYARD_PURE=1)"
        else:
            out[name] = "python twin (compiled module not built)"
    # The static programs beside the extensions: the container monitor, --init.
    here = os.path.dirname(os.path.abspath(__file__))
    for program in ("monitor", "init"):
        built = os.access(os.path.join(here, f"dockyard-{program}"), os.X_OK)
        if program == "monitor" and os.environ.get("DOCKYARD_MONITOR") == "python":
            out[program] = "python twin (DOCKYARD_MONITOR=python)"
        elif built and (program == "init" or not pure()):
            out[program] = "compiled"
        elif built:
            out[program] = "python twin (DOCKYARD_PURE=1)"
        else:
            out[program] = "not built" if program == "init" else "python twin (compiled program not built)"
    return out
