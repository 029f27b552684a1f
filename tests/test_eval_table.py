"""The eval table fits the terminal: abbreviated headers with a legend, then folded columns; never cut names."""

from __future__ import annotations

import pytest
from rich.console import Console

from textvae.cli.evaluate import TABLE_KEYS, metrics_table, sample_table

METRICS = {key: 123.45 for key in TABLE_KEYS} | {"au": 32}
SAMPLES = {
    "sample_distinct_1": 0.2,
    "sample_distinct_2": 0.6,
    "sample_self_bleu": 26.6,
    "sample_unigram_kl": 0.21,
    "sample_mean_length": 131.1,
    "data_mean_length": 87.1,
}


def shown(renderable, width: int) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize("width", [200, 80, 60, 40])
def test_no_header_or_number_is_cut(width: int):
    console = Console(width=width)
    text = shown(metrics_table({"yahoo-mini-aggressive-seed-1": METRICS}, "run · test · k=500", console), width)
    assert "…" not in text
    assert text.count("123.45") == len(TABLE_KEYS) - 1  # every value but AU, whole
    assert all(len(line) <= width for line in text.splitlines())
    if width >= 200:
        assert "elbo_nll" in text and " = " not in text  # full names, no legend needed
    else:
        assert "ELBO" in text and "ELBO = elbo_nll" in " ".join(text.split())  # abbreviation and its legend


def test_sample_table_abbreviates_too():
    text = shown(sample_table({"run": SAMPLES}, "samples", Console(width=50)), 50)
    assert "…" not in text and "sBLEU = self-BLEU" in " ".join(text.split())
