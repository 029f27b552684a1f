"""The Markdown report (also the HTML report's twin), its figures as PNG files beside it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from textvae.atomic import write_atomic
from textvae.reports.descriptions import evaluation_description, generated_at, probe_summary, update_rule_summary
from textvae.reports.figures import ReportFigures, build_figures
from textvae.reports.files import figure_files, grid_files
from textvae.reports.generation import SAMPLING, Generations
from textvae.reports.runs import RunSummary, environment_items, read_run
from textvae.reports.tables import METRIC_NOTE, Table, comparison_table, metrics_table, run_metrics_table


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    """A plain Markdown (GFM) table, number columns right-aligned."""
    rule = "|" + "".join("---|" if i in table.text_columns else "---:|" for i in range(len(table.header)))
    lines = ["| " + " | ".join(_md_escape(h) for h in table.header) + " |", rule]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def metrics_markdown(rows: dict[str, dict]) -> str:
    """Every metric of eval.json, one row per run."""
    return markdown_table(metrics_table(rows))


def _code(text: str) -> str:
    """Generated text as an inline code span: `<unk>` and `</s>` stay literal in every Markdown viewer."""
    ticks = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return f"{ticks} {text} {ticks}" if "`" in text else f"{ticks}{text}{ticks}"


def _generations_markdown(gen: Generations) -> list[str]:
    lines: list[str] = []
    if gen.samples:
        lines += [f"Samples ({SAMPLING[gen.latent]}):", ""]
        lines += [f"{i}. {_code(text)}" for i, text in enumerate(gen.samples, start=1)] + [""]
    if gen.reconstructions:
        lines += [f"Reconstructions (greedy from E[z|x]) of the first documents of the {gen.source}:", ""]
        for i, (doc, rec) in enumerate(gen.reconstructions, start=1):
            lines += [f"{i}. input: {_code(doc)}", f"   reconstruction: {_code(rec)}"]
        lines.append("")
    if gen.interpolation:
        lines += ["Interpolation between the first two documents (greedy, linear in E[z|x]):", ""]
        lines += [f"- t = {t:.2f}: {_code(text)}" for t, text in gen.interpolation] + [""]
    lines += [f"**warning:** {text}" for text in gen.warnings] + [f"*{note}*" for note in gen.notes]
    return lines + ([""] if gen.notes or gen.warnings else [])


def _run_markdown(s: RunSummary, files: dict[str, tuple[Path, bytes]]) -> list[str]:
    lines = [f"### {s.name}", "", f"`{s.directory}` — {s.description}", "", f"- {s.settings}"]
    for line in (update_rule_summary(s.log), probe_summary(s.probe)):
        if line:
            lines.append(f"- {line}")
    kl_dims = (s.metrics or {}).get("kl_per_dim")
    if kl_dims:
        lines.append("- KL per dimension: " + ", ".join(f"{v:.2f}" for v in kl_dims))
    env = environment_items(s.environment)
    lines.append("- environment: " + ("; ".join(f"{k}: {v}" for k, v in env) if env else "not recorded"))
    lines += [
        "",
        "<details><summary>recipe.yaml</summary>",
        "",
        "```yaml",
        s.recipe_text.rstrip(),
        "```",
        "",
        "</details>",
        "",
    ]
    table = run_metrics_table(s)
    if table:
        lines += [markdown_table(table), "", *(f"- {note}" for note in table.notes), ""]
    if f"latent:{s.name}" in files:
        lines += [f"![latent usage of {s.name}]({files[f'latent:{s.name}'][0].name})", ""]
    if s.generations:
        for grid in s.generations.grids:
            path = files[f"grid:{s.name}:{grid.title}"][0]
            lines += [f"**{grid.title}** ({grid.caption}):", "", f"![{grid.title} of {s.name}]({path.name})", ""]
        lines += _generations_markdown(s.generations)
    return lines


def write_markdown(summaries: Sequence[RunSummary], figs: ReportFigures, out: Path, title: str) -> Path:
    """Write `out` and its PNG files (`<out stem>_*.png`) beside it, each atomically; returns `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    files = figure_files(figs, out) | grid_files(summaries, out)
    sections = [f"# {title}", "", generated_at(), ""]
    sections += [
        "## Comparison (He et al. 2019, Table 1 style)",
        "",
        markdown_table(comp := comparison_table(summaries)),
        "",
    ]
    sections += [f"- {note}" for note in comp.notes] + [""]
    measured = {s.name: s.metrics for s in summaries if s.metrics}
    if measured:
        first = next(iter(measured.values()))
        settings = {evaluation_description(m) for m in measured.values()}
        scope = next(iter(settings)) if len(settings) == 1 else "settings differ per run, see the comparison"
        sections += [
            f"## All metrics ({scope}; β = 1, IW-NLL with k = {first.get('iw_samples')})",
            "",
            metrics_markdown(measured),
            "",
            METRIC_NOTE.format(mi_batch=first.get("mi_batch_size"), au_threshold=first.get("au_threshold", 0.01)),
            "",
        ]
    if "curves" in files:
        sections += ["## Training curves", "", f"![training curves]({files['curves'][0].name})", ""]
    posterior = [key for key in files if key.startswith("posterior:")]
    if posterior:
        sections += [
            "## Posterior mean space (He et al. 2019, Fig. 2)",
            "",
            "x: approximate posterior mean E_q[z|x] (encoder); y: model posterior mean E_p[z|x] (numerical "
            "integration of p(x|z)p(z) on a grid); one point per validation document; columns: training steps.",
            "",
        ]
        for key in posterior:
            name = key.split(":", 1)[1]
            sections += [f"**{name}**", "", f"![posterior means of {name}]({files[key][0].name})", ""]
    sections += ["## Runs", ""]
    for summary in summaries:
        sections += _run_markdown(summary, files)
    for path, png in files.values():
        write_atomic(path, png)
    write_atomic(out, ("\n".join(sections).rstrip() + "\n").encode("utf-8"))
    return out


def write_report(runs: dict[str, Path], out: Path, title: str = "textvae report") -> Path:
    """Write the Markdown report `out` over named run directories, figures as `<out stem>_*.png` beside it."""
    summaries = [read_run(name, directory) for name, directory in runs.items()]
    return write_markdown(summaries, build_figures(summaries), Path(out), title)
