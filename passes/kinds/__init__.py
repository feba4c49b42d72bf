"""The kinds of crossbar layer, one module each; everything else iterates over :data:`KINDS`.

To add a kind: a module here with a :class:`~xbar.passes.kinds.base.LayerKind`
subclass, one entry in :data:`KINDS`, and the ONNX function body of its
``onnx_op`` in :mod:`xbar.compiler.onnx.bodies`.
"""

from .base import LayerKind
from .conv import Conv
from .conv_transpose import ConvTranspose
from .linear import Linear

LINEAR, CONV, CONV_TRANSPOSE = Linear(), Conv(), ConvTranspose()
KINDS: tuple[LayerKind, ...] = (LINEAR, CONV, CONV_TRANSPOSE)
