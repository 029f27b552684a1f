"""Writing a file atomically: a temporary file beside it, renamed into place, so no reader or crash ever
sees a half-written file."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from textvae.errors import TextVAEError


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary sibling and a rename; returns the path.

    A failed write (no such folder, not writable, disk full) is a one-line TextVAEError naming `path`,
    and leaves no temporary file and the old `path`, if any, as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as err:
        raise TextVAEError(f"{path}: cannot write ({err.strerror or err})") from err
    finally:
        with contextlib.suppress(OSError):  # e.g. the folder does not exist: there is nothing to remove
            tmp.unlink(missing_ok=True)
    return path
