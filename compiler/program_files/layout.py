"""Where each logical array's targets go in the stored arrays, and the manifest that says so.

:func:`stored_arrays` lays a :class:`~.arrays.Source` out as ``{file: {key: float32 array}}`` and lists its
regions; :func:`gather` reads each logical array's block back out of stored arrays laid out that way.
"""

from __future__ import annotations

import hashlib
from typing import Optional

import numpy as np

from .arrays import REGION_KEYS, LogicalArray, Source

LOGICAL_FILE = "arrays.npz"


def chip_file(chip: int) -> str:
    return f"chip{chip}.npz"


def physical_key(core: int, array: int, side: str) -> str:
    return f"core{core}.array{array}.g_{side}"


def checksum(array: np.ndarray) -> str:
    """sha256 of the array's float32 little-endian bytes in C order."""
    return hashlib.sha256(np.ascontiguousarray(array, dtype="<f4").tobytes()).hexdigest()


def _sites(chip: dict, placement: dict) -> dict[str, tuple[int, int, int]]:
    """Per side: (physical array, first column, column step) of a placed region (the module docstring of
    :mod:`xbar.compiler.program_files`)."""
    layout, array, column = chip["pair_layout"], placement["array"], placement["col_offset"]
    if layout == "columns":
        return {"plus": (array, column, 2), "minus": (array, column + 1, 2)}
    if layout == "arrays":
        return {"plus": (array, column, 1), "minus": (array + 1, column, 1)}
    return {"plus": (array, column, 1), "minus": (array, column, 1)}


def _region_entry(array: LogicalArray) -> dict:
    return {"name": array.name, "layer": array.layer, "tile": list(array.tile)} | {
        key: array.region[key] for key in REGION_KEYS}


def stored_arrays(source: Source) -> tuple[dict[str, dict[str, np.ndarray]], list[dict]]:
    """The files' arrays (targets in uS) and the manifest's region entries."""
    if source.chip is None:
        entries = [_region_entry(a) | {"file": LOGICAL_FILE, "g_plus": f"{a.name}.g_plus",
                                       "g_minus": f"{a.name}.g_minus"} for a in source.arrays]
        files = {LOGICAL_FILE: {f"{a.name}.g_{side}": getattr(a, f"g_{side}")
                                for a in source.arrays for side in ("plus", "minus")}}
        return files, entries
    shape = (source.chip["rows"], source.chip["columns"])
    files: dict[str, dict[str, np.ndarray]] = {}
    entries = []
    for array in source.arrays:
        for replica, placement in enumerate(array.placements):
            stored = files.setdefault(chip_file(placement["chip"]), {})
            entry = _region_entry(array) | {"replica": replica, "file": chip_file(placement["chip"])} | placement
            rows = slice(placement["row_offset"], placement["row_offset"] + array.region["in_size"])
            for side, (physical, first, step) in _sites(source.chip, placement).items():
                key = physical_key(placement["core"], physical, side)
                for other in ("plus", "minus"):  # every used physical array gets both of its arrays
                    stored.setdefault(physical_key(placement["core"], physical, other), np.zeros(shape, np.float32))
                columns = slice(first, first + step * array.region["out_size"], step)
                stored[key][rows, columns] = getattr(array, f"g_{side}").T
                entry |= {f"g_{side}": key, f"g_{side}_columns": [first, step]}
            entries.append(entry)
    return files, entries


def gather(stored: dict[str, dict[str, np.ndarray]], entry: dict) -> tuple[np.ndarray, np.ndarray]:
    """The ``[out_size, in_size]`` G+ and G- of one region entry from stored arrays."""
    out_size, in_size = entry["out_size"], entry["in_size"]
    pair = []
    for side in ("plus", "minus"):
        array = stored[entry["file"]][entry[f"g_{side}"]]
        if "row_offset" not in entry:
            pair.append(array.reshape(out_size, in_size))
            continue
        first, step = entry[f"g_{side}_columns"]
        rows = slice(entry["row_offset"], entry["row_offset"] + in_size)
        pair.append(array[rows, first:first + step * out_size:step].T)
    return pair[0], pair[1]


def first_replicas(entries: list[dict]) -> dict[str, dict]:
    """Each logical array's region entry to read back: its first replica's (the one without a chip)."""
    return {entry["name"]: entry for entry in entries if entry.get("replica", 0) == 0}


def array_shape(source: Source) -> Optional[list[int]]:
    return None if source.chip is None else [source.chip["rows"], source.chip["columns"]]
