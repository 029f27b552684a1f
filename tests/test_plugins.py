"""Methods registered from outside the package: the registries build the recipe schema, `--plugin FILE` imports a
method's file, a run directory records it, and the shipped IWAE example trains, saves, loads and evaluates."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import pytest
import torch

from tests.conftest import textvae, tiny_lstm_vae
from tests.test_cli import tiny_recipe
from textvae import api, plugins
from textvae.config import Recipe, build_recipe
from textvae.data.batching import TextBatch
from textvae.errors import TextVAEError
from textvae.registries import OBJECTIVES, UPDATES

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugins" / "iwae_objective.py"


@pytest.fixture(autouse=True)
def no_plugin_leaks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin imported in one test is not recorded in the run directories of later tests in this process."""
    monkeypatch.setattr(plugins, "_loaded_files", dict(plugins._loaded_files))
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, write_corpus) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root / "train.txt", 120, seed=1)
    write_corpus(root / "valid.txt", 24, seed=2)
    write_corpus(root / "test.txt", 16, seed=3)
    return root


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
