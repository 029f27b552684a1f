"""What a run's model generates for the report through textvae.api (samples, reconstructions, interpolation): texts or
image grids, as the run's modality asks (`textvae.modality`)."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from textvae.errors import TextVAEError

SAMPLING = {True: "z ~ p(z), ancestral sampling", False: "ancestral sampling from the language model"}


@dataclass
class GenerationOptions:
    """What `generate` asks each run's model for (0 turns a part off)."""

    samples: int = 5
    reconstructions: int = 3
    interpolation_steps: int = 6
    seed: int = 0
    device: str = "cpu"


@dataclass
class Generations:
    """Text decoded from a run's model at report time, and notes on what could not be made."""

    samples: list[str] = field(default_factory=list)
    reconstructions: list[tuple[str, str]] = field(default_factory=list)  # (document, decode)
    interpolation: list[tuple[float, str]] = field(default_factory=list)
    source: str | None = None  # the file the documents came from
    latent: bool = True  # False: a language model's samples, no z
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # signs of posterior collapse
    grids: list[ImageGrid] = field(default_factory=list)  # an image model's samples, reconstructions, paths


@dataclass
class ImageGrid:
    """A PNG grid of images made by an image model, with what it shows."""

    title: str
    png: bytes
    caption: str


def first_documents(path: Path, n: int, labeled: bool = False) -> list[str]:
    """The first `n` non-blank documents of a corpus file (gzipped or not; `label<TAB>text` when labeled)."""
    opener = gzip.open if path.suffix == ".gz" else open
    documents: list[str] = []
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                text = line.split("\t", 1)[-1] if labeled else line
                if text.strip():
                    documents.append(text.strip())
                if len(documents) >= n:
                    break
    except (OSError, EOFError, zlib.error) as err:  # zlib.error: a damaged .gz
        raise TextVAEError(f"{path}: cannot read ({err})") from err
    return documents


def generate(directory: Path, options: GenerationOptions) -> Generations:
    """What the run's best model generates for the report, made by the modality of the run's data (texts:
    `text_generations`, images: `image_generations`); a model that does not load becomes a note."""
    from textvae.api import load_run
    from textvae.modality import of_data

    try:
        run = load_run(directory, options.device)
    except (TextVAEError, OSError) as err:
        return Generations(notes=[f"model not loaded, no generated text: {err}"])
    return of_data(run.recipe.data).report_generations(run, options)


def text_generations(run, options: GenerationOptions) -> Generations:
    """Prior samples, reconstructions of the first test (else validation) documents and an interpolation
    between the first two; what cannot be made becomes a note."""
    out = Generations()
    if options.samples:
        out.samples = run.sample(options.samples, seed=options.seed, strategy="sample")
    wanted = max(options.reconstructions, 2 if options.interpolation_steps else 0)
    if not wanted:
        return out
    out.latent = run.model.has_latent
    if not run.model.has_latent:
        out.notes.append("a language model has no latent space: prior samples only")
        return out
    data = run.recipe.data
    split, file = ("test", data.test) if data.test else ("valid", data.valid)
    path = Path(file)
    if not path.is_file():
        out.notes.append(
            f"{split} file {file} not found from {Path.cwd()} (data paths are relative to the directory the "
            "run was trained from): no reconstructions or interpolation"
        )
        return out
    try:
        documents = first_documents(path, wanted, labeled=data.format == "labeled")
    except TextVAEError as err:
        out.notes.append(f"no reconstructions or interpolation: {err}")
        return out
    out.source = f"{split} file {file}"
    if options.reconstructions:
        texts = documents[: options.reconstructions]
        out.reconstructions = list(zip(texts, run.reconstruct(texts, seed=options.seed, strategy="greedy")))
    if options.interpolation_steps and len(documents) >= 2:
        out.interpolation = run.interpolate(
            documents[0], documents[1], steps=options.interpolation_steps, strategy="greedy"
        )
    elif options.interpolation_steps:
        out.notes.append(f"{file} has fewer than 2 documents: no interpolation")
    for what, texts in (
        ("reconstruction", [r for _, r in out.reconstructions]),
        ("interpolation point", [t for _, t in out.interpolation]),
    ):
        if len(texts) > 1 and len(set(texts)) == 1:
            out.warnings.append(f"every {what} decodes to the same text: the decoder ignores z (posterior collapse)")
    return out


IMAGE_COLUMNS = 8  # images per grid row
IMAGE_PAIRS = 4  # interpolation rows


def _whole_rows(n: int) -> int:
    """n rounded up to whole grid rows of IMAGE_COLUMNS (at least one)."""
    return IMAGE_COLUMNS * max(1, -(-n // IMAGE_COLUMNS))


def image_generations(run, options: GenerationOptions) -> Generations:
    """Grids of an image model: prior samples, test images beside their reconstructions, interpolations
    between test images (the i-th first and i-th last; each row: image a, the decodes along the path, image b)."""
    from textvae.generation import images

    out = Generations(latent=run.model.has_latent)
    decoder = "pixel by pixel (PixelCNN)" if run.model.decoder.autoregressive else "Bernoulli means"
    if options.samples:
        samples = images.sample_images(run.model, _whole_rows(options.samples), options.seed)
        what = "z ~ p(z), decoded " + decoder if run.model.has_latent else "sampled from the PixelCNN alone"
        out.grids.append(ImageGrid("Samples", images.grid_png(samples, IMAGE_COLUMNS), what))
    if not run.model.has_latent:
        out.notes.append("no latent variable: samples only")
        return out
    try:
        split = run.split("test" if run.recipe.data.test else "valid")
    except (TextVAEError, OSError) as err:
        out.notes.append(f"no test images ({err}): no reconstructions or interpolations")
        return out
    out.source = f"test file {run.recipe.data.test or run.recipe.data.valid}"
    if options.reconstructions:
        count = min(_whole_rows(options.reconstructions), len(split))
        grid = images.reconstruct_images(run.model, split, list(range(count)), options.seed)
        caption = f"odd columns: the first test images; even columns: decoded from E[z|x], {decoder}"
        out.grids.append(ImageGrid("Reconstructions", images.grid_png(grid, 2 * IMAGE_COLUMNS), caption))
    if options.interpolation_steps and len(split) >= 2 * IMAGE_PAIRS:
        pairs = [(i, len(split) - 1 - i) for i in range(IMAGE_PAIRS)]  # the ends of the split: other classes
        grid = images.interpolate_images(run.model, split, pairs, options.interpolation_steps, seed=options.seed)
        caption = (
            f"each row: test image a, {options.interpolation_steps} decodes from E[z|a] to E[z|b], image b; a "
            "PixelCNN draws every row with the same noise, so what differs between rows comes from z"
        )
        out.grids.append(ImageGrid("Interpolations", images.grid_png(grid, options.interpolation_steps + 2), caption))
    return out
