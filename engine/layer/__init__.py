"""Layers: apply a layer tar to a directory, and write layer tars.

:func:`apply_layer` streams an uncompressed tar into a directory, hashing it
as it goes, and returns a :class:`LayerResult` (digest, size, entries). It
exists twice, with the same signature, results and exceptions:

* ``engine._native.layers`` (``_native/layers.pyx``), compiled with Cython,
  used whenever it is built: applying layers is the hot path of image
  loading;
* ``engine.layer.tar``, the readable Python twin, used when the compiled
  module is not built or when ``DOCKYARD_PURE=1`` asks for the twins (see
  :func:`engine._native.load`). Read this one to learn how it works.

:class:`LayerResult` is defined once, in ``engine.layer.tar``, and the
compiled module returns that same class.

:class:`~engine.layer.writer.LayerWriter` builds reproducible layer tars.
"""

from engine._native import load

from .tar import LayerResult
from .tar import apply_layer as _python_apply_layer
from .writer import LayerWriter

_native = load("layers")

apply_layer = _native.apply_layer if _native is not None else _python_apply_layer

__all__ = ["LayerResult", "LayerWriter", "apply_layer"]
