"""benchmarks/speed.py end to end on a tiny model and tiny synthetic Yahoo-like data (both implementations)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from conftest import WORDS, random_sentences, write_text

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"
RECIPE = """\
name: tiny
data: {train: unused.txt, valid: unused.txt, batch_size: 4, eval_batch_size: 8}
model: {type: lstm_vae, latent_dim: 3, embed_dim: 8, hidden_dim: 16}
eval: {iw_chunk: 10, mi_batch_size: 4}
"""
MEASURES = (
    "train_tokens_per_s",
    "full_step_seconds",
    "aggressive_inner_tokens_per_s",
    "inner_step_seconds",
    "iw_nll_sentences_per_s",
    "iw_seconds",
    "mi_au_seconds",
)
SAVAE = ("savae_tokens_per_s", "savae_step_seconds")  # measured on the first length range only (the default)
COUNTS = {"train_steps": 2, "inner_steps": 2, "iw_sentences": 2, "mi_au_sentences": 10}
RATIOS = ("aggressive_inner_vs_full_step", "train", "aggressive_inner", "iw", "mi_au")


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_speed_script_prints_every_figure_for_both_implementations(tmp_path: Path):
    write_text(tmp_path / "vocab.txt.gz", "\n".join(WORDS) + "\n")
    for i, split in enumerate(("valid", "test")):
        write_text(tmp_path / f"yahoo.{split}.txt.gz", "\n".join(random_sentences(30, seed=i, max_len=12)) + "\n")
    write_text(tmp_path / "recipe.yaml", RECIPE)
    argv = [str(tmp_path / "recipe.yaml"), "--data", str(tmp_path), "--baseline", "--device", "cpu"]
    argv += ["--train-steps", "2", "--inner-steps", "2", "--savae-steps", "1", "--svi-hvp", "finite_difference"]
    argv += ["--iw-sentences", "2", "--iw-samples", "20", "--mi-sentences", "10", "--lengths", "2-6,7-"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)  # stdout holds the JSON object only

    assert report["device"] == "cpu" and report["torch"] and positive(report["threads"])
    assert set(report["lengths"]) == {"2-6", "7-"}
    assert all(positive(report["lengths"][name]["documents"]) for name in ("2-6", "7-"))
    for impl in ("ours", "baseline"):
        result = report[impl]
        assert result["dtype"] == "fp32" and result["device"] == "cpu" and result["peak_cuda_mb"] is None
        assert positive(result["peak_rss_mb"]) and result["iw_samples"] == 20
        for name in ("2-6", "7-"):
            figures = result["lengths"][name]
            assert all(positive(figures[key]) for key in MEASURES), (impl, name, figures)
            assert {key: figures[key] for key in COUNTS} == COUNTS
        first, second = result["lengths"]["2-6"], result["lengths"]["7-"]
        assert all(positive(first[key]) for key in SAVAE) and first["savae_steps"] == 1
        assert all(second[key] is None for key in SAVAE) and second["savae_steps"] == 0
    assert report["ours"]["denormals_flushed"] and not report["baseline"]["denormals_flushed"]
    assert report["baseline"]["iw_chunk"] == 100
    for name in ("2-6", "7-"):
        assert all(positive(report["ratios"][name][key]) for key in RATIOS), report["ratios"][name]
    assert positive(report["ratios"]["2-6"]["savae"]) and report["ratios"]["7-"]["savae"] is None
