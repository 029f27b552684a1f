"""Recipes: pydantic models of a training recipe, YAML loading with `base:` inheritance, dotted overrides."""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from textvae.atomic import write_atomic
from textvae.errors import TextVAEError


class Section(BaseModel):
    """A recipe section: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TokenizerConfig(Section):
    type: Literal["word", "sentencepiece", "pretrained"] = "word"
    # pretrained: a local Hugging Face tokenizer directory (e.g. a GPT-2 checkpoint's); sentencepiece: a trained
    # model file (spm.model) instead of training one on the training split
    path: str | None = None
    vocab_file: str | None = None  # word level: one token per line (e.g. Yahoo's vocab.txt)
    vocab_size: int | None = Field(None, gt=4)
    min_frequency: int = Field(1, ge=1)
    lowercase: bool = False
    character_coverage: float = Field(1.0, gt=0, le=1)  # sentencepiece
    model_type: Literal["unigram", "bpe"] = "unigram"  # sentencepiece


class DataConfig(Section):
    train: str
    valid: str
    test: str | None = None
    format: Literal["text", "labeled"] = "text"  # labeled: `label<TAB>text`
    tokenizer: TokenizerConfig = TokenizerConfig()
    max_length: int | None = Field(None, gt=0)  # in tokens, without <s> and </s>
    overlong: Literal["truncate", "drop"] = "truncate"
    batch_size: int = Field(32, gt=0)
    eval_batch_size: int = Field(64, gt=0)
    bucket: bool = True  # length-bucketed batches
    cache_dir: str | None = None
    limit_train: int | None = Field(None, gt=0)  # first N training documents (quick experiments)


class ImageDataConfig(Section):
    """Binary images (MNIST, OMNIGLOT) prepared as .npz files with an `images` uint8 array (255 = ink)."""

    format: Literal["images"]
    train: str
    valid: str
    test: str | None = None
    # training images: drawn afresh each batch, x ~ Bernoulli(pixel/255) (Burda et al.), binarised once with
    # `binarization_seed`, or grey; validation and test images are always binarised once with the seed
    train_binarization: Literal["dynamic", "fixed", "none"] = "dynamic"
    binarization_seed: int = 0
    batch_size: int = Field(50, gt=0)
    eval_batch_size: int = Field(50, gt=0)
    limit_train: int | None = Field(None, gt=0)  # first N training images (quick experiments)


def _data_format(value: Any) -> str:
    fmt = value.get("format") if isinstance(value, dict) else getattr(value, "format", None)
    return "images" if fmt == "images" else "text"


AnyDataConfig = Annotated[
    Annotated[DataConfig, Tag("text")] | Annotated[ImageDataConfig, Tag("images")], Discriminator(_data_format)
]


class PriorConfig(Section):
    """p(z): standard normal, a learnable mixture of Gaussians, or a VampPrior (Tomczak & Welling 2018)."""

    type: Literal["standard_normal", "mog", "vamp"] = "standard_normal"
    components: int = Field(10, gt=0)  # mog: mixture components; vamp: pseudo-inputs
    pseudo_length: int = Field(16, gt=0)  # vamp: tokens per pseudo-input (soft embeddings fed to the encoder)
    kl_samples: int = Field(1, gt=0)  # Monte Carlo samples for KL(q(z|x) || p(z)) when it has no closed form
    # false: the prior's parameters (MoG weights, means, variances; VampPrior pseudo-inputs) stay at their
    # initial values. A fixed-scale prior keeps WAE-MMD from shrinking prior and codes together.
    learnable: bool = True


class TransformerConfig(Section):
    """From-scratch transformer encoder and causal decoder (model.type transformer_vae / transformer_lm)."""

    d_model: int = Field(256, gt=0)
    n_heads: int = Field(4, gt=0)
    ff_dim: int = Field(1024, gt=0)
    encoder_layers: int = Field(2, ge=1)
    decoder_layers: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    max_length: int = Field(512, gt=1)  # learned positions: longest <s> x </s> sequence
    tie_embeddings: bool = True  # the decoder's output layer shares the token embedding matrix

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TransformerConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        return self


class HuggingFaceConfig(Section):
    """Hugging Face encoder / causal-LM decoder (model.type hf_vae): a local pretrained directory or a config."""

    decoder: str | None = None  # local dir for AutoModelForCausalLM.from_pretrained (GPT-2 family)
    decoder_config: dict[str, Any] | None = None  # or random weights: AutoConfig.for_model(**decoder_config)
    encoder: str | None = None  # local dir for AutoModel.from_pretrained (BERT family)
    encoder_config: dict[str, Any] | None = None
    # attention kernel of both models; "eager" has double backward (SA-VAE with update.svi.hvp: exact),
    # PyTorch's fused "sdpa" kernels on CPU do not. None: the library's default.
    attn_implementation: Literal["eager", "sdpa"] | None = None

    @model_validator(mode="after")
    def _one_source_each(self) -> HuggingFaceConfig:
        for side in ("decoder", "encoder"):
            given = (getattr(self, side) is not None) + (getattr(self, f"{side}_config") is not None)
            if given != 1:
                raise ValueError(f"give exactly one of {side} (a pretrained directory) and {side}_config")
        return self


class ImageModelConfig(Section):
    """ResNet encoder and Bernoulli or gated PixelCNN decoder (He et al. 2019's OMNIGLOT setting)."""

    image_shape: tuple[int, int, int] = (1, 28, 28)  # channels, height, width
    encoder_channels: list[int] = Field([64, 64, 64], min_length=1)  # one residual stage (stride 2) per entry
    pixelcnn_channels: int = Field(32, gt=0)
    pixelcnn_kernels: list[int] = Field([9, 9, 9, 7, 7, 7, 5, 5, 5, 3, 3, 3], min_length=1)  # one gated layer each
    bernoulli_hidden: list[int] = Field([512, 512], min_length=1)  # the factorized decoder's MLP

    @field_validator("pixelcnn_kernels")
    @classmethod
    def _odd_kernels(cls, kernels: list[int]) -> list[int]:
        if any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"kernel sizes must be odd and positive (got {kernels})")
        return kernels


ModelType = Literal[
    "lstm_vae", "lstm_lm", "transformer_vae", "transformer_lm", "hf_vae", "pixelcnn_vae", "pixelcnn_lm", "bernoulli_vae"
]
MODEL_TYPES = get_args(ModelType)
LANGUAGE_MODELS = ("lstm_lm", "transformer_lm", "pixelcnn_lm")  # no latent variable (`pixelcnn_lm`: over pixels)
IMAGE_MODELS = ("pixelcnn_vae", "pixelcnn_lm", "bernoulli_vae")


class ModelConfig(Section):
    type: ModelType = "lstm_vae"
    latent_dim: int = Field(32, gt=0)
    posterior: Literal["gaussian", "deterministic"] = "gaussian"  # deterministic: WAE encoders
    prior: PriorConfig = PriorConfig()
    # LSTM models (He et al. 2019)
    embed_dim: int = Field(512, gt=0)
    hidden_dim: int = Field(1024, gt=0)
    enc_embed_dim: int | None = Field(None, gt=0)  # defaults to embed_dim
    enc_hidden_dim: int | None = Field(None, gt=0)  # defaults to hidden_dim
    dropout_in: float = Field(0.5, ge=0, lt=1)
    dropout_out: float = Field(0.5, ge=0, lt=1)
    init_scale: float = Field(0.01, gt=0)
    # Bowman et al. 2016: in training, each decoder input word becomes <unk> with this probability
    word_dropout: float = Field(0.0, ge=0, le=1)
    bow_head: bool = False  # a linear z -> vocabulary head for objective.bow_weight (Zhao et al. 2017)
    # BN-VAE (Zhu et al. 2020): batch-normalise the posterior means, scaled by this fixed γ (KL >= Z·γ²/2)
    mean_batchnorm: float | None = Field(None, gt=0)
    embed_init_scale: float = Field(0.1, gt=0)
    # transformer and Hugging Face models
    transformer: TransformerConfig = TransformerConfig()
    huggingface: HuggingFaceConfig | None = None
    # encoder summary: first token (<s> / [CLS]), mean over tokens, or the state at </s>; None: the
    # architecture's default (LSTM: last, as He et al.; transformer and Hugging Face: mean)
    pooling: Literal["first", "mean", "last"] | None = None
    # how z reaches a transformer decoder: added to every token embedding, as one extra key/value memory
    # slot in every layer (Optimus), or both
    latent_injection: Literal["embedding", "memory", "both"] = "both"
    image: ImageModelConfig = ImageModelConfig()  # pixelcnn_vae, pixelcnn_lm, bernoulli_vae

    @property
    def encoder_pooling(self) -> str:
        """`pooling`, or the architecture's default when unset."""
        return self.pooling or ("last" if self.type.startswith("lstm") else "mean")

    @field_validator("prior", mode="before")
    @classmethod
    def _prior_by_name(cls, value):
        """`prior: mog` stands for `prior: {type: mog}` (and reads recipes saved before priors had settings)."""
        return {"type": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _hf_needs_its_section(self) -> ModelConfig:
        if self.type == "hf_vae" and self.huggingface is None:
            raise ValueError("model.type hf_vae needs a model.huggingface section")
        if self.mean_batchnorm is not None and (self.posterior != "gaussian" or self.type in LANGUAGE_MODELS):
            raise ValueError("model.mean_batchnorm (BN-VAE) needs a Gaussian posterior (model.posterior: gaussian)")
        if self.type.startswith("lstm") and self.pooling == "first":
            raise ValueError("model.pooling first: an LSTM's state after <s> has read nothing; use last or mean")
        return self


class ScheduleConfig(Section):
    """KL weight as a function of training progress (epochs are converted to steps per iteration)."""

    type: Literal["constant", "linear", "cyclical"] = "constant"
    value: float = Field(1.0, ge=0)  # constant
    start: float = Field(0.1, ge=0)  # linear / cyclical
    end: float = Field(1.0, ge=0)
    warmup_epochs: float = Field(10.0, gt=0)  # linear
    cycles: int = Field(4, gt=0)  # cyclical (Fu et al. 2019)
    ratio: float = Field(0.5, gt=0, le=1)  # cyclical: fraction of a cycle spent increasing
    cycle_epochs: float | None = Field(None, gt=0)  # cyclical: defaults to train.epochs / cycles


class ElboConfig(Section):
    """The ELBO with a scheduled, β-scaled KL weight and optional free bits."""

    type: Literal["elbo"] = "elbo"
    beta: float = Field(1.0, ge=0)  # multiplies the scheduled KL weight
    kl_schedule: ScheduleConfig = ScheduleConfig()
    free_bits: float | None = Field(None, ge=0)  # per-dimension KL target (nats), Kingma et al. 2016
    # batch: each dimension's batch-averaged KL is clamped at free_bits (Kingma et al.); document: each
    # document's KL in each dimension counts only above free_bits (Li et al. 2019's `--fb 2`)
    free_bits_scope: Literal["batch", "document"] = "batch"
    # Zhao et al. 2017's bag-of-words loss: the decoder's `model.bow_head` predicts the document's words
    # from z alone, weighted by this (an auxiliary training term; p(x|z) and evaluation do not use it)
    bow_weight: float = Field(0.0, ge=0)


class KernelConfig(Section):
    """MMD kernel summed over bandwidths C = 2·d·scale (d the latent size, prior variance 1; Tolstikhin et al.)."""

    kernel: Literal["imq", "rbf"] = "imq"  # imq: C / (C + |x-y|²); rbf: exp(-|x-y|² / C)
    scales: list[float] = Field([0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0], min_length=1)


class StochasticEncoderPenalties(Section):
    """Terms that keep a stochastic WAE encoder stochastic (zero for a deterministic encoder)."""

    # Bahuleyan et al. 2019 (stochastic WAE): weight of KL(N(μ, σ²) || N(μ, I)) per document, a KL to a unit
    # Gaussian centred on the posterior's own mean (keeps σ away from 0 without pulling μ to 0)
    kl_weight: float = Field(0.0, ge=0)
    # Rubenstein et al. 2018: weight of the L1 penalty Σ_d |log σ_d²| per document
    logvar_penalty: float = Field(0.0, ge=0)


class WAEMMDConfig(StochasticEncoderPenalties):
    """WAE-MMD (Tolstikhin et al. 2018): reconstruction + λ·MMD(aggregate posterior, prior), unbiased estimate."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)
    type: Literal["wae_mmd"]
    lambda_: float = Field(10.0, ge=0, alias="lambda")
    mmd: KernelConfig = KernelConfig()


class InfoVAEConfig(Section):
    """InfoVAE (Zhao et al. 2019): rec + (1-α)·KL(q(z|x)||p(z)) + (α+λ-1)·MMD(q(z), p(z)); α=1 is the MMD-VAE."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)
    type: Literal["infovae"]
    alpha: float = Field(0.0, le=1)
    lambda_: float = Field(1000.0, gt=0, alias="lambda")
    mmd: KernelConfig = KernelConfig(kernel="rbf", scales=[1.0])

    @model_validator(mode="after")
    def _divergence_weight_not_negative(self) -> InfoVAEConfig:
        if self.alpha + self.lambda_ - 1 < 0:
            raise ValueError(f"alpha + lambda - 1 must be >= 0 (got {self.alpha + self.lambda_ - 1:g})")
        return self


class DiscriminatorConfig(Section):
    """WAE-GAN's latent-space discriminator: an MLP with its own Adam optimiser (Tolstikhin et al.)."""

    hidden_dim: int = Field(512, gt=0)
    layers: int = Field(3, ge=1)  # hidden layers
    lr: float = Field(5e-4, gt=0)
    betas: tuple[float, float] = (0.5, 0.999)


class WAEGANConfig(StochasticEncoderPenalties):
    """WAE-GAN (Tolstikhin et al. 2018): reconstruction + λ·(-log D(z)), z from the encoder, D trained adversarially."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)
    type: Literal["wae_gan"]
    lambda_: float = Field(1.0, ge=0, alias="lambda")
    discriminator: DiscriminatorConfig = DiscriminatorConfig()


ObjectiveConfig = Annotated[ElboConfig | WAEMMDConfig | InfoVAEConfig | WAEGANConfig, Field(discriminator="type")]
OBJECTIVE_TYPES = ("elbo", "wae_mmd", "infovae", "wae_gan")


class JointUpdateConfig(Section):
    """One gradient step on encoder and decoder together."""

    type: Literal["joint"] = "joint"


class AggressiveUpdateConfig(Section):
    """He et al. 2019, Algorithm 1: encoder-only inner steps before each decoder step."""

    type: Literal["aggressive"]
    max_inner_steps: int = Field(100, gt=0)  # encoder-only steps per decoder step, at most
    check_every: int = Field(15, gt=0)  # stop the inner loop when the loss over this many steps stops falling
    switch_off: Literal["mi", "never"] = "mi"  # "mi": off for good when validation MI stops increasing
    # "mi": epochs whose validation MI is below the best so far before switching off, counted over the run
    # (He et al.'s text.py: 1, the first decrease; image.py: 5)
    switch_off_patience: int = Field(1, ge=1)
    encoder_lr: float | None = Field(None, gt=0)  # defaults to optim.lr (He et al.: both 1.0)
    # inner-loop batches after the first (the outer batch): random runs of similar-length documents
    # (little padding), or documents drawn uniformly at random (padded to the longest of them)
    inner_batches: Literal["similar_length", "uniform"] = "similar_length"
    # The gradient-norm clip of an inner step: "model" clips by the norm of all gradients, as He et al.'s
    # text.py does (decoder gradients are computed for the norm only, never applied); the norm includes the
    # decoder's large gradients and so shrinks the encoder's steps, which measurably matters (synthetic data,
    # 3 seeds: "encoder" collapsed 2 runs of 3 by epoch 2). "encoder" clips the encoder's gradients alone and
    # computes no decoder gradient (cheaper per inner step).
    inner_clip: Literal["model", "encoder"] = "model"


class SVIConfig(Section):
    """Stochastic variational inference on the posterior parameters (Kim et al. 2018)."""

    # Step size and clip act on each document's own -ELBO. Kim et al. step on the batch-MEAN loss (lr 1) and
    # clip its gradient (norm 5): per document that is lr 1/B and an RMS gradient norm of 5·sqrt(B); the
    # defaults translate their values for batch 32 (a per-document lr of 1 diverged on yahoo-mini).
    steps: int = Field(20, gt=0)
    lr: float = Field(1 / 32, gt=0)
    momentum: float = Field(0.5, ge=0, lt=1)
    clip: float | None = Field(28.3, gt=0)  # per-document gradient-norm clip
    hvp: Literal["exact", "finite_difference"] = "exact"  # finite differences work with cuDNN LSTMs
    fd_eps: float = Field(1e-3, gt=0)  # finite-difference step in λ
    # "forward" (Kim et al.): one extra gradient per SVI step in the backward pass; "central": two, more accurate
    fd_scheme: Literal["forward", "central"] = "forward"


class SemiAmortizedUpdateConfig(Section):
    """SA-VAE (Kim et al. 2018): SVI from the encoder's output; gradients through the unrolled steps."""

    type: Literal["savae"]
    svi: SVIConfig = SVIConfig()


UpdateConfig = Annotated[
    JointUpdateConfig | AggressiveUpdateConfig | SemiAmortizedUpdateConfig, Field(discriminator="type")
]
UPDATE_TYPES = ("joint", "aggressive", "savae")


class OptimConfig(Section):
    type: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(1.0, gt=0)
    momentum: float = Field(0.0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    clip: float | None = Field(5.0, gt=0)


class LRDecayConfig(Section):
    """He et al.'s decay on plateau: restore the best model, multiply the lr, stop after `max_decays`."""

    enabled: bool = True
    factor: float = Field(0.5, gt=0, lt=1)
    patience: int = Field(2, ge=1)  # epochs without validation improvement
    start_epoch: int = Field(15, ge=0)  # decay only after this many epochs (He et al.: 0-based epoch >= 15)
    max_decays: int = Field(5, ge=1)


class CheckpointConfig(Section):
    """Resumable checkpoints under run_dir/checkpoints/ (`textvae train --resume RUN_DIR`); the best model
    is kept in run_dir/model/ whatever `keep_last` says."""

    every_steps: int | None = Field(None, gt=0)  # also checkpoint every N update steps (None: epoch ends only)
    keep_last: int = Field(2, gt=0)  # the newest N checkpoints are kept, older ones deleted


class PosteriorMeanPlotConfig(Section):
    """He et al. 2019 Fig. 2: approximate vs model posterior means during training (1-d or 2-d latents)."""

    points: int = Field(500, gt=0)  # validation documents plotted
    at_steps: list[int] = [0, 200, 1000, 4000]  # update steps to snapshot at; the end of training is added
    grid_size: int = Field(41, ge=3)  # grid points per latent dimension for the numerical integration
    extent: float = Field(4.0, gt=0)  # the grid covers [-extent, extent] in every dimension


Precision = Literal["fp32", "bf16"]  # bf16: autocast (AMX on CPU, tensor cores on CUDA), fp32 weights


class PretrainConfig(Section):
    """Li et al. 2019: train first with `objective` (an autoencoder, β = 0, by default) into RUN_DIR/pretrain/,
    take its best model, re-initialise the decoder (`reset: decoder`) and then train the recipe from there."""

    epochs: int | None = Field(None, gt=0)  # None: train.epochs (Li et al. pretrain as long as they train)
    objective: ObjectiveConfig = ElboConfig(beta=0.0)
    reset: Literal["decoder", "none"] = "decoder"

    @field_validator("objective", mode="before")
    @classmethod
    def _elbo_by_default(cls, value):
        """`objective: {beta: 0}` is an ELBO objective (a section without `type:`)."""
        return {"type": "elbo", **value} if isinstance(value, dict) and "type" not in value else value


class TrainConfig(Section):
    epochs: int = Field(100, gt=0)
    seed: int = 783435
    device: str = "cpu"
    precision: Precision = "fp32"  # encoder and decoder passes; losses, KL and optimiser stay fp32
    compile: bool = False  # torch.compile the fused token loss's softmax (C++ compiler on CPU; ~20 s once)
    log_every: int = Field(100, gt=0)  # steps between metrics.jsonl lines
    lr_decay: LRDecayConfig = LRDecayConfig()
    val_latent_metrics: bool = True  # MI and AU on the validation set each epoch
    max_steps: int | None = Field(None, gt=0)  # stop early (smoke tests)
    checkpoints: CheckpointConfig = CheckpointConfig()
    max_nonfinite: int = Field(10, gt=0)  # updates skipped for a non-finite loss or gradient in a row before stopping
    posterior_mean_plot: PosteriorMeanPlotConfig | None = None
    pretrain: PretrainConfig | None = None  # Li et al. 2019's autoencoder pretraining and decoder reset
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = []  # trackers fed with metrics.jsonl (extras)


class EvalConfig(Section):
    split: Literal["valid", "test"] = "test"
    precision: Precision = "fp32"  # bf16: IW-NLL ~3.7x faster on AMX CPUs, ~0.002 nat/token off (docs/speed.md)
    compile: bool = False  # as train.compile
    iw_samples: int = Field(500, gt=0)
    iw_chunk: int = Field(500, gt=0)  # samples per decoder pass (memory budget)
    mi_batch_size: int = Field(500, gt=0)
    au_threshold: float = Field(0.01, gt=0)
    limit: int | None = Field(None, gt=0)  # evaluate the first N documents only
    seed: int = 0
    # reconstruction BLEU (sacrebleu): greedy decodes from the posterior mean against the documents
    recon_bleu: bool = True
    recon_max_length: int = Field(200, gt=0)  # decoded words per document at most (also 2·length + 10)
    # sample quality: N prior samples (ancestral sampling) scored for diversity (distinct-n, self-BLEU),
    # unigram KL to the evaluated split and mean length; 0 = skip
    text_samples: int = Field(0, ge=0)
    self_bleu_samples: int = Field(200, gt=1)  # self-BLEU is quadratic: computed on the first N samples
    # Also report IW-NLL with the posterior refined by SVI at test time (`iw_nll_svi`), as Kim et al.
    # None: only for SA-VAE runs, with the training SVI settings.
    svi: SVIConfig | None = None


class Recipe(Section):
    name: str = "run"
    description: str = ""
    data: AnyDataConfig
    model: ModelConfig = ModelConfig()
    objective: ObjectiveConfig = ElboConfig()
    update: UpdateConfig = JointUpdateConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _sections_agree(self) -> Recipe:
        model, objective = self.model, self.objective
        images = isinstance(self.data, ImageDataConfig)
        if images != (model.type in IMAGE_MODELS):
            needs = "model.type pixelcnn_vae, pixelcnn_lm or bernoulli_vae" if images else "a text model.type"
            raise ValueError(f"data.format {'images' if images else 'text'} needs {needs} (got {model.type})")
        if images and (model.bow_head or model.word_dropout or model.prior.type == "vamp"):
            raise ValueError("model.bow_head, word_dropout and the vamp prior are for text models")
        if images and self.train.posterior_mean_plot is not None:
            raise ValueError("train.posterior_mean_plot integrates over token sequences: text models only")
        if model.type in LANGUAGE_MODELS and objective.type != "elbo":
            raise ValueError(f"objective.type {objective.type} needs a latent variable (model.type is {model.type})")
        if getattr(objective, "bow_weight", 0) > 0 and not model.bow_head:
            raise ValueError("objective.bow_weight needs the bag-of-words head: set model.bow_head: true")
        if model.bow_head and model.type in LANGUAGE_MODELS:
            raise ValueError(f"model.bow_head predicts words from z; a language model ({model.type}) has none")
        free_bits = getattr(objective, "free_bits", None)
        if model.type in LANGUAGE_MODELS and free_bits is not None:
            raise ValueError(f"objective.free_bits has no meaning for a language model (model.type: {model.type})")
        if free_bits is not None and model.prior.type != "standard_normal":
            raise ValueError("objective.free_bits needs the per-dimension KL of model.prior.type standard_normal")
        if model.posterior == "deterministic" and objective.type in ("elbo", "infovae"):
            raise ValueError(
                f"objective.type {objective.type} needs a stochastic encoder: set model.posterior: gaussian"
            )
        if model.posterior == "deterministic" and self.update.type == "savae":
            raise ValueError("update.type savae refines a Gaussian posterior: set model.posterior: gaussian")
        if model.posterior == "deterministic" and (objective.kl_weight or objective.logvar_penalty):
            raise ValueError("objective.kl_weight and logvar_penalty act on a stochastic encoder (model.posterior)")
        pretrained_decoder = model.huggingface.decoder if model.type == "hf_vae" and model.huggingface else None
        if pretrained_decoder is not None and self.data.tokenizer.type != "pretrained":
            raise ValueError(
                "a pretrained Hugging Face decoder reads its own token ids: set data.tokenizer.type: pretrained "
                f"with data.tokenizer.path: {pretrained_decoder}"
            )
        if self.train.pretrain is not None and model.type in LANGUAGE_MODELS:
            raise ValueError(f"train.pretrain pretrains an encoder; a language model ({model.type}) has none")
        if self.train.posterior_mean_plot is not None and model.latent_dim not in (1, 2):
            raise ValueError(
                f"train.posterior_mean_plot needs a 1-d or 2-d latent (model.latent_dim is {model.latent_dim})"
            )
        return self


def pretraining_recipe(recipe: Recipe) -> Recipe:
    """The recipe of the pretraining phase (`train.pretrain`): its objective and epochs, nothing else changed."""
    pre = recipe.train.pretrain
    if pre is None:
        raise ValueError(f"recipe {recipe.name} has no train.pretrain section")
    train = recipe.train.model_dump(by_alias=True)
    train.update(epochs=pre.epochs or recipe.train.epochs, pretrain=None, posterior_mean_plot=None)
    data = recipe.model_dump(by_alias=True)
    data.update(name=f"{recipe.name}-pretrain", objective=pre.objective.model_dump(by_alias=True), train=train)
    return Recipe.model_validate(data)


UNION_TAGS = (
    {("update", t) for t in UPDATE_TYPES}
    | {("objective", t) for t in OBJECTIVE_TYPES}
    | {("data", t) for t in ("text", "images")}
)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    """A recipe file's top-level mapping; any unreadable content is a one-line error naming the file."""
    if not path.is_file():
        raise TextVAEError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise TextVAEError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise TextVAEError(f"{path}:{where} invalid YAML: {problem}") from err
    except RecursionError as err:
        raise TextVAEError(f"{path}: invalid YAML: nested too deeply") from err
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        raise TextVAEError(f"{path}: invalid YAML value ({str(err).splitlines()[0]})") from err
    except OSError as err:
        raise TextVAEError(f"{path}: cannot read ({err.strerror or err})") from err
    if data is None:
        raise TextVAEError(f"{path}: recipe file is empty")
    if not isinstance(data, dict):
        raise TextVAEError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    if _too_many_values(data):
        raise TextVAEError(f"{path}: recipe holds over {MAX_RECIPE_VALUES:,} values once YAML aliases are expanded")
    return data


MAX_RECIPE_VALUES = 100_000  # a real recipe has hundreds; YAML aliases can nest a few lines into 9^n values


def _too_many_values(data: Any) -> bool:
    """Whether `data`, aliases expanded, holds more than MAX_RECIPE_VALUES values (stops counting there)."""
    stack, seen = [data], 0
    while stack:
        value = stack.pop()
        seen += 1
        if seen > MAX_RECIPE_VALUES:
            return True
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def load_recipe_dict(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a recipe file, resolving `base:` (a path relative to the file) by deep merge."""
    path = Path(path)
    if path.resolve() in _seen:
        raise TextVAEError(f"{path}: `base:` chain loops back to itself")
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip() or any(c in base for c in "\r\n\0"):
        raise TextVAEError(f"{path}: key 'base' must be the path of another recipe file, got {base!r}")
    if not (path.parent / base).is_file():
        raise TextVAEError(f"{path}: key 'base': {path.parent / base}: recipe file not found")
    parent = load_recipe_dict(path.parent / base, (*_seen, path.resolve()))
    return _deep_merge(parent, data)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise TextVAEError(f"--set {item!r}: expected section.key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise TextVAEError(f"--set {item!r}: empty key")
    return parts, _override_value(item, raw)


def _override_value(item: str, raw: str) -> Any:
    """The value of a `--set` item, parsed as YAML ("" when empty)."""
    if not raw.strip():
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise TextVAEError(f"--set {item!r}: invalid YAML value: {problem}") from err
    except (ValueError, RecursionError) as err:
        raise TextVAEError(f"--set {item!r}: invalid YAML value ({str(err).splitlines()[0]})") from err


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides (values parsed as YAML scalars)."""
    data = dict(data)
    for item in overrides:
        parts, value = _parse_override(item)
        data = _deep_merge(data, _nest(parts, value))
    return data


def _nest(parts: list[str], value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(parts):
        out = {part: out}
    return out


def _short_repr() -> reprlib.Repr:
    """A repr of bounded length and cost, for quoting a bad value in an error."""
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 2, 60, 60
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 4
    return short


_SHORT = _short_repr()


def _key_part(part: Any) -> str:
    """A key as the user wrote it, escaped where it holds line breaks or other unprintable characters."""
    text = str(part)
    return text if text.isprintable() else repr(text)[1:-1]


def _format_validation_error(source: str, err: ValidationError) -> str:
    """One line: the file, the first bad key and what is wrong (a bounded excerpt of the value)."""
    first = err.errors()[0]
    loc = list(first["loc"])
    # a union's tag is not a key the user wrote (objective.elbo.beta, train.pretrain.objective.elbo.beta)
    loc = [p for i, p in enumerate(loc) if i == 0 or (loc[i - 1], p) not in UNION_TAGS]
    key = ".".join(_key_part(p) for p in loc) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = " ".join(first["msg"].split())
        if "input" in first and not isinstance(first["input"], dict):
            message += f" (got {_SHORT.repr(first['input'])})"  # bounded: YAML aliases can nest a value 9^n times
    more = len(err.errors()) - 1
    suffix = f" (and {more} more error{'s' * (more > 1)})" if more else ""
    return f"{source}: key '{key}': {message}{suffix}"


def build_recipe(data: dict[str, Any], source: str) -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise TextVAEError(_format_validation_error(source, err)) from err


# the recipe keys that name files or folders
PATH_KEYS = (
    ("data", "train"),
    ("data", "valid"),
    ("data", "test"),
    ("data", "cache_dir"),
    ("data", "tokenizer", "vocab_file"),
    ("data", "tokenizer", "path"),
    ("model", "huggingface", "encoder"),
    ("model", "huggingface", "decoder"),
)


def resolve_recipe_paths(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Relative paths resolve against the recipe file's folder where the file or folder exists there; others are
    kept as written (relative to the working directory, as the shipped recipes' `data/...` paths are)."""
    for keys in PATH_KEYS:
        parent: Any = data
        for key in keys[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        value = parent.get(keys[-1]) if isinstance(parent, dict) else None
        if isinstance(value, str) and value and not Path(value).is_absolute() and (folder / value).exists():
            parent[keys[-1]] = str((folder / value).resolve())
    return data


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load a recipe YAML (paths relative to its folder where they exist there), apply `--set` overrides (paths
    relative to the working directory), validate. Errors name the file and the key."""
    path = Path(path)
    data = apply_overrides(resolve_recipe_paths(load_recipe_dict(path), path.parent), overrides or [])
    return build_recipe(data, str(path))


def save_recipe(recipe: Recipe, path: Path) -> None:
    """Write the resolved recipe as YAML, atomically (a failed write is a one-line error naming the file)."""
    text = yaml.safe_dump(recipe.model_dump(mode="json", by_alias=True), sort_keys=False)
    write_atomic(path, text.encode("utf-8"))
