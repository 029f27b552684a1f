"""A Markdown report over one or more run directories: settings, metrics table, training curves."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

METRIC_COLUMNS = ("iw_nll", "elbo_nll", "kl", "mi", "au", "iw_ppl", "ppl")


def read_metrics_log(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_eval(run_dir: Path) -> dict | None:
    path = run_dir / "eval.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _cell(value) -> str:
    if value is None:
        return "–"
    return str(value) if isinstance(value, int) else f"{value:.2f}"


def metrics_markdown(rows: dict[str, dict]) -> str:
    """He et al. Table 1 style: one row per run."""
    head = "| run | " + " | ".join(METRIC_COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(METRIC_COLUMNS)
    lines = [head, rule]
    for name, metrics in rows.items():
        lines.append(f"| {name} | " + " | ".join(_cell(metrics.get(c)) for c in METRIC_COLUMNS) + " |")
    return "\n".join(lines)


def plot_curves(runs: dict[str, Path], out: Path) -> bool:
    """Validation ELBO-NLL, KL and MI per epoch for every run, one panel each; False if nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("val_elbo_nll", "validation -ELBO (nats)"), ("val_kl", "validation KL"), ("val_mi", "validation MI"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    plotted = False
    for index, (name, run_dir) in enumerate(runs.items()):
        epochs = [r for r in read_metrics_log(run_dir) if r.get("kind") == "epoch"]
        for ax, (key, _) in zip(axes, panels):
            points = [(r["epoch"], r[key]) for r in epochs if key in r]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=name, color=f"C{index % 10}")
                plotted = True
    for ax, (_, title) in zip(axes, panels):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)  # one colour per run in every panel, also where a run lacks a metric
    fig.tight_layout()
    if plotted:
        fig.savefig(out, dpi=110)
    plt.close(fig)
    return plotted


def write_report(runs: dict[str, Path], out: Path, title: str = "textvae report") -> Path:
    """Write `out` (Markdown) and `<out stem>_curves.png` beside it; returns the Markdown path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    sections = [f"# {title}", ""]
    evals = {name: read_eval(d) for name, d in runs.items()}
    measured = {name: e for name, e in evals.items() if e}
    if measured:
        first = next(iter(measured.values()))
        sections += [
            f"## Evaluation ({first.get('split')} split, β = 1, IW-NLL with k = {first.get('iw_samples')})",
            "",
            metrics_markdown(measured),
            "",
            "`iw_nll`: importance-weighted NLL per document (nats); `elbo_nll`: reconstruction + KL; "
            "PPL = exp(total NLL / predicted tokens, `</s>` counted); MI: He et al.'s estimator "
            f"(batches of {first.get('mi_batch_size')}); "
            f"AU: dimensions with Cov_x(E[z|x]) ≥ {first.get('au_threshold', 0.01)}.",
            "",
        ]
    curves = out.with_name(f"{out.stem}_curves.png")
    if plot_curves(runs, curves):
        sections += ["## Training curves", "", f"![training curves]({curves.name})", ""]
    sections += ["## Runs", ""]
    for name, run_dir in runs.items():
        recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text()) if (run_dir / "recipe.yaml").is_file() else {}
        model = recipe.get("model", {})
        objective = recipe.get("objective", {})
        sections.append(
            f"- **{name}** (`{run_dir}`): {recipe.get('description') or recipe.get('name', '')} — model "
            f"{model.get('type')} (embed {model.get('embed_dim')}, hidden {model.get('hidden_dim')}, latent "
            f"{model.get('latent_dim')}), objective {objective.get('type')} β={objective.get('beta')}, KL schedule "
            f"{objective.get('kl_schedule', {}).get('type')}, free bits {objective.get('free_bits')}"
        )
        kl_dims = (evals.get(name) or {}).get("kl_per_dim")
        if kl_dims:
            sections.append("  - KL per dimension: " + ", ".join(f"{v:.2f}" for v in kl_dims))
    out.write_text("\n".join(sections) + "\n", encoding="utf-8")
    return out
