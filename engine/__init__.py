"""Dockyard: a real container engine in Python with a Cython core.

The public surface is small::

    from engine import Engine
    engine = Engine()                       # root: $DOCKYARD_ROOT or /var/lib/dockyard
    out = engine.containers.run("busybox", ["echo", "hello"], remove=True)

``Engine`` is imported lazily so that ``import engine.cli`` (what the
``dockyard`` command does first) stays fast.
"""

__version__ = "0.1.0"

__all__ = ["Engine", "EngineError", "__version__"]


def __getattr__(name):
    if name == "Engine":
        from .api import Engine
        return Engine
    if name in ("EngineError",):
        from . import errors
        return getattr(errors, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
