"""Which kind of path each programming-file format takes: xbar's is a directory, the Fusion CSV one file.

Imports nothing heavy, so the command line checks its arguments with these before loading anything, and the
readers and writers check again when called from Python.
"""

from __future__ import annotations

from pathlib import Path

from ...passes.errors import MeasuredConductancesError, OutputPathError


def check_output_path(path: Path, format: str) -> None:
    """``-o`` of ``program-file``: a directory that exists or can be made (xbar), a file (fusion)."""
    if format == "fusion" and path.is_dir():
        raise OutputPathError(f"-o {path} is a directory; a Fusion CSV is one file (give e.g. -o model.csv), "
                              "xbar's programming files a directory (drop --format fusion)")
    if format != "fusion" and path.exists() and not path.is_dir():
        raise OutputPathError(f"-o {path} is a file; give a directory for the programming files (for a Fusion "
                              "CSV give --format fusion)")
    if not path.absolute().parent.is_dir():
        raise OutputPathError(f"-o {path}: {path.absolute().parent} does not exist; create it first")


def check_measured_path(path: Path, format: str) -> None:
    """The measured read-back: the programming files' directory (xbar), the CSV file (fusion)."""
    if format == "fusion" and path.is_dir():
        raise MeasuredConductancesError(f"{path} is a directory; a Fusion CSV is one file (for xbar's programming "
                                        "files drop --format fusion)")
    if format == "fusion" and not path.is_file():
        raise MeasuredConductancesError(f"{path}: no such file; give the Fusion CSV with the measured conductances")
    if format != "fusion" and path.is_file():
        raise MeasuredConductancesError(f"{path} is a file; xbar's programming files are a directory with "
                                        "manifest.json (for a Fusion CSV give --format fusion)")
    if format != "fusion" and not path.is_dir():
        raise MeasuredConductancesError(f"{path} is not a directory; give the directory of programming files "
                                        "holding the measured conductances")
