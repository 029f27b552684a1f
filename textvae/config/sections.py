"""The recipe sections every method shares: data, what every model section holds, schedules, kernels, SVI,
optimiser, evaluation.

A method's own section (an architecture's, a prior's, an objective's, an update rule's) sits beside its code and
is registered with it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from textvae.errors import TextVAEError
from textvae.registries import MODALITIES, POSTERIORS, PRIORS

if TYPE_CHECKING:
    from textvae.config.recipe import Recipe


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
    """Text corpora, the text modality's `data:` section; `format` holds the formats it reads (`textvae.modality`)."""

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
    """Binary images (MNIST, OMNIGLOT) prepared as .npz files with an `images` uint8 array (255 = ink): the images
    modality's `data:` section (`format: images`)."""

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


DEFAULT_MODALITY = "text"  # the modality of a `data:` section without `format:`


def data_modality(value: Any) -> str:
    """The modality ("text", "images", a plugin's) whose `data:` section reads the `format` of `value` (a mapping or
    a section): the `MODALITIES` entry whose section's `format` Literal has it; text without `format` or for a
    format no modality reads (the section's validation then names data.format)."""
    fmt = value.get("format") if isinstance(value, dict) else getattr(value, "format", None)
    return MODALITIES.entry_by("format", fmt) or DEFAULT_MODALITY


# the `data:` field: validated by the section of the registered modality that reads its `format`
AnyDataConfig = MODALITIES.section_field(default=DEFAULT_MODALITY, key="format")


class MethodSection(Section):
    """A registered recipe section (a model architecture's, a prior's, an objective's, an update rule's): `type:`
    names it in its registry; `check(recipe)` refuses combinations with the other sections that cannot work (a
    ValueError naming the keys)."""

    type: str

    def check(self, recipe: Recipe) -> None:
        """Raise ValueError if this section cannot train `recipe`; nothing to check by default."""


class PriorSection(MethodSection):
    """What every prior's section (`model.prior`) holds; each prior adds its own keys in a subclass registered with
    its factory (`textvae.registries.PRIORS`; the built-in ones in `textvae.models.priors`). The model section's
    `check(recipe)` calls the prior's."""

    # True: the prior's KL to a diagonal Gaussian is the sum of the per-dimension KLs to N(0, 1) that free bits
    # clamps (the standard normal's); False for any other prior
    per_dimension_kl: ClassVar[bool] = False
    # the settings of a small instance: the registry-driven tests train, save, load and evaluate every prior
    example: ClassVar[dict[str, Any]] = {}

    kl_samples: int = Field(1, gt=0)  # Monte Carlo samples for KL(q(z|x) || p(z)) when it has no closed form
    # false: the prior's parameters (MoG weights, means, variances; VampPrior pseudo-inputs) stay at their
    # initial values. A fixed-scale prior keeps WAE-MMD from shrinking prior and codes together.
    learnable: bool = True


DEFAULT_PRIOR = "standard_normal"  # the type of a `model.prior` without `type:`
PriorField = PRIORS.section_field(default=DEFAULT_PRIOR)  # the `model.prior` field: the registered prior's section


class PriorConfig:
    """The `model.prior` section that `fields` describe, of the class its prior (`type`, default standard_normal)
    registered: `PriorConfig()` is the standard normal's section, `PriorConfig(type="mog", components=3)` the
    mixture's (a pydantic ValidationError for keys that prior has not).

    Kept from when one class held every prior's keys: `__new__` returns an instance of the registered class,
    never of PriorConfig (isinstance checks take `PriorSection`); `model_construct` is PriorSection's."""

    model_construct = PriorSection.model_construct

    def __new__(cls, **fields: Any) -> PriorSection:  # type: ignore[misc]
        return PRIORS.build_section(fields, DEFAULT_PRIOR)


def posterior_kind(name: str) -> Any:
    """The posterior kind registered as `name` (`textvae.registries.POSTERIORS`); for another name, a one-line
    ValueError (a pydantic error in a recipe) that lists the known ones."""
    try:
        return POSTERIORS[name]
    except TextVAEError as err:
        raise PydanticCustomError("unknown_posterior", str(err).replace("{", "{{")) from None


class ModelSection(MethodSection):
    """What every architecture's `model:` section holds; each architecture adds its own fields in a subclass
    registered with its builder (`textvae.models.base.architecture`)."""

    has_latent: ClassVar[bool] = True  # False: a language model (no encoder, no z)
    # the data it models: a registered modality's name (`textvae.registries.MODALITIES`; "images" reads
    # `data.format: images`, "text" a text format)
    modality: ClassVar[str] = "text"
    # the settings of a tiny instance (a few training steps in a second): the registry-driven tests train,
    # save, load and evaluate every registered architecture with them
    example: ClassVar[dict[str, Any]] = {}

    latent_dim: int = Field(32, gt=0)
    # the posterior kind (`textvae.registries.POSTERIORS`): gaussian, or deterministic for WAE encoders
    posterior: str = "gaussian"
    prior: PriorField = Field(default_factory=PriorConfig)
    # BN-VAE (Zhu et al. 2020): batch-normalise the posterior means, scaled by this fixed γ (KL >= Z·γ²/2)
    mean_batchnorm: float | None = Field(None, gt=0)

    @field_validator("prior", mode="before")
    @classmethod
    def _prior_by_name(cls, value):
        """`prior: mog` stands for `prior: {type: mog}` (and reads recipes saved before priors had settings)."""
        return {"type": value} if isinstance(value, str) else value

    @field_validator("posterior")
    @classmethod
    def _known_posterior(cls, name: str) -> str:
        posterior_kind(name)
        return name

    @property
    def stochastic_posterior(self) -> bool:
        """Whether q(z|x) is a density (a Gaussian) rather than a point (a deterministic WAE encoder)."""
        return posterior_kind(self.posterior).stochastic

    @model_validator(mode="after")
    def _batchnorm_needs_gaussian(self) -> ModelSection:
        if self.mean_batchnorm is not None and (not self.has_latent or not self.stochastic_posterior):
            raise ValueError("model.mean_batchnorm (BN-VAE) needs a Gaussian posterior (model.posterior: gaussian)")
        return self

    def check(self, recipe: Recipe) -> None:
        """The prior's rules (`model.prior`'s `check`); an architecture with rules of its own calls this too."""
        self.prior.check(recipe)


class TextModelSection(ModelSection):
    """The settings every text architecture shares: word dropout, the bag-of-words head, encoder pooling."""

    default_pooling: ClassVar[Literal["first", "mean", "last"]] = "mean"

    # Bowman et al. 2016: in training, each decoder input word becomes <unk> with this probability
    word_dropout: float = Field(0.0, ge=0, le=1)
    bow_head: bool = False  # a linear z -> vocabulary head for objective.bow_weight (Zhao et al. 2017)
    # encoder summary: first token (<s> / [CLS]), mean over tokens, or the state at </s>; None: the
    # architecture's default (LSTM: last, as He et al.; transformer and Hugging Face: mean)
    pooling: Literal["first", "mean", "last"] | None = None

    @property
    def encoder_pooling(self) -> str:
        """`pooling`, or the architecture's default when unset."""
        return self.pooling or self.default_pooling

    @model_validator(mode="after")
    def _bow_head_needs_latent(self) -> TextModelSection:
        if self.bow_head and not self.has_latent:
            raise ValueError(f"model.bow_head predicts words from z; a language model ({self.type}) has none")
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


class KernelConfig(Section):
    """MMD kernel summed over bandwidths C = 2·d·scale (d the latent size, prior variance 1; Tolstikhin et al.)."""

    kernel: Literal["imq", "rbf"] = "imq"  # imq: C / (C + |x-y|²); rbf: exp(-|x-y|² / C)
    scales: list[float] = Field([0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0], min_length=1)


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
