"""Files written beside the report: where each figure and image grid goes."""

from __future__ import annotations

from pathlib import Path

from textvae.reports.figures import ReportFigures
from textvae.reports.runs import POSTERIOR_PLOT, slug


def figure_files(figs: ReportFigures, out: Path) -> dict[str, tuple[Path, bytes]]:
    """Where each figure goes beside the report `out`: key -> (path, PNG bytes)."""
    files = {"curves": (out.with_name(f"{out.stem}_curves.png"), figs.curves)} if figs.curves else {}
    for kind, pngs in (("latent", figs.latent), ("posterior", figs.posterior)):
        suffix = "latent_usage.png" if kind == "latent" else POSTERIOR_PLOT
        for name, png in pngs.items():
            files[f"{kind}:{name}"] = (out.with_name(f"{out.stem}_{slug(name)}_{suffix}"), png)
    return files


def grid_files(summaries, out: Path) -> dict[str, tuple[Path, bytes]]:
    """Where each run's image grids go beside the report `out`: `grid:<run>:<title>` -> (path, PNG bytes)."""
    files = {}
    for summary in summaries:
        for grid in summary.generations.grids if summary.generations else []:
            path = out.with_name(f"{out.stem}_{slug(summary.name)}_{slug(grid.title).lower()}.png")
            files[f"grid:{summary.name}:{grid.title}"] = (path, grid.png)
    return files
