"""A run directory read for a report: recipe, metrics log, evaluation, environment and posterior plot."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from textvae.errors import TextVAEError
from textvae.reports.descriptions import model_summary, objective_summary
from textvae.reports.generation import Generations
from textvae.reports.reference import ReferenceMatch, match_reference

logger = logging.getLogger(__name__)

POSTERIOR_PLOT = "posterior_mean.png"  # written by train.posterior_mean_plot


@dataclass
class RunSummary:
    """Everything a report shows about one run directory."""

    name: str
    directory: Path
    recipe: dict
    recipe_text: str
    environment: dict | None
    log: list[dict]
    metrics: dict | None
    references: list[ReferenceMatch]
    posterior_plot: bytes | None = None
    generations: Generations | None = None
    probe: dict | None = None  # probe.json (`textvae probe`)

    @property
    def description(self) -> str:
        return self.recipe.get("description") or self.recipe.get("name") or ""

    @property
    def is_lm(self) -> bool:
        """A language model: no latent, nothing latent to plot or decode from."""
        return str(self.recipe.get("model", {}).get("type", "")).endswith("_lm")

    @property
    def settings(self) -> str:
        """Model and objective in one line."""
        return f"{model_summary(self.recipe.get('model', {}))}; {objective_summary(self.recipe.get('objective', {}))}"


def read_metrics_log(run_dir: Path) -> list[dict]:
    """The records of metrics.jsonl; a line cut short by a crash (or a run still writing) is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning("%s:%d: not a JSON record, skipped", path, number)
    return records


def _read_json(path: Path) -> dict | None:
    """A JSON file's object (None: no such file); invalid JSON is a one-line error naming the file."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TextVAEError(f"{path}: not valid JSON ({err})") from err


def read_eval(run_dir: Path) -> dict | None:
    """eval.json of a run (None: not evaluated)."""
    return _read_json(Path(run_dir) / "eval.json")


def _data_warnings(directory: Path) -> list[str]:
    """Warnings `textvae data prepare` gave about the run's data (kept in data_stats.json at training)."""
    stats = _read_json(directory / "data_stats.json") or {}
    return list(stats.get("warnings") or [])


def read_run(name: str, directory: Path) -> RunSummary:
    """Read a run directory (recipe.yaml required; metrics, eval, environment and plots where present)."""
    directory = Path(directory)
    recipe_path = directory / "recipe.yaml"
    if not recipe_path.is_file():
        raise TextVAEError(f"{directory}: not a textvae run directory (recipe.yaml missing)")
    text = recipe_path.read_text(encoding="utf-8")
    try:
        recipe = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise TextVAEError(f"{recipe_path}: not valid YAML ({str(err).splitlines()[0]})") from err
    plot = directory / POSTERIOR_PLOT
    return RunSummary(
        name=name,
        directory=directory,
        recipe=recipe,
        recipe_text=text,
        environment=_read_json(directory / "environment.json"),
        log=read_metrics_log(directory),
        metrics=read_eval(directory),
        references=match_reference(recipe.get("name"), other_data=bool(_data_warnings(directory))),
        posterior_plot=plot.read_bytes() if plot.is_file() else None,
        probe=_read_json(directory / "probe.json"),
    )


def run_names(directories: Sequence[Path]) -> dict[str, Path]:
    """Report names: the directory's name, with its parent's where two runs would share one."""
    names: dict[str, Path] = {}
    for directory in directories:
        path = Path(directory)
        name = path.resolve().name if path.name in ("", ".", "..") else path.name
        if name in names:
            name = f"{path.resolve().parent.name}/{name}"
        base, index = name, 2
        while name in names:
            name, index = f"{base} ({index})", index + 1
        names[name] = path
    return names


def slug(name: str) -> str:
    """A file-name and HTML-id safe form of a run name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


def environment_items(environment: dict | None) -> list[tuple[str, str]]:
    """environment.json as (key, value) strings, in the file's order."""
    return [
        (key, "–" if v is None else v if isinstance(v, str) else json.dumps(v))
        for key, v in (environment or {}).items()
    ]
