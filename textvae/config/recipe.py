"""The recipe tree: every section, the objective and update sections validated by the registered method's own
class (`textvae.registries`), and the cross-section rules (each method's `check(recipe)`, then the model's)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from textvae.config.sections import (
    IMAGE_MODELS,
    LANGUAGE_MODELS,
    AnyDataConfig,
    CheckpointConfig,
    EvalConfig,
    ImageDataConfig,
    LRDecayConfig,
    ModelConfig,
    OptimConfig,
    PosteriorMeanPlotConfig,
    Precision,
    Section,
)
from textvae.registries import OBJECTIVES, UPDATES

ObjectiveConfig = OBJECTIVES.section_field(default="elbo")
UpdateConfig = UPDATES.section_field(default="joint")


class MethodSection(Section):
    """An objective's or update rule's recipe section: `type:` names it in its registry; `check(recipe)` refuses
    combinations with the other sections that cannot work (a ValueError naming the keys)."""

    type: str

    def check(self, recipe: Recipe) -> None:
        """Raise ValueError if this method cannot train `recipe`; nothing to check by default."""


def needs_stochastic_encoder(section: MethodSection, recipe: Recipe) -> None:
    """Refuse a deterministic encoder for an objective that needs q(z|x)'s density."""
    if recipe.model.posterior == "deterministic":
        raise ValueError(f"objective.type {section.type} needs a stochastic encoder: set model.posterior: gaussian")


def _default_objective(**settings: Any) -> Any:
    return lambda: OBJECTIVES.config("elbo")(**settings)


class PretrainConfig(Section):
    """Li et al. 2019: train first with `objective` (an autoencoder, β = 0, by default) into RUN_DIR/pretrain/,
    take its best model, re-initialise the decoder (`reset: decoder`) and then train the recipe from there."""

    epochs: int | None = Field(None, gt=0)  # None: train.epochs (Li et al. pretrain as long as they train)
    objective: ObjectiveConfig = Field(default_factory=_default_objective(beta=0.0))
    reset: Literal["decoder", "none"] = "decoder"


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


class Recipe(Section):
    name: str = "run"
    description: str = ""
    data: AnyDataConfig
    model: ModelConfig = ModelConfig()
    objective: ObjectiveConfig = Field(default_factory=_default_objective())
    update: UpdateConfig = Field(default_factory=lambda: UPDATES.config("joint")())
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _sections_agree(self) -> Recipe:
        model = self.model
        images = isinstance(self.data, ImageDataConfig)
        if images != (model.type in IMAGE_MODELS):
            needs = "model.type pixelcnn_vae, pixelcnn_lm or bernoulli_vae" if images else "a text model.type"
            raise ValueError(f"data.format {'images' if images else 'text'} needs {needs} (got {model.type})")
        if images and (model.bow_head or model.word_dropout or model.prior.type == "vamp"):
            raise ValueError("model.bow_head, word_dropout and the vamp prior are for text models")
        if images and self.train.posterior_mean_plot is not None:
            raise ValueError("train.posterior_mean_plot integrates over token sequences: text models only")
        if model.bow_head and model.type in LANGUAGE_MODELS:
            raise ValueError(f"model.bow_head predicts words from z; a language model ({model.type}) has none")
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
        self.objective.check(self)
        self.update.check(self)
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
