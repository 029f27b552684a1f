"""LatentVariableModel: encoder + decoder + prior as a Hugging Face PreTrainedModel (safetensors on disk)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput
from transformers.utils import logging as hf_logging

from textvae.config.sections import DEFAULT_PRIOR, ModelSection, posterior_kind
from textvae.errors import TextVAEError
from textvae.jsonfiles import read_json_object
from textvae.models.lstm import LSTMModelConfig
from textvae.models.posteriors import DiagonalGaussian, MeanBatchNorm, Posterior
from textvae.models.priors import build_prior
from textvae.models.weights import check_weights
from textvae.registries import ARCHITECTURES, PRIORS

hf_logging.disable_progress_bar()  # saving and loading small models needs no progress bar


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}

# 2: `pooling` applies to LSTM encoders too; 3: only the architecture's own `model:` fields (2 held every
# architecture's: an LSTM's widths in a transformer's config.json); 4: only the prior's own `prior` keys (3 held
# every prior's: a standard normal with `components` and `pseudo_length`)
FORMAT_VERSION = 4


class LatentVariableConfig(PreTrainedConfig):
    """Architecture hyper-parameters: the recipe's `model:` section (the architecture's own fields) plus the
    vocabulary size."""

    model_type = "textvae"

    def __init__(self, architecture: str = "lstm_vae", vocab_size: int = 4, **kwargs) -> None:
        version = kwargs.pop("format_version", 1)
        if version < 3:  # the other architectures' fields, all at their defaults
            kwargs = ARCHITECTURES.without_others_keys(architecture, kwargs)
        section_class = ARCHITECTURES.config(architecture)
        defaults = section_class.model_construct(type=architecture).model_dump(mode="json")  # unvalidated
        own = {k: kwargs.pop(k, default) for k, default in defaults.items() if k != "type"}
        if isinstance(own["prior"], str):  # saved before priors had settings: `"prior": "standard_normal"`
            own["prior"] = {"type": own["prior"]}
        if version < 4 and isinstance(own["prior"], dict):  # every prior's keys
            own["prior"] = PRIORS.own_keys(own["prior"], DEFAULT_PRIOR)
        if version < 2 and issubclass(section_class, LSTMModelConfig):
            own["pooling"] = None  # saved when LSTM encoders ignored `pooling` (always the state at </s>)
        super().__init__(**kwargs)
        self.format_version = FORMAT_VERSION
        self.architecture = architecture
        self.vocab_size = vocab_size
        for key, value in own.items():
            setattr(self, key, value)

    @classmethod
    def from_recipe(cls, cfg: ModelSection, vocab_size: int) -> LatentVariableConfig:
        fields = cfg.model_dump(mode="json", exclude={"type"})
        return cls(architecture=cfg.type, vocab_size=vocab_size, format_version=FORMAT_VERSION, **fields)

    @property
    def section(self) -> ModelSection:
        """The recipe's `model:` section this config was made from (nested sections as pydantic models)."""
        section_class = ARCHITECTURES.config(self.architecture)
        fields = {k: getattr(self, k) for k in section_class.model_fields if k != "type" and hasattr(self, k)}
        return section_class.model_validate({"type": self.architecture, **fields})


@dataclass
class LatentVariableOutput(ModelOutput):
    """One forward pass: log p(x|z) for n samples, KL(q(z|x) || p(z)) per document, the posterior."""

    log_likelihood: torch.Tensor | None = None  # [B, n]
    kl: torch.Tensor | None = None  # [B]; None for a language model or a deterministic encoder
    posterior: Posterior | None = None


class LatentVariableModel(PreTrainedModel):
    """p(z) p(x|z) with an amortised q(z|x); `encoder is None` for a language model (no latent)."""

    config_class = LatentVariableConfig
    base_model_prefix = "textvae"
    main_input_name = "tokens"

    def __init__(self, config: LatentVariableConfig) -> None:
        super().__init__(config)
        self.encoder, self.decoder = ARCHITECTURES[config.architecture](config)  # each initialises itself
        self.prior = build_prior(config.section.prior, config.latent_dim, self.encoder)
        section = config.section
        self.decoder.word_dropout = getattr(section, "word_dropout", 0.0)
        if section.mean_batchnorm is not None:
            self.encoder.to_posterior.mean_norm = MeanBatchNorm(config.latent_dim, section.mean_batchnorm)
        if getattr(section, "bow_head", False):  # on the decoder side: aggressive training updates it with the decoder
            self.decoder.bow = nn.Linear(config.latent_dim, config.vocab_size)
        self.compute_dtype: torch.dtype | None = None  # set_precision("bf16"): autocast dtype of the passes
        self.post_init()

    def set_precision(self, precision: str) -> LatentVariableModel:
        """Run encoder and decoder passes in fp32 ("fp32") or under bf16 autocast ("bf16": AMX on CPU,
        tensor cores on CUDA). Weights, posteriors, log-likelihoods and losses stay fp32."""
        self.compute_dtype = PRECISIONS[precision]
        self._choose_token_loss()
        return self

    def set_compiled(self, enabled: bool) -> LatentVariableModel:
        """torch.compile the fused token loss's per-chunk softmax (decoders that have one)."""
        if hasattr(self.decoder, "compiled_loss"):
            self.decoder.compiled_loss = enabled
            self._choose_token_loss()
        return self

    def _choose_token_loss(self) -> None:
        """The fused output layer + loss pays off under bf16 autocast or compiled (2.4x and 2.7x the plain
        fp32 step on He et al.'s Yahoo model, 2 CPU cores); in eager fp32 the plain logits path is faster."""
        if hasattr(self.decoder, "fused_loss"):
            self.decoder.fused_loss = self.compute_dtype is not None or self.decoder.compiled_loss

    def _autocast(self, x: torch.Tensor) -> contextlib.AbstractContextManager:
        if self.compute_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(x.device.type, dtype=self.compute_dtype)

    def _init_weights(self, module: nn.Module) -> None:
        """Weights are initialised in __init__ (He et al.'s uniform init); nothing to do here."""

    @property
    def has_latent(self) -> bool:
        return self.encoder is not None

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim if self.has_latent else 0

    @property
    def stochastic(self) -> bool:
        """Whether q(z|x) is a density (Gaussian) rather than a point (deterministic WAE encoder)."""
        return self.has_latent and posterior_kind(self.config.posterior).stochastic

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> Posterior:
        if self.encoder is None:
            raise TypeError("a language model has no encoder")
        with self._autocast(tokens):
            return self.encoder(tokens, lengths)

    def kl(self, posterior: DiagonalGaussian, z: torch.Tensor | None = None) -> torch.Tensor:
        """KL(q(z|x) || p(z)) per document, [B]: in closed form for N(0, I), else by Monte Carlo.

        The Monte Carlo estimate averages log q(z|x) - log p(z) over `z` [B, n, Z] when given (e.g. the
        samples the reconstruction term used), else over `prior.kl_samples` fresh samples.
        """
        return self.prior.kl(posterior, z)

    def pass_floats(self, x: torch.Tensor) -> int:
        """Floats one decoder pass holds per (example, z sample) of `x`: the logits of a text decoder, the
        activations of an image decoder (sizes the batches of importance-weighted evaluation)."""
        if hasattr(self.decoder, "pass_floats"):
            return self.decoder.pass_floats(x)
        return x.shape[1] * self.config.vocab_size

    def log_likelihood(self, tokens: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """log p(x|z) per example and sample: z [B, n, Z] -> [B, n]."""
        with self._autocast(tokens):
            log_likelihood = self.decoder.log_prob(tokens, z)
        return log_likelihood if self.compute_dtype is None else log_likelihood.float()

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, n_samples: int = 1) -> LatentVariableOutput:
        if not self.has_latent:
            return LatentVariableOutput(log_likelihood=self.log_likelihood(tokens, None))
        posterior = self.encode(tokens, lengths)
        z = posterior.rsample(n_samples)
        kl = self.kl(posterior, z) if posterior.stochastic else None
        return LatentVariableOutput(log_likelihood=self.log_likelihood(tokens, z), kl=kl, posterior=posterior)


def build_model(cfg: ModelSection, vocab_size: int) -> LatentVariableModel:
    return LatentVariableModel(LatentVariableConfig.from_recipe(cfg, vocab_size))


def check_saved_config(config: Path, model_type: str | None = None) -> None:
    """Refuse a config.json of another library's model or, given `model_type`, of another textvae model type."""
    record = read_json_object(config)
    saved_type = record.get("model_type")
    if saved_type != LatentVariableModel.config_class.model_type:
        raise TextVAEError(f"{config}: model_type {saved_type!r}: not a textvae model (a Hugging Face directory?)")
    architecture = record.get("architecture")
    if model_type is not None and architecture != model_type:
        raise TextVAEError(
            f"{config}: key 'architecture' is {architecture!r} but the run's recipe.yaml has model.type {model_type}"
        )


def load_model(directory: Path, device: str = "cpu", model_type: str | None = None) -> LatentVariableModel:
    """Load a saved model (config.json + model.safetensors) from a directory; refused in one line unless it
    is a complete textvae model (of `model_type`, if given)."""
    config = directory / "config.json"
    if not config.is_file() or not (directory / "model.safetensors").is_file():
        raise TextVAEError(f"{directory}: no saved model (config.json and model.safetensors expected)")
    check_saved_config(config, model_type)
    check_weights(directory)  # nothing but safetensors is read, whatever else the directory holds
    try:
        model, info = LatentVariableModel.from_pretrained(
            str(directory), use_safetensors=True, output_loading_info=True, ignore_mismatched_sizes=True
        )
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        raise TextVAEError(f"{directory}: cannot load model ({str(err).splitlines()[0]})") from err
    except (TypeError, KeyError, AttributeError) as err:  # well-formed JSON with values of the wrong kind
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise TextVAEError(f"{config}: not a valid textvae model config ({reason})") from err
    wrong = [
        f"{kind.replace('_', ' ')}: {', '.join(sorted(map(str, keys))[:3])}" for kind, keys in info.items() if keys
    ]
    if wrong:  # a missing tensor would otherwise be left as freshly initialised (or uninitialised) memory
        raise TextVAEError(f"{directory / 'model.safetensors'}: does not match config.json ({'; '.join(wrong)})")
    model.prior.requires_grad_(model.config.section.prior.learnable)  # loading makes every parameter trainable
    return model.to(device).eval()
