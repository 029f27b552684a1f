"""The Markdown report over run directories."""

from __future__ import annotations

import json

import yaml

from textvae.reports.summary import write_report


def _fake_run(directory, kl: float, with_mi: bool) -> None:
    directory.mkdir()
    (directory / "recipe.yaml").write_text(yaml.safe_dump({"name": directory.name, "model": {"type": "lstm_vae"}}))
    mi = {"val_mi": 0.5} if with_mi else {}
    epochs = [{"kind": "epoch", "epoch": e, "val_elbo_nll": 50.0 - e, "val_kl": kl, **mi} for e in (1, 2, 3)]
    (directory / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in epochs) + "\n")
    metrics = {"iw_nll": 44.6, "elbo_nll": 44.7, "kl": kl, "mi": 0.5, "au": 2, "iw_ppl": 57.7, "ppl": 58.4,
               "split": "test", "iw_samples": 500, "mi_batch_size": 32, "kl_per_dim": [kl / 2, kl / 2]}
    (directory / "eval.json").write_text(json.dumps(metrics))


def test_report_has_table_curves_and_runs(tmp_path):
    _fake_run(tmp_path / "lm", 0.0, with_mi=False)
    _fake_run(tmp_path / "vae", 1.2, with_mi=True)
    out = write_report({"lm": tmp_path / "lm", "vae": tmp_path / "vae"}, tmp_path / "out" / "report.md")
    text = out.read_text()
    assert "| vae | 44.60 | 44.70 | 1.20 | 0.50 | 2 | 57.70 | 58.40 |" in text
    assert "k = 500" in text and "batches of 32" in text
    assert (tmp_path / "out" / "report_curves.png").stat().st_size > 5000
    assert "KL per dimension: 0.60, 0.60" in text
