"""Reading JSON files a user may have damaged: one-line errors naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from textvae.errors import TextVAEError


def read_json(path: Path) -> Any:
    """The parsed JSON of `path`; missing, unreadable or invalid is a TextVAEError naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TextVAEError(f"{path}: not a readable JSON file ({err})") from err


def read_json_object(path: Path) -> dict:
    """`read_json` of a file that must hold a JSON object."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise TextVAEError(f"{path}: expected a JSON object")
    return data
