"""Images the command line saves: matplotlib without a display, the image type checked
from the file name before any work, the file written atomically."""

from __future__ import annotations

import io
from pathlib import Path

from ...passes.errors import OutputPathError, UserError
from ..files import write_atomically


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib  # lazy: matplotlib is slow to import and only --plot needs it

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def image_type(path: Path, error: type[UserError] = OutputPathError) -> str:
    """The image type of ``path``'s suffix (png, svg, pdf, ...); ``error`` if matplotlib cannot write it."""
    plt = pyplot()
    kind = Path(path).suffix.lstrip(".").lower()
    figure = plt.figure()
    supported = figure.canvas.get_supported_filetypes()
    plt.close(figure)
    if kind not in supported:
        raise error(f"cannot draw {path}: unknown image type {kind!r}; use one of "
                    f"{', '.join('.' + t for t in sorted(supported))}")
    return kind


def save_figure(figure, path: Path, kind: str) -> Path:
    """Render ``figure`` as ``kind``, close it, and write it to ``path`` atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=kind, dpi=110)
    pyplot().close(figure)
    write_atomically(buffer.getvalue(), Path(path))
    return Path(path)
