"""Published numbers (transcribed from ../shared/REFERENCE.md) and which of them a recipe can be compared with.

A recipe is matched by its name, `<dataset>-<method>` as in `recipes/<dataset>/<method>.yaml`:
full-data Yahoo / Yelp recipes reproduce He et al.'s settings exactly; `yahoo-mini-*` recipes are
CPU-scaled, so the full-Yahoo numbers are shown but labelled as not comparable; texar's numbers come
from texar's own models and training, so they are labelled as anchors of a different setup.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

HE_SUBMITTED = "He et al. 2019, Tab. 1"
HE_CAMERA_READY = "He et al. 2019, camera-ready, 5 seeds"
HE_OMNIGLOT = "He et al. 2019, OMNIGLOT"
TEXAR = "texar vae_text example"


DATASET_NAMES = {"yahoo": "Yahoo", "yelp": "Yelp", "ptb": "PTB", "omniglot": "OMNIGLOT"}


def dataset_name(dataset: str) -> str:
    """How a dataset is written in the papers."""
    return DATASET_NAMES.get(dataset, dataset)


@dataclass(frozen=True)
class PublishedResult:
    """One published row: a model/method on a dataset; metrics not given are None."""

    dataset: str
    model: str  # the row's name in its source
    nll: float
    source: str
    kl: float | None = None
    mi: float | None = None
    au: int | None = None
    ppl: float | None = None


class Comparability(Enum):
    """How a run relates to the published rows it is shown beside."""

    SAME_SETTING = "published, same setting"
    SCALED = "not comparable (CPU-scaled recipe)"
    OTHER_DATA = "not comparable (the run's data is not the published benchmark)"
    ANCHOR = "published anchor, different setup (not a reproduction)"


@dataclass(frozen=True)
class ReferenceMatch:
    """The published rows for a recipe, and how far they can be compared."""

    rows: tuple[PublishedResult, ...]
    comparability: Comparability
    dataset: str

    @property
    def short_label(self) -> str:
        """A column header's prefix."""
        if self.comparability is Comparability.SCALED:
            return f"full {dataset_name(self.dataset)}, not comparable"
        if self.comparability is Comparability.OTHER_DATA:
            return f"{dataset_name(self.dataset)} benchmark, not comparable"
        return "published" if self.comparability is Comparability.SAME_SETTING else "anchor"

    @property
    def label(self) -> str:
        """The caption shown over the published column(s)."""
        if self.comparability in (Comparability.SCALED, Comparability.OTHER_DATA):
            return f"published, full {dataset_name(self.dataset)} — {self.comparability.value}"
        return self.comparability.value


# method (recipe file stem) -> (row name, NLL, KL, MI); He et al. Table 1.
_TABLE1 = {
    "yahoo": {
        "lm": ("LSTM-LM (exact)", 328.1, None, None),
        "vanilla": ("VAE", 328.8, 0.0, 0.0),
        "anneal": ("VAE + anneal", 328.6, 0.0, 0.0),
        "beta0.2": ("β-VAE β=0.2", 333.1, 18.7, 3.4),
        "beta0.4": ("β-VAE β=0.4", 328.5, 3.8, 2.2),
        "savae-anneal": ("SA-VAE + anneal", 327.4, 3.5, 1.9),
        "aggressive": ("Aggressive", 328.0, 5.4, 3.0),
        "aggressive-anneal": ("Aggressive + anneal", 326.6, 6.7, 3.2),
    },
    "yelp": {
        "lm": ("LSTM-LM (exact)", 357.3, None, None),
        "vanilla": ("VAE", 358.2, 0.0, 0.0),
        "anneal": ("VAE + anneal", 358.1, 0.0, 0.0),
        "beta0.2": ("β-VAE β=0.2", 360.4, 11.3, 3.3),
        "beta0.4": ("β-VAE β=0.4", 358.8, 4.0, 1.8),
        "savae-anneal": ("SA-VAE + anneal", 355.9, 2.3, 1.3),
        "aggressive": ("Aggressive", 357.0, 3.8, 2.6),
        "aggressive-anneal": ("Aggressive + anneal", 355.9, 3.7, 2.3),
    },
    "omniglot": {  # NLL (KL / MI) of the image models
        "lm": ("PixelCNN (exact)", 89.76, None, None),
        "vanilla": ("VAE", 89.41, 1.5, 1.4),
        "anneal": ("VAE + anneal", 89.20, 2.1, 1.9),
        "savae-anneal": ("SA-VAE + anneal", 89.01, 3.4, 2.6),
        "aggressive": ("Aggressive", 89.03, 2.5, 2.2),
    },
}
_SOURCE = {"yahoo": HE_SUBMITTED, "yelp": HE_SUBMITTED, "omniglot": HE_OMNIGLOT}

# dataset -> method -> rows of the same setting (He et al.)
SAME_SETTING: dict[str, dict[str, tuple[PublishedResult, ...]]] = {
    dataset: {
        method: (PublishedResult(dataset, model, nll, _SOURCE[dataset], kl, mi),)
        for method, (model, nll, kl, mi) in rows.items()
    }
    for dataset, rows in _TABLE1.items()
}
SAME_SETTING["yahoo"]["aggressive-anneal"] += (
    PublishedResult("yahoo", "Aggressive + anneal", 326.7, HE_CAMERA_READY, kl=5.7, mi=2.9, au=15),
)
SAME_SETTING["yelp"]["aggressive-anneal"] += (
    PublishedResult("yelp", "Aggressive + anneal", 355.9, HE_CAMERA_READY, kl=3.8, mi=2.4, au=11),
)

# dataset -> method -> anchors from a different setup (texar's own models and training, KL annealed)
_TEXAR = {
    "yahoo": {
        "lstm": PublishedResult("yahoo", "texar VAE, LSTM decoder", 337.36, TEXAR),
        "transformer": PublishedResult("yahoo", "texar VAE, transformer decoder", 326.41, TEXAR, ppl=59.56),
    },
    "ptb": {
        "lstm": PublishedResult("ptb", "texar VAE-LSTM", 102.10, TEXAR, ppl=105.48),
        "transformer": PublishedResult("ptb", "texar VAE-transformer", 101.48, TEXAR),
    },
}
_TEXAR_METHODS = {
    "vanilla": "lstm",
    "anneal": "lstm",
    "transformer": "transformer",
    "transformer-anneal": "transformer",
}
ANCHORS: dict[str, dict[str, tuple[PublishedResult, ...]]] = {
    dataset: {method: (rows[kind],) for method, kind in _TEXAR_METHODS.items()} for dataset, rows in _TEXAR.items()
}

# recipe-name prefix -> (published dataset, whether the recipe is a scaled-down version of it); longest first
DATASET_PREFIXES = (
    ("yahoo-mini", "yahoo", True),
    ("yahoo", "yahoo", False),
    ("yelp", "yelp", False),
    ("ptb", "ptb", False),
    ("omniglot-cpu", "omniglot", True),
    ("omniglot", "omniglot", False),
)


def match_reference(recipe_name: str | None, other_data: bool = False) -> list[ReferenceMatch]:
    """The published rows a recipe named `<dataset>-<method>` can be shown beside, by comparability.

    Same-setting rows (or, for a CPU-scaled recipe or a run whose data preparation warned that it is not
    the benchmark (`other_data`), the full-data rows labelled as not comparable) come first, then anchors
    from other setups; an empty list when nothing was published for it.
    """
    prefix, dataset, scaled = next(
        (entry for entry in DATASET_PREFIXES if recipe_name and recipe_name.startswith(entry[0] + "-")),
        (None, "", False),
    )
    if prefix is None:
        return []
    method = recipe_name[len(prefix) + 1 :]
    matches = []
    rows = SAME_SETTING.get(dataset, {}).get(method)
    if rows:
        comparability = Comparability.SCALED if scaled else Comparability.SAME_SETTING
        if other_data and not scaled:
            comparability = Comparability.OTHER_DATA
        matches.append(ReferenceMatch(rows, comparability, dataset))
    anchors = ANCHORS.get(dataset, {}).get(method)
    if anchors and not scaled:
        matches.append(ReferenceMatch(anchors, Comparability.ANCHOR, dataset))
    return matches
