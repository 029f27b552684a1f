"""`train.report_to`: TensorBoard event files read back, MLflow's file store read back, wandb through a fake
module that records its calls; resumed runs report no step twice, other ranks nothing, a missing package is a
one-line error before the run directory exists."""

from __future__ import annotations

import json
import struct
import sys
import types
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_cli import read_metrics, tiny_recipe
from test_pretrain import StopAt

from textvae import api
from textvae.config import build_recipe
from textvae.errors import TextVAEError
from textvae.training import distributed, tracking
from textvae.training.checkpoint import has_progress

TIMING = {"tokens_per_s", "epoch_seconds", "train_tokens_per_s"}  # differ between a run and its resumed copy


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, write_corpus: Callable[..., Path]) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root / "train.txt", 300, seed=1)  # 10 steps an epoch
    write_corpus(root / "valid.txt", 40, seed=2)
    write_corpus(root / "test.txt", 30, seed=3)
    return root


def recipe(corpus: Path, report_to: list[str], **train: Any):
    changes = {"epochs": 2, "log_every": 2, "val_latent_metrics": False, "report_to": report_to, **train}
    return build_recipe(tiny_recipe(corpus, train=changes, eval={"iw_samples": 2}), "tiny")


def expected_scalars(run: Path) -> Counter:
    """(tag, step, value) of every numeric metrics.jsonl value, as the trackers should have them."""
    return Counter(
        (tag, record["step"], value) for record in read_metrics(run) for tag, value in tracking.scalars(record).items()
    )


def f32(value: float) -> float:
    """The value as TensorBoard stores it (float32)."""
    return struct.unpack("f", struct.pack("f", value))[0]


def events(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def logged_scalars(accumulator, prefix: str = "") -> Counter:
    tags = [t for t in accumulator.Tags()["scalars"] if t.startswith(prefix)]
    return Counter((t, e.step, e.value) for t in tags for e in accumulator.Scalars(t))


@pytest.fixture(scope="module")
def tensorboard_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return api.train(recipe(corpus, ["tensorboard"]), tmp_path_factory.mktemp("tb") / "run").directory


# -- TensorBoard ---------------------------------------------------------------------------------------------


def test_tensorboard_has_every_metrics_value_once_at_its_step(tensorboard_run: Path):
    expected = expected_scalars(tensorboard_run)
    assert {"step/loss", "step/lr", "epoch/val_elbo_nll", "epoch/improved"} <= {tag for tag, _, _ in expected}
    logged = logged_scalars(events(tensorboard_run))
    assert sorted((t, s) for t, s, _ in logged.elements()) == sorted((t, s) for t, s, _ in expected.elements())
    for (tag, step, value), count in expected.items():
        assert logged[(tag, step, f32(value))] == count == 1, (tag, step)


def test_tensorboard_holds_the_resolved_recipe_as_yaml(tensorboard_run: Path):
    accumulator = events(tensorboard_run)
    (text,) = accumulator.Tensors("recipe/text_summary")
    shown = text.tensor_proto.string_val[0].decode()
    saved = yaml.safe_load((tensorboard_run / "recipe.yaml").read_text())
    assert yaml.safe_load(shown.removeprefix("```yaml\n").removesuffix("```")) == saved
    assert saved["train"]["report_to"] == ["tensorboard"]


def test_evaluation_is_logged_at_the_final_step(tensorboard_run: Path):
    run = api.load_run(tensorboard_run)
    metrics = api.evaluate_run(run, "test")
    final = max(r["step"] for r in read_metrics(tensorboard_run))
    logged = logged_scalars(events(tensorboard_run), "eval/")
    expected = {(f"eval/test/{k.split('/', 1)[1]}", final) for k in tracking.scalars({**metrics, "kind": "eval"})}
    assert "iw_nll" in metrics and sorted((t, s) for t, s, _ in logged.elements()) == sorted(expected)
    assert logged[("eval/test/iw_nll", final, f32(metrics["iw_nll"]))] == 1
    training = logged_scalars(events(tensorboard_run), "step/")  # the training scalars still there once each
    assert sum(training.values()) == sum(
        1 for t, _, _ in expected_scalars(tensorboard_run).elements() if t[:5] == "step/"
    )


def test_a_resumed_run_reports_no_step_twice(corpus: Path, tmp_path: Path):
    run = tmp_path / "run"
    cfg = recipe(corpus, ["tensorboard"], checkpoints={"every_steps": 4})
    with pytest.raises(KeyboardInterrupt):
        api.train(cfg, run, callbacks=[StopAt(7)])  # step records 2, 4, 6 reported; the checkpoint is step 4's
    assert has_progress(run)
    assert (run / "tensorboard").is_dir()
    assert ("step/loss", 6) in {(t, s) for t, s, _ in logged_scalars(events(run))}
    api.resume(run)  # logs step 6 again into metrics.jsonl: not again into TensorBoard
    logged = logged_scalars(events(run))
    expected = expected_scalars(run)
    assert sorted((t, s) for t, s, _ in logged.elements()) == sorted((t, s) for t, s, _ in expected.elements())
    for tag, step, value in expected:
        if tag.split("/", 1)[1] not in TIMING:
            assert logged[(tag, step, f32(value))] == 1, (tag, step)
    assert len(events(run).Tensors("recipe/text_summary")) == 1


# -- errors and ranks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, module", [("tensorboard", "tensorboard"), ("wandb", "wandb"), ("mlflow", "mlflow")])
def test_a_missing_package_is_a_one_line_error_before_the_run_directory_exists(
    name: str, module: str, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    run = tmp_path / "run"
    with pytest.raises(TextVAEError) as err:
        api.train(recipe(corpus, [name]), run)
    assert str(err.value) == f"train.report_to: {name} needs `pip install textvae[{name}]`"
    assert not run.exists()


def test_an_unknown_tracker_is_a_recipe_error(corpus: Path):
    with pytest.raises(TextVAEError, match="report_to"):
        recipe(corpus, ["comet"])


def test_old_recipes_without_report_to_report_nowhere(corpus: Path):
    assert recipe(corpus, []).train.report_to == []
    assert build_recipe(tiny_recipe(corpus), "tiny").train.report_to == []
    assert tracking.for_recipe(build_recipe(tiny_recipe(corpus), "tiny"), corpus) is None


def test_other_ranks_report_nothing(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    run = tmp_path / "run"
    log = tracking.Trackers(["tensorboard"], run, {"name": "x"})
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    from textvae.training.metrics import MetricsLog

    metrics = MetricsLog(run / "metrics.jsonl", log)
    metrics.write({"kind": "step", "step": 1, "loss": 1.0})
    metrics.close()
    assert not run.exists()
    monkeypatch.setattr(distributed, "is_main", lambda: True)  # the same calls on rank 0 do report
    run.mkdir()
    metrics = MetricsLog(run / "metrics.jsonl", log)
    metrics.write({"kind": "step", "step": 1, "loss": 1.0})
    metrics.close()
    assert logged_scalars(events(run)) == Counter({("step/loss", 1, 1.0): 1})


def test_evaluating_on_another_rank_reports_nothing(
    tensorboard_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    calls: list[Any] = []
    monkeypatch.setattr(tracking, "log_evaluation", lambda *args: calls.append(args))
    run = api.load_run(tensorboard_run)
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    api.evaluate_run(run, "valid", limit=5)
    assert calls == []
    monkeypatch.setattr(distributed, "is_main", lambda: True)
    api.evaluate_run(run, "valid", limit=5)
    assert len(calls) == 1


# -- wandb (a fake module recording the calls) and MLflow (its file store, read back) ------------------------


class FakeWandbRun:
    def __init__(self, calls: list, **kwargs: Any) -> None:
        self.calls, self.summary = calls, {}
        calls.append(("init", kwargs))

    def log(self, values: dict, step: int) -> None:
        self.calls.append(("log", dict(values), step))

    def finish(self) -> None:
        self.calls.append(("finish", dict(self.summary)))


@pytest.fixture
def fake_wandb(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []
    module = types.ModuleType("wandb")
    module.init = lambda **kwargs: FakeWandbRun(calls, **kwargs)
    module.util = types.SimpleNamespace(generate_id=lambda: "abc123")
    monkeypatch.setitem(sys.modules, "wandb", module)
    return calls


def test_wandb_gets_the_recipe_every_value_once_and_the_evaluation(corpus: Path, tmp_path: Path, fake_wandb: list):
    run = api.train(recipe(corpus, ["wandb"]), tmp_path / "run")
    (kind, init), *logs, finish = fake_wandb
    assert kind == "init" and finish[0] == "finish"
    assert init["config"] == yaml.safe_load((run.directory / "recipe.yaml").read_text())
    assert init["id"] == "abc123" and init["resume"] == "allow" and Path(init["dir"]) == run.directory
    logged = Counter((tag, step, value) for _, values, step in logs for tag, value in values.items())
    assert logged == expected_scalars(run.directory)
    fake_wandb.clear()
    metrics = api.evaluate_run(run, "test")
    (_, init), (_, values, step), (_, summary) = fake_wandb
    assert init["id"] == "abc123", "the evaluation continues the training run"
    assert step == max(r["step"] for r in read_metrics(run.directory))
    assert values["eval/test/iw_nll"] == metrics["iw_nll"] == summary["eval/test/iw_nll"]


def test_mlflow_file_store_holds_every_value_and_the_recipe(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from mlflow.tracking import MlflowClient

    run = api.train(recipe(corpus, ["mlflow"]), tmp_path / "run")
    metrics = api.evaluate_run(run, "test")
    run_id = json.loads((run.directory / tracking.ID_FILE).read_text())["mlflow"]
    client = MlflowClient(tracking_uri=(run.directory / "mlruns").resolve().as_uri())
    expected = expected_scalars(run.directory)
    logged = Counter()
    for tag in {tag for tag, _, _ in expected} | {"eval/test/iw_nll"}:
        logged.update((tag, m.step, m.value) for m in client.get_metric_history(run_id, tag))
    final = max(r["step"] for r in read_metrics(run.directory))
    assert logged.pop(("eval/test/iw_nll", final, metrics["iw_nll"])) == 1
    assert logged == expected
    recipe_text = client.download_artifacts(run_id, "recipe.yaml", str(tmp_path))
    assert yaml.safe_load(Path(recipe_text).read_text()) == yaml.safe_load((run.directory / "recipe.yaml").read_text())
