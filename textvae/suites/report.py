"""A suite's report: `report.md` and a self-contained `report.html` (the curves embedded), from results.json."""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path

from textvae.atomic import write_atomic
from textvae.reports.figures import training_curves_png
from textvae.reports.html import CSS
from textvae.suites.driver import run_dir_of
from textvae.suites.results import pm

COLUMNS = (  # key, header, digits
    ("iw_nll", "IW-NLL", 2),
    ("elbo_nll", "ELBO-NLL", 2),
    ("kl", "KL", 2),
    ("mi", "MI", 2),
    ("au", "AU", 1),
    ("iw_ppl", "IW-PPL", 1),
    ("recon_bleu", "recon BLEU", 2),
    ("train_minutes", "train min", 1),
)
PUBLISHED = {"iw_nll": "nll", "kl": "kl", "mi": "mi", "au": "au", "iw_ppl": "ppl"}
RUN_COLUMNS = ("iw_nll", "elbo_nll", "kl", "mi", "au", "recon_bleu", "epochs", "lr_decays", "train_minutes")


def table_rows(results: dict) -> list[tuple[str, list[str], bool]]:
    """(first cell, cells, is a published row) for the main table: each method, then its published numbers."""
    out = []
    for row in results["rows"]:
        seeds = f"{len(row['seeds'])}/{row['planned_seeds']}"
        cells = [seeds, *(pm(row, key, digits) for key, _, digits in COLUMNS)]
        ratio = row.get("train_ratio")
        cells.append(f"{ratio:.2f}" if ratio is not None else "–")
        out.append((row["label"], cells, False))
        published = row.get("published")
        if published:
            numbers = [_number(published.get(PUBLISHED[key])) if key in PUBLISHED else "" for key, _, _ in COLUMNS]
            note = published.get("note") or results.get("published_source") or "published"
            out.append((f"  {note}", ["", *numbers, ""], True))
    return out


def _number(value) -> str:
    return "" if value is None else f"{value:g}"


def header() -> list[str]:
    return ["method", "seeds", *(label for _, label, _ in COLUMNS), "× baseline"]


def run_rows(results: dict) -> list[list[str]]:
    out = []
    for row in results["rows"]:
        for seed, run in row.get("runs", {}).items():
            cells = [f"{row['label']} / {seed}"]
            for key in RUN_COLUMNS:
                value = run.get(key)
                cells.append("–" if value is None else (str(value) if isinstance(value, int) else f"{value:.2f}"))
            cells.append("yes" if run.get("stopped_early") else "no")
            out.append(cells)
    return out


RUN_HEADER = ["run / seed", *RUN_COLUMNS, "stopped early (lr decays used up)"]


def curves(results: dict, out_dir: Path) -> bytes | None:
    """Training curves of each method's first finished seed."""
    logs, without_latent = {}, []
    for row in results["rows"]:
        if not row["seeds"]:
            continue
        path = run_dir_of(out_dir, row["method"], row["seeds"][0]) / "metrics.jsonl"
        try:
            records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, ValueError):
            continue
        logs[row["label"]] = records
        if row.get("kl") is None:
            without_latent.append(row["label"])
    return training_curves_png(logs, without_latent) if logs else None


def _limit(ev: dict) -> str:
    return f" (first {ev['limit']} documents)" if ev.get("limit") else ""


def markdown(results: dict, command: str, curves_file: str | None) -> str:
    ev = results["eval"]
    lines = [f"# Reproduction suite `{results['suite']}`", "", results.get("description", "").strip(), ""]
    lines += [
        f"`{command}`",
        "",
        f"Evaluation: {ev['split']} split{_limit(ev)}, IW-NLL with k = {ev['iw_samples']} (nats per document, "
        "β = 1); mean ± sd over seeds; train min = training time without validation.",
        "",
        "## Findings",
        "",
        *[f"- {line}" for line in results.get("findings", [])],
        "",
        "## Results",
        "",
        "| " + " | ".join(header()) + " |",
        "|" + "---|" * len(header()),
    ]
    for first, cells, published in table_rows(results):
        cells = [f"*{c}*" if published and c else c for c in cells]
        lines.append("| " + " | ".join([f"*{first.strip()}*" if published else first, *cells]) + " |")
    lines += ["", "## Every run", "", "| " + " | ".join(RUN_HEADER) + " |", "|" + "---|" * len(RUN_HEADER)]
    lines += ["| " + " | ".join(cells) + " |" for cells in run_rows(results)]
    if curves_file:
        lines += ["", "## Training curves (first seed of each method)", "", f"![curves]({curves_file})"]
    return "\n".join(lines) + "\n"


def html(results: dict, command: str, curves_png: bytes | None) -> str:
    ev = results["eval"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>textvae reproduce {escape(results['suite'])}</title><style>{CSS}</style></head><body><main>",
        f"<h1>Reproduction suite <code>{escape(results['suite'])}</code></h1>",
        f"<p>{escape(results.get('description', ''))}</p><p class='meta'><code>{escape(command)}</code></p>",
        f"<p class='note'>Evaluation: {escape(ev['split'])} split{_limit(ev)}, IW-NLL with k = {ev['iw_samples']} "
        "(nats per document, β = 1); mean ± sd over seeds; train min = training time without validation.</p>",
        "<h2>Findings</h2><ul>",
        *[f"<li>{escape(line)}</li>" for line in results.get("findings", [])],
        "</ul><h2>Results</h2><div class='scroll'><table><tr>",
        *[f"<th>{escape(h)}</th>" for h in header()],
        "</tr>",
    ]
    for first, cells, published in table_rows(results):
        cls = " class='published'" if published else ""
        parts.append(
            f"<tr{cls}><td>{escape(first.strip())}</td>" + "".join(f"<td class='num'>{escape(c)}</td>" for c in cells)
        )
    parts.append("</table></div><h2>Every run</h2><div class='scroll'><table><tr>")
    parts += [f"<th>{escape(h)}</th>" for h in RUN_HEADER] + ["</tr>"]
    for cells in run_rows(results):
        parts.append(
            f"<tr><td>{escape(cells[0])}</td>" + "".join(f"<td class='num'>{escape(c)}</td>" for c in cells[1:])
        )
    parts.append("</table></div>")
    if curves_png:
        data = base64.b64encode(curves_png).decode()
        parts.append(
            "<h2>Training curves</h2><figure><img alt='training curves' "
            f"src='data:image/png;base64,{data}'><figcaption>First seed of each method.</figcaption></figure>"
        )
    parts.append("</main></body></html>")
    return "\n".join(parts)


def write_report(results: dict, out_dir: Path, command: str) -> None:
    """results.json, report.md (+ report_curves.png) and report.html in `out_dir`, each written atomically."""
    write_atomic(out_dir / "results.json", json.dumps(results, indent=1).encode())
    png = curves(results, out_dir)
    if png:
        write_atomic(out_dir / "report_curves.png", png)
    write_atomic(out_dir / "report.md", markdown(results, command, "report_curves.png" if png else None).encode())
    write_atomic(out_dir / "report.html", html(results, command, png).encode())
