"""The report's figures as PNG bytes, drawn once for both formats: training curves overlaid, latent usage per run.

matplotlib's object API only (no pyplot): no global backend or figure state, safe in a library.
"""

from __future__ import annotations

import io
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from textvae.reports.runs import RunSummary

DPI = 100
VARIANCE_FLOOR = 1e-6  # log-scale floor for the AU variances (a collapsed dimension has exactly 0)


@dataclass(frozen=True)
class Panel:
    """One training-curve panel: a key logged per step (thin line) and/or per epoch (markers)."""

    title: str
    step_key: str | None = None
    epoch_key: str | None = None
    log_scale: bool = False
    latent: bool = False  # about the latent: not drawn for language models
    from_zero: bool = False  # y axis includes 0, so that a collapsed latent looks collapsed
    integer: bool = False


PANELS = (
    Panel("loss: train objective; validation −ELBO", "loss", "val_elbo_nll"),
    Panel("reconstruction −log p(x|z)", "rec", "val_rec"),
    Panel("KL(q(z|x) ‖ p(z))", "kl", "val_kl", latent=True, from_zero=True),
    Panel("mutual information I(x; z)", epoch_key="val_mi", latent=True, from_zero=True),
    Panel("active units", epoch_key="val_au", latent=True, from_zero=True, integer=True),
    Panel("perplexity (log scale)", "ppl", "val_ppl", log_scale=True),
    Panel("KL weight", "kl_weight", latent=True, from_zero=True),
    Panel("aggressive: encoder steps per decoder step", "inner_steps", "train_inner_steps", from_zero=True),
)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _series(records: Sequence[dict], kind: str, key: str | None, x: str) -> tuple[list[float], list[float]]:
    """(x, y) of `key` over the records of `kind` ("step" or "epoch") that have both."""
    if key is None:
        return [], []
    points = [(r[x], r[key]) for r in records if r.get("kind") == kind and r.get(key) is not None and x in r]
    return ([p[0] for p in points], [p[1] for p in points]) if points else ([], [])


def _x_axis(logs: Mapping[str, Sequence[dict]]) -> str:
    """ "step" when every record has one (all current logs), else "epoch" (epoch records only)."""
    return "step" if all("step" in r for records in logs.values() for r in records) else "epoch"


def _finish_axes(ax, panel: Panel, x: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_title(panel.title, fontsize=9.5)
    ax.set_xlabel(f"training {x}", fontsize=8.5)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    if panel.log_scale:
        ax.set_yscale("log")
    if panel.from_zero:
        bottom, top = ax.get_ylim()
        ax.set_ylim(min(bottom, 0), max(top, 1 if panel.integer else 0.1))
    if panel.integer:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))


Line = tuple[str, str, list, list]  # run name, "step" or "epoch", x, y


def curve_panels(
    logs: Mapping[str, Sequence[dict]], without_latent: Collection[str] = ()
) -> tuple[str, list[tuple[Panel, list[Line]]]]:
    """The x axis ("step" or "epoch") and the panels some run has data for, with their lines.

    Runs named in `without_latent` (language models) are left out of the latent panels (KL, MI, AU, KL weight).
    """
    x = _x_axis(logs)
    kinds = ("step", "epoch") if x == "step" else ("epoch",)
    drawn = []
    for panel in PANELS:
        lines = []
        for name, records in logs.items():
            if panel.latent and name in without_latent:
                continue
            for kind in kinds:
                xs, ys = _series(records, kind, panel.step_key if kind == "step" else panel.epoch_key, x)
                if xs:
                    lines.append((name, kind, xs, ys))
        if lines:
            drawn.append((panel, lines))
    return x, drawn


def training_curves_png(logs: Mapping[str, Sequence[dict]], without_latent: Collection[str] = ()) -> bytes | None:
    """`curve_panels` drawn in a grid, one colour per run; None when no run logged anything."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    x, drawn = curve_panels(logs, without_latent)
    if not drawn:
        return None
    colours = {name: f"C{index % 10}" for index, name in enumerate(logs)}
    cols = min(4, len(drawn))
    rows = math.ceil(len(drawn) / cols)
    fig = Figure(figsize=(4.1 * cols, 2.9 * rows + 0.7), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (panel, lines) in zip(axes, drawn):
        for name, kind, xs, ys in lines:
            if kind == "step":  # a marker where a run logged too few steps for a visible line
                marker = "." if len(xs) < 3 else None
                ax.plot(xs, ys, color=colours[name], linewidth=0.9, alpha=0.75, marker=marker)
            else:
                ax.plot(xs, ys, color=colours[name], linewidth=1.4, linestyle="--", marker="o", markersize=4)
        _finish_axes(ax, panel, x)
    for ax in axes[len(drawn) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=colours[name], linewidth=2.5, label=name) for name in logs]
    if x == "step":
        handles += [
            Line2D([], [], color="0.3", linewidth=0.9, label="train, per logged step"),
            Line2D([], [], color="0.3", linestyle="--", marker="o", markersize=4, label="per epoch (val_ / train_)"),
        ]
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 8), fontsize=9, frameon=False)
    return _png(fig)


def latent_usage_png(name: str, metrics: dict) -> bytes | None:
    """KL per latent dimension and (when evaluated) Cov_x(E[z|x]) per dimension with the AU threshold."""
    kl = metrics.get("kl_per_dim")
    variances = metrics.get("au_variances")
    panels = [p for p in (kl, variances) if p]
    if not panels:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.4, 2.3 * len(panels)), layout="constrained")
    axes = list(fig.subplots(len(panels), 1, squeeze=False)[:, 0])
    if kl:
        ax = axes.pop(0)
        ax.bar(np.arange(1, len(kl) + 1), kl, color="C0")
        ax.set_title(f"KL per dimension (total {sum(kl):.2f} nats)", fontsize=9.5)
        ax.set_ylabel("nats", fontsize=8.5)
    if variances:
        ax = axes.pop(0)
        threshold = metrics.get("au_threshold", 0.01)
        values = np.maximum(np.asarray(variances, dtype=float), VARIANCE_FLOOR)
        active = values >= threshold
        ax.bar(np.arange(1, len(values) + 1), values, color=np.where(active, "C2", "0.65"))
        ax.axhline(threshold, color="C3", linestyle="--", linewidth=1, label=f"AU threshold {threshold:g}")
        ax.set_yscale("log")
        ax.set_ylim(bottom=VARIANCE_FLOOR)
        au = metrics.get("au", int(active.sum()))
        ax.set_title(f"Cov_x(E[z|x]) per dimension: AU = {au}", fontsize=9.5)
        ax.legend(fontsize=8, loc="upper right")
        if not (values > VARIANCE_FLOOR).any():
            ax.text(0.5, 0.4, "every dimension ≤ 1e-6", transform=ax.transAxes, ha="center", fontsize=9, color="0.4")
    for ax in fig.axes:
        ax.set_xlabel("latent dimension", fontsize=8.5)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3, axis="y")
    return _png(fig)


@dataclass
class ReportFigures:
    """PNG bytes: the training curves of all runs, and per run its latent usage and posterior-mean plot."""

    curves: bytes | None
    latent: dict[str, bytes]
    posterior: dict[str, bytes]


def build_figures(summaries: Sequence[RunSummary]) -> ReportFigures:
    """Every figure of a report, drawn once for both formats."""
    latent = {s.name: latent_usage_png(s.name, s.metrics or {}) for s in summaries}
    return ReportFigures(
        curves=training_curves_png({s.name: s.log for s in summaries}, [s.name for s in summaries if s.is_lm]),
        latent={name: png for name, png in latent.items() if png},
        posterior={s.name: s.posterior_plot for s in summaries if s.posterior_plot},
    )
