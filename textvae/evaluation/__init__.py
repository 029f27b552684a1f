"""The standard evaluation protocol (He et al. 2019), always at β = 1."""

from __future__ import annotations

from textvae.config import EvalConfig
from textvae.data.batching import TokenizedSplit, make_loader
from textvae.evaluation.latent import (
    active_units,
    count_active_units,
    encode_posteriors,
    grouped_mutual_information,
    has_kl_per_dim,
    kl_per_dim,
    mutual_information,
    posterior_kl_per_dim,
)
from textvae.evaluation.likelihood import elbo_nll, iw_nll
from textvae.evaluation.text import reconstruction_bleu, sample_diversity, sample_quality


def latent_metrics(model, split: TokenizedSplit, batch_size: int, cfg: EvalConfig) -> dict:
    """KL per dimension, MI (batches of `cfg.mi_batch_size` in file order) and AU of a split.

    A deterministic encoder has AU only (MI and KL need a posterior density); the KL per dimension is
    given for the standard-normal prior only.
    """
    if not model.has_latent:
        return {"mi": 0.0, "au": 0, "kl_per_dim": [], "au_variances": [], "mi_batch_size": cfg.mi_batch_size}
    ordered = make_loader(split, batch_size, shuffle=False)
    means, logvars = encode_posteriors(model, ordered)  # one encoder pass for AU, KL per dimension and MI
    au, variances = count_active_units(means, cfg.au_threshold)
    metrics = {"au": au, "au_threshold": cfg.au_threshold, "au_variances": [round(v, 6) for v in variances.tolist()]}
    if has_kl_per_dim(model):
        metrics["kl_per_dim"] = [round(v, 6) for v in posterior_kl_per_dim(means, logvars).tolist()]
    if model.stochastic:
        mi = grouped_mutual_information(means, logvars, cfg.mi_batch_size, seed=cfg.seed)
        metrics.update({"mi": mi, "mi_batch_size": cfg.mi_batch_size})
    return metrics


def evaluate(model, split: TokenizedSplit, batch_size: int, cfg: EvalConfig, iw: bool = True, tokenizer=None) -> dict:
    """elbo_nll, iw_nll, ppl, iw_ppl, kl, mi, au and the counts behind them, as one flat dict.

    For images (an `ImageSplit`) the NLLs are nats per image, with no PPL, and the counts are n_images, n_pixels.

    With `cfg.svi` set (and a latent), also iw_nll_svi and iw_ppl_svi: IW with the SVI-refined posterior.
    With a tokenizer (and `cfg.recon_bleu`), also the reconstruction BLEU of greedy decodes from E[z|x];
    with a tokenizer and `cfg.text_samples` > 0, also the quality of that many prior samples.
    """
    loader = make_loader(split, batch_size, shuffle=False)
    metrics = elbo_nll(model, loader, seed=cfg.seed)
    if iw and (model.stochastic or not model.has_latent):  # no importance weights without a density
        metrics.update(iw_nll(model, loader, k=cfg.iw_samples, chunk=cfg.iw_chunk, seed=cfg.seed))
        if cfg.svi is not None and model.has_latent:
            metrics.update(iw_nll(model, loader, k=cfg.iw_samples, chunk=cfg.iw_chunk, seed=cfg.seed, refine=cfg.svi))
    metrics.update(latent_metrics(model, split, batch_size, cfg))
    if tokenizer is not None and cfg.recon_bleu and model.has_latent:
        metrics.update(reconstruction_bleu(model, split, tokenizer, batch_size, max_length=cfg.recon_max_length))
    if tokenizer is not None and cfg.text_samples:
        references = [tokenizer.decode(ids) for ids in split.ids]
        metrics.update(
            sample_quality(
                model, tokenizer, references, cfg.text_samples, cfg.seed, cfg.recon_max_length, cfg.self_bleu_samples
            )
        )
    return metrics


__all__ = [
    "active_units",
    "elbo_nll",
    "evaluate",
    "iw_nll",
    "kl_per_dim",
    "latent_metrics",
    "mutual_information",
    "reconstruction_bleu",
    "sample_diversity",
    "sample_quality",
]
