"""The recipe tree: every section, the model, objective and update sections validated by the registered
architecture's or method's own class (`textvae.registries`), and the cross-section rules (each section's
`check(recipe)`, and the few between data, model and training here)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from textvae.config.sections import (
    DEFAULT_PRIOR,
    AnyDataConfig,
    CheckpointConfig,
    EvalConfig,
    LRDecayConfig,
    MethodSection,
    ModelSection,
    OptimConfig,
    PosteriorMeanPlotConfig,
    Precision,
    Section,
    data_modality,
)
from textvae.registries import ARCHITECTURES, OBJECTIVES, UPDATES

# the type of a section without `type:`
DEFAULT_TYPES = {"model": "lstm_vae", "prior": DEFAULT_PRIOR, "objective": "elbo", "update": "joint"}
ModelField = ARCHITECTURES.section_field(default=DEFAULT_TYPES["model"])
ObjectiveConfig = OBJECTIVES.section_field(default=DEFAULT_TYPES["objective"])
UpdateConfig = UPDATES.section_field(default=DEFAULT_TYPES["update"])


def ModelConfig(**fields: Any) -> ModelSection:  # noqa: N802  (reads as the section it builds)
    """The `model:` section `fields` describe, of the class its architecture (`type`, default lstm_vae)
    registered; a pydantic ValidationError for fields that architecture does not have."""
    return ARCHITECTURES.build_section(fields, DEFAULT_TYPES["model"])


def needs_stochastic_encoder(section: MethodSection, recipe: Recipe) -> None:
    """Refuse a deterministic encoder for an objective that needs q(z|x)'s density."""
    if not recipe.model.stochastic_posterior:
        raise ValueError(f"objective.type {section.type} needs a stochastic encoder: set model.posterior: gaussian")


def _default_objective(**settings: Any) -> Any:
    return lambda: OBJECTIVES.config(DEFAULT_TYPES["objective"])(**settings)


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
    model: ModelField = Field(default_factory=ModelConfig)
    objective: ObjectiveConfig = Field(default_factory=_default_objective())
    update: UpdateConfig = Field(default_factory=lambda: UPDATES.config(DEFAULT_TYPES["update"])())
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="before")
    @classmethod
    def _model_fits_data(cls, data: Any) -> Any:
        """Refuse a model of the other modality first: its section's keys would otherwise be the error."""
        if not isinstance(data, dict) or "data" not in data:
            return data
        modality = data_modality(data["data"])
        model = data.get("model", {})
        name = model.get("type", DEFAULT_TYPES["model"]) if isinstance(model, dict) else getattr(model, "type", None)
        if isinstance(name, str) and name in ARCHITECTURES and ARCHITECTURES.config(name).modality != modality:
            fitting = [other for other in ARCHITECTURES if ARCHITECTURES.config(other).modality == modality]
            raise ValueError(f"data.format {modality} needs model.type {', '.join(fitting)} (got {name})")
        return data

    @model_validator(mode="after")
    def _sections_agree(self) -> Recipe:
        model = self.model
        if self.train.pretrain is not None and not model.has_latent:
            raise ValueError(f"train.pretrain pretrains an encoder; a language model ({model.type}) has none")
        if self.train.posterior_mean_plot is not None and model.latent_dim not in (1, 2):
            raise ValueError(
                f"train.posterior_mean_plot needs a 1-d or 2-d latent (model.latent_dim is {model.latent_dim})"
            )
        model.check(self)
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
