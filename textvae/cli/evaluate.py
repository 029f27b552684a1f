"""`textvae eval RUN_DIR`: the standard protocol, a table, and RUN_DIR/eval.json."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from textvae.atomic import write_atomic
from textvae.cli.app import quiet_libraries, setup_logging

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


def metrics_table(rows: dict[str, dict], title: str = "") -> Table:
    """One row per run: IW-NLL, ELBO-NLL, KL, PPL, MI, AU (and IW-NLL and PPL with test-time SVI); image runs
    (NLL in nats per image) without PPL and BLEU."""
    keys = TABLE_KEYS + tuple(key for key in SVI_KEYS if any(key in m for m in rows.values()))
    if all("n_images" in m for m in rows.values()):  # image models: nats per image, no PPL or BLEU
        keys = tuple(key for key in keys if "ppl" not in key and key != "recon_bleu")
    return _table(rows, keys, title)


def sample_table(rows: dict[str, dict], title: str = "") -> Table | None:
    """Sample quality per run (when measured): distinct-n, self-BLEU, unigram KL, mean lengths."""
    if not any("sample_distinct_1" in m for m in rows.values()):
        return None
    return _table(rows, tuple(SAMPLE_COLUMNS), title, SAMPLE_COLUMNS)


def _table(rows: dict[str, dict], keys: tuple[str, ...], title: str, labels: dict[str, str] | None = None) -> Table:
    table = Table(title=title)
    table.add_column("run")
    for key in keys:
        table.add_column((labels or {}).get(key, key), justify="right")
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
    console.print(metrics_table(rows, title=f"{run_dir} · {split} · k={metrics.get('iw_samples', '-')}"))
    samples = sample_table(rows, title=f"{metrics.get('sample_count')} prior samples vs the {split} split")
    if samples is not None:
        console.print(samples)
    if "recon_bleu_signature" in metrics:
        console.print(f"recon_bleu: sacrebleu {metrics['recon_bleu_signature']}", highlight=False)
    write_json_atomic(target, metrics)
