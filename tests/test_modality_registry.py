"""Modalities in a registry: a plugin's modality is a `data.format` of the recipe, split loading goes through the
recipe's modality (the same splits as reading the files directly), and the generation commands, the report and
the probe ask the run's modality instead of checking for images."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, Literal

import numpy as np
import pytest
import torch

from textvae import api
from textvae.cli import generate, probe
from textvae.config import ModelSection, Recipe, Section, build_recipe, load_recipe
from textvae.data.batching import TokenizedSplit
from textvae.data.images import load_image_split, save_image_split
from textvae.data.splits import evaluation_split, training_splits
from textvae.data.text import prepare_corpus
from textvae.errors import TextVAEError
from textvae.generation.outputs import DecodedImages, DecodedTexts
from textvae.modality import IMAGES, TEXT, Modality, of_data
from textvae.registries import ARCHITECTURES, MODALITIES
from textvae.reports.generation import GenerationOptions, Generations
from textvae.reports.generation import generate as report_generations

# -- a third modality, registered as a plugin would --------------------------------------------------------


class PointsData(Section):
    """A plugin's `data:` section: points in a plane, one `x y` pair a line."""

    format: Literal["points", "points-tsv"]
    train: str
    valid: str
    test: str | None = None
    batch_size: int = 8
    eval_batch_size: int = 8


class PointsModel(ModelSection):
    type: Literal["points_vae"] = "points_vae"
    modality: ClassVar[str] = "points"


class PointsModality(Modality):
    """Loads points from text files; shows samples and reconstructions as text lines."""

    def training_splits(self, cfg: Any, tokenizer: Any) -> Any:
        return (
            self.evaluation_split(cfg, None, "train", None),
            self.evaluation_split(cfg, None, "valid", None),
            None,
            {},
        )

    def evaluation_split(self, cfg: Any, tokenizer: Any, name: str, limit: int | None) -> Any:
        lines = Path(getattr(cfg, name)).read_text().split("\n")
        return [tuple(map(float, line.split())) for line in lines if line][:limit]

    def sample(self, run: Any, n: int, seed: int, decoding: Any) -> DecodedTexts:
        return DecodedTexts([{"point": f"{i} {i}"} for i in range(n)], "{point}")

    def report_generations(self, run: Any, options: GenerationOptions) -> Generations:
        return Generations(notes=[f"{options.samples} points"])


POINTS = PointsModality("points", "points", ("n_points", "n_coordinates"), False, False, False)


@pytest.fixture
def points(monkeypatch: pytest.MonkeyPatch) -> PointsModality:
    """The points modality and a points model registered for one test (the registries as before afterwards)."""
    for registry, name, item, section in (
        (MODALITIES, "points", POINTS, PointsData),
        (ARCHITECTURES, "points_vae", None, PointsModel),
    ):
        assert name not in registry  # (and the built-in entries are loaded before the patch)
        monkeypatch.setitem(registry._items, name, item)
        monkeypatch.setitem(registry._configs, name, section)
    return POINTS


def points_recipe(root: Path, fmt: str = "points") -> dict[str, Any]:
    for name, text in (("train", "0 1\n2 3\n4 5\n"), ("valid", "6 7\n")):
        (root / f"{name}.txt").write_text(text)
    data = {"format": fmt, "train": str(root / "train.txt"), "valid": str(root / "valid.txt")}
    return {"data": data, "model": {"type": "points_vae", "latent_dim": 2}}


@pytest.mark.parametrize("fmt", ["points", "points-tsv"])
def test_a_registered_modality_reads_the_formats_its_section_declares(points, tmp_path: Path, fmt: str):
    recipe = Recipe.model_validate(points_recipe(tmp_path, fmt))
    assert type(recipe.data) is PointsData and recipe.data.format == fmt
    assert of_data(recipe.data) is points and of_data({"format": fmt}) is points
    train, valid, tokenizer, stats = training_splits(recipe)
    assert (train, valid, tokenizer, stats) == ([(0.0, 1.0), (2.0, 3.0), (4.0, 5.0)], [(6.0, 7.0)], None, {})
    assert evaluation_split(recipe, None, "train", 2) == [(0.0, 1.0), (2.0, 3.0)]
    with pytest.raises(TextVAEError, match="data.test: the recipe names no test file"):
        evaluation_split(recipe, None, "test", None)
    assert Recipe.model_validate(recipe.model_dump()).data == recipe.data


def test_a_text_model_on_a_plugin_format_is_refused_naming_the_format(points, tmp_path: Path):
    recipe = {**points_recipe(tmp_path), "model": {"type": "lstm_vae"}}
    with pytest.raises(TextVAEError, match="data.format points needs model.type points_vae"):
        build_recipe(recipe, "r.yaml")


def test_an_unknown_format_is_one_line_naming_data_format(points, tmp_path: Path):
    path = tmp_path / "r.yaml"
    path.write_text("data: {format: pointz, train: a.txt, valid: b.txt}\n")
    with pytest.raises(TextVAEError) as err:
        load_recipe(path)
    message = str(err.value)
    assert "\n" not in message and f"{path}: key 'data.format'" in message and "'pointz'" in message
    for known in ("images", "labeled", "points", "points-tsv", "text"):
        assert known in message


def test_the_built_in_modalities_read_their_formats():
    assert [MODALITIES.entry_by("format", fmt) for fmt in ("text", "labeled", "images")] == ["text", "text", "images"]
    assert of_data({"train": "a"}) is TEXT and of_data({"format": "images"}) is IMAGES
    assert MODALITIES.entry_by("format", "pointz") is None


# -- split loading: the same splits as reading the files directly -------------------------------------------


def test_text_splits_through_the_modality_are_the_corpus_splits(tmp_path: Path, write_splits):
    root = write_splits(tmp_path, 30, 10, 8)
    data = {"train": str(root / "train.txt"), "valid": str(root / "valid.txt"), "test": str(root / "test.txt")}
    recipe = Recipe.model_validate({"data": {**data, "cache_dir": str(tmp_path / "cache")}})
    train, valid, tokenizer, stats = training_splits(recipe)
    direct, built, direct_stats = prepare_corpus(recipe.data, None, splits=("train", "valid"))
    assert train.ids == TokenizedSplit.from_dataset(direct["train"]).ids
    assert valid.ids == TokenizedSplit.from_dataset(direct["valid"]).ids
    assert tokenizer.vocab_size == built.vocab_size and stats == {k: asdict(v) for k, v in direct_stats.items()}
    test = evaluation_split(recipe, tokenizer, "test", 5)
    assert test.ids == TEXT.evaluation_split(recipe.data, tokenizer, "test", 5).ids and len(test) == 5
    again = training_splits(recipe, tokenizer)
    assert again[2] is tokenizer and again[0].ids == train.ids


def test_image_splits_through_the_modality_are_the_npz_splits(tmp_path: Path):
    rng = np.random.default_rng(0)
    for name, n in (("train", 12), ("valid", 6), ("test", 6)):
        save_image_split(tmp_path / f"{name}.npz", rng.integers(0, 256, (n, 4, 4), dtype=np.uint8))
    manifest = {"dataset": "tiny", "source": "here", "warnings": ["not the benchmark"]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    data = {f"{name}": str(tmp_path / f"{name}.npz") for name in ("train", "valid", "test")}
    recipe = Recipe.model_validate(
        {
            "data": {"format": "images", **data, "train_binarization": "fixed", "binarization_seed": 3},
            "model": {"type": "bernoulli_vae", "latent_dim": 2},
        }
    )
    train, valid, tokenizer, stats = training_splits(recipe)
    assert tokenizer is None
    assert stats == {
        "train": {"images": 12, "shape": [1, 4, 4]},
        "valid": {"images": 6, "shape": [1, 4, 4]},
        **manifest,
    }
    for split, name in ((train, "train"), (valid, "valid")):
        assert split.fingerprint() == load_image_split(tmp_path / f"{name}.npz", "fixed", seed=3).fingerprint()
    test = evaluation_split(recipe, None, "test", 4)
    assert len(test) == 4 and torch.equal(
        test.images(range(4)), load_image_split(data["test"], "fixed", 3).images(range(4))
    )
    limited = recipe.model_copy(update={"data": recipe.data.model_copy(update={"limit_train": 5})})
    assert len(training_splits(limited)[0]) == 5


def test_the_image_index_checks_belong_to_the_image_modality(tmp_path: Path):
    save_image_split(tmp_path / "test.npz", np.zeros((3, 4, 4), dtype=np.uint8))
    data = {"format": "images", "train": "t.npz", "valid": "v.npz", "test": str(tmp_path / "test.npz")}
    recipe = Recipe.model_validate({"data": data, "model": {"type": "bernoulli_vae", "latent_dim": 2}})
    run = api.Run(tmp_path, recipe, model=None, tokenizer=None)
    with pytest.raises(TextVAEError, match=r"image index 3: the test split has images 0\.\.2"):
        run.reconstruct_images([0, 3])
    assert len(IMAGES.image_split(run, "test", [0, 2])) == 3
    text = api.Run(tmp_path, Recipe.model_validate({"data": {"train": "a", "valid": "b"}}), model=None, tokenizer=None)
    with pytest.raises(TextVAEError, match="a text model; use sample / reconstruct / interpolate"):
        text.interpolate_images(0, 1)


# -- generation, the report and the probe ask the run's modality --------------------------------------------


def stub_run(directory: Path, modality: Modality, fmt: str) -> SimpleNamespace:
    """What the commands read of a loaded run: its modality, recipe, model and decoding."""
    recipe = SimpleNamespace(data=SimpleNamespace(format=fmt), model=SimpleNamespace(type="points_vae"))
    return SimpleNamespace(
        directory=directory,
        modality=modality,
        recipe=recipe,
        model=SimpleNamespace(has_latent=True),
        decoding=lambda **fields: fields,
    )


@pytest.fixture
def loaded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, points) -> SimpleNamespace:
    """`textvae.api.load_run` gives a run of the points modality."""
    run = stub_run(tmp_path, points, "points")
    monkeypatch.setattr("textvae.api.load_run", lambda directory, device="cpu": run)
    return run


def command_options(**own: Any) -> dict[str, Any]:
    """The shared decoding options at their defaults, and a command's own."""
    return {**{name: default for name, (_, default) in generate.DECODING_OPTIONS.items()}, **own}


def test_the_cli_samples_through_the_runs_modality(loaded, tmp_path: Path, capsys):
    generate.sample(tmp_path, **command_options(n=3, jsonl=True, grid=None))
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [
        {"point": f"{i} {i}"} for i in range(3)
    ]


def test_the_report_asks_the_runs_modality_for_its_generations(loaded, tmp_path: Path):
    assert report_generations(tmp_path, GenerationOptions(samples=4)).notes == ["4 points"]


@pytest.mark.parametrize(
    ("command", "own", "message"),
    [
        (generate.transfer, {"texts": ["a"], "from_label": "x", "to_label": "y"}, "latent arithmetic here decodes"),
        (generate.analogy, {"a": "a", "b": "b", "c": "c"}, "latent arithmetic here decodes texts"),
    ],
)
def test_latent_arithmetic_needs_a_modality_that_decodes_text(loaded, tmp_path, command, own, message):
    with pytest.raises(TextVAEError, match=message):
        command(tmp_path, **command_options(**own))


def test_the_probe_needs_a_modality_that_reads_text(loaded, tmp_path: Path):
    with pytest.raises(TextVAEError, match="the probe reads the latent codes of a text VAE"):
        probe.probe(tmp_path, "train", "10", 1, "cpu", None)


def test_an_image_output_keeps_the_grid_rules(tmp_path: Path):
    output = DecodedImages(torch.zeros(2, 1, 4, 4), 2, tmp_path / "run")
    for grid, message in (
        (None, "run: an image model writes a picture: give --grid PATH.png"),
        (tmp_path / "g.jpg", r"the grid is a PNG file \(name it \*.png\)"),
        (tmp_path / "none" / "g.png", "does not exist"),
    ):
        with pytest.raises(TextVAEError, match=message):
            output.show(grid=grid)
    output.show(grid=tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes().startswith(b"\x89PNG")
