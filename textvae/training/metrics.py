"""What training logs: metrics.jsonl, and the running sums behind its averages (over data-parallel processes)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from textvae.errors import TextVAEError
from textvae.training import distributed
from textvae.training.tracking import Trackers, reported_steps

SUMMED_TERMS = ("loss", "rec", "kl", "n")  # sums over a batch's documents; other terms are per-step values
TOKENS = "_n_tokens"


class MetricsLog:
    """Appends one JSON object per line to metrics.jsonl (flushed, so a crash loses nothing logged); only the
    main process of a data-parallel run writes."""

    def __init__(self, path: Path, trackers: Trackers | None = None) -> None:
        self.path = path
        self.trackers = trackers if distributed.is_main() else None
        # the last step of each record kind already sent to the trackers (a resumed run, cut back to its
        # checkpoint, logs those steps again: they go to metrics.jsonl only)
        self.reported = reported_steps(path) if self.trackers is not None else {}

    def write(self, record: dict) -> None:
        if not distributed.is_main():
            return
        try:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as err:
            raise TextVAEError(f"{self.path}: cannot write ({err.strerror or err})") from err
        kind, step = record.get("kind"), record.get("step", 0)
        if self.trackers is not None and step > self.reported.get(kind, -1):
            self.trackers.log(record)
            self.reported[kind] = step

    def close(self) -> None:
        """Flush and close the trackers (metrics.jsonl is closed after every line)."""
        if self.trackers is not None:
            self.trackers.close()

    def size(self) -> int:
        """Bytes written so far (a checkpoint remembers it)."""
        return self.path.stat().st_size if self.path.exists() else 0

    def truncate(self, size: int) -> None:
        """Drop what was logged after a checkpoint a resumed run goes back to."""
        if distributed.is_main() and self.path.exists() and self.size() > size:
            with self.path.open("r+b") as handle:
                handle.truncate(size)


def summed_over_processes(terms: dict[str, float], n_tokens: int) -> tuple[dict[str, float], int]:
    """A step's terms and predicted tokens over all data-parallel processes: per-document sums added up, the
    per-step values (KL weight, inner steps, SVI losses, ...) averaged."""
    world = distributed.world_size()
    if world == 1:
        return terms, n_tokens
    totals = distributed.reduce_sums({**terms, TOKENS: n_tokens})
    summed = {k: totals[k] if k in SUMMED_TERMS else totals[k] / world for k in terms}
    return summed, int(totals[TOKENS])


class RunningSums:
    """Sums per-batch terms; reports per-document means, a training perplexity, per-step means of the rest."""

    PER_DOCUMENT = (*SUMMED_TERMS, "kl_weight")  # reported per document (kl_weight: the latest value)

    def __init__(self, per_token: bool = True) -> None:
        self.per_token = per_token  # False for images: no perplexity over pixels
        self.sums: dict[str, float] = {}
        self.tokens = 0
        self.steps = 0
        self.started = time.perf_counter()

    def add(self, terms: dict[str, float], n_tokens: int) -> None:
        for key, value in terms.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.sums["kl_weight"] = terms.get("kl_weight", 0.0)
        self.tokens += n_tokens
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "tokens": self.tokens, "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums, self.tokens, self.steps = dict(state["sums"]), state["tokens"], state["steps"]

    def summary(self) -> dict[str, float]:
        n = max(self.sums.get("n", 0.0), 1.0)
        nll = self.sums.get("rec", 0.0) + self.sums.get("kl", 0.0)
        return {
            "loss": self.sums.get("loss", 0.0) / n,
            "rec": self.sums.get("rec", 0.0) / n,
            "kl": self.sums.get("kl", 0.0) / n,
            "kl_weight": self.sums.get("kl_weight", 0.0),
            **({"ppl": math.exp(min(nll / max(self.tokens, 1), 700.0))} if self.per_token else {}),
            # rule-specific terms (aggressive inner steps, SVI losses): means per update step
            **{k: v / max(self.steps, 1) for k, v in self.sums.items() if k not in self.PER_DOCUMENT},
        }
