"""What depends on the kind of data a model reads, text or images, in one object per kind (a `Modality`):

- what evaluation counts and reports: the count keys, what a per-document NLL is per, whether a perplexity and
  the text-only metrics exist, whether a run has a tokenizer;
- split loading: `training_splits` and `evaluation_split` read the splits a `data:` section names
  (`textvae.data.splits` asks the recipe's modality);
- generation: `sample`, `reconstruct` and `interpolate` make what the CLI commands show, an output that presents
  itself (texts to stdout or JSON lines, images to a PNG `--grid`: `textvae.generation.outputs`), and
  `report_generations` what the report shows (`textvae.reports.generation`).

Each modality is registered in `textvae.registries.MODALITIES` with its `data:` section, which is chosen by its
`format` (the values of the section's `format` Literal; a section without `format` is text), so a plugin adds a
modality with `MODALITIES.register("name", config=ItsDataSection)(ItsModality(...))`. A model section names its
modality (`ModelSection.modality`), a `data:` section by its format (`of_data`), a batch class its own, and an
`eval.json` shows it by its count keys (`of_metrics`).

Layout: this module holds the base class and the two built-in modalities. Evaluation modules import it, so it
stays light: the loaders, generators and report code a modality calls are imported inside its methods.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from textvae.config.sections import DataConfig, ImageDataConfig, data_modality
from textvae.errors import TextVAEError
from textvae.registries import MODALITIES

if TYPE_CHECKING:
    from textvae.api import Run
    from textvae.data.images import ImageSplit
    from textvae.data.tokenizers import TextTokenizer
    from textvae.generation.decoding import DecodingConfig
    from textvae.generation.outputs import Output
    from textvae.reports.generation import GenerationOptions, Generations

# (train, valid, tokenizer (None without one), statistics for data_stats.json)
TrainingSplits = tuple[Any, Any, "TextTokenizer | None", dict]


@dataclass(frozen=True)
class Modality:
    """One kind of data. Subclasses implement split loading and generation; the fields say what evaluation counts."""

    name: str
    documents: str  # what a per-document NLL is per, in words ("documents", "images")
    count_keys: tuple[str, str]  # the metric keys of (documents scored, predicted units)
    perplexity: bool  # PPL = exp(NLL / predicted tokens); images: NLL per image only
    # the model reads and decodes texts: reconstruction BLEU, sample diversity, latent arithmetic, the probe
    text_metrics: bool
    tokenizer: bool  # a run of this modality saves and loads a tokenizer

    def counts(self, n_documents: int, n_units: int) -> dict[str, int]:
        """How many documents and predicted tokens (images and pixels) an evaluation scored."""
        return dict(zip(self.count_keys, (n_documents, n_units), strict=True))

    def perplexity_of(self, key: str, total_nll: float, n_units: int) -> dict[str, float]:
        """{key: exp(total NLL / predicted tokens)}, or nothing where there is no perplexity."""
        return {key: math.exp(min(total_nll / n_units, 700.0))} if self.perplexity else {}

    # -- split loading

    def training_splits(self, cfg: BaseModel, tokenizer: TextTokenizer | None) -> TrainingSplits:
        """(train, valid, tokenizer, statistics) of a `data:` section; a tokenizer is built unless given."""
        raise NotImplementedError

    def evaluation_split(self, cfg: BaseModel, tokenizer: TextTokenizer | None, name: str, limit: int | None) -> Any:
        """The split `name` (valid | test, named by the section) as a trained run reads it, at most `limit` long."""
        raise NotImplementedError

    # -- generation: what `textvae sample | reconstruct | interpolate` show, and the report's

    def sample(self, run: Run, n: int, seed: int, decoding: DecodingConfig) -> Output:
        """n draws from the run's model."""
        raise NotImplementedError

    def reconstruct(self, run: Run, file: Path, seed: int, decoding: DecodingConfig) -> Output:
        """The documents of `file`, each with its decode from E[z|x]."""
        raise NotImplementedError

    def interpolate(
        self, run: Run, first: str, second: str, steps: int, slerp: bool, seed: int, decoding: DecodingConfig
    ) -> Output:
        """Decodes along the path between the posterior means of the documents the arguments name."""
        raise NotImplementedError

    def report_generations(self, run: Run, options: GenerationOptions) -> Generations:
        """What the report shows of the run's model (samples, reconstructions, interpolations)."""
        raise NotImplementedError

    def image_split(self, run: Run, name: str, indices: list[int]) -> ImageSplit:
        """The split `name` of an image run, checked to hold the images `indices` (other modalities refuse)."""
        raise TextVAEError(f"{run.directory}: a {self.name} model; use sample / reconstruct / interpolate")


class TextModality(Modality):
    """Text corpora (`DataConfig`), tokenized by the run's tokenizer; decodes texts."""

    def training_splits(self, cfg: DataConfig, tokenizer: TextTokenizer | None) -> TrainingSplits:
        from dataclasses import asdict

        from textvae.data.batching import TokenizedSplit
        from textvae.data.text import prepare_corpus

        splits, tokenizer, stats = prepare_corpus(cfg, tokenizer, splits=("train", "valid"))
        train, valid = (TokenizedSplit.from_dataset(splits[name]) for name in ("train", "valid"))
        return train, valid, tokenizer, {k: asdict(v) for k, v in stats.items()}

    def evaluation_split(self, cfg: DataConfig, tokenizer: TextTokenizer | None, name: str, limit: int | None) -> Any:
        from textvae.data.batching import TokenizedSplit
        from textvae.data.text import prepare_corpus

        splits, _, _ = prepare_corpus(cfg, tokenizer, splits=(name,))
        return TokenizedSplit.from_dataset(splits[name], limit=limit)

    def sample(self, run: Run, n: int, seed: int, decoding: DecodingConfig) -> Output:
        from textvae.generation.outputs import DecodedTexts

        texts = run.sample(n, seed=seed, decoding=decoding)
        return DecodedTexts([{"index": i, "text": text} for i, text in enumerate(texts)], "{text}")

    def reconstruct(self, run: Run, file: Path, seed: int, decoding: DecodingConfig) -> Output:
        from textvae.generation.outputs import DecodedTexts, read_lines

        lines = read_lines(file)
        outputs = run.reconstruct(lines, seed=seed, decoding=decoding)
        records = [{"input": a, "reconstruction": b} for a, b in zip(lines, outputs, strict=True)]
        return DecodedTexts(records, "{reconstruction}")

    def interpolate(
        self, run: Run, first: str, second: str, steps: int, slerp: bool, seed: int, decoding: DecodingConfig
    ) -> Output:
        from textvae.generation.outputs import DecodedTexts, read_text_argument

        a, b = read_text_argument(first), read_text_argument(second)
        path = run.interpolate(a, b, steps, slerp, seed, decoding)
        return DecodedTexts([{"t": t, "text": text} for t, text in path], "{t:.2f}\t{text}")

    def report_generations(self, run: Run, options: GenerationOptions) -> Generations:
        from textvae.reports.generation import text_generations

        return text_generations(run, options)


class ImageModality(Modality):
    """Binary images in .npz files (`ImageDataConfig`), binarised as the section says; decodes images."""

    def training_splits(self, cfg: ImageDataConfig, tokenizer: TextTokenizer | None) -> TrainingSplits:
        train, valid = self._split(cfg, "train", cfg.limit_train), self._split(cfg, "valid")
        stats = {
            name: {"images": len(s), "shape": list(s.image_shape)} for name, s in (("train", train), ("valid", valid))
        }
        return train, valid, None, {**stats, **_provenance(Path(cfg.train).parent / "manifest.json")}

    def evaluation_split(
        self, cfg: ImageDataConfig, tokenizer: TextTokenizer | None, name: str, limit: int | None
    ) -> Any:
        return self._split(cfg, name, limit)

    @staticmethod
    def _split(cfg: ImageDataConfig, name: str, limit: int | None = None) -> ImageSplit:
        """Training images binarised as `train_binarization` says, the others once with the seed."""
        from textvae.data.images import load_image_split

        binarization = cfg.train_binarization if name == "train" else "fixed"
        return load_image_split(getattr(cfg, name), binarization, seed=cfg.binarization_seed, limit=limit)

    def sample(self, run: Run, n: int, seed: int, decoding: DecodingConfig) -> Output:
        from textvae.generation.outputs import GRID_COLUMNS, DecodedImages

        return DecodedImages(run.sample_images(n, seed), min(n, GRID_COLUMNS), run.directory)

    def reconstruct(self, run: Run, file: Path, seed: int, decoding: DecodingConfig) -> Output:
        """Each image of an .npz (`images`, uint8, 255 = ink; binarised with the recipe's seed) beside its decode."""
        from textvae.data.images import load_image_split
        from textvae.generation.images import reconstruct_images
        from textvae.generation.outputs import GRID_COLUMNS, MAX_GRID_IMAGES, DecodedImages

        data = load_image_split(file, "fixed", seed=run.recipe.data.binarization_seed, limit=MAX_GRID_IMAGES)
        images = reconstruct_images(run.model, data, list(range(len(data))), seed)
        return DecodedImages(images, 2 * min(len(data), GRID_COLUMNS), run.directory)

    def interpolate(
        self, run: Run, first: str, second: str, steps: int, slerp: bool, seed: int, decoding: DecodingConfig
    ) -> Output:
        """The row (test image `first`, the decodes, test image `second`); the arguments are indices."""
        from textvae.generation.outputs import DecodedImages

        a, b = (_image_index(value) for value in (first, second))
        return DecodedImages(run.interpolate_images(a, b, steps, slerp, seed=seed), steps + 2, run.directory)

    def report_generations(self, run: Run, options: GenerationOptions) -> Generations:
        from textvae.reports.generation import image_generations

        return image_generations(run, options)

    def image_split(self, run: Run, name: str, indices: list[int]) -> ImageSplit:
        data = run.split(name)
        bad = [i for i in indices if not 0 <= i < len(data)]
        if bad:
            raise TextVAEError(f"image index {bad[0]}: the {name} split has images 0..{len(data) - 1}")
        return data


def _image_index(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise TextVAEError(f"{value!r}: an image model interpolates between test images: give their indices") from None


def _provenance(manifest: Path) -> dict:
    """What `textvae data prepare` recorded about the data's source (e.g. "not the benchmark split")."""
    try:
        record = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {"dataset": record.get("dataset"), "source": record.get("source"), "warnings": record.get("warnings", [])}


TEXT = TextModality(
    "text", "documents", ("n_sentences", "n_tokens"), perplexity=True, text_metrics=True, tokenizer=True
)
IMAGES = ImageModality(
    "images", "images", ("n_images", "n_pixels"), perplexity=False, text_metrics=False, tokenizer=False
)
MODALITIES.register(TEXT.name, config=DataConfig)(TEXT)
MODALITIES.register(IMAGES.name, config=ImageDataConfig)(IMAGES)


def of_data(section: Any) -> Modality:
    """The modality whose `data:` section reads this section's (or mapping's) `format`."""
    return MODALITIES[data_modality(section)]


def of_metrics(metrics: Mapping[str, Any]) -> Modality:
    """The modality an evaluation's metrics (`eval.json`) were measured on, from their count keys (text without)."""
    found = (MODALITIES[name] for name in MODALITIES if MODALITIES[name].count_keys[0] in metrics)
    return next(found, TEXT)
