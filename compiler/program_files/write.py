"""Write the programming files: one ``.npz`` per chip (or one for the logical arrays) and ``manifest.json``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Union

import numpy as np

from ...passes.errors import OutputPathError
from ..files import reporting_write_errors
from ..version import __version__
from .arrays import Source
from .layout import array_shape, checksum, stored_arrays

FORMAT = "xbar-programming-files"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
UNITS = "uS"


def manifest(source: Source, files: dict[str, dict[str, np.ndarray]], regions: list[dict]) -> dict:
    """The manifest of ``source`` laid out as ``files`` (module docstring of :mod:`xbar.compiler.program_files`)."""
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "xbar_version": __version__,
        "chip": source.chip, "device_model": source.device_model, "converter": source.converter,
        "units": UNITS, "array_shape": array_shape(source), "files": sorted(files),
        "arrays": [{"file": name, "key": key, "shape": list(array.shape), "sha256": checksum(array)}
                   for name in sorted(files) for key, array in files[name].items()],
        "regions": regions,
    } | ({} if source.converter_settings is None else {"converter_settings": source.converter_settings})


def write_source(source: Source, directory: Union[str, os.PathLike]) -> Path:
    """Write ``source``'s programming files into ``directory`` (made if missing; its parent must exist)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise OutputPathError(f"-o {directory} is a file; give a directory for the programming files")
    if not directory.parent.is_dir():
        raise OutputPathError(f"-o {directory}: {directory.parent} does not exist; create it first")
    files, regions = stored_arrays(source)
    with reporting_write_errors(directory, "-o"):
        directory.mkdir(exist_ok=True)
        for name, arrays in files.items():
            replace_atomically(directory / name, lambda handle, arrays=arrays: np.savez(handle, **arrays))
        text = json.dumps(manifest(source, files, regions), indent=1, sort_keys=True, allow_nan=False) + "\n"
        replace_atomically(directory / MANIFEST, lambda handle: handle.write(text.encode()))
    return directory


def replace_atomically(path: Path, write) -> None:
    """Write ``path`` through a temporary file next to it: never a half-written file."""
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False)
    try:
        with handle:
            write(handle)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
