"""Where each logical array's targets go in the stored arrays, and the manifest that says so.

:func:`stored_arrays` lays a :class:`~.arrays.Source` out as ``{file: {key: float32 array}}`` and lists its
regions; :func:`gather` reads each logical array's block back out of stored arrays laid out that way.
"""

from __future__ import annotations

import hashlib
from typing import Optional

import numpy as np

from ...passes.errors import ConfigError
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


def _logical_entry(array: LogicalArray) -> dict:
    """A logical array's entry without a chip: its file and a key per device (a multi-device array: also the
    device list, their significances and the offset)."""
    entry = _region_entry(array) | {"file": LOGICAL_FILE} | {device: f"{array.name}.{device}"
                                                             for device in array.conductances}
    if array.multi_device:
        entry |= {"devices": list(array.conductances), "device_significances": list(array.significances),
                  "device_offset": array.offset}
    return entry


def stored_arrays(source: Source) -> tuple[dict[str, dict[str, np.ndarray]], list[dict]]:
    """The files' arrays (targets in uS) and the manifest's region entries."""
    if source.chip is None:
        files = {LOGICAL_FILE: {f"{a.name}.{device}": g for a in source.arrays for device, g in a.conductances.items()}}
        return files, [_logical_entry(a) for a in source.arrays]
    if any(a.multi_device for a in source.arrays):
        raise ConfigError("programming files under a chip target place device pairs; a multi-device converter's "
                          "files are written per logical array: write them for the model compiled without --chip")
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
                stored[key][rows, columns] = array.conductances[f"g_{side}"].T
                entry |= {f"g_{side}": key, f"g_{side}_columns": [first, step]}
            entries.append(entry)
    return files, entries


def gather(stored: dict[str, dict[str, np.ndarray]], entry: dict) -> tuple[np.ndarray, ...]:
    """The ``[out_size, in_size]`` G+ and G- (or every device, in the entry's order) of one region entry."""
    out_size, in_size = entry["out_size"], entry["in_size"]
    devices = []
    for device in entry.get("devices", ("g_plus", "g_minus")):
        array = stored[entry["file"]][entry[device]]
        if "row_offset" not in entry:
            devices.append(array.reshape(out_size, in_size))
            continue
        first, step = entry[f"{device}_columns"]
        rows = slice(entry["row_offset"], entry["row_offset"] + in_size)
        devices.append(array[rows, first:first + step * out_size:step].T)
    return tuple(devices)


def first_replicas(entries: list[dict]) -> dict[str, dict]:
    """Each logical array's region entry to read back: its first replica's (the one without a chip)."""
    return {entry["name"]: entry for entry in entries if entry.get("replica", 0) == 0}


def array_shape(source: Source) -> Optional[list[int]]:
    return None if source.chip is None else [source.chip["rows"], source.chip["columns"]]
