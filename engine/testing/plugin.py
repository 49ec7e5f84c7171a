"""The ``dockyard`` pytest plugin (registered through the ``pytest11`` entry point).

Fixtures for labs and for anyone who wants real, disposable containers in
their own tests:

``engine``
    An :class:`~engine.Engine` on a fresh temporary root holding
    ``busybox:latest``; everything in it is removed after the test.
``busybox``
    That engine's ``busybox:latest`` image.
``lab_engine``
    The learner's own engine (``$DOCKYARD_ROOT`` or /var/lib/dockyard), read
    by lab checkers to inspect what the learner really did.

A project may define fixtures with the same names in its ``conftest.py``;
pytest then uses those (Dockyard's own test suite does).
"""

from __future__ import annotations

import os

import pytest


def _require_root():
    if os.geteuid() != 0:
        pytest.skip("Dockyard containers need root (namespaces and mounts)")


@pytest.fixture
def engine(tmp_path):
    _require_root()
    from engine import Engine

    eng = Engine(tmp_path / "dockyard-root")
    yield eng
    for container in eng.containers.list(all=True):
        container.remove(force=True)


@pytest.fixture
def busybox(engine):
    return engine.images.build_busybox()


@pytest.fixture
def lab_engine():
    from engine import Engine

    return Engine()
