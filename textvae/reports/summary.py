"""A Markdown report over one or more run directories: settings, metrics table, training curves."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

METRIC_COLUMNS = ("iw_nll", "elbo_nll", "rec", "kl", "mi", "au", "iw_ppl", "ppl", "recon_bleu")
SVI_COLUMNS = ("iw_nll_svi",)  # shown when some run was evaluated with test-time SVI
POSTERIOR_PLOT = "posterior_mean.png"  # written by train.posterior_mean_plot


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
    columns = METRIC_COLUMNS + tuple(c for c in SVI_COLUMNS if any(c in m for m in rows.values()))
    head = "| run | " + " | ".join(columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    lines = [head, rule]
    for name, metrics in rows.items():
        lines.append(f"| {name} | " + " | ".join(_cell(metrics.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def update_rule_summary(run_dir: Path) -> str | None:
    """Aggressive training: when it was switched off and the encoder steps per decoder step, per epoch."""
    epochs = [r for r in read_metrics_log(run_dir) if r.get("kind") == "epoch" and "train_inner_steps" in r]
    if not epochs:
        return None
    off = next((r["epoch"] for r in epochs if r.get("aggressive_switched_off")), None)
    inner = ", ".join(f"{r['train_inner_steps']:.1f}" for r in epochs)
    state = f"switched off after epoch {off}" if off is not None else "on for the whole run"
    return f"aggressive training {state}; encoder-only steps per decoder step, per epoch: {inner}"


def copy_posterior_plots(runs: dict[str, Path], out: Path) -> list[str]:
    """Copy each run's posterior-mean plot beside the report; Markdown image lines for them."""
    lines = []
    for name, run_dir in runs.items():
        source = run_dir / POSTERIOR_PLOT
        if source.is_file():
            target = out.with_name(f"{out.stem}_{Path(name).name}_{POSTERIOR_PLOT}")
            target.write_bytes(source.read_bytes())
            lines += [f"**{name}**", "", f"![posterior means of {name}]({target.name})", ""]
    return lines


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


def model_summary(model: dict) -> str:
    """One line on the architecture, posterior and prior of a recipe's `model:` section."""
    kind = model.get("type", "")
    if kind.startswith("transformer"):
        t = model.get("transformer", {})
        shape = (
            f"d_model {t.get('d_model')}, layers {t.get('encoder_layers')}/{t.get('decoder_layers')}, "
            f"z via {model.get('latent_injection')}"
        )
    elif kind == "hf_vae":
        shape = f"Hugging Face encoder/decoder, z via {model.get('latent_injection')}"
    else:
        shape = f"embed {model.get('embed_dim')}, hidden {model.get('hidden_dim')}"
    prior = (model.get("prior") or {}).get("type", "standard_normal")
    posterior = model.get("posterior", "gaussian")
    return f"model {kind} ({shape}, latent {model.get('latent_dim')}, {posterior} q, {prior} prior)"


def objective_summary(objective: dict) -> str:
    """One line on the objective: its type and scalar settings (KL schedule by type)."""
    settings = [f"{k}={v}" for k, v in objective.items() if k != "type" and not isinstance(v, dict | list)]
    schedule = (objective.get("kl_schedule") or {}).get("type")
    if schedule:
        settings.append(f"KL schedule {schedule}")
    return f"objective {objective.get('type')} ({', '.join(settings)})"


def _first_docs(metrics: dict) -> str:
    """The heading words for an evaluation limited to the first N documents of the split (else empty)."""
    return f", first {metrics['limit']} documents" if metrics.get("limit") else ""


def write_report(runs: dict[str, Path], out: Path, title: str = "textvae report") -> Path:
    """Write `out` (Markdown) and `<out stem>_curves.png` beside it; returns the Markdown path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    sections = [f"# {title}", ""]
    evals = {name: read_eval(d) for name, d in runs.items()}
    measured = {name: e for name, e in evals.items() if e}
    if measured:
        first = next(iter(measured.values()))
        sections += [
            f"## Evaluation ({first.get('split')} split{_first_docs(first)}, β = 1, IW-NLL with k = "
            f"{first.get('iw_samples')})",
            "",
            metrics_markdown(measured),
            "",
            "`iw_nll`: importance-weighted NLL per document (nats); `elbo_nll`: reconstruction + KL; `rec`: "
            "-log p(x|z), z ~ q(z|x) (the encoder's point for a deterministic encoder, where only `rec`, AU and "
            "BLEU exist); `recon_bleu`: corpus BLEU (sacrebleu) of greedy decodes from the posterior mean; "
            "PPL = exp(total NLL / predicted tokens, `</s>` counted); MI: He et al.'s estimator "
            f"(batches of {first.get('mi_batch_size')}); "
            f"AU: dimensions with Cov_x(E[z|x]) ≥ {first.get('au_threshold', 0.01)}.",
            "",
        ]
    curves = out.with_name(f"{out.stem}_curves.png")
    if plot_curves(runs, curves):
        sections += ["## Training curves", "", f"![training curves]({curves.name})", ""]
    plots = copy_posterior_plots(runs, out)
    if plots:
        sections += [
            "## Posterior mean space (He et al. 2019, Fig. 2)",
            "",
            "x: approximate posterior mean E_q[z|x] (encoder); y: model posterior mean E_p[z|x] (numerical "
            "integration of p(x|z)p(z) on a grid); one point per validation document; columns: training steps.",
            "",
            *plots,
        ]
    sections += ["## Runs", ""]
    for name, run_dir in runs.items():
        recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text()) if (run_dir / "recipe.yaml").is_file() else {}
        sections.append(
            f"- **{name}** (`{run_dir}`): {recipe.get('description') or recipe.get('name', '')} — "
            f"{model_summary(recipe.get('model', {}))}; {objective_summary(recipe.get('objective', {}))}"
        )
        rule = update_rule_summary(run_dir)
        if rule:
            sections.append(f"  - {rule}")
        kl_dims = (evals.get(name) or {}).get("kl_per_dim")
        if kl_dims:
            sections.append("  - KL per dimension: " + ", ".join(f"{v:.2f}" for v in kl_dims))
    out.write_text("\n".join(sections) + "\n", encoding="utf-8")
    return out
