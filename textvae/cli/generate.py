"""`textvae sample | reconstruct | interpolate RUN_DIR ...`: decode from a trained run's latent space.

The three commands share the decoding options (`--strategy`, `--temperature`, `--top-k`, `--top-p`,
`--beam-size`, `--max-length`, `--seed`, `--device`), added once by `with_decoding_options`. The run's modality
(`textvae.modality`) generates and its output shows itself: texts go to stdout, one per line (or JSON lines with
`--jsonl`), so they pipe into other tools; an image model's images go to one PNG `--grid`.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from textvae.cli.app import quiet_libraries, setup_logging
from textvae.cli.signatures import own_parameters, with_signature
from textvae.errors import TextVAEError
from textvae.generation.outputs import DecodedTexts, read_text_argument

DECODING_OPTIONS: dict[str, tuple[Any, Any]] = {  # name -> (annotation, default)
    "strategy": (Annotated[str, typer.Option("--strategy", help="greedy, sample or beam.")], None),
    "temperature": (Annotated[float, typer.Option("--temperature", help="Sampling temperature.")], 1.0),
    "top_k": (Annotated[int | None, typer.Option("--top-k", help="Sample among the k most likely tokens.")], None),
    "top_p": (Annotated[float | None, typer.Option("--top-p", help="Nucleus sampling mass.")], None),
    "beam_size": (Annotated[int, typer.Option("--beam-size", help="Hypotheses kept by beam search.")], 4),
    "max_length": (
        Annotated[int | None, typer.Option("--max-length", help="Most tokens per text (default: the recipe's).")],
        None,
    ),
    "seed": (Annotated[int, typer.Option("--seed", help="Seed of prior draws and sampling.")], 0),
    "device": (Annotated[str, typer.Option("--device", help="cpu or cuda[:N].")], "cpu"),
    "jsonl": (Annotated[bool, typer.Option("--jsonl", help="One JSON object per line instead of plain text.")], False),
}


PASSED = ("run", "decoding", "seed", "jsonl")  # what a decorated command receives besides its own options
RUN_DIR = inspect.Parameter(
    "run_dir",
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    annotation=Annotated[Path, typer.Argument(help="A run directory made by `textvae train`.")],
)


def with_decoding_options(default_strategy: str):
    """Decorator: give a command the shared options; it receives the loaded `run`, `decoding`, `seed`, `jsonl`.

    The command's own parameters follow RUN_DIR; typer reads the combined signature, so every command
    documents the same options the same way.
    """

    def decorate(command):
        added = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
            for name, (annotation, default) in DECODING_OPTIONS.items()
        ]

        @functools.wraps(command)
        def wrapper(run_dir: Path, **kwargs) -> None:
            setup_logging()
            quiet_libraries()
            from textvae.api import load_run

            options = {name: kwargs.pop(name) for name in DECODING_OPTIONS}
            run = load_run(run_dir, options["device"])
            decoding = _decoding(run, default_strategy, options)
            command(run=run, decoding=decoding, seed=options["seed"], jsonl=options["jsonl"], **kwargs)

        return with_signature(wrapper, [RUN_DIR, *own_parameters(command, leave_out=PASSED), *added])

    return decorate


def _decoding(run, default_strategy: str, options: dict):
    """The DecodingConfig from the command-line options (one-line errors for bad values)."""
    fields = {k: options[k] for k in ("temperature", "top_k", "top_p", "beam_size") if options[k] is not None}
    fields["strategy"] = options["strategy"] or default_strategy
    if options["max_length"] is not None:
        fields["max_length"] = options["max_length"]
    try:
        return run.decoding(**fields)
    except ValueError as err:
        raise TextVAEError(f"decoding options: {err}") from err


def _needs_latent(run, what: str) -> None:
    if not run.model.has_latent:
        raise TextVAEError(f"{run.directory}: a language model ({run.recipe.model.type}) has no latent to {what}")


GRID_OPTION = Annotated[
    Path | None, typer.Option("--grid", help="Image models: the PNG grid to write (required for them).")
]


@with_decoding_options("sample")
def sample(
    run,
    decoding,
    seed: int,
    jsonl: bool,
    n: Annotated[int, typer.Option("-n", "--n", help="How many texts (or images) to draw.")] = 10,
    grid: GRID_OPTION = None,
) -> None:
    """Decode N texts from prior draws z ~ p(z) (ancestral sampling by default).

    An image model draws N images instead and writes them as one PNG grid to --grid.
    """
    if n < 1:
        raise TextVAEError(f"-n {n}: must be at least 1")
    run.modality.sample(run, n, seed, decoding).show(jsonl, grid)


@with_decoding_options("greedy")
def reconstruct(
    run,
    decoding,
    seed: int,
    jsonl: bool,
    file: Annotated[Path, typer.Argument(help="Documents, one per line ('-' for stdin); image models: an .npz.")],
    grid: GRID_OPTION = None,
) -> None:
    """Encode each line of FILE and decode its posterior mean (greedy by default); one output line per input.

    An image model reads FILE as an .npz with `images` (uint8, 255 = ink, as `textvae data prepare` writes)
    and writes each image beside its reconstruction (images binarised with the recipe's seed) to --grid.
    """
    _needs_latent(run, "reconstruct from")
    run.modality.reconstruct(run, file, seed, decoding).show(jsonl, grid)


@with_decoding_options("greedy")
def interpolate(
    run,
    decoding,
    seed: int,
    jsonl: bool,
    first: Annotated[str, typer.Argument(help="Text A (or @FILE); image models: a test-image index.")],
    second: Annotated[str, typer.Argument(help="Text B (or @FILE); image models: a test-image index.")],
    steps: Annotated[int, typer.Option("--steps", help="Points from A to B, both ends included.")] = 8,
    slerp: Annotated[bool, typer.Option("--slerp", help="Spherical instead of linear interpolation.")] = False,
    grid: GRID_OPTION = None,
) -> None:
    """Decode points on the path between the posterior means of A and B (greedy by default).

    For an image model A and B are indices of test images; the row (A, the decodes, B) goes to --grid.
    """
    _needs_latent(run, "interpolate in")
    if steps < 2:
        raise TextVAEError(f"--steps {steps}: needs at least 2 (both ends)")
    run.modality.interpolate(run, first, second, steps, slerp, seed, decoding).show(jsonl, grid)


LABELS_FROM_HELP = (
    "Labelled documents (label<TAB>text): train (the run's train split), valid or test (that split's first "
    "half), or a FILE (its first half)."
)


@with_decoding_options("greedy")
def transfer(
    run,
    decoding,
    seed: int,
    jsonl: bool,
    texts: Annotated[list[str], typer.Argument(help="Texts to change (each may be @FILE).")],
    from_label: Annotated[str, typer.Option("--from-label", help="The label the texts have.")],
    to_label: Annotated[str, typer.Option("--to-label", help="The label to move them to.")],
    labels_from: Annotated[str, typer.Option("--labels-from", help=LABELS_FROM_HELP)] = "train",
) -> None:
    """Move each text from one label to another in latent space: decode E[z|x] + mean z(B) − mean z(A).

    The means are over the first 1,000 labelled documents of each label (greedy decoding by default).
    """
    _needs_latent(run, "transfer in")
    _needs_text(run)
    inputs = [read_text_argument(text) for text in texts]
    outputs = run.transfer(inputs, from_label, to_label, labels_from, seed=seed, decoding=decoding)
    DecodedTexts([{"input": a, "output": b} for a, b in zip(inputs, outputs)], "{output}").show(jsonl)


@with_decoding_options("greedy")
def analogy(
    run,
    decoding,
    seed: int,
    jsonl: bool,
    a: Annotated[str, typer.Argument(help="Text A (or @FILE).")],
    b: Annotated[str, typer.Argument(help="Text B (or @FILE).")],
    c: Annotated[str, typer.Argument(help="Text C (or @FILE).")],
) -> None:
    """A is to B as C is to ?: decode z_C + z_B − z_A (posterior means; greedy by default)."""
    _needs_latent(run, "compute analogies in")
    _needs_text(run)
    a, b, c = (read_text_argument(text) for text in (a, b, c))
    text = run.analogy(a, b, c, seed=seed, decoding=decoding)
    DecodedTexts([{"a": a, "b": b, "c": c, "text": text}], "{text}").show(jsonl)


def _needs_text(run) -> None:
    if not run.modality.text_metrics:
        raise TextVAEError(f"{run.directory}: an image model; latent arithmetic here decodes texts")
