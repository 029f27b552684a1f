"""The README's main job, `textvae quickstart`, end to end (one epoch, few test documents)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import textvae


@pytest.mark.slow
def test_quickstart_trains_evaluates_and_reports(tmp_path: Path):
    out = tmp_path / "qs"
    proc = textvae("quickstart", "-o", out, "--epochs", "1", "--eval-docs", "40", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("lm", "vae", "vae-freebits"):
        metrics = json.loads((out / name / "eval.json").read_text())
        assert metrics["iw_samples"] == 500 and metrics["n_sentences"] == 40
        assert metrics["iw_nll"] <= metrics["elbo_nll"] + 1e-3
        assert name in proc.stdout
    free_bits = json.loads((out / "vae-freebits" / "eval.json").read_text())
    assert free_bits["kl"] > 0.5  # free bits (0.5 nats x 2 dimensions) keep the latent in use
    report = (out / "report.md").read_text()
    assert "| vae-freebits |" in report and (out / "report_curves.png").is_file()
    page = (out / "report.html").read_text()
    assert page.count('<img src="data:image/png;base64,') >= 2 and "Interpolation" in page
    again = textvae("quickstart", "-o", out, "--epochs", "1")
    assert again.returncode != 0 and "--overwrite" in again.stderr
