"""What the generation commands (`textvae sample | reconstruct | interpolate | transfer | analogy`) read and show:
texts given as arguments (or @FILE) and files of documents; the outputs a modality's generation returns, which
present themselves: decoded texts as lines or JSON lines (`DecodedTexts`), an image model's images as one PNG grid
(`DecodedImages`, with the `--grid` rules)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import typer

from textvae.errors import TextVAEError

if TYPE_CHECKING:
    import torch

GRID_COLUMNS = 8  # images per grid row (at most)
MAX_GRID_IMAGES = 256  # images read from an .npz to reconstruct


class Output(Protocol):
    """What a generation command shows: on stdout (`jsonl`: one JSON object per line) or in the `grid` file."""

    def show(self, jsonl: bool = False, grid: Path | None = None) -> None: ...


@dataclass(frozen=True)
class DecodedTexts:
    """Decoded texts, one record each: printed as `line` (a format string over the record's keys, e.g.
    "{t:.2f}\\t{text}") or as the whole record in JSON; `grid` does not apply."""

    records: list[dict[str, Any]]
    line: str

    def show(self, jsonl: bool = False, grid: Path | None = None) -> None:
        for record in self.records:
            typer.echo(json.dumps(record, ensure_ascii=False) if jsonl else self.line.format(**record))


@dataclass(frozen=True)
class DecodedImages:
    """Images [N, C, H, W] in [0, 1] of the run in `run_dir`, written as one PNG grid of `columns` to --grid."""

    images: torch.Tensor
    columns: int
    run_dir: Path

    def show(self, jsonl: bool = False, grid: Path | None = None) -> None:
        from textvae.generation.images import save_grid

        path = self.grid_path(grid)
        typer.echo(f"{len(self.images)} images -> {save_grid(self.images, path, self.columns)}")

    def grid_path(self, grid: Path | None) -> Path:
        """`grid`, which an image model needs: a *.png in a folder that exists."""
        if grid is None:
            raise TextVAEError(f"{self.run_dir}: an image model writes a picture: give --grid PATH.png")
        if grid.suffix.lower() != ".png":
            raise TextVAEError(f"--grid {grid}: the grid is a PNG file (name it *.png)")
        if not grid.parent.is_dir():
            raise TextVAEError(f"--grid {grid}: folder {grid.parent} does not exist")
        return grid


def read_text_argument(value: str) -> str:
    """A text given on the command line, or the contents of a file given as @PATH."""
    if not value.startswith("@"):
        return value
    path = Path(value[1:])
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise TextVAEError(f"{path}: cannot read the text ({err})") from err


def read_lines(file: Path) -> list[str]:
    """Non-empty lines of FILE (or stdin for '-'); a clear error for unreadable or empty input."""
    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise TextVAEError(f"{file}: cannot read ({err})") from err
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise TextVAEError(f"{file}: no documents (the file is empty)")
    return lines
