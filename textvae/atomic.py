"""Writing a file atomically: a temporary file beside it, renamed into place, so no reader or crash ever
sees a half-written file."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary sibling and a rename; returns the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
