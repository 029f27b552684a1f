"""One-line descriptions in words that both report formats show: a run's settings, its evaluation, the byline."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from textvae import __version__
from textvae.modality import of_metrics


def evaluation_description(metrics: dict | None) -> str:
    """The split, documents (or images) and importance samples of an evaluation, in words."""
    if not metrics:
        return "not evaluated (no eval.json)"
    parts = [f"{metrics.get('split', '?')} split"]
    modality = of_metrics(metrics)
    unit, count = modality.documents, metrics.get(modality.count_keys[0])
    if metrics.get("limit"):
        parts.append(f"first {metrics['limit']} {unit}")
    elif count:
        parts.append(f"{count} {unit}")
    if metrics.get("iw_samples"):
        parts.append(f"IW k = {metrics['iw_samples']}")
    return ", ".join(parts)


def probe_summary(probe: dict | None) -> str | None:
    """One line of a run's probe.json (`textvae probe`): accuracy by number of labelled documents."""
    if not probe:
        return None
    parts = [f"n = {n}: {a['mean']:.3f} ± {a['sd']:.3f}" for n, a in probe.get("accuracy", {}).items()]
    return (
        f"latent probe (logistic regression on E[z|x], labels from {probe.get('labels_from')}, "
        f"{probe.get('seeds')} seeds; majority label {probe.get('majority_accuracy', float('nan')):.3f}): "
        + "; ".join(parts)
    )


def update_rule_summary(log: Sequence[dict]) -> str | None:
    """Aggressive training: when it was switched off and the encoder steps per decoder step, per epoch."""
    epochs = [r for r in log if r.get("kind") == "epoch" and "train_inner_steps" in r]
    if not epochs:
        return None
    off = next((r["epoch"] for r in epochs if r.get("aggressive_switched_off")), None)
    inner = ", ".join(f"{r['train_inner_steps']:.1f}" for r in epochs)
    state = f"switched off after epoch {off}" if off is not None else "on for the whole run"
    return f"aggressive training {state}; encoder-only steps per decoder step, per epoch: {inner}"


def model_summary(model: dict) -> str:
    """One line on the architecture, posterior and prior of a recipe's `model:` section."""
    kind = model.get("type", "")
    if kind.startswith("transformer"):
        t = model.get("transformer", {})
        shape = (
            f"d_model {t.get('d_model')}, layers {t.get('encoder_layers')}/{t.get('decoder_layers')}, "
            f"z via {model.get('latent_injection')}"
        )
    elif kind == "hf_vae":
        shape = f"Hugging Face encoder/decoder, z via {model.get('latent_injection')}"
    elif kind in ("pixelcnn_vae", "pixelcnn_lm", "bernoulli_vae"):
        image = model.get("image", {})
        decoder = (
            f"MLP {image.get('bernoulli_hidden')}"
            if kind == "bernoulli_vae"
            else f"PixelCNN {len(image.get('pixelcnn_kernels', []))}x{image.get('pixelcnn_channels')} "
            f"kernels {image.get('pixelcnn_kernels')}"
        )
        encoder = "" if kind.endswith("_lm") else f"ResNet {image.get('encoder_channels')}, "
        shape = f"{encoder}{decoder}, images {image.get('image_shape')}"
    else:
        shape = f"embed {model.get('embed_dim')}, hidden {model.get('hidden_dim')}"
    if kind.endswith("_lm"):
        return f"model {kind} ({shape}, no latent)"
    prior = model.get("prior") or "standard_normal"
    prior = prior.get("type", "standard_normal") if isinstance(prior, dict) else prior
    posterior = model.get("posterior", "gaussian")
    return f"model {kind} ({shape}, latent {model.get('latent_dim')}, {posterior} q, {prior} prior)"


def objective_summary(objective: dict) -> str:
    """One line on the objective: its type and scalar settings (KL schedule by type)."""
    settings = [
        f"{k}={v}" for k, v in objective.items() if k != "type" and v is not None and not isinstance(v, dict | list)
    ]
    schedule = (objective.get("kl_schedule") or {}).get("type")
    if schedule:
        settings.append(f"KL schedule {schedule}")
    return f"objective {objective.get('type')} ({', '.join(settings)})"


def generated_at() -> str:
    """The report's byline: when and by which textvae version."""
    return f"generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by textvae {__version__}"
