"""`train.report_to`: experiment trackers (TensorBoard, Weights & Biases, MLflow) fed with every metrics.jsonl
record, the resolved recipe and `textvae eval`'s metrics. Each is an optional extra, imported only when a
recipe names it; only the main process of a data-parallel run reports (the caller checks)."""

from __future__ import annotations

import importlib
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from textvae.errors import TextVAEError

if TYPE_CHECKING:
    from textvae.config import Recipe

PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # report_to key -> module
ID_FILE = "tracking_ids.json"  # RUN_DIR: the wandb / mlflow run ids a resumed run or `textvae eval` reuses


def check_available(report_to: list[str]) -> None:
    """A one-line error for the first tracker whose package is not installed (before a run writes anything)."""
    for name in report_to:
        try:
            importlib.import_module(PACKAGES[name])
        except ImportError:
            raise TextVAEError(f"train.report_to: {name} needs `pip install textvae[{name}]`") from None


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric values of a metrics record, tagged by its kind (`step/loss`, `epoch/val_elbo_nll`); booleans
    count as 0/1, the `kind` and `step` keys are what tags and places them."""
    kind = record.get("kind", "eval")
    return {
        f"{kind}/{key}": float(value)
        for key, value in record.items()
        if key not in ("kind", "step") and isinstance(value, (int, float))
    }


def _ids(run_dir: Path) -> dict[str, str]:
    path = run_dir / ID_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _remember_id(run_dir: Path, name: str, run_id: str) -> None:
    ids = {**_ids(run_dir), name: run_id}
    (run_dir / ID_FILE).write_text(json.dumps(ids, indent=1), encoding="utf-8")


class TensorBoardTracker:
    """Scalars and the recipe (as YAML text) in RUN_DIR/tensorboard/; a resumed run appends a new event file."""

    def start(self, run_dir: Path, recipe: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        directory = run_dir / "tensorboard"
        started_before = directory.is_dir() and any(directory.glob("events.out.tfevents.*"))
        self.writer = SummaryWriter(log_dir=str(directory))
        if not started_before:
            self.writer.add_text("recipe", "```yaml\n" + yaml.safe_dump(recipe, sort_keys=False) + "```", 0)
            self.writer.flush()

    def log(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()  # a crash loses nothing that metrics.jsonl holds (a resumed run does not resend it)

    def log_final(self, values: dict[str, float], step: int) -> None:
        self.log(values, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A wandb run (WANDB_MODE, WANDB_PROJECT honoured; files in RUN_DIR/wandb/) continued by resume and eval."""

    def start(self, run_dir: Path, recipe: dict) -> None:
        import wandb

        run_id = _ids(run_dir).get("wandb") or wandb.util.generate_id()
        (run_dir / "wandb").mkdir(exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "textvae"),
            name=run_dir.name,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            config=recipe,
        )
        _remember_id(run_dir, "wandb", run_id)

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def log_final(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)
        self.run.summary.update(values)

    def close(self) -> None:
        self.run.finish()


class MlflowTracker:
    """An MLflow run in `file:RUN_DIR/mlruns` (or MLFLOW_TRACKING_URI), the recipe as a recipe.yaml artifact."""

    def start(self, run_dir: Path, recipe: dict) -> None:
        import mlflow

        self.mlflow = mlflow
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = (run_dir / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses its file store otherwise
        mlflow.set_tracking_uri(uri)
        run_id = _ids(run_dir).get("mlflow")
        if run_id is None:
            mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "textvae"))
        self.run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_dir.name)
        if run_id is None:
            _remember_id(run_dir, "mlflow", self.run.info.run_id)
            mlflow.log_text(yaml.safe_dump(recipe, sort_keys=False), "recipe.yaml")

    def log(self, values: dict[str, float], step: int) -> None:
        # MLflow metric names allow `/`; it rejects NaN nowhere, but +-inf only in some stores
        self.mlflow.log_metrics({k: v for k, v in values.items() if not math.isinf(v)}, step=step)

    def log_final(self, values: dict[str, float], step: int) -> None:
        self.log(values, step)

    def close(self) -> None:
        self.mlflow.end_run()


ADAPTERS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}


class Trackers:
    """The recipe's `train.report_to` trackers for one run directory, started on first use."""

    def __init__(self, report_to: list[str], run_dir: Path, recipe: dict) -> None:
        self.report_to, self.run_dir, self.recipe = list(report_to), Path(run_dir), recipe
        self.active: list[Any] | None = None

    def _started(self) -> list[Any]:
        if self.active is None:
            self.active = []
            for name in self.report_to:
                tracker = ADAPTERS[name]()
                tracker.start(self.run_dir, self.recipe)
                self.active.append(tracker)
        return self.active

    def log(self, record: dict[str, Any]) -> None:
        values = scalars(record)
        for tracker in self._started():
            tracker.log(values, int(record["step"]))

    def log_final(self, metrics: dict[str, Any], step: int) -> None:
        """Evaluation metrics as `eval/SPLIT/KEY` at `step` (the run's last update step)."""
        split = metrics.get("split", "test")
        values = {f"eval/{split}/{k.split('/', 1)[1]}": v for k, v in scalars({**metrics, "kind": "eval"}).items()}
        for tracker in self._started():
            tracker.log_final(values, step)

    def close(self) -> None:
        for tracker in self.active or []:
            tracker.close()
        self.active = None


def for_recipe(recipe: Recipe, run_dir: Path) -> Trackers | None:
    """The recipe's trackers (None without `train.report_to`)."""
    if not recipe.train.report_to:
        return None
    return Trackers(recipe.train.report_to, run_dir, recipe.model_dump(mode="json", by_alias=True))


def reported_steps(path: Path) -> dict[str, int]:
    """The last step of each record kind in a metrics.jsonl (a line cut short by a crash is skipped)."""
    last: dict[str, int] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                last[record["kind"]] = max(last.get(record["kind"], -1), int(record["step"]))
            except (ValueError, KeyError, TypeError):
                continue
    return last


def last_step(run_dir: Path) -> int:
    """The last update step metrics.jsonl records (0 for a run that logged nothing)."""
    return max(reported_steps(Path(run_dir) / "metrics.jsonl").values(), default=0)


def log_evaluation(recipe: Recipe, run_dir: Path, metrics: dict[str, Any]) -> None:
    """`textvae eval`'s metrics to the run's trackers, at the run's last step."""
    trackers = for_recipe(recipe, run_dir)
    if trackers is not None:
        try:
            trackers.log_final(metrics, last_step(run_dir))
        finally:
            trackers.close()
