"""`textvae probe RUN_DIR`: logistic regression on posterior means from n labelled documents."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from textvae.cli.app import quiet_libraries, setup_logging
from textvae.cli.generate import LABELS_FROM_HELP
from textvae.errors import TextVAEError

PROBE_FILE = "probe.json"


def parse_counts(text: str) -> list[int]:
    """'100,500,1000' -> [100, 500, 1000] (one-line error for anything else)."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise TextVAEError(f"--n-labels {text!r}: expected comma-separated integers, e.g. 100,500,1000") from None
    if not counts or min(counts) < 1:
        raise TextVAEError(f"--n-labels {text!r}: need at least one count, each at least 1")
    return sorted(set(counts))


def probe(
    run_dir: Path = typer.Argument(..., help="A run directory made by `textvae train`."),
    labels_from: str = typer.Option("train", "--labels-from", help=LABELS_FROM_HELP),
    n_labels: str = typer.Option("100,500,1000,2000", "--n-labels", help="Labelled documents per probe."),
    seeds: int = typer.Option(5, "--seeds", help="Random draws of the labelled documents per count."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
    output: Path | None = typer.Option(
        None, "--output", help=f"Where to write the JSON (default RUN_DIR/{PROBE_FILE})."
    ),
) -> None:
    """Latent probe (Li et al. 2019): accuracy of a logistic regression on E[z|x] trained on n labelled
    documents, measured on held-out labelled documents; mean ± sd over seeds, written to probe.json."""
    setup_logging()
    quiet_libraries()
    from textvae.api import load_run
    from textvae.atomic import write_atomic

    counts = parse_counts(n_labels)
    run = load_run(run_dir, device)
    if not (run.modality.text_metrics and run.model.has_latent):
        raise TextVAEError(f"{run_dir}: the probe reads the latent codes of a text VAE")
    result = run.probe(labels_from, counts, seeds)
    path = output or run_dir / PROBE_FILE
    write_atomic(path, json.dumps(result, indent=1).encode())
    table = Table("labelled docs", "accuracy (mean ± sd)", title=f"probe: {result['labels_from']}")
    for n, acc in result["accuracy"].items():
        table.add_row(n, f"{acc['mean']:.3f} ± {acc['sd']:.3f}")
    Console().print(table)
    typer.echo(
        f"{result['classes']} classes, {result['held_out_documents']} held-out documents "
        f"(majority label {result['majority_accuracy']:.3f}); written to {path}"
    )
