"""Writing output files so that a failure never leaves a partial one behind."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomically(data: bytes, path: Path) -> None:
    """Write to a temporary file next to ``path``, then rename it over ``path``.

    The file gets the permissions of a plain ``open(path, "wb")`` (0666 less the umask).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
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
