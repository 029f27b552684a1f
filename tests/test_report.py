"""The Markdown report over run directories."""

from __future__ import annotations

import json

import yaml

from textvae.reports.markdown import write_report


def _fake_run(directory, kl: float, with_mi: bool) -> None:
    directory.mkdir()
    (directory / "recipe.yaml").write_text(yaml.safe_dump({"name": directory.name, "model": {"type": "lstm_vae"}}))
    mi = {"val_mi": 0.5} if with_mi else {}
    epochs = [{"kind": "epoch", "epoch": e, "val_elbo_nll": 50.0 - e, "val_kl": kl, **mi} for e in (1, 2, 3)]
    (directory / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in epochs) + "\n")
    metrics = {
        "iw_nll": 44.6,
        "elbo_nll": 44.7,
        "rec": 43.5,
        "kl": kl,
        "mi": 0.5,
        "au": 2,
        "iw_ppl": 57.7,
        "ppl": 58.4,
        "split": "test",
        "iw_samples": 500,
        "mi_batch_size": 32,
        "kl_per_dim": [kl / 2, kl / 2],
        "recon_bleu": 12.3,
    }
    (directory / "eval.json").write_text(json.dumps(metrics))


def test_report_has_table_curves_and_runs(tmp_path):
    _fake_run(tmp_path / "lm", 0.0, with_mi=False)
    _fake_run(tmp_path / "vae", 1.2, with_mi=True)
    out = write_report({"lm": tmp_path / "lm", "vae": tmp_path / "vae"}, tmp_path / "out" / "report.md")
    text = out.read_text()
    assert "| vae | 44.60 | 44.70 | 43.50 | 1.20 | 0.50 | 2 | 57.70 | 58.40 | 12.30 |" in text
    assert "k = 500" in text and "batches of 32" in text
    assert (tmp_path / "out" / "report_curves.png").stat().st_size > 5000
    assert "KL per dimension: 0.60, 0.60" in text


def test_report_shows_aggressive_schedule_svi_column_and_posterior_plot(tmp_path):
    _fake_run(tmp_path / "vae", 1.2, with_mi=True)
    _fake_run(tmp_path / "agg", 2.0, with_mi=True)
    epochs = [
        {"kind": "epoch", "epoch": 1, "val_elbo_nll": 49.0, "train_inner_steps": 41.5, "aggressive": True},
        {
            "kind": "epoch",
            "epoch": 2,
            "val_elbo_nll": 48.0,
            "train_inner_steps": 12.25,
            "aggressive": False,
            "aggressive_switched_off": True,
        },
    ]
    (tmp_path / "agg" / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in epochs) + "\n")
    metrics = json.loads((tmp_path / "agg" / "eval.json").read_text())
    (tmp_path / "agg" / "eval.json").write_text(json.dumps({**metrics, "iw_nll_svi": 43.25}))
    (tmp_path / "agg" / "posterior_mean.png").write_bytes(b"\x89PNG fake")
    out = write_report({"vae": tmp_path / "vae", "agg": tmp_path / "agg"}, tmp_path / "report.md")
    text = out.read_text()
    assert "| run | iw_nll | elbo_nll | rec | kl | mi | au | iw_ppl | ppl | recon_bleu | iw_nll_svi |" in text
    assert "| agg | 44.60 | 44.70 | 43.50 | 2.00 | 0.50 | 2 | 57.70 | 58.40 | 12.30 | 43.25 |" in text
    assert "| vae | 44.60 | 44.70 | 43.50 | 1.20 | 0.50 | 2 | 57.70 | 58.40 | 12.30 | – |" in text
    assert "switched off after epoch 2; encoder-only steps per decoder step, per epoch: 41.5, 12.2" in text
    assert (tmp_path / "report_agg_posterior_mean.png").read_bytes() == b"\x89PNG fake"
    assert "![posterior means of agg](report_agg_posterior_mean.png)" in text
    assert "report_vae_posterior_mean.png" not in text
