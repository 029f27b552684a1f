"""A suite's results: each run's evaluation, mean ± sd per method over seeds, and what the table shows.

`results.json` holds `rows` (one per method: per-metric mean, sd and per-seed values, published numbers) and
`findings` (plain sentences on collapse, latent use and the expected NLL ordering, decided from the numbers).
Wall-clock fields are kept under keys ending in `_minutes`/`_ratio` so that two drives of the same suite can
be compared without them (`without_timing`).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from textvae.suites.driver import EVAL_FILE, FINAL_STATE, read_json, run_dir_of, selected_methods
from textvae.suites.suite import Budget, Method, Suite

METRICS = ("iw_nll", "elbo_nll", "kl", "mi", "au", "ppl", "iw_ppl", "recon_bleu")
COLLAPSED_MI = 0.1  # nats: an unused latent (AU 0) whose KL stays above this is held there by a KL target
TIMING_KEYS = ("train_minutes", "train_ratio")


@dataclass
class Stat:
    mean: float
    sd: float | None  # None with one seed
    values: list[float]

    @classmethod
    def of(cls, values: list[float]) -> Stat | None:
        values = [v for v in values if v is not None and math.isfinite(v)]
        if not values:
            return None
        sd = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), sd, values)

    def as_dict(self) -> dict:
        return {"mean": self.mean, "sd": self.sd, "values": self.values}


def run_result(run_dir: Path) -> dict | None:
    """One finished and evaluated run: its evaluation metrics, training minutes and how training ended."""
    metrics = read_json(run_dir / EVAL_FILE)
    state = read_json(run_dir / FINAL_STATE)
    if metrics is None or state is None:
        return None
    epochs = []
    try:
        for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record.get("kind") == "epoch":
                epochs.append(record)
    except (OSError, ValueError):
        pass
    out = {key: metrics.get(key) for key in METRICS if metrics.get(key) is not None}
    if not metrics.get("latent_dim"):  # a language model: its NLL is exact, it has no latent to measure
        out = {key: value for key, value in out.items() if key in ("iw_nll", "ppl", "iw_ppl")}
    out["train_minutes"] = sum(r.get("epoch_seconds", 0.0) for r in epochs) / 60
    out["epochs"] = state.get("epoch")
    out["stopped_early"] = bool(state.get("stopped_early"))
    out["lr_decays"] = state.get("decays")
    return out


def collect(
    suite: Suite, out: Path, seeds: list[int] | None = None, only: list[str] | None = None, budget: Budget = "full"
) -> dict:
    """results.json's content from the run directories under `out` (runs not finished yet are left out)."""
    rows = []
    for method in selected_methods(suite, only):
        runs = {seed: run_result(run_dir_of(out, method.name, seed)) for seed in suite.seeds_of(method, seeds)}
        rows.append(method_row(method, {s: r for s, r in runs.items() if r is not None}, len(runs)))
    baseline = next((r for r in rows if r["method"] == suite.baseline), None)
    base_minutes = (baseline or {}).get("train_minutes", {}) or {}
    for row in rows:
        minutes = row.get("train_minutes") or {}
        if base_minutes.get("mean") and minutes.get("mean") is not None:
            row["train_ratio"] = minutes["mean"] / base_minutes["mean"]
    results = {
        "suite": suite.name,
        "description": suite.description,
        "budget": budget,
        "eval": suite.evaluation(budget).model_dump(),
        "published_source": suite.published_source,
        "rows": rows,
    }
    results["findings"] = findings(suite, rows)
    return results


def method_row(method: Method, runs: dict[int, dict], planned: int) -> dict:
    row: dict = {"method": method.name, "label": method.title, "seeds": sorted(runs), "planned_seeds": planned}
    for key in (*METRICS, "train_minutes", "epochs"):
        stat = Stat.of([r[key] for r in runs.values() if r.get(key) is not None])
        if stat is not None:
            row[key] = stat.as_dict()
    row["runs"] = {str(seed): runs[seed] for seed in sorted(runs)}
    if method.published is not None:
        row["published"] = method.published.model_dump(exclude_none=True)
    return row


def without_timing(results: dict) -> dict:
    """`results` without wall-clock fields: what two drives of one suite must agree on exactly."""
    rows = []
    for row in results["rows"]:
        runs = {seed: _untimed(run) for seed, run in row.get("runs", {}).items()}
        rows.append({**_untimed(row), "runs": runs})
    findings = [line for line in results.get("findings", []) if "wall time" not in line]
    return {**results, "rows": rows, "findings": findings}


def _untimed(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING_KEYS}


# -- findings: what a reader should be able to decide from the table -------------------------------------


def _mean(row: dict | None, key: str) -> float | None:
    return ((row or {}).get(key) or {}).get("mean")


def _sd(row: dict | None, key: str) -> float:
    return ((row or {}).get(key) or {}).get("sd") or 0.0


def _nll(row: dict) -> float | None:
    return _mean(row, "iw_nll")


def pm(row: dict, key: str, digits: int = 2) -> str:
    """`mean ± sd` (or `mean` with one seed) of a row's metric."""
    mean = _mean(row, key)
    if mean is None:
        return "–"
    sd = (row.get(key) or {}).get("sd")
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")


def collapsed(row: dict) -> bool | None:
    """Whether every seed of the row has no active unit (AU 0: the posterior means do not vary with the
    document). KL is no evidence of use: free bits and Li et al.'s thresholds hold it at their target with AU 0;
    nor is a small MI estimate, which is ±0.2 nats of noise for a 32-d latent on 500 documents. None: no posterior
    measured (a language model)."""
    au = (row.get("au") or {}).get("values")
    if not au:
        return None
    return all(a == 0 for a in au)


def _kl_without_use(row: dict) -> bool:
    """An unused latent whose KL stays above COLLAPSED_MI in every seed (held there by a KL target)."""
    kl = (row.get("kl") or {}).get("values") or []
    return collapsed(row) is True and bool(kl) and min(kl) >= COLLAPSED_MI


def findings(suite: Suite, rows: list[dict]) -> list[str]:
    """Plain sentences, decided from the numbers: collapse, latent use and its NLL cost, the expected ordering."""
    by_name = {row["method"]: row for row in rows if row["seeds"]}
    lines = []
    for name in suite.collapse_check:
        row = by_name.get(name)
        if row is None:
            continue
        state = collapsed(row)
        if state is None:
            continue
        what = "collapses" if state else "does not collapse"
        lines.append(
            f"{row['label']} {what} at this scale: AU {pm(row, 'au', 1)}, MI {pm(row, 'mi')}, KL {pm(row, 'kl')} "
            f"over {len(row['seeds'])} seed(s)."
        )
    reference = by_name.get(suite.reference or "")
    used = [row for row in by_name.values() if collapsed(row) is False]
    for row in used:
        cost = ""
        if reference is not None and _nll(reference) is not None and _nll(row) is not None:
            delta = _nll(row) - _nll(reference)
            cost = f"; IW-NLL {delta:+.2f} nats relative to {reference['label']}"
        lines.append(f"{row['label']} keeps a used latent: MI {pm(row, 'mi')}, AU {pm(row, 'au', 1)}{cost}.")
    unused = [row["label"] for row in by_name.values() if collapsed(row) is True]
    if unused:
        lines.append(f"Unused latent (AU 0 in every seed): {', '.join(unused)}.")
    for row in by_name.values():
        if _kl_without_use(row):
            lines.append(
                f"{row['label']} holds KL {pm(row, 'kl')} with no active unit (AU 0, MI {pm(row, 'mi')}): "
                "the KL is spent on noise, not on information about the document."
            )
    order = [by_name[name] for name in suite.ordering if name in by_name and _nll(by_name[name]) is not None]
    if len(order) >= 2:
        lines.append(ordering_sentence(order))
        ahead = order[: next((i for i, row in enumerate(order) if row is reference), len(order))]
        kl = [f"{row['label']} KL {pm(row, 'kl')} ({_usage(row)})" for row in ahead]
        if kl and reference is not None:
            lines.append(f"Rows expected to beat {reference['label']} with KL > 0: " + "; ".join(kl) + ".")
    baseline = by_name.get(suite.baseline or "")
    timed = [row for row in by_name.values() if row.get("train_ratio") is not None and row is not baseline]
    if baseline is not None and timed:
        ratios = ", ".join(f"{row['label']} {row['train_ratio']:.2f}x" for row in timed)
        lines.append(f"Training wall time relative to {baseline['label']}: {ratios}.")
    return lines


def _usage(row: dict) -> str:
    return {True: "collapsed", False: "latent used", None: "no latent"}[collapsed(row)]


def ordering_sentence(order: list[dict]) -> str:
    """Whether IW-NLL follows the expected order pair by pair, within the seeds' spread."""
    expected = " ≤ ".join(row["label"] for row in order)
    verdicts = []
    for a, b in zip(order, order[1:]):
        delta = _nll(b) - _nll(a)
        spread = math.hypot(_sd(a, "iw_nll"), _sd(b, "iw_nll"))
        if delta > spread:
            verdicts.append(f"{a['label']} < {b['label']} by {delta:.2f} (holds)")
        elif delta >= -spread:
            verdicts.append(f"{a['label']} ≈ {b['label']} ({delta:+.2f}, within the spread {spread:.2f})")
        else:
            verdicts.append(f"{a['label']} > {b['label']} by {-delta:.2f} (reversed)")
    held = all("reversed" not in v for v in verdicts)
    return (
        f"Expected IW-NLL ordering {expected}: {'holds' if held else 'does not hold'} within the seeds' spread — "
        + "; ".join(verdicts)
        + "."
    )
