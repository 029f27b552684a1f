"""The shipped recipes: every one loads and validates, and the published setups carry the published values.

Only recipe files are read (no data, no training), so these tests pass without any prepared dataset.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from textvae.config import Recipe, load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
DATASETS = ("synthetic", "ptb", "yahoo", "yelp", "yahoo-mini")
OBJECTIVE_METHODS = ("lm", "vanilla", "anneal", "beta0.2", "beta0.4", "freebits", "cyclical")
# update-rule methods: `base:` the objective method they extend, plus their `update:` (and SA-VAE's epochs)
UPDATE_METHODS = {"aggressive": "vanilla", "aggressive-anneal": "anneal", "savae": "vanilla", "savae-anneal": "anneal"}
METHODS = OBJECTIVE_METHODS + tuple(UPDATE_METHODS)
# issue 4: Wasserstein / InfoVAE objectives and the transformer VAE, for these datasets
WAE_METHODS = ("wae-mmd", "wae-mmd-stochastic", "infovae", "mmd-vae", "wae-gan")
TRANSFORMER_METHODS = ("transformer", "transformer-anneal")
WAE_DATASETS = ("synthetic", "ptb", "yahoo", "yahoo-mini")
# files with their own settings on top of their `base:` (name: allowed top-level keys)
SETUP_FILES = {"wae-bahuleyan": {"data", "model", "objective", "optim", "train"}, "li2019": {"optim", "train"}}
LI_ET_AL = ("ptb", "yahoo", "yelp", "yahoo-mini")  # issue 19: Li et al. 2019's pretraining fix
HE_ET_AL = ("yahoo", "yelp")  # He et al. 2019, Table 1
# What a method file may set on top of its dataset's _base.yaml.
METHOD_KEYS = {"base", "name", "description", "objective", "model"}
UPDATE_METHOD_KEYS = {"base", "name", "description", "update", "train"}


# issue 6: the image counterparts, He et al.'s OMNIGLOT setup and its CPU-scaled variants
IMAGE_DATASETS = ("omniglot", "mnist", "omniglot-cpu", "mnist-cpu")
IMAGE_METHODS = METHODS + ("wae-mmd", "wae-mmd-stochastic", "bernoulli")


def recipe_files() -> list[Path]:
    suites = RECIPES / "suites"  # suite files list recipes; tests/test_reproduce.py checks them
    return sorted(p for p in RECIPES.rglob("*.yaml") if p.name != "_base.yaml" and suites not in p.parents)


def recipe(dataset: str, method: str) -> Recipe:
    return load_recipe(RECIPES / dataset / f"{method}.yaml")


def test_every_dataset_has_a_base_and_every_method():
    for dataset in DATASETS:
        assert (RECIPES / dataset / "_base.yaml").is_file(), dataset
        for method in METHODS:
            assert (RECIPES / dataset / f"{method}.yaml").is_file(), f"{dataset}/{method}"
    for dataset in IMAGE_DATASETS:
        assert {p.stem for p in (RECIPES / dataset).glob("*.yaml")} == {"_base", *IMAGE_METHODS}, dataset
    for dataset in WAE_DATASETS:
        for method in WAE_METHODS + TRANSFORMER_METHODS:
            assert (RECIPES / dataset / f"{method}.yaml").is_file(), f"{dataset}/{method}"
    assert (RECIPES / "README.md").is_file()


@pytest.mark.parametrize("path", recipe_files(), ids=lambda p: str(p.relative_to(RECIPES)))
def test_recipe_loads_and_validates(path: Path):
    loaded = load_recipe(path)
    assert isinstance(loaded, Recipe)
    dataset = path.parent.name
    assert loaded.name == f"{dataset}-{path.stem}"
    assert loaded.description.strip() and "\n" not in loaded.description.strip()
    # data paths are relative to the repository root and point at `textvae data prepare NAME`'s output
    folder, suffix = (dataset.removesuffix("-cpu"), "npz") if dataset in IMAGE_DATASETS else (dataset, "txt")
    for split in ("train", "valid", "test"):
        assert getattr(loaded.data, split) == f"data/{folder}/{split}.{suffix}"


@pytest.mark.parametrize("path", recipe_files(), ids=lambda p: str(p.relative_to(RECIPES)))
def test_method_file_inherits_the_dataset_base(path: Path):
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if path.stem in UPDATE_METHODS:
        assert raw["base"] == f"{UPDATE_METHODS[path.stem]}.yaml"
        assert set(raw) <= UPDATE_METHOD_KEYS, set(raw) - UPDATE_METHOD_KEYS
        assert set(raw.get("train", {})) <= {"epochs"}
        return
    assert (path.parent / raw["base"]).is_file()
    if path.stem.startswith("transformer"):
        assert set(raw) <= METHOD_KEYS | {"optim"}, set(raw) - METHOD_KEYS
        return
    setup = next((keys for prefix, keys in SETUP_FILES.items() if path.stem.startswith(prefix)), None)
    allowed = METHOD_KEYS | (setup or set())
    assert set(raw) <= allowed, set(raw) - allowed
    if path.stem in OBJECTIVE_METHODS:
        assert raw["base"] == "_base.yaml"
        if "model" in raw:
            assert raw["model"] == {"type": "pixelcnn_lm" if path.parent.name in IMAGE_DATASETS else "lstm_lm"}
    elif path.stem == "bernoulli":
        assert raw["model"] == {"type": "bernoulli_vae"}
    elif "model" in raw and setup is None:  # WAE-style files change the posterior or prior only
        assert set(raw["model"]) <= {"posterior", "prior", "word_dropout", "bow_head", "mean_batchnorm"}


@pytest.mark.parametrize("dataset", HE_ET_AL)
def test_he_et_al_published_values(dataset: str):
    for method in METHODS:
        r = recipe(dataset, method)
        assert (r.model.embed_dim, r.model.hidden_dim, r.model.latent_dim) == (512, 1024, 32)
        assert r.model.enc_hidden_dim in (None, 1024) and r.model.enc_embed_dim in (None, 512)
        assert (r.model.dropout_in, r.model.dropout_out) == (0.5, 0.5)
        assert (r.model.init_scale, r.model.embed_init_scale) == (0.01, 0.1)
        assert (r.optim.type, r.optim.lr, r.optim.momentum, r.optim.clip) == ("sgd", 1.0, 0.0, 5.0)
        assert r.data.batch_size == 32
        assert r.train.epochs == (30 if method.startswith("savae") else 100)  # REFERENCE.md: SA-VAE 30
        assert r.train.seed == 783435
        decay = r.train.lr_decay
        assert (decay.enabled, decay.factor, decay.patience, decay.start_epoch, decay.max_decays) == (
            True,
            0.5,
            2,
            15,
            5,
        )
        assert r.eval.iw_samples == 500
        assert r.eval.mi_batch_size == 32  # text.py: calc_mi over batches of args.batch_size

    anneal = recipe(dataset, "anneal").objective
    assert anneal.beta == 1.0 and anneal.free_bits is None
    schedule = anneal.kl_schedule
    assert (schedule.type, schedule.start, schedule.end, schedule.warmup_epochs) == ("linear", 0.1, 1.0, 10)

    vanilla = recipe(dataset, "vanilla").objective
    assert (vanilla.beta, vanilla.kl_schedule.type, vanilla.kl_schedule.value) == (1.0, "constant", 1.0)
    assert vanilla.free_bits is None


def test_yahoo_uses_the_release_vocabulary_and_yelp_is_labeled():
    assert recipe("yahoo", "anneal").data.tokenizer.vocab_file == "data/yahoo/vocab.txt"
    yelp = recipe("yelp", "anneal").data
    assert yelp.format == "labeled"
    assert yelp.tokenizer.vocab_file is None  # built from the training split, as He et al. do


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("beta", [0.2, 0.4])
def test_beta_files_have_their_beta(dataset: str, beta: float):
    objective = recipe(dataset, f"beta{beta}").objective
    assert objective.beta == beta
    assert (objective.kl_schedule.type, objective.kl_schedule.value) == ("constant", 1.0)  # no annealing
    assert objective.free_bits is None


@pytest.mark.parametrize("dataset", DATASETS)
def test_lm_files_are_language_models(dataset: str):
    lm = recipe(dataset, "lm")
    assert lm.model.type == "lstm_lm"
    assert lm.objective.free_bits is None
    vae = recipe(dataset, "vanilla")
    assert vae.model.type == "lstm_vae"
    # the LM is the VAE's decoder trained the same way
    assert lm.model.model_dump(exclude={"type"}) == vae.model.model_dump(exclude={"type"})
    assert lm.optim == vae.optim and lm.train == vae.train and lm.data == vae.data


@pytest.mark.parametrize("dataset", DATASETS)
def test_freebits_and_cyclical(dataset: str):
    freebits = recipe(dataset, "freebits")
    assert freebits.model.type == "lstm_vae"
    assert freebits.objective.free_bits == 0.25  # Li et al. 2019: target_kl 8 over nz 32
    assert freebits.objective.kl_schedule.type == "linear" and freebits.objective.kl_schedule.start == 0.0
    cyclical = recipe(dataset, "cyclical").objective.kl_schedule
    assert (cyclical.type, cyclical.cycles, cyclical.ratio, cyclical.start, cyclical.end) == (
        "cyclical",
        4,
        0.5,
        0.0,
        1.0,
    )


@pytest.mark.parametrize("dataset", DATASETS)
def test_update_rule_methods_carry_the_published_settings(dataset: str):
    for method, objective_method in UPDATE_METHODS.items():
        r, base = recipe(dataset, method), recipe(dataset, objective_method)
        assert r.objective == base.objective and r.model == base.model and r.optim == base.optim
        if method.startswith("aggressive"):  # He et al. 2019, Algorithm 1 and text.py
            assert (r.update.type, r.update.max_inner_steps, r.update.check_every) == ("aggressive", 100, 15)
            assert r.update.switch_off == "mi" and r.train == base.train
        else:  # Kim et al. 2018, harvardnlp/sa-vae text.py
            svi = r.update.svi
            # Kim et al.'s lr 1 and clip 5 act on the batch-mean loss; textvae's per document: 1/B and 5·sqrt(B)
            batch = r.data.batch_size
            assert (r.update.type, svi.steps, svi.momentum) == ("savae", 20, 0.5)
            assert svi.lr == pytest.approx(1 / batch) and svi.clip == pytest.approx(5 * batch**0.5, abs=0.05)


@pytest.mark.parametrize("dataset", LI_ET_AL)
def test_li_et_al_recipes_carry_their_published_settings(dataset: str):
    """bohanli/vae-pretraining-encoder README: an autoencoder (`text_beta.py --beta 0 --lr 0.5`), then
    `text_anneal_fb.py --reset_dec --kl_start 0 --warm_up 10 --target_kl 8 --fb 2 --lr 0.5`."""
    r, anneal = recipe(dataset, "li2019"), recipe(dataset, "anneal")
    pre = r.train.pretrain
    assert (pre.objective.type, pre.objective.beta, pre.reset, pre.epochs) == ("elbo", 0.0, "decoder", None)
    objective = r.objective
    assert (objective.beta, objective.free_bits, objective.free_bits_scope) == (1.0, 8 / 32, "document")
    schedule = objective.kl_schedule
    assert (schedule.type, schedule.start, schedule.end) == ("linear", 0.0, 1.0)
    assert schedule.warmup_epochs == anneal.objective.kl_schedule.warmup_epochs  # 10, or yahoo-mini's scaled 5
    assert (r.optim.type, r.optim.lr, r.optim.clip) == ("sgd", 0.5, 5.0)
    assert r.model == anneal.model and r.data == anneal.data and r.train.epochs == anneal.train.epochs
    if dataset != "yahoo-mini":  # Li et al.'s decay constants (yahoo-mini keeps its base's scaled schedule)
        decay = r.train.lr_decay
        assert (decay.factor, decay.patience, decay.start_epoch, decay.max_decays) == (0.5, 5, 15, 5)


def test_synthetic_follows_config_synthetic():
    r = recipe("synthetic", "anneal")
    assert (r.model.latent_dim, r.model.embed_dim, r.model.hidden_dim) == (2, 50, 50)
    assert (r.data.batch_size, r.train.epochs, r.optim.lr) == (16, 50, 1.0)
    assert r.eval.mi_batch_size == 16


def test_ptb_follows_li_et_al():
    r = recipe("ptb", "anneal")
    assert (r.model.latent_dim, r.model.embed_dim, r.model.hidden_dim) == (32, 256, 256)
    assert (r.data.batch_size, r.train.epochs, r.optim.lr) == (32, 100, 1.0)
    assert r.data.tokenizer.vocab_file is None
    assert r.train.lr_decay.patience == 5


def test_yahoo_mini_is_the_cpu_scaled_model():
    for method in METHODS:
        r = recipe("yahoo-mini", method)
        assert (r.model.embed_dim, r.model.hidden_dim, r.model.latent_dim) == (64, 128, 32)
        assert (r.model.dropout_in, r.model.dropout_out) == (0.5, 0.5)
        assert (r.optim.type, r.optim.lr, r.optim.clip, r.data.batch_size) == ("sgd", 1.0, 5.0, 32)
        assert r.train.epochs == 30
        decay = r.train.lr_decay
        assert (decay.factor, decay.patience, decay.start_epoch, decay.max_decays) == (0.5, 2, 10, 3)
        assert r.data.tokenizer.vocab_file == "data/yahoo-mini/vocab.txt"
        assert r.eval.iw_samples == 500
    assert recipe("yahoo-mini", "anneal").objective.kl_schedule.warmup_epochs == 5
    base = (RECIPES / "yahoo-mini" / "_base.yaml").read_text(encoding="utf-8")
    assert base.startswith("#") and "2 CPU cores" in base


def test_set_style_override_takes_effect():
    path = RECIPES / "yahoo" / "anneal.yaml"
    r = load_recipe(path, ["train.epochs=3"])
    assert r.train.epochs == 3
    assert r.model.hidden_dim == 1024  # the rest is untouched
    nested = load_recipe(path, ["objective.kl_schedule.warmup_epochs=2", "train.device=cpu"])
    assert nested.objective.kl_schedule.warmup_epochs == 2
    assert nested.objective.kl_schedule.start == 0.1  # deep-merged, not replaced
    assert nested.train.device == "cpu"
    assert load_recipe(path).train.epochs == 100  # overrides do not leak into later loads


@pytest.mark.parametrize("dataset", WAE_DATASETS)
def test_wasserstein_and_infovae_files_carry_their_papers_settings(dataset: str):
    deterministic = recipe(dataset, "wae-mmd")
    assert deterministic.model.posterior == "deterministic" and deterministic.objective.type == "wae_mmd"
    assert (deterministic.objective.lambda_, deterministic.objective.mmd.kernel) == (3.0, "imq")
    assert deterministic.objective.mmd.scales == [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]  # Tolstikhin et al.
    stochastic = recipe(dataset, "wae-mmd-stochastic")
    assert stochastic.model.posterior == "gaussian" and stochastic.objective.kl_weight == 1.0  # Bahuleyan et al.
    info = recipe(dataset, "infovae").objective
    assert (info.type, info.alpha, info.lambda_) == ("infovae", 0.0, 1000.0)  # Zhao et al.
    mmd_vae = recipe(dataset, "mmd-vae").objective
    assert (mmd_vae.type, mmd_vae.alpha, mmd_vae.lambda_) == ("infovae", 1.0, 1000.0)
    gan = recipe(dataset, "wae-gan")
    assert gan.model.posterior == "deterministic" and gan.objective.lambda_ == 1.0
    assert (gan.objective.discriminator.lr, gan.objective.discriminator.betas) == (5e-4, (0.5, 0.999))
    vanilla = recipe(dataset, "vanilla")
    for method in WAE_METHODS:  # only the objective (and posterior) differ from the dataset's VAE
        r = recipe(dataset, method)
        assert r.data == vanilla.data and r.optim == vanilla.optim and r.train == vanilla.train
        assert r.model.model_dump(exclude={"posterior"}) == vanilla.model.model_dump(exclude={"posterior"})


@pytest.mark.parametrize("dataset", WAE_DATASETS)
def test_transformer_files_are_transformer_vaes(dataset: str):
    r, anneal = recipe(dataset, "transformer"), recipe(dataset, "transformer-anneal")
    assert r.model.type == "transformer_vae" and r.model.latent_injection == "both"
    assert r.optim.type == "adam" and r.objective.type == "elbo" and r.objective.kl_schedule.type == "constant"
    assert anneal.model == r.model and anneal.objective.kl_schedule.type == "linear"
    assert r.model.latent_dim == recipe(dataset, "vanilla").model.latent_dim


def test_bahuleyan_sentence_wae_settings():
    for name, posterior in (("wae-bahuleyan", "gaussian"), ("wae-bahuleyan-deterministic", "deterministic")):
        r = recipe("ptb", name)
        assert (r.model.hidden_dim, r.model.embed_dim, r.model.latent_dim, r.model.posterior) == (
            100,
            300,
            100,
            posterior,
        )
        assert (r.data.batch_size, r.data.max_length, r.train.epochs) == (128, 20, 20)
        assert (r.optim.type, r.optim.lr, r.objective.lambda_, r.objective.mmd.kernel) == ("adam", 1e-3, 3.0, "imq")
        assert r.objective.kl_weight == (1.0 if posterior == "gaussian" else 0.0)


def test_prior_files():
    assert recipe("ptb", "wae-mmd-mog").model.prior.type == "mog"
    vamp = recipe("ptb", "vamp").model.prior
    assert (vamp.type, vamp.components) == ("vamp", 50)


@pytest.mark.parametrize("dataset", ("omniglot", "mnist"))
def test_image_recipes_carry_he_et_al_omniglot_values(dataset: str):
    """config_omniglot.py and image.py / image_sa.py of jxhe/vae-lagging-encoder."""
    for method in IMAGE_METHODS:
        r = recipe(dataset, method)
        image = r.model.image
        assert (r.model.latent_dim, image.encoder_channels, image.pixelcnn_channels) == (32, [64, 64, 64], 32)
        assert image.pixelcnn_kernels == [9, 9, 9, 7, 7, 7, 5, 5, 5, 3, 3, 3]
        assert (r.data.batch_size, r.data.train_binarization, r.train.epochs) == (50, "dynamic", 1000)
        assert (r.optim.type, r.optim.lr, r.optim.clip) == ("adam", 0.001, 5.0)
        decay = r.train.lr_decay
        assert (decay.factor, decay.patience, decay.start_epoch, decay.max_decays) == (0.5, 20, 0, 5)
        assert (r.eval.iw_samples, r.eval.mi_batch_size) == (500, 50)
    assert recipe(dataset, "lm").model.type == "pixelcnn_lm"
    assert recipe(dataset, "vanilla").model.type == "pixelcnn_vae"
    aggressive = recipe(dataset, "aggressive").update
    assert (aggressive.max_inner_steps, aggressive.check_every, aggressive.switch_off_patience) == (100, 10, 5)
    svi = recipe(dataset, "savae-anneal").update.svi
    assert (svi.steps, svi.momentum, svi.lr) == (10, 0.5, pytest.approx(1 / 50))
    assert recipe(dataset, "anneal").objective.kl_schedule.start == 0.1


@pytest.mark.parametrize("dataset", ("omniglot-cpu", "mnist-cpu"))
def test_cpu_scaled_image_recipes_share_one_scaled_model(dataset: str):
    models = {recipe(dataset, m).model.model_dump_json(exclude={"type", "posterior"}) for m in IMAGE_METHODS}
    assert len(models) == 1  # every method trains the same networks (the decoder type aside)
    assert recipe(dataset, "vanilla").train.device == "cpu"
