"""A reproduction suite: recipes (methods) × seeds, how to evaluate them, and the published rows to show beside.

A suite file (`recipes/suites/NAME.yaml`) names its recipes relative to itself:

```yaml
name: synthetic
description: He et al. 2019's synthetic data
seeds: [1, 2, 3]
baseline: vanilla            # the row wall times are relative to
reference: lm                # the exact-likelihood row NLL costs are measured against
collapse_check: [vanilla]    # rows whose collapse the report decides
ordering: [aggressive, lm, vanilla]   # the IW-NLL order the papers report (best first), checked
eval: {split: test, iw_samples: 500, limit: null}
smoke: [train.epochs=1, data.limit_train=64]   # --budget smoke: every run shrunk to seconds
published_source: He et al. 2019, Table 1
methods:
  - name: vanilla
    recipe: ../synthetic/vanilla.yaml
    seeds: 3                 # the first N of the suite's seeds (default: all)
    set: [train.epochs=20]   # overrides of this row's recipe
    smoke: []                # extra smoke overrides for this row (e.g. fewer inner steps)
    minutes: 12              # measured or estimated minutes per run (the ETA before any run finished)
    published: {nll: 40.8, kl: 0.0, mi: 0.0}
```
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from textvae.config import Recipe
from textvae.config.loading import (
    apply_overrides,
    build_recipe,
    format_validation_error,
    load_recipe_dict,
    read_yaml,
    resolve_recipe_paths,
)
from textvae.errors import TextVAEError

SUITES_FOLDER = Path(__file__).resolve().parents[2] / "recipes" / "suites"  # the repository's suites
Budget = Literal["full", "smoke"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PublishedRow(_Strict):
    """A published row's numbers (per document/sentence, at β = 1): only those the paper gives."""

    nll: float | None = None
    kl: float | None = None
    mi: float | None = None
    au: float | None = None
    ppl: float | None = None
    note: str | None = None


class SuiteEval(_Strict):
    """How every run of the suite is evaluated (the same for all rows)."""

    split: Literal["valid", "test"] = "test"
    iw_samples: int = Field(500, gt=0)
    limit: int | None = Field(None, gt=0)
    precision: Literal["fp32", "bf16"] | None = None  # None: each recipe's eval.precision


class Method(_Strict):
    """One row of the suite: a recipe trained once per seed."""

    name: str
    recipe: str
    label: str | None = None
    seeds: int | None = Field(None, gt=0)  # the first N of the suite's seeds (None: all)
    set: list[str] = []
    smoke: list[str] = []
    minutes: float | None = Field(None, gt=0)
    published: PublishedRow | None = None

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", name):
            raise ValueError("a method name is letters, digits and _ . + - (it names a folder)")
        return name

    @property
    def title(self) -> str:
        return self.label or self.name


class Suite(_Strict):
    name: str
    description: str = ""
    seeds: list[int] = Field([1, 2, 3], min_length=1)
    baseline: str | None = None
    reference: str | None = None
    eval: SuiteEval = SuiteEval()
    smoke_eval: SuiteEval = SuiteEval(limit=32, iw_samples=5)  # --budget smoke's evaluation
    set: list[str] = []  # overrides applied to every row
    smoke: list[str] = []
    published_source: str | None = None
    # what the report decides: rows whose collapse is checked, and the IW-NLL order expected (best first)
    collapse_check: list[str] = []
    ordering: list[str] = []
    methods: list[Method] = Field(min_length=1)
    folder: Path = Path(".")  # where the suite file is: recipes are relative to it (set on loading)

    @model_validator(mode="after")
    def _rows_known(self) -> Suite:
        names = [m.name for m in self.methods]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"method {twice[0]!r} is listed twice")
        named = [("baseline", self.baseline), ("reference", self.reference)]
        named += [("collapse_check", n) for n in self.collapse_check] + [("ordering", n) for n in self.ordering]
        for key, value in named:
            if value is not None and value not in names:
                raise ValueError(f"{key}: {value!r} is not one of the methods ({', '.join(names)})")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds are listed twice")
        return self

    def method(self, name: str) -> Method:
        for method in self.methods:
            if method.name == name:
                return method
        raise TextVAEError(f"suite {self.name}: no method {name!r} (it has {', '.join(self.names)})")

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.methods]

    def seeds_of(self, method: Method, seeds: list[int] | None = None) -> list[int]:
        """The seeds `method` runs with: the first `method.seeds` of `seeds` (default the suite's)."""
        seeds = seeds or self.seeds
        return seeds[: method.seeds] if method.seeds else list(seeds)

    def evaluation(self, budget: Budget) -> SuiteEval:
        return self.smoke_eval if budget == "smoke" else self.eval

    def recipe_path(self, method: Method) -> Path:
        return self.folder / method.recipe

    def overrides(self, method: Method, seed: int, budget: Budget, device: str | None = None) -> list[str]:
        """Every `--set` of one run, in order: the suite's, the row's, the budget's, the seed and the device."""
        items = [*self.set, *method.set]
        if budget == "smoke":
            items += [*self.smoke, *method.smoke]
        items.append(f"train.seed={seed}")
        if device:
            items.append(f"train.device={device}")
        return items

    def recipe(self, method: Method, seed: int, budget: Budget, device: str | None = None) -> Recipe:
        """The resolved recipe of one (method, seed) run; errors name the suite, the row and the key."""
        path = self.recipe_path(method)
        if not path.is_file():
            raise TextVAEError(f"suite {self.name}: method {method.name}: recipe {path} not found")
        data = resolve_recipe_paths(load_recipe_dict(path), path.parent)
        data = apply_overrides(data, self.overrides(method, seed, budget, device))
        return build_recipe(data, f"{path} (suite {self.name}, method {method.name})")


def find_suite(name_or_path: str | Path) -> Path:
    """A suite file: a path, or a name in ./recipes/suites/ or the repository's recipes/suites/."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise TextVAEError(f"{path}: suite file not found")
        return path
    for folder in (Path("recipes") / "suites", SUITES_FOLDER):
        candidate = folder / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in SUITES_FOLDER.glob("*.yaml"))
    raise TextVAEError(f"suite {name_or_path!r} not found (known suites: {', '.join(known) or 'none'})")


def load_suite(name_or_path: str | Path) -> Suite:
    """Read and validate a suite file; every error is one line naming the file and the key."""
    path = find_suite(name_or_path)
    data = read_yaml(path)
    try:
        suite = Suite.model_validate({**data, "folder": path.parent})
    except ValidationError as err:
        raise TextVAEError(format_validation_error(str(path), err)) from err
    for method in suite.methods:
        if not suite.recipe_path(method).is_file():
            raise TextVAEError(f"{path}: method {method.name}: recipe {suite.recipe_path(method)} not found")
    return suite


def parse_seeds(text: str | None) -> list[int] | None:
    """`--seeds 1,2,3` as a list (None when not given)."""
    if text is None:
        return None
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise TextVAEError(f"--seeds {text!r}: expected comma-separated integers, e.g. 1,2,3") from err
    if not seeds or len(set(seeds)) != len(seeds):
        raise TextVAEError(f"--seeds {text!r}: expected distinct comma-separated integers, e.g. 1,2,3")
    return seeds
