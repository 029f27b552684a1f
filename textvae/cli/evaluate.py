"""`textvae eval RUN_DIR`: the standard protocol, a table, and RUN_DIR/eval.json."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console, Group, RenderableType
from rich.table import Table

from textvae.atomic import write_atomic
from textvae.cli.app import quiet_libraries, setup_logging
from textvae.modality import of_metrics

TABLE_KEYS = ("iw_nll", "elbo_nll", "rec", "kl", "iw_ppl", "ppl", "mi", "au", "recon_bleu")
SVI_KEYS = ("iw_nll_svi", "iw_ppl_svi")  # shown when some run has them (test-time SVI)
SAMPLE_COLUMNS = {  # shown with --text-samples: key -> column label
    "sample_distinct_1": "distinct-1",
    "sample_distinct_2": "distinct-2",
    "sample_self_bleu": "self-BLEU",
    "sample_unigram_kl": "unigram KL",
    "sample_mean_length": "length",
    "data_mean_length": "data length",
}


SHORT_LABELS = {  # column -> abbreviation, used (with a legend) when a table is wider than the terminal
    "iw_nll": "IW",
    "elbo_nll": "ELBO",
    "iw_ppl": "IW-P",
    "ppl": "P",
    "recon_bleu": "BLEU",
    "iw_nll_svi": "IW+S",
    "iw_ppl_svi": "IW-P+S",
    "sample_distinct_1": "d-1",
    "sample_distinct_2": "d-2",
    "sample_self_bleu": "sBLEU",
    "sample_unigram_kl": "uKL",
    "sample_mean_length": "len",
    "data_mean_length": "data len",
}


def metrics_table(rows: dict[str, dict], title: str = "", console: Console | None = None) -> RenderableType:
    """One row per run: IW-NLL, ELBO-NLL, KL, PPL, MI, AU (and IW-NLL and PPL with test-time SVI); image runs
    (NLL in nats per image) without PPL and BLEU. Given the `console`, a table wider than it gets abbreviated
    headers and a legend instead of cut ones."""
    keys = TABLE_KEYS + tuple(key for key in SVI_KEYS if any(key in m for m in rows.values()))
    if not any(of_metrics(m).text_metrics for m in rows.values()):  # image models: nats per image, no PPL or BLEU
        keys = tuple(key for key in keys if "ppl" not in key and key != "recon_bleu")
    return _fitted(rows, keys, title, {}, console)


def sample_table(rows: dict[str, dict], title: str = "", console: Console | None = None) -> RenderableType | None:
    """Sample quality per run (when measured): distinct-n, self-BLEU, unigram KL, mean lengths."""
    if not any("sample_distinct_1" in m for m in rows.values()):
        return None
    return _fitted(rows, tuple(SAMPLE_COLUMNS), title, SAMPLE_COLUMNS, console)


def _fitted(
    rows: dict[str, dict], keys: tuple[str, ...], title: str, labels: dict[str, str], console: Console | None
) -> RenderableType:
    """The table with full headers; where that is wider than the console, SHORT_LABELS with a legend; where even
    that is too wide, the columns folded into as many tables, one under the other, as it takes."""
    table = _table(rows, keys, title, labels)
    if console is None or _natural_width(console, table) <= console.width:
        return table
    short = {key: SHORT_LABELS.get(key, labels.get(key, key)) for key in keys}
    legend = "; ".join(f"{short[k]} = {labels.get(k, k)}" for k in keys if short[k] != labels.get(k, k))
    groups: list[list[str]] = [[]]
    for key in keys:  # greedily: each table takes the columns that still fit beside the run names
        if groups[-1] and _natural_width(console, _table(rows, (*groups[-1], key), title, short)) > console.width:
            groups.append([])
        groups[-1].append(key)
    tables = [_table(rows, tuple(group), title if i == 0 else "", short) for i, group in enumerate(groups)]
    tables[-1].caption = legend
    return tables[0] if len(tables) == 1 else Group(*tables)


def _natural_width(console: Console, table: Table) -> int:
    """The width `table` needs unshrunk (rich measures against the console's width otherwise)."""
    return console.measure(table, options=console.options.update_width(10_000)).maximum


def _table(rows: dict[str, dict], keys: tuple[str, ...], title: str, labels: dict[str, str] | None = None) -> Table:
    table = Table(title=title)
    table.add_column("run", overflow="fold")
    for key in keys:
        label = (labels or {}).get(key, key)
        table.add_column(label, justify="right", min_width=len(label), no_wrap=True)
    for name, m in rows.items():
        table.add_row(name, *(_fmt(m.get(key)) for key in keys))
    return table


def _fmt(value) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.2f}"


def write_json_atomic(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=1).encode("utf-8"))


def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory made by `textvae train`."),
    split: str = typer.Option("test", "--split", help="valid or test."),
    iw_samples: int | None = typer.Option(None, "--iw-samples", "-k", help="Importance samples (recipe default 500)."),
    limit: int | None = typer.Option(None, "--limit", help="Evaluate only the first N documents of the split."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
    output: Path | None = typer.Option(None, "--output", help="Where to write the JSON (default RUN_DIR/eval.json)."),
    svi_steps: int | None = typer.Option(
        None, "--svi-steps", help="Also report iw_nll_svi: IW-NLL with the posterior refined by N SVI steps."
    ),
    text_samples: int | None = typer.Option(
        None,
        "--text-samples",
        help="Also score N prior samples: distinct-1/2, self-BLEU, unigram KL to the split, mean lengths.",
    ),
    precision: str | None = typer.Option(
        None, "--precision", help="fp32 or bf16 (autocast; ~3x faster IW-NLL on AMX CPUs). Default: eval.precision."
    ),
) -> None:
    """Evaluate a trained run at β = 1: IW-NLL (k samples), ELBO-NLL, PPL of each, KL, MI, AU.

    `elbo_nll` is reconstruction + KL (one posterior sample); `iw_nll` is the importance-weighted
    bound with k samples (tighter, the number papers report as NLL). PPL = exp(total NLL /
    predicted tokens), counting </s> and not <s>. SA-VAE runs (or a recipe's eval.svi) also report
    `iw_nll_svi`: the same bound with the posterior refined by SVI first. `--text-samples N` adds the
    quality of N prior samples (distinct-n, self-BLEU, unigram KL to the split, mean lengths) and prints
    the sacrebleu signature of the reconstruction BLEU. Writes RUN_DIR/eval.json.
    """
    setup_logging()
    quiet_libraries()
    from textvae.api import evaluate_run, load_run
    from textvae.errors import TextVAEError

    if split not in ("valid", "test"):
        raise TextVAEError(f"--split {split!r}: expected valid or test")
    if iw_samples is not None and iw_samples < 1:
        raise TextVAEError("--iw-samples: must be at least 1")
    if svi_steps is not None and svi_steps < 1:
        raise TextVAEError("--svi-steps: must be at least 1")
    if text_samples is not None and text_samples < 2:
        raise TextVAEError("--text-samples: must be at least 2")
    if precision not in (None, "fp32", "bf16"):
        raise TextVAEError(f"--precision {precision!r}: expected fp32 or bf16")
    run = load_run(run_dir, device)
    target = output or run_dir / "eval.json"
    if not target.parent.is_dir():  # found out before the evaluation, not after it
        raise TextVAEError(f"--output {target}: {target.parent} is not a folder")
    metrics = evaluate_run(run, split, iw_samples, limit, svi_steps, text_samples, precision)
    console, rows = Console(), {run_dir.name: metrics}
    console.print(metrics_table(rows, f"{run_dir} · {split} · k={metrics.get('iw_samples', '-')}", console))
    samples = sample_table(rows, f"{metrics.get('sample_count')} prior samples vs the {split} split", console)
    if samples is not None:
        console.print(samples)
    if "recon_bleu_signature" in metrics:
        console.print(f"recon_bleu: sacrebleu {metrics['recon_bleu_signature']}", highlight=False)
    write_json_atomic(target, metrics)
