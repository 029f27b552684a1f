"""The tables both report formats show: the He et al. style comparison, per-run and all-run metrics."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from textvae.modality import IMAGES, of_metrics
from textvae.reports.descriptions import evaluation_description
from textvae.reports.reference import PublishedResult, dataset_name
from textvae.reports.runs import RunSummary

METRIC_COLUMNS = ("iw_nll", "elbo_nll", "rec", "kl", "mi", "au", "iw_ppl", "ppl", "recon_bleu")
SVI_COLUMNS = ("iw_nll_svi",)  # shown when some run was evaluated with test-time SVI
SAMPLE_COLUMNS = (  # shown when some run was evaluated with `textvae eval --text-samples`
    "sample_distinct_1",
    "sample_distinct_2",
    "sample_self_bleu",
    "sample_unigram_kl",
    "sample_mean_length",
    "data_mean_length",
)
OPTIONAL_COLUMNS = SVI_COLUMNS + SAMPLE_COLUMNS
# He et al. Table 1 columns: (header, eval.json key, PublishedResult field or None)
COMPARISON_COLUMNS = (
    ("NLL", "iw_nll", "nll"),
    ("KL", "kl", "kl"),
    ("MI", "mi", "mi"),
    ("AU", "au", "au"),
    ("PPL", "iw_ppl", "ppl"),
    ("recon BLEU", "recon_bleu", None),
)
LATENT_METRICS = ("kl", "mi", "au", "recon_bleu")
TEXT_ONLY_METRICS = ("iw_ppl", "ppl", "recon_bleu")
PUBLISHED_FIELD = {key: published for _, key, published in COMPARISON_COLUMNS if published}
METRIC_NOTE = (
    "`iw_nll`: importance-weighted NLL per document (nats); `elbo_nll`: reconstruction + KL; `rec`: "
    "-log p(x|z), z ~ q(z|x) (the encoder's point for a deterministic encoder, where only `rec`, AU and "
    "BLEU exist); `recon_bleu`: corpus BLEU (sacrebleu) of greedy decodes from the posterior mean; "
    "PPL = exp(total NLL / predicted tokens, `</s>` counted); MI: He et al.'s estimator "
    "(batches of {mi_batch}); AU: dimensions with Cov_x(E[z|x]) ≥ {au_threshold}."
)


@dataclass
class Table:
    """Header and string cells, shared by the HTML and Markdown renderers; `published` flags rows."""

    header: list[str]
    rows: list[list[str]]
    published: list[bool] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    text_columns: tuple[int, ...] = (0,)  # left-aligned; the others hold numbers


def _cell(value) -> str:
    if value is None:
        return "–"
    return str(value) if isinstance(value, int) else f"{value:.2f}"


def run_value(summary: RunSummary, key: str) -> float | int | None:
    """A metric of eval.json; None for the latent metrics of a language model (it has no latent)."""
    return None if summary.is_lm and key in LATENT_METRICS else (summary.metrics or {}).get(key)


def _published_rows(summaries: Iterable[RunSummary]) -> list[tuple[PublishedResult, str]]:
    """Every published row some run matched, with its comparability label, once each."""
    seen: dict[tuple[PublishedResult, str], None] = {}
    for summary in summaries:
        for match in summary.references:
            for row in match.rows:
                seen[(row, match.label)] = None
    return list(seen)


def images_only(metrics: Iterable[dict | None]) -> bool:
    """Whether every evaluated run is an image model (NLL per image; no PPL or BLEU to show)."""
    evaluated = [m for m in metrics if m]
    return bool(evaluated) and all(of_metrics(m) is IMAGES for m in evaluated)


def comparison_table(summaries: Sequence[RunSummary]) -> Table:
    """He et al. Table 1 style: one row per run, then the published rows the runs' recipes matched."""
    columns = COMPARISON_COLUMNS
    if images_only(s.metrics for s in summaries):
        columns = tuple(c for c in columns if c[1] not in TEXT_ONLY_METRICS)
    header = ["run", *(title for title, _, _ in columns), "evaluation"]
    rows = [
        [s.name, *(_cell(run_value(s, key)) for _, key, _ in columns)] + [evaluation_description(s.metrics)]
        for s in summaries
    ]
    published = _published_rows(summaries)
    rows += [
        [
            f"{row.model} · {dataset_name(row.dataset)}",
            *(_cell(getattr(row, attr)) if attr else "–" for _, _, attr in columns),
            f"{label} [{row.source}]",
        ]
        for row, label in published
    ]
    notes = [
        "NLL: IW-NLL per document (nats; per image for image models); PPL: from the IW-NLL (text only); "
        "recon BLEU: greedy decodes from E[z|x]."
    ]
    if published:
        notes.append("Published rows are matched by recipe name; --set overrides of a run are not checked.")
    flags = [False] * len(summaries) + [True] * len(published)
    return Table(header, rows, flags, notes, text_columns=(0, len(header) - 1))


def _published_cell(row: PublishedResult, key: str) -> str:
    return _cell(getattr(row, PUBLISHED_FIELD[key])) if key in PUBLISHED_FIELD else "–"


def run_metrics_table(summary: RunSummary) -> Table | None:
    """A run's eval.json metrics beside the published numbers its recipe matched (None: not evaluated)."""
    metrics = summary.metrics
    if not metrics:
        return None
    published = [(row, match) for match in summary.references for row in match.rows]
    header = ["metric", "this run", *(f"{match.short_label}: {row.model}" for row, match in published)]
    rows = [
        [key, _cell(run_value(summary, key)), *(_published_cell(row, key) for row, _ in published)]
        for key in METRIC_COLUMNS + OPTIONAL_COLUMNS
        if key in metrics
    ]
    notes = [f"this run: {evaluation_description(metrics)}"]
    notes += [f"{row.model}: {match.label} [{row.source}]" for row, match in published]
    return Table(header, rows, notes=notes)


def metrics_table(rows: dict[str, dict]) -> Table:
    """Every metric of eval.json, one row per run (SVI and sample-quality columns where some run has them)."""
    columns = METRIC_COLUMNS + tuple(c for c in OPTIONAL_COLUMNS if any(c in m for m in rows.values()))
    if images_only(rows.values()):
        columns = tuple(c for c in columns if c not in TEXT_ONLY_METRICS)
    return Table(["run", *columns], [[name, *(_cell(m.get(c)) for c in columns)] for name, m in rows.items()])
