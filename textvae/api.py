"""The Python API behind the CLI: train a recipe into a run directory, load and evaluate a run."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from textvae.atomic import write_atomic
from textvae.config import (
    Recipe,
    SVIConfig,
    build_recipe,
    load_saved_recipe_dict,
    pretraining_recipe,
    save_recipe,
)
from textvae.data.splits import Split, evaluation_split, training_splits
from textvae.data.tokenizers import TextTokenizer, load_tokenizer
from textvae.environment import describe_environment
from textvae.errors import TextVAEError
from textvae.evaluation import evaluate
from textvae.evaluation import probe as latent_probe
from textvae.evaluation.probe import LabeledTexts
from textvae.evaluation.text import reconstruction_limit
from textvae.generation import arithmetic, images, latent_space
from textvae.generation.decoding import DecodingConfig
from textvae.modality import IMAGES, MODALITIES, Modality
from textvae.models.images import PIXEL_VALUES
from textvae.models.model import LatentVariableModel, build_model, load_model
from textvae.plugins import check_run_plugins, write_plugin_records
from textvae.training import distributed, tracking
from textvae.training.checkpoint import BEST_MODEL, PRETRAIN_DIR, Checkpoint, CheckpointStore, has_progress
from textvae.training.pretrain import reset_parts
from textvae.training.random_state import seed_everything
from textvae.training.trainer import FINAL_STATE, Trainer, TrainerCallback

logger = logging.getLogger(__name__)

RECIPE_FILE = "recipe.yaml"
ENVIRONMENT_FILE = "environment.json"
DEFAULT_MAX_LENGTH = 100  # decoded tokens when the recipe sets no data.max_length


@dataclass
class Run:
    """A trained run loaded from its directory, with its latent space at hand.

    `sample`, `reconstruct` and `interpolate` take a `DecodingConfig` or its fields as keywords
    (strategy greedy | sample | beam, temperature, top_k, top_p, beam_size, max_length); `max_length`
    defaults to the recipe's `data.max_length` (else 100 tokens).
    """

    directory: Path
    recipe: Recipe
    model: LatentVariableModel
    tokenizer: TextTokenizer | None  # None for an image model

    @property
    def is_image_model(self) -> bool:
        """Whether the run's modality is images (the package asks `modality` what it needs instead)."""
        return self.modality is IMAGES

    @property
    def modality(self) -> Modality:
        """Text or images: what the run's model reads (`textvae.modality`)."""
        return MODALITIES[self.recipe.model.modality]

    def split(self, name: str = "test", limit: int | None = None) -> Split:
        """A split of the run's data as evaluation reads it (the run's tokenizer; images binarised once)."""
        return evaluation_split(self.recipe, self.tokenizer, name, limit)

    def decoding(self, cfg: DecodingConfig | None = None, **options) -> DecodingConfig:
        """A DecodingConfig from `cfg` or keyword fields, with this run's default max_length."""
        if cfg is not None:
            return replace(cfg, **options)
        options.setdefault("max_length", getattr(self.recipe.data, "max_length", None) or DEFAULT_MAX_LENGTH)
        return DecodingConfig(**options)

    # -- image models: tensors [N, C, H, W] in [0, 1]; `image_grid` / `save_grid` turn them into pictures

    def sample_images(self, n: int = 64, seed: int = 0) -> torch.Tensor:
        """n images from z ~ p(z) (PixelCNN decoders draw pixel by pixel; Bernoulli decoders give means)."""
        return images.sample_images(self.model, n, seed)

    def reconstruct_images(self, indices: list[int], split: str = "test", seed: int = 0) -> torch.Tensor:
        """The split's images `indices`, each followed by its decode from E[z|x]: [2·len(indices), C, H, W]."""
        return images.reconstruct_images(self.model, self.modality.image_split(self, split, indices), indices, seed)

    def interpolate_images(
        self, a: int, b: int, steps: int = 8, slerp: bool = False, split: str = "test", seed: int = 0
    ) -> torch.Tensor:
        """Image a, `steps` decodes along the path from E[z|a] to E[z|b], image b: [steps + 2, C, H, W]."""
        data = self.modality.image_split(self, split, [a, b])
        return images.interpolate_images(self.model, data, [(a, b)], steps, slerp, seed)

    # -- labelled documents: the latent probe and latent arithmetic

    def labeled(self, labels_from: str = "train") -> tuple[LabeledTexts, LabeledTexts]:
        """(labelled pool, held-out documents) for `labels_from` train | valid | test | a `label<TAB>text`
        FILE: the train split and the test split, or a split or file divided in halves (file order)."""
        files = {k: getattr(self.recipe.data, k) for k in ("train", "valid", "test")}
        return latent_probe.pool_and_held_out(labels_from, files)

    def probe(self, labels_from: str = "train", n_labels=latent_probe.DEFAULT_N_LABELS, seeds: int = 5) -> dict:
        """Accuracy of a logistic regression on E[z|x] from n labelled documents (see textvae.evaluation.probe)."""
        pool, held_out = self.labeled(labels_from)
        return latent_probe.probe(self.encode, pool, held_out, n_labels, seeds)

    def transfer(
        self,
        texts: list[str],
        from_label: str,
        to_label: str,
        labels_from: str = "train",
        seed: int | None = 0,
        decoding: DecodingConfig | None = None,
        **options,
    ) -> list[str]:
        """Each text decoded from E[z|x] + mean z(to_label) − mean z(from_label) (means over the labelled
        pool's first 1,000 documents of each label; greedy unless told otherwise)."""
        pool, _ = self.labeled(labels_from)
        vector = arithmetic.attribute_vector(self.encode, pool, from_label, to_label)
        z = arithmetic.shifted_codes(self.encode, texts, vector)
        return self._decode(z, texts, seed, self.decoding(decoding, **options))

    def analogy(
        self, a: str, b: str, c: str, seed: int | None = 0, decoding: DecodingConfig | None = None, **options
    ) -> str:
        """C changed as A was changed into B: decoded from z_C + z_B − z_A (greedy unless told otherwise)."""
        z = arithmetic.analogy_code(self.encode, a, b, c)
        return self._decode(z, [a, b, c], seed, self.decoding(decoding, **options), rows=1)[0]

    def _decode(
        self, z: torch.Tensor, texts: list[str], seed: int | None, cfg: DecodingConfig, rows: int | None = None
    ) -> list[str]:
        """Decode codes z, each at most 2·len + 10 tokens of the longest of `texts` (and cfg.max_length)."""
        split = latent_space.tokenize_texts(self.tokenizer, texts, self.recipe.data.max_length)
        limit = reconstruction_limit(max(len(ids) for ids in split.ids), cfg.max_length)
        return latent_space.decode_texts(self.model, self.tokenizer, z, cfg, seed, [limit] * (rows or len(z)))

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Posterior means E[z|x] [N, Z] of raw texts (tokenized and truncated as the training data)."""
        return latent_space.encode_texts(self.model, self.tokenizer, texts, max_length=self.recipe.data.max_length)

    def sample(self, n: int = 10, seed: int | None = 0, decoding: DecodingConfig | None = None, **options) -> list[str]:
        """n texts decoded from prior draws z ~ p(z) (ancestral sampling unless told otherwise)."""
        options.setdefault("strategy", "sample")
        return latent_space.sample_texts(self.model, self.tokenizer, n, self.decoding(decoding, **options), seed)

    def reconstruct(
        self, texts: list[str], seed: int | None = 0, decoding: DecodingConfig | None = None, **options
    ) -> list[str]:
        """Each text decoded from its posterior mean (greedily unless told otherwise)."""
        cfg = self.decoding(decoding, **options)
        return latent_space.reconstruct_texts(
            self.model, self.tokenizer, texts, cfg, seed, max_length=self.recipe.data.max_length
        )

    def interpolate(
        self,
        a: str,
        b: str,
        steps: int = 8,
        slerp: bool = False,
        seed: int | None = 0,
        decoding: DecodingConfig | None = None,
        **options,
    ) -> list[tuple[float, str]]:
        """(t, text) decoded at `steps` points from E[z|a] (t = 0) to E[z|b] (t = 1), linear or spherical."""
        cfg = self.decoding(decoding, **options)
        return latent_space.interpolate_texts(
            self.model, self.tokenizer, a, b, steps, cfg, slerp, seed, max_length=self.recipe.data.max_length
        )


def check_device(device: str) -> str:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TextVAEError(f"device {device!r}: CUDA is not available on this machine")
    if not (device == "cpu" or device.startswith("cuda")):
        raise TextVAEError(f"device {device!r}: expected cpu or cuda[:N]")
    return device


def claim_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse to reuse a non-empty run directory unless `overwrite`; fail early if it can't be written."""
    if run_dir.exists() and not run_dir.is_dir():
        raise TextVAEError(f"{run_dir}: exists and is not a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not overwrite:
        raise TextVAEError(f"{run_dir}: run directory exists and is not empty (use --overwrite to replace it)")
    parent = run_dir.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not _can_create_in(parent):
        raise TextVAEError(f"{run_dir}: cannot create the run directory ({parent} is not writable)")


def _can_create_in(folder: Path) -> bool:
    """Whether a folder can be made in `folder`, by trying (`os.access` says yes to root, even on /sys)."""
    try:
        os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".textvae-probe-"))
    except OSError:
        return False
    return True


def train(
    recipe: Recipe,
    run_dir: Path,
    overwrite: bool = False,
    callbacks: list[TrainerCallback] | None = None,
) -> Run:
    """Train `recipe` into `run_dir` (recipe, tokenizer, model, checkpoints, metrics.jsonl); with
    `train.pretrain`, the pretraining phase first, as a run directory of its own in RUN_DIR/pretrain/.

    Started by `torchrun --nproc_per_node N`, the N processes train one model data-parallel (see
    `textvae.training.distributed`); rank 0 alone writes the run directory.
    """
    run_dir = Path(run_dir)
    check_device(recipe.train.device)
    tracking.check_available(recipe.train.report_to)  # before the run directory is written
    claim_run_dir(run_dir, overwrite)  # checked by every process before rank 0 writes anything
    return _train_from_start(recipe, run_dir, callbacks, overwrite=overwrite, fresh=True)


def _train_from_start(
    recipe: Recipe, run_dir: Path, callbacks: list[TrainerCallback] | None, overwrite: bool, fresh: bool
) -> Run:
    """Train from the initial model: into a new run directory (`fresh`), or into one whose main phase has
    no checkpoint yet (pretraining is then reused or continued from what RUN_DIR/pretrain/ holds)."""
    with distributed.session(recipe.train.device):
        distributed.check_batch_size(recipe.data.batch_size)
        with distributed.main_first():  # rank 0 fills the data caches the others then read
            train_split, valid_split, tokenizer, stats = training_splits(recipe)
        existed = run_dir.is_dir()
        try:
            if fresh and distributed.is_main():
                write_run_dir(run_dir, recipe, stats, overwrite)
            model = initial_model(recipe, tokenizer)
            if recipe.train.pretrain is not None:
                phase = PretrainingPhase(recipe, run_dir, (train_split, valid_split), stats, callbacks)
                model = phase.start_model(model, tokenizer)
            trainer = Trainer(recipe, model, tokenizer, train_split, valid_split, run_dir, callbacks)
            trainer.fit()
        except BaseException:
            if fresh and distributed.is_main():
                discard_unresumable(run_dir, existed)
            raise
    return Run(run_dir, recipe, model.eval(), tokenizer)


def initial_model(recipe: Recipe, tokenizer: TextTokenizer | None) -> LatentVariableModel:
    """The recipe's model, freshly initialised from `train.seed`."""
    seed_everything(recipe.train.seed)
    model = build_model(recipe.model, PIXEL_VALUES if tokenizer is None else tokenizer.vocab_size)
    logger.info("model: %s, %d parameters", recipe.model.type, sum(p.numel() for p in model.parameters()))
    return model


@dataclass
class PretrainingPhase:
    """`train.pretrain` (Li et al. 2019): a run of the pretraining recipe in RUN_DIR/pretrain/, started,
    continued from its newest checkpoint or reused when finished; its best model starts the main phase."""

    recipe: Recipe
    run_dir: Path
    splits: tuple[Split, Split]
    stats: dict
    callbacks: list[TrainerCallback] | None

    def start_model(self, fresh: LatentVariableModel, tokenizer: TextTokenizer | None) -> LatentVariableModel:
        """The pretrained best model, with the parts `train.pretrain.reset` names taken from `fresh`."""
        directory = self.run_dir / PRETRAIN_DIR
        pre = pretraining_recipe(self.recipe)
        if not (directory / FINAL_STATE).is_file():
            if CheckpointStore(directory).checkpoints():
                trainer = restored_trainer(pre, directory, self.splits, tokenizer, self.callbacks)
            else:
                if distributed.is_main():
                    write_run_dir(directory, pre, self.stats, overwrite=True)
                model = initial_model(pre, tokenizer)
                trainer = Trainer(pre, model, tokenizer, *self.splits, directory, self.callbacks)
            logger.info("pretraining (%s) into %s", pre.objective.type, directory)
            trainer.fit()
        pretrained = load_model(directory / BEST_MODEL, model_type=pre.model.type)
        return reset_parts(pretrained, fresh, self.recipe.train.pretrain.reset)


def discard_unresumable(run_dir: Path, keep_directory: bool) -> None:
    """After a failed start: a run directory without a checkpoint holds nothing to resume, so it is removed
    (emptied when it existed before), and the same command can simply be run again."""
    if has_progress(run_dir) or not run_dir.is_dir():
        return
    logger.info("%s: removed (the run stopped before its first checkpoint)", run_dir)
    if not keep_directory:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for path in run_dir.iterdir():
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def resume(run_dir: Path, device: str | None = None, callbacks: list[TrainerCallback] | None = None) -> Run:
    """Continue a stopped or killed run from its newest readable checkpoint, exactly as if it had not stopped
    (same data order, random draws, optimiser and schedule states); `device` may differ from the recipe's.
    A finished run is returned as it is; a run stopped in its pretraining phase continues that phase."""
    run_dir = Path(run_dir)
    recipe = run_recipe(run_dir)
    tracking.check_available(recipe.train.report_to)
    if device is not None:
        recipe = recipe.model_copy(update={"train": recipe.train.model_copy(update={"device": device})})
    check_device(recipe.train.device)
    if (run_dir / FINAL_STATE).is_file():
        logger.info("%s: the run has finished; nothing to resume", run_dir)
        return load_run(run_dir, recipe.train.device)
    if recipe.train.pretrain is not None and not CheckpointStore(run_dir).checkpoints():
        return _train_from_start(recipe, run_dir, callbacks, overwrite=False, fresh=False)
    with distributed.session(recipe.train.device):
        distributed.check_batch_size(recipe.data.batch_size)
        trainer = restored_trainer(recipe, run_dir, None, None, callbacks)
        trainer.fit()
    return Run(run_dir, recipe, trainer.model.eval(), trainer.tokenizer)


def restored_trainer(
    recipe: Recipe,
    run_dir: Path,
    splits: tuple[Split, Split] | None,
    tokenizer: TextTokenizer | None,
    callbacks: list[TrainerCallback] | None,
) -> Trainer:
    """A trainer in the state of the run's newest readable checkpoint (the splits are read with the
    checkpoint's tokenizer unless given)."""
    store = CheckpointStore(run_dir, recipe.train.checkpoints.keep_last)
    tokenized = MODALITIES[recipe.model.modality].tokenizer

    def read(checkpoint: Checkpoint) -> tuple[dict, LatentVariableModel, TextTokenizer | None]:
        saved = load_tokenizer(checkpoint.directory) if tokenized else None
        return checkpoint.training_state(), load_model(checkpoint.directory, model_type=recipe.model.type), saved

    checkpoint, (state, model, saved_tokenizer) = store.latest(read)
    if splits is None:
        with distributed.main_first():
            train_split, valid_split, tokenizer, _ = training_splits(recipe, saved_tokenizer)
    else:
        train_split, valid_split = splits
    if model.config.section != recipe.model:
        raise TextVAEError(f"{run_dir / RECIPE_FILE}: the model section differs from the checkpoint's model")
    if distributed.is_main():
        store.remove_leftovers()
    logger.info("resuming %s from %s", run_dir, checkpoint.directory.name)
    trainer = Trainer(recipe, model, tokenizer, train_split, valid_split, run_dir, callbacks)
    trainer.restore(state)
    return trainer


def write_run_dir(run_dir: Path, recipe: Recipe, stats: dict, overwrite: bool) -> None:
    """A fresh run directory with the resolved recipe, the data statistics and the environment."""
    try:
        if overwrite and run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TextVAEError(f"{run_dir}: cannot create the run directory ({err.strerror or err})") from err
    save_recipe(recipe, run_dir / RECIPE_FILE)
    write_atomic(run_dir / "data_stats.json", json.dumps(stats, indent=1).encode())
    environment = describe_environment(recipe.train.device)
    if distributed.world_size() > 1:
        environment["world_size"] = distributed.world_size()
    write_atomic(run_dir / ENVIRONMENT_FILE, json.dumps(environment, indent=1).encode())
    write_plugin_records(run_dir, recipe)


def run_recipe(run_dir: Path) -> Recipe:
    """The resolved recipe a run directory was trained with."""
    if not (run_dir / RECIPE_FILE).is_file():
        raise TextVAEError(f"{run_dir}: not a textvae run directory ({RECIPE_FILE} missing)")
    check_run_plugins(run_dir)
    return build_recipe(load_saved_recipe_dict(run_dir / RECIPE_FILE), str(run_dir / RECIPE_FILE))


def load_run(run_dir: Path, device: str = "cpu") -> Run:
    """Load the best model, tokenizer and resolved recipe of a finished run."""
    run_dir = Path(run_dir)
    recipe = run_recipe(run_dir)
    model = load_model(run_dir / "model", check_device(device), recipe.model.type)
    if not MODALITIES[recipe.model.modality].tokenizer:
        return Run(run_dir, recipe, model, None)
    tokenizer = load_tokenizer(run_dir / "model")
    if tokenizer.vocab_size != model.config.vocab_size:
        raise TextVAEError(
            f"{run_dir / 'model'}: the tokenizer has {tokenizer.vocab_size} types but the model (config.json) "
            f"expects {model.config.vocab_size}: tokenizer and model come from different runs"
        )
    return Run(run_dir, recipe, model, tokenizer)


def evaluate_run(
    run: Run,
    split: str = "test",
    iw_samples: int | None = None,
    limit: int | None = None,
    svi_steps: int | None = None,
    text_samples: int | None = None,
    precision: str | None = None,
) -> dict:
    """Run the evaluation protocol on a split of the run's data; returns the eval.json dict.

    `iw_nll_svi` (IW-NLL with the posterior refined by SVI) is added for SA-VAE runs (their training SVI
    settings), for recipes with `eval.svi`, and with `svi_steps` (those settings, or Kim et al.'s defaults).
    `text_samples` N > 0 adds the sample-quality metrics of N prior samples (`sample_*`).
    """
    overrides = {"iw_samples": iw_samples, "limit": limit, "text_samples": text_samples, "precision": precision}
    cfg = run.recipe.eval.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    if cfg.svi is None and run.recipe.update.type == "savae":  # SA-VAE: test-time SVI as in training
        cfg = cfg.model_copy(update={"svi": run.recipe.update.svi})
    if svi_steps is not None:
        cfg = cfg.model_copy(update={"svi": (cfg.svi or SVIConfig()).model_copy(update={"steps": svi_steps})})
    tracking.check_available(run.recipe.train.report_to)
    data = evaluation_split(run.recipe, run.tokenizer, split, cfg.limit)
    metrics = evaluate(
        run.model.set_precision(cfg.precision).set_compiled(cfg.compile),
        data,
        run.recipe.data.eval_batch_size,
        cfg,
        tokenizer=run.tokenizer,
    )
    metrics.update(
        {
            "split": split,
            "precision": cfg.precision,
            "limit": cfg.limit,
            "model_type": run.recipe.model.type,
            "latent_dim": run.model.latent_dim,
            "recipe": run.recipe.name,
        }
    )
    if distributed.is_main():
        tracking.log_evaluation(run.recipe, run.directory, metrics)  # train.report_to: eval/SPLIT/... scalars
    return metrics
