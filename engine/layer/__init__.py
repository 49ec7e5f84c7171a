"""Layers: apply a layer blob to a directory, and create one from a directory.

:func:`apply_layer` streams a tar (uncompressed, gzip or zstd) into a
directory, hashing the blob (its *digest*) and the tar (its *diff_id*) as
it goes, and returns a :class:`LayerResult`. :func:`create_layer` does the
reverse: it walks a directory (an overlay upper dir) and writes a
reproducible layer tar, turning overlayfs whiteouts into OCI ones. Both
exist twice, with the same signatures, results and exceptions:

* ``engine._native.layers`` (``_native/layers.pyx``), compiled with Cython,
  used whenever it is built: applying layers is the hot path of image
  loading;
* the readable Python twins ``engine.layer.tar`` (apply) and
  ``engine.layer.create`` (create), used when the compiled module is not
  built or when ``DOCKYARD_PURE=1`` asks for the twins (see
  :func:`engine._native.load`). Read these to learn how it works.

:class:`LayerResult` is defined once, in ``engine.layer.tar``, and the
compiled module returns that same class. ``engine.layer.compression``
(sniffing, streaming decompression, the :class:`Limits` against
decompression bombs) is shared by both implementations.

:class:`~engine.layer.writer.LayerWriter` builds small reproducible layer
tars in memory.
"""

from engine._native import load

from .compression import Limits, layer_compression
from .create import create_layer as _python_create_layer
from .tar import LayerResult
from .tar import apply_layer as _python_apply_layer
from .writer import LayerWriter

_native = load("layers")

apply_layer = _native.apply_layer if _native is not None else _python_apply_layer
create_layer = _native.create_layer if _native is not None else _python_create_layer

__all__ = ["LayerResult", "LayerWriter", "Limits", "apply_layer", "create_layer", "layer_compression"]
