"""The self-contained HTML report (inline CSS, PNG data URIs, no scripts), written with its Markdown twin."""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path

from textvae.atomic import write_atomic
from textvae.errors import TextVAEError
from textvae.reports.descriptions import generated_at, probe_summary, update_rule_summary
from textvae.reports.figures import ReportFigures, build_figures
from textvae.reports.generation import SAMPLING, GenerationOptions, Generations, generate
from textvae.reports.markdown import write_markdown
from textvae.reports.runs import RunSummary, environment_items, read_run, run_names, slug
from textvae.reports.tables import METRIC_NOTE, Table, comparison_table, run_metrics_table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

CSS = """
body { margin: 0; background: #f6f7f9; color: #1f2328; font: 15px/1.5 system-ui, -apple-system, "Segoe UI",
  Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 20px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #d0d7de; }
h3 { font-size: 16px; margin: 22px 0 8px; }
h4 { font-size: 14.5px; margin: 16px 0 2px; }
.meta, .note { color: #57606a; font-size: 13px; }
.note { margin: 4px 0; }
.warn { margin: 6px 0; padding: 4px 10px; background: #fff8c5; border-left: 4px solid #d4a72c; font-size: 13.5px; }
nav { font-size: 14px; margin: 8px 0 0; }
nav a { margin-right: 14px; }
a { color: #0969da; text-decoration: none; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13.5px; }
th, td { border: 1px solid #d0d7de; padding: 4px 9px; vertical-align: top; }
th { background: #eef1f4; text-align: left; }
table:not(.text) td:first-child { white-space: nowrap; }
table.env td { overflow-wrap: anywhere; font-size: 12.5px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.published td { background: #fbf8ef; color: #57606a; font-style: italic; }
.scroll { overflow-x: auto; }
figure { margin: 10px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 13px; }
.run { border-top: 1px solid #d0d7de; }
.cols { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.cols > div { flex: 1 1 420px; min-width: 0; }
details { margin: 8px 0; }
summary { cursor: pointer; color: #0969da; }
pre { background: #f6f8fa; border: 1px solid #eaeef2; padding: 10px; font-size: 12.5px; overflow-x: auto;
  max-height: 480px; }
table.text { width: 100%; table-layout: fixed; }
table.text td, ol.gen li { white-space: pre-wrap; overflow-wrap: anywhere; font-size: 14px; }
table.text col.t { width: 64px; }
table.text td.t { text-align: right; color: #57606a; font-variant-numeric: tabular-nums; }
ol.gen li { margin: 4px 0; }
.gen-text { font-family: ui-serif, Georgia, serif; }
"""


NUMBER = ' class="num"'
PUBLISHED = ' class="published"'


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(png: bytes, alt: str, caption: str = "") -> str:
    caption_html = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{_data_uri(png)}" alt="{escape(alt)}" />{caption_html}</figure>'


def table_html(table: Table) -> str:
    """A <table>; number columns right-aligned, published rows muted."""

    def cells(row: Sequence[str], tag: str) -> str:
        attrs = ["" if i in table.text_columns else NUMBER for i in range(len(row))]
        return "".join(f"<{tag}{attr}>{escape(cell)}</{tag}>" for attr, cell in zip(attrs, row))

    flags = table.published or [False] * len(table.rows)
    body = "".join(f"<tr{PUBLISHED if flag else ''}>{cells(row, 'td')}</tr>" for row, flag in zip(table.rows, flags))
    notes = "".join(f'<p class="note">{escape(note)}</p>' for note in table.notes)
    head = f"<thead><tr>{cells(table.header, 'th')}</tr></thead>"
    return f'<div class="scroll"><table>{head}<tbody>{body}</tbody></table></div>{notes}'


def _generations_html(gen: Generations) -> str:
    parts = []
    if gen.samples:
        items = "".join(f'<li class="gen-text">{escape(text)}</li>' for text in gen.samples)
        parts.append(f'<h4>Samples</h4><p class="note">{SAMPLING[gen.latent]}</p><ol class="gen">{items}</ol>')
    if gen.reconstructions:
        rows = "".join(
            f'<tr><td class="gen-text">{escape(doc)}</td><td class="gen-text">{escape(rec)}</td></tr>'
            for doc, rec in gen.reconstructions
        )
        parts.append(
            f'<h4>Reconstructions</h4><p class="note">greedy decodes from E[z|x] of the first documents of the '
            f'{escape(gen.source or "")}</p><table class="text"><thead><tr><th>document</th><th>reconstruction</th>'
            f"</tr></thead><tbody>{rows}</tbody></table>"
        )
    if gen.interpolation:
        rows = "".join(
            f'<tr><td class="t">{t:.2f}</td><td class="gen-text">{escape(text)}</td></tr>'
            for t, text in gen.interpolation
        )
        parts.append(
            '<h4>Interpolation</h4><p class="note">greedy decodes along the line from E[z|first document] (t = 0) '
            'to E[z|second document] (t = 1)</p><table class="text"><colgroup><col class="t" /><col /></colgroup>'
            f'<thead><tr><th class="num">t</th><th>text</th></tr></thead><tbody>{rows}</tbody></table>'
        )
    parts += [f"<h4>{escape(g.title)}</h4>{_figure(g.png, g.title, g.caption)}" for g in gen.grids]
    parts += [f'<p class="warn">warning: {escape(text)}</p>' for text in gen.warnings]
    parts += [f'<p class="note">{escape(note)}</p>' for note in gen.notes]
    return f"<h3>Generated {'images' if gen.grids else 'text'}</h3>" + "".join(parts)


def _environment_html(summary: RunSummary) -> str:
    items = environment_items(summary.environment)
    if not items:
        return '<h3>Environment</h3><p class="note">not recorded (no environment.json: an older run)</p>'
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in items)
    return f'<h3>Environment</h3><table class="env">{rows}</table>'


def _run_html(summary: RunSummary, figs: ReportFigures) -> str:
    name = summary.name
    rule = update_rule_summary(summary.log)
    head = [
        f'<section class="run" id="run-{slug(name)}"><h2>{escape(name)}</h2>',
        f"<p><code>{escape(str(summary.directory))}</code> — {escape(summary.description)}</p>",
        f'<p class="note">{escape(summary.settings)}</p>',
    ]
    for line in (rule, probe_summary(summary.probe)):
        if line:
            head.append(f'<p class="note">{escape(line)}</p>')
    metrics = run_metrics_table(summary)
    metrics_html = "<h3>Final metrics</h3>" + (
        table_html(metrics) if metrics else '<p class="note">not evaluated (no eval.json)</p>'
    )
    latent = _figure(figs.latent[name], f"latent usage of {name}") if name in figs.latent else ""
    body = [f'<div class="cols"><div>{metrics_html}{_environment_html(summary)}</div><div>{latent}</div></div>']
    if name in figs.posterior and figs.posterior[name].startswith(PNG_SIGNATURE):
        caption = "He et al. 2019 Fig. 2: approximate (x) against model (y) posterior means, per training step"
        body.append(_figure(figs.posterior[name], f"posterior means of {name}", caption))
    body.append(f"<details><summary>recipe.yaml</summary><pre>{escape(summary.recipe_text)}</pre></details>")
    if summary.generations:
        body.append(_generations_html(summary.generations))
    return "".join(head + body) + "</section>"


def render_html(summaries: Sequence[RunSummary], figs: ReportFigures, title: str) -> str:
    """The whole page as one string."""
    nav = "".join(f'<a href="#run-{slug(s.name)}">{escape(s.name)}</a>' for s in summaries)
    parts = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">{escape(generated_at())} · {len(summaries)} run(s)</p>',
        f"<nav>Runs: {nav}</nav>",
        '<section id="comparison"><h2>Comparison (He et al. 2019, Table 1 style)</h2>',
        table_html(comparison_table(summaries)),
    ]
    measured = [s.metrics for s in summaries if s.metrics]
    if measured:
        note = METRIC_NOTE.format(
            mi_batch=measured[0].get("mi_batch_size"), au_threshold=measured[0].get("au_threshold", 0.01)
        )
        parts.append(f'<p class="note">{escape(note.replace("`", ""))}</p>')
    parts.append("</section>")
    if figs.curves:
        parts.append(
            f'<section id="curves"><h2>Training curves</h2>{_figure(figs.curves, "training curves")}</section>'
        )
    parts += [_run_html(s, figs) for s in summaries]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8" />'
        '<meta name="viewport" content="width=device-width, initial-scale=1" />'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(parts)}</main></body></html>\n"
    )


def write_html_report(
    run_dirs: Sequence[Path],
    out: Path,
    title: str = "textvae report",
    generation: GenerationOptions | None = None,
) -> tuple[Path, Path]:
    """Write `out` (HTML), its Markdown twin `out.md` and the twin's `<out stem>_*.png` files.

    Every run directory is read before anything is written; `generation` (None: skip) decodes samples,
    reconstructions and an interpolation from each run's model. Returns (HTML path, Markdown path).
    """
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise TextVAEError(f"{out}: the report's name must end in .html (its Markdown twin gets .md)")
    if not run_dirs:
        raise TextVAEError("no run directories given")
    summaries = [read_run(name, directory) for name, directory in run_names(run_dirs).items()]
    if generation is not None:
        for summary in summaries:
            summary.generations = generate(summary.directory, generation)
    figs = build_figures(summaries)
    html = render_html(summaries, figs, title).encode("utf-8")
    try:
        _write_together(out, lambda staged: _write_pages(summaries, figs, title, html, staged))
    except (OSError, TextVAEError) as err:
        cause = err if isinstance(err, OSError) else err.__cause__
        if not isinstance(cause, OSError):
            raise
        raise TextVAEError(f"{out}: cannot write the report ({cause.strerror or cause})") from err
    return out, out.with_suffix(".md")


def _write_pages(summaries: Sequence[RunSummary], figs: ReportFigures, title: str, html: bytes, out: Path) -> None:
    write_markdown(summaries, figs, out.with_suffix(".md"), title)
    write_atomic(out, html)


def _write_together(out: Path, write: Callable[[Path], None]) -> None:
    """Run `write(staged)` in a hidden folder beside `out`, then move every file it made next to `out`: a
    failed write (disk full, say) leaves no new file there and no old one replaced."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.stem}.") as staging:
        write(Path(staging) / out.name)
        for path in sorted(Path(staging).iterdir()):
            os.replace(path, out.with_name(path.name))
