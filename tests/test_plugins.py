"""Methods registered from outside the package: the registries build the recipe schema, `--plugin FILE` imports a
method's file, a run directory records it, and the shipped IWAE example trains, saves, loads and evaluates."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from tests.conftest import textvae, tiny_lstm_vae
from tests.test_cli import tiny_recipe
from tests.test_image_training import SIZE, write_images
from textvae import api, plugins
from textvae.config import Recipe, build_recipe, load_recipe
from textvae.data.batching import TextBatch
from textvae.errors import TextVAEError
from textvae.registries import ARCHITECTURES, OBJECTIVES, UPDATES

SPLITS = ("train", "valid", "test")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "plugins"
EXAMPLE = EXAMPLES / "iwae_objective.py"


@pytest.fixture(autouse=True)
def no_inherited_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test's `--plugin` files are not passed on to the subprocesses of later tests."""
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, write_splits) -> Path:
    return write_splits(tmp_path_factory.mktemp("corpus"), 120, 24, 16)


def quick(corpus: Path, **sections) -> dict:
    return tiny_recipe(corpus, train={"epochs": 1, "max_steps": 3, "val_latent_metrics": False}, **sections)


def test_an_unknown_method_names_the_known_ones_and_the_plugin_option(corpus: Path):
    with pytest.raises(TextVAEError) as err:
        build_recipe(quick(corpus, objective={"type": "iwea"}), "r.yaml")
    message = str(err.value)
    assert message.startswith("r.yaml: key 'objective': unknown objective 'iwea' (known: elbo, infovae")
    assert "--plugin FILE" in message and "\n" not in message


def test_a_registered_section_keeps_nested_key_names_in_errors(corpus: Path):
    with pytest.raises(TextVAEError, match=r"key 'update\.svi\.steps': Input should be greater than 0"):
        build_recipe(quick(corpus, update={"type": "savae", "svi": {"steps": 0}}), "r.yaml")


def test_each_method_checks_the_recipe_it_is_in(corpus: Path):
    with pytest.raises(TextVAEError, match="update.type savae refines a Gaussian posterior"):
        build_recipe(quick(corpus, model={"posterior": "deterministic"}, objective={"type": "wae_mmd"},
                           update={"type": "savae"}), "r.yaml")  # fmt: skip


# -- every registered objective with every registered update rule ----------------------------------------------


@pytest.mark.parametrize("objective,update", list(itertools.product(list(OBJECTIVES), list(UPDATES))))
def test_every_objective_trains_with_every_update_rule_saves_and_evaluates(corpus: Path, tmp_path: Path, objective,
                                                                           update):  # fmt: skip
    settings = {"type": update, **({"max_inner_steps": 3} if update == "aggressive" else {})}
    settings |= {"svi": {"steps": 2}} if update == "savae" else {}
    recipe = build_recipe(quick(corpus, objective={"type": objective}, update=settings), "tiny")
    run = api.train(recipe, tmp_path / "run")
    loaded = api.load_run(run.directory)
    assert type(loaded.recipe.objective) is type(recipe.objective) and loaded.recipe.update == recipe.update
    metrics = api.evaluate_run(loaded, limit=8, iw_samples=2)
    assert all(torch.isfinite(torch.tensor(float(metrics[k]))) for k in ("rec",) if k in metrics)
    assert metrics


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_every_architecture_trains_saves_loads_and_evaluates_from_its_example(corpus: Path, tmp_path: Path,
                                                                              architecture: str):  # fmt: skip
    section = ARCHITECTURES.config(architecture)
    recipe = quick(corpus)
    recipe["model"] = {"type": architecture, **section.example}
    if section.modality == "images":
        shape = section.example["image"]["image_shape"]
        assert shape == [1, SIZE, SIZE], "the test draws 8x8 images"
        root = write_images(tmp_path)
        recipe["data"] = {"format": "images", "batch_size": 20, **{s: str(root / f"{s}.npz") for s in SPLITS}}
    run = api.train(build_recipe(recipe, "tiny"), tmp_path / "run")
    config = json.loads((run.directory / "model" / "config.json").read_text())
    assert config["architecture"] == architecture
    assert set(section.model_fields) - {"type"} <= set(config)  # its own fields, no other architecture's
    assert not (ARCHITECTURES.section_keys() - set(section.model_fields)) & set(config)
    loaded = api.load_run(run.directory)
    assert type(loaded.recipe.model) is section and loaded.model.has_latent == section.has_latent
    metrics = api.evaluate_run(loaded, limit=8, iw_samples=2)
    assert math.isfinite(metrics["rec"] if "rec" in metrics else metrics["nll"])


def test_the_gru_architecture_example_trains_from_its_recipe_without_the_base_lstm_keys(corpus: Path,
                                                                                       tmp_path: Path):  # fmt: skip
    plugins.load_plugin_file(EXAMPLES / "gru_architecture.py")
    paths = [f"data.{split}={corpus / f'{split}.txt'}" for split in SPLITS]
    recipe = load_recipe(EXAMPLES / "gru.yaml", [*paths, "train.epochs=1", "train.max_steps=3"])
    model = recipe.model.model_dump()
    assert model["type"] == "gru_vae" and model["latent_dim"] == 2  # the base's latent size carries over
    assert (model["embed_dim"], model["hidden_dim"]) == (50, 50) and "dropout_in" not in model
    assert recipe.objective.kl_schedule.type == "linear"  # the rest of the base recipe is untouched
    run = api.train(recipe, tmp_path / "run")
    gru = EXAMPLES / "gru_architecture.py"
    record = [{"path": str(gru), "sha256": hashlib.sha256(gru.read_bytes()).hexdigest()}]
    assert json.loads((run.directory / "plugins.json").read_text()) == record
    lstm = api.train(build_recipe(quick(corpus), "tiny"), tmp_path / "lstm")
    assert not (lstm.directory / "plugins.json").exists()  # the plugin is loaded, but this recipe needs none
    loaded = api.load_run(run.directory)
    assert type(loaded.model.decoder).__name__ == "GRUDecoder"
    assert math.isfinite(api.evaluate_run(loaded, limit=8, iw_samples=2)["iw_nll"])
    assert len(loaded.sample(2, seed=0)) == 2


def test_the_csv_dataset_example_prepares_a_labelled_corpus_and_the_cli_names_the_plugin(tmp_path: Path):
    source = tmp_path / "source"
    source.mkdir()
    rows = [f'{"pos" if i % 2 else "neg"},"visit {i}: the food\nwas {"good" if i % 2 else "cold"}"' for i in range(20)]
    (source / "reviews.csv").write_text("label,text\n" + "\n".join(rows) + "\n")
    plugin = EXAMPLES / "csv_reviews_dataset.py"
    without = textvae("data", "prepare", "reviews-csv", "--from", source, "-o", tmp_path / "no")
    assert (
        without.returncode == 1 and "unknown dataset 'reviews-csv'" in without.stderr and "--plugin" in without.stderr
    )
    assert not (tmp_path / "no").exists()
    made = textvae("data", "prepare", "reviews-csv", "--from", source, "-o", tmp_path / "out", "--plugin", plugin)
    assert made.returncode == 0, made.stderr
    splits = {name: (tmp_path / "out" / f"{name}.txt").read_text().splitlines() for name in SPLITS}
    assert [len(lines) for lines in splits.values()] == [16, 2, 2]
    assert splits["train"][0] == "neg\tvisit 0: the food was cold"  # line breaks inside a text flattened
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    csv_sha = hashlib.sha256((source / "reviews.csv").read_bytes()).hexdigest()
    assert csv_sha in json.dumps(manifest)


# -- plugin files --------------------------------------------------------------------------------------------


def test_plugin_file_errors_are_one_line(tmp_path: Path):
    with pytest.raises(TextVAEError, match="file not found"):
        plugins.load_plugin_file(tmp_path / "missing.py")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(TextVAEError, match=r"a plugin is a Python file \(\.py\)"):
        plugins.load_plugin_file(tmp_path / "notes.txt")
    broken = tmp_path / "broken.py"
    broken.write_text("import math\n\nraise RuntimeError('no luck')\n")
    with pytest.raises(TextVAEError, match=r"broken\.py: line 3: RuntimeError: no luck"):
        plugins.load_plugin_file(broken)


@pytest.mark.slow
def test_the_iwae_plugin_example_trains_loads_and_evaluates_and_its_run_names_it(corpus: Path, tmp_path: Path,
                                                                                 write_yaml):  # fmt: skip
    recipe = write_yaml(tmp_path / "iwae.yaml", quick(corpus, objective={"type": "iwae", "samples": 3}))
    run = tmp_path / "run"
    without = textvae("train", recipe, "-o", run)
    assert without.returncode == 1 and "unknown objective 'iwae'" in without.stderr and not run.exists()
    trained = textvae("train", recipe, "-o", run, "--plugin", EXAMPLE)
    assert trained.returncode == 0, trained.stderr
    record = json.loads((run / "plugins.json").read_text())
    assert record == [{"path": str(EXAMPLE), "sha256": hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()}]
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(key.endswith("iwae_bound") for record in steps for key in record)  # its terms are logged
    missing = textvae("eval", run, "--iw-samples", "5")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert f"trained with plugin {EXAMPLE}" in missing.stderr and f"pass --plugin {EXAMPLE}" in missing.stderr
    evaluated = textvae("eval", run, "--plugin", EXAMPLE, "--iw-samples", "5", "--limit", "8")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads((run / "eval.json").read_text())
    assert metrics["iw_nll"] <= metrics["elbo_nll"] + 1e-6


def test_the_iwae_bound_is_the_one_sample_log_weight_at_k1_and_tightens_with_k():
    plugins.load_plugin_file(EXAMPLE)
    model = tiny_lstm_vae(vocab=7)
    batch = TextBatch(torch.tensor([[1, 4, 5, 6, 2], [1, 6, 3, 2, 0]]), torch.tensor([3, 2]), torch.arange(2))
    posterior = model.encode(batch.data, batch.lengths)

    def bound(k: int) -> torch.Tensor:
        return -OBJECTIVES["iwae"](OBJECTIVES.config("iwae")(samples=k), 1, 1).example_losses(
            model, batch, posterior, 0
        )

    with torch.no_grad():
        torch.manual_seed(0)
        one = bound(1)
        torch.manual_seed(0)
        z = posterior.rsample(1)
        log_weight = model.log_likelihood(batch.data, z) + model.prior.log_prob(z) - posterior.log_prob(z)
        assert torch.allclose(one, log_weight[:, 0], atol=1e-5)
        means = {k: torch.stack([bound(k) for _ in range(40)]).mean(0) for k in (1, 50)}
    assert (means[50] > means[1]).all()  # E[log mean of k weights] rises with k towards log p(x)


def test_recipe_type_is_unchanged_for_built_in_methods(corpus: Path):
    recipe = build_recipe(quick(corpus), "tiny")
    assert isinstance(recipe, Recipe) and recipe.objective.type == "elbo" and recipe.update.type == "joint"
    assert recipe.model_dump()["objective"]["kl_schedule"]["type"] == "constant"  # subclass fields are dumped
