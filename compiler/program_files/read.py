"""Read measured conductances back: check them against their manifest and this model, then gather each
logical array's block. Every refusal is one :class:`~xbar.passes.errors.MeasuredConductancesError` line."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Union

import numpy as np

from ...passes.errors import MeasuredConductancesError
from .arrays import Source
from .layout import checksum, first_replicas, gather, stored_arrays
from .write import FORMAT, FORMAT_VERSION, MANIFEST, UNITS


def read_measured(source: Source, directory: Union[str, os.PathLike]) -> dict[str, tuple[np.ndarray, ...]]:
    """``{array name: (G+, G-)}`` (or every device of a multi-device array, in order), each ``[out_size, in_size]``
    float32 in uS, measured, for ``source``'s model."""
    directory = Path(directory)
    recorded = _manifest(directory)
    expected, regions = stored_arrays(source)
    _check_targets(recorded, expected, directory)
    measured = {name: _read_file(directory / name, arrays) for name, arrays in expected.items()}
    regions = first_replicas(regions)  # where this model's targets sit, which the checksums matched
    return {array.name: gather(measured, regions[array.name]) for array in source.arrays}


def _manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    if not path.is_file():
        raise MeasuredConductancesError(f"{directory} has no {MANIFEST}; give the directory `xbar program-file` "
                                        "wrote, with the measured arrays in place of the targets")
    try:
        recorded = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as exc:
        raise MeasuredConductancesError(f"{path} is not JSON ({exc}); restore the manifest written with the "
                                        "programming files") from None
    if not isinstance(recorded, dict) or recorded.get("format") != FORMAT \
            or recorded.get("format_version") != FORMAT_VERSION:
        raise MeasuredConductancesError(f"{path} is not a manifest of {FORMAT} version {FORMAT_VERSION}; "
                                        "restore the manifest written with the programming files")
    if recorded.get("units") != UNITS:
        raise MeasuredConductancesError(f"{path} gives conductances in {recorded.get('units')!r}; this xbar reads "
                                        f"{UNITS!r}: convert the arrays to microsiemens and set units to {UNITS!r}")
    return recorded


def _check_targets(recorded: dict, expected: dict[str, dict[str, np.ndarray]], directory: Path) -> None:
    """The manifest's targets must be this model's: the same stored arrays with the same checksums."""
    try:
        theirs = {(entry["file"], entry["key"]): entry.get("sha256") for entry in recorded["arrays"]}
    except (KeyError, TypeError):
        raise MeasuredConductancesError(f"{directory}/{MANIFEST} does not list its arrays with file and key; "
                                        "restore the manifest written with the programming files") from None
    ours = {(name, key): checksum(array) for name, arrays in expected.items() for key, array in arrays.items()}
    if set(theirs) != set(ours):
        raise MeasuredConductancesError(f"{directory} holds the programming files of another model (its manifest "
                                        f"lists {len(theirs)} arrays, this model has {len(ours)}); give the "
                                        "directory written for this model")
    differing = sorted(f"{name}:{key}" for (name, key), digest in ours.items() if theirs[name, key] != digest)
    if differing:
        raise MeasuredConductancesError(f"{directory} was written for other targets ({differing[0]} has another "
                                        "checksum): give the read-back of this model's programming files")


def _read_file(path: Path, expected: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The measured arrays of one file, each checked for presence, shape and values."""
    if not path.is_file():
        raise MeasuredConductancesError(f"{path} is missing; the manifest lists it")
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise MeasuredConductancesError(f"{path} is not a numpy .npz file ({exc})") from None
    return {key: checked_conductances(arrays.get(key), target.shape, f"{path.name}:{key}", path)
            for key, target in expected.items()}


def checked_conductances(array, shape: tuple[int, ...], where: str, path: Path) -> np.ndarray:
    """``array`` as float32 once it is present, ``shape``d, numeric, finite and >= 0 (else one line)."""
    if array is None:
        raise MeasuredConductancesError(f"{where} is missing from {path}; write every array the manifest lists")
    if array.shape != shape:
        raise MeasuredConductancesError(f"{where} is shaped {array.shape}, the manifest says {shape}; keep each "
                                        "array's shape")
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.integer):
        raise MeasuredConductancesError(f"{where} holds {array.dtype} values; give conductances as floats in uS")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise MeasuredConductancesError(f"{where} holds NaN or infinite conductances; re-read those devices")
    if (array < 0).any():
        raise MeasuredConductancesError(f"{where} holds negative conductances (min {array.min():g} uS); "
                                        "conductances are >= 0 uS")
    return array
