"""`textvae data ...`: prepare benchmark datasets (download or local copy, verify, split)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from textvae.cli.app import with_plugins
from textvae.data.own_corpus import DEFAULT_VOCAB_SIZE, RECIPE_FILE, CorpusOptions, parse_split, prepare_text_corpus
from textvae.data.prepare import available_datasets, describe_datasets, prepare_dataset
from textvae.errors import TextVAEError

_NAMES = ", ".join([*available_datasets(), "text (your own corpus)"])

app = typer.Typer(
    help=(
        "Prepare benchmark datasets into DIR/{train,valid,test}.txt (+ vocab.txt), or .npz for the image "
        f"datasets, with a manifest.json of sha256 hashes. Datasets: {_NAMES}."
    ),
    no_args_is_help=True,
)


TEXT_COLUMNS = ("lines", "tokens/line")
IMAGE_COLUMNS = ("images", "pixels/image", "mean pixel")


def _row(record: dict) -> tuple[str, ...]:
    """The numbers of one output: lines and tokens per line, or images, their size and mean pixel (0-255)."""
    if "images" in record:
        shape = record["shape"]
        return (
            f"{record['images']:,}",
            f"{math.prod(shape)} ({'x'.join(map(str, shape))})",
            f"{record['mean_pixel']:.2f}",
        )
    if "lines" not in record:  # a binary file (spm.model)
        return "–", "–"
    per_line = record["tokens"] / record["lines"] if record["lines"] else 0.0
    return f"{record['lines']:,}", f"{per_line:.2f}"


def summary_table(out_dir: Path) -> Table:
    """Files, lines and tokens per line (or images and pixels per image) of a prepared dataset, from its manifest.

    The manifest's warnings (e.g. a substitute for a benchmark) are the table's caption.
    """
    manifest = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))
    caption = "\n".join(f"warning: {w}" for w in manifest.get("warnings", [])) or None
    table = Table(
        title=f"{manifest['dataset']} -> {out_dir}",
        caption=caption,
        caption_style="bold yellow",
        caption_justify="left",
    )
    images = any("images" in record for record in manifest["outputs"].values())
    table.add_column("file")
    for column in IMAGE_COLUMNS if images else TEXT_COLUMNS:
        table.add_column(column, justify="right")
    table.add_column("from")
    for name, record in manifest["outputs"].items():
        table.add_row(name, *_row(record), record["from"])
    return table


@app.command("prepare")
@with_plugins
def prepare(
    name: str = typer.Argument(..., help=f"Dataset: {_NAMES}.", metavar="NAME"),
    source: Path | None = typer.Option(
        None,
        "--from",
        help="Use a local copy instead of downloading: a folder with the release's files "
        "(plain or .gz, e.g. ../shared/data/yahoo or ../shared/data/mnist) or the downloaded archive itself.",
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default: data/NAME)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty output folder."),
    train: Path | None = typer.Option(None, "--train", help="text: your corpus, one document per line."),
    valid: Path | None = typer.Option(None, "--valid", help="text: validation documents (else cut from --train)."),
    test: Path | None = typer.Option(None, "--test", help="text: test documents (else cut from --train)."),
    split: str = typer.Option(
        "0.9,0.05,0.05", "--split", help="text: train,valid,test shares of --train for the splits not given as files."
    ),
    labeled: bool = typer.Option(False, "--labeled", help="text: lines are `label<TAB>text`."),
    vocab_size: int | None = typer.Option(
        None, "--vocab-size", min=5, help=f"text: word-level vocabulary size (default {DEFAULT_VOCAB_SIZE:,})."
    ),
    sentencepiece: int | None = typer.Option(
        None, "--sentencepiece", min=5, help="text: a sentencepiece vocabulary of this size instead of words."
    ),
    seed: int = typer.Option(0, "--seed", help="text: the shuffle that cuts valid/test from --train."),
) -> None:
    """Download (or copy from --from), verify sha256s, write train/valid/test.txt (.npz for images) + manifest.json.

    text: your own corpus (--train FILE ...): writes the splits, vocab.txt (or spm.model) and a ready recipe.yaml
    (the CPU-scaled LSTM VAE + KL annealing) whose data paths are relative to its own folder, so that
    `textvae train data/NAME/recipe.yaml -o runs/NAME` trains on it from any working directory.

    yahoo, yelp, synthetic: He et al. 2019's release (Google Drive datasets.tar.gz)
    ptb: Mikolov's simple-examples.tgz
    yahoo-mini: yahoo.valid as 9k train / 1k valid + the real yahoo.test (no Yahoo train split needed)
    synthetic-generated: textvae's own He et al.-style generator, no download
    mnist: 55k/5k/10k 28x28 grey digits (mnist_uint8.npz or the original IDX files)
    omniglot: Burda et al.'s chardata.mat if --from has it, else resized from Lake et al.'s images (not the benchmark)
    """
    from textvae.cli.app import setup_logging

    setup_logging()
    text_options = {"--train": train, "--valid": valid, "--test": test, "--vocab-size": vocab_size}
    text_options |= {"--sentencepiece": sentencepiece, "--labeled": labeled or None}
    if name != "text":
        given = next((option for option, value in text_options.items() if value is not None), None)
        if given is not None:
            raise TextVAEError(f"{given}: only for `textvae data prepare text` (your own corpus), not {name}")
        out_dir = prepare_dataset(name, out or Path("data") / name, source=source, overwrite=overwrite)
    else:
        if train is None:
            raise TextVAEError("data prepare text: --train FILE is required (your corpus, one document per line)")
        if source is not None:
            raise TextVAEError("--from: not for `data prepare text` (give --train, --valid, --test)")
        options = CorpusOptions(train, valid, test, parse_split(split), labeled, vocab_size, sentencepiece, seed)
        out_dir = prepare_text_corpus(options, out or Path("data") / train.stem, overwrite=overwrite)
    Console().print(summary_table(out_dir))
    if name == "text":
        Console().print(f"next: textvae train {out_dir / RECIPE_FILE} -o runs/{out_dir.name}")


@app.command("list")
@with_plugins
def list_datasets() -> None:
    """List the datasets `prepare` knows."""
    table = Table("name", "description")
    for name, description in describe_datasets().items():
        table.add_row(name, description)
    table.add_row("text", "your own corpus: --train FILE [--valid FILE --test FILE | --split 0.9,0.05,0.05]")
    Console().print(table)


def run_script(*names: str, argv: list[str] | None = None) -> int:
    """Entry point of data_scripts/prepare_*.py: argparse over prepare_dataset for `names` (first = default)."""
    parser = argparse.ArgumentParser(description=f"Prepare {' or '.join(names)} (see data_scripts/README.md).")
    dataset_help = "which dataset" if len(names) > 1 else argparse.SUPPRESS
    parser.add_argument("--dataset", choices=names, default=names[0], help=dataset_help)
    parser.add_argument("--from", dest="source", type=Path, help="local folder or archive instead of downloading")
    parser.add_argument("--out", type=Path, help="output folder (default data/NAME)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)
    from textvae.cli.app import setup_logging

    setup_logging()
    try:
        out_dir = prepare_dataset(args.dataset, args.out or Path("data") / args.dataset, args.source, args.overwrite)
    except TextVAEError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    Console().print(summary_table(out_dir))
    return 0
