"""Output files: checked before any work, written so that a failure never leaves a partial one behind."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator

from ..passes.errors import OutputPathError, WriteError


def data_file(onnx_path: Path) -> Path:
    """Where an ONNX file's external data goes: ``<name>.onnx.data`` next to it."""
    return onnx_path.with_name(f"{onnx_path.name}.data")

def _temporary_name(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.{suffix}")


def write_atomically(data: bytes, path: Path) -> None:
    """Write to a temporary file next to ``path``, then rename it over ``path``.

    The file gets the permissions of a plain ``open(path, "wb")`` (0666 less the umask).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_name(path, "tmp")
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def check_writable(path: Path, option: str) -> Path:
    """``path`` if a file can be written there.

    Meant to run before any work, so a bad ``option`` fails in a second, not after a
    compilation: it refuses an empty name, a directory, a missing directory (the command
    line makes none: a typo would otherwise grow a tree), a path under a file and a read-only file,
    and creates and removes a probe file where the output will go, which finds
    permissions and read-only file systems that ``os.access`` misses (for root).
    """
    if not str(path) or path.name in ("", ".", ".."):
        raise OutputPathError(f"{option} needs a file name, got {str(path)!r}")
    if path.is_dir():
        raise OutputPathError(f"{option} {path} is a directory; give a file name inside it")
    ancestor = path.parent.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputPathError(f"cannot write {path}: {ancestor} is not a directory; choose another {option} path")
    if ancestor != path.parent.absolute():
        raise OutputPathError(f"cannot write {path}: the directory {path.parent} does not exist; create it "
                              f"(mkdir -p {path.parent}) or choose another {option} path")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"cannot write {path}: the file is read-only; choose another {option} path")
    probe = _temporary_name(ancestor / path.name, "probe")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        raise OutputPathError(f"cannot write {path}: files cannot be created in {ancestor} "
                              f"({exc.strerror or exc}); choose another {option} path") from exc
    probe.unlink()
    return path


@contextlib.contextmanager
def reporting_write_errors(path: Path, option: str) -> Iterator[None]:
    """Turn an OS error while writing ``path`` into one :class:`WriteError` line."""
    try:
        yield
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}; choose another {option} path") from exc
