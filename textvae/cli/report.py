"""`textvae report RUN_DIR... -o report.html`: one self-contained HTML page and its Markdown twin."""

from __future__ import annotations

from pathlib import Path

import typer

from textvae.cli.app import quiet_libraries, setup_logging


def report(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories made by `textvae train`."),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="The HTML page; X.md and X_*.png beside it."),
    title: str = typer.Option("textvae report", "--title", help="The page's title."),
    samples: int = typer.Option(5, "--samples", min=0, help="Prior samples per run."),
    reconstructions: int = typer.Option(3, "--reconstructions", min=0, help="Test documents to reconstruct."),
    interpolation_steps: int = typer.Option(
        6, "--interpolation-steps", min=0, help="Points on the path between two test documents (0: none)."
    ),
    no_generation: bool = typer.Option(
        False, "--no-generation", help="Do not load the models: metrics, curves and settings only."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for sampling and decoding."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N], for generating text."),
) -> None:
    """Report on one or more runs: a comparison table (He et al. Table 1 style, beside published numbers
    where the recipe matches a published setting), training curves, per-dimension KL and active units,
    each run's recipe and environment, and text sampled, reconstructed and interpolated by its model.

    Writes OUT (HTML: no external files, images embedded) and its Markdown twin with PNG files beside it.
    Data paths in a run's recipe are relative to the directory it was trained from: run from there.
    """
    setup_logging()
    from textvae.errors import TextVAEError
    from textvae.reports.generation import GenerationOptions
    from textvae.reports.html import write_html_report

    if interpolation_steps == 1:
        raise TextVAEError("--interpolation-steps: at least 2 (both ends), or 0 for none")
    generation = None
    if not no_generation:
        quiet_libraries()
        generation = GenerationOptions(samples, reconstructions, interpolation_steps, seed, device)
    html, markdown = write_html_report(run_dirs, out, title, generation)
    typer.echo(f"report: {html} (Markdown: {markdown})")
