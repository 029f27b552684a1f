"""Hugging Face adapters (model.type hf_vae): tiny random GPT-2 / BERT built locally, never downloaded."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import assert_rule_trains_both_networks

from textvae.config import (
    AggressiveUpdateConfig,
    ElboConfig,
    JointUpdateConfig,
    ModelConfig,
    OptimConfig,
    SemiAmortizedUpdateConfig,
    SVIConfig,
    TokenizerConfig,
)
from textvae.data.batching import RandomBatches, TokenizedSplit, collate
from textvae.data.tokenizers import (
    BOS,
    EOS,
    PAD,
    UNK,
    PretrainedTokenizer,
    build_tokenizer,
    load_tokenizer,
    save_tokenizer,
)
from textvae.errors import TextVAEError
from textvae.models.huggingface import HFCausalDecoder, HFEncoder
from textvae.models.model import build_model, load_model
from textvae.objectives import build_objective
from textvae.training.updates import UpdateContext, build_update

pytestmark = pytest.mark.usefixtures("torch_single_thread")

TEXTS = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "the quick brown fox jumps over the lazy dog",
    "my cat likes the warm sun",
]
EOT = "<|endoftext|>"
GPT2 = dict(model_type="gpt2", n_layer=2, n_embd=32, n_head=2, n_positions=64)
BERT = dict(model_type="bert", hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
LATENT = 3


def gpt2_tokenizer():
    """A byte-level BPE tokenizer like GPT-2's (one special, <|endoftext|> = 0), trained on TEXTS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=60, special_tokens=[EOT], show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT)


def bert_tokenizer():
    """A word-level tokenizer like BERT's: [PAD] [UNK] [CLS] [SEP] and [CLS] x [SEP] around every text."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for t in TEXTS for w in t.split()})
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )


def hf_model(auto_class, spec: dict):
    from transformers import AutoConfig

    spec = dict(spec)
    return auto_class.from_config(AutoConfig.for_model(spec.pop("model_type"), **spec))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> dict[str, Path]:
    """Saved tiny models: "gpt2" (with its tokenizer), "bert" (same vocabulary), "bert_wp" (its own tokenizer)."""
    from transformers import AutoModel, AutoModelForCausalLM

    root = tmp_path_factory.mktemp("pretrained")
    gpt2_tok, bert_tok = gpt2_tokenizer(), bert_tokenizer()
    torch.manual_seed(0)
    gpt2_tok.save_pretrained(root / "gpt2")
    same_vocabulary = {"vocab_size": len(gpt2_tok), "bos_token_id": 0, "eos_token_id": 0}  # 0: <|endoftext|>
    hf_model(AutoModelForCausalLM, {**GPT2, **same_vocabulary}).save_pretrained(root / "gpt2")
    hf_model(AutoModel, {**BERT, **same_vocabulary}).save_pretrained(root / "bert")
    bert_tok.save_pretrained(root / "bert_wp")
    hf_model(AutoModel, {**BERT, "vocab_size": len(bert_tok)}).save_pretrained(root / "bert_wp")
    return {name: root / name for name in ("gpt2", "bert", "bert_wp")}


@pytest.fixture(scope="module")
def tokenizer(pretrained) -> PretrainedTokenizer:
    return PretrainedTokenizer.from_pretrained(pretrained["gpt2"])


def hf_vae(
    vocab_size: int,
    decoder: str | None = None,
    encoder: str | None = None,
    decoder_config: dict = GPT2,
    encoder_config: dict = BERT,
    attention: str | None = None,
    **model,
) -> torch.nn.Module:
    """An hf_vae LatentVariableModel: directories where given, else the tiny configs (random weights)."""
    torch.manual_seed(0)
    section = {
        "decoder": decoder,
        "encoder": encoder,
        "decoder_config": None if decoder else decoder_config,
        "encoder_config": None if encoder else encoder_config,
        "attn_implementation": attention,
    }
    return build_model(ModelConfig(type="hf_vae", latent_dim=LATENT, huggingface=section, **model), vocab_size)


def batch_of(tokenizer: PretrainedTokenizer, texts: list[str]):
    return collate(list(enumerate(tokenizer.encode_batch(texts))))


def test_pretrained_tokenizer_shifts_ids_and_round_trips(tmp_path, pretrained, tokenizer):
    hf = tokenizer.hf
    assert tokenizer.vocab_size == len(hf) + 4
    ids = tokenizer.encode_batch(TEXTS[:2])
    assert ids == [[i + 4 for i in row] for row in hf(TEXTS[:2], add_special_tokens=False)["input_ids"]]
    assert tokenizer.decode([BOS, *ids[0], EOS, *ids[1], PAD]) == TEXTS[0]
    assert min(tokenizer.encode_batch([f"the {EOT} cat"])[0]) > 4  # a literal special token is plain text
    eos = hf.eos_token_id
    assert tokenizer.hf_id_map()[:5] == [eos, eos, eos, eos, 0]

    build = build_tokenizer(TokenizerConfig(type="pretrained", path=str(pretrained["gpt2"])), iter([]))
    save_tokenizer(build, tmp_path / "tok")
    assert '"pretrained"' in (tmp_path / "tok" / "tokenizer_type.json").read_text()
    for copy in (load_tokenizer(tmp_path / "tok"), pickle.loads(pickle.dumps(build))):
        assert isinstance(copy, PretrainedTokenizer) and copy.encode_batch(TEXTS) == build.encode_batch(TEXTS)
    with pytest.raises(TextVAEError, match="path: required"):
        build_tokenizer(TokenizerConfig(type="pretrained"), iter([]))
    with pytest.raises(TextVAEError, match="no Hugging Face tokenizer"):
        PretrainedTokenizer.from_pretrained(pretrained["bert"])


def test_probabilities_sum_to_one_over_the_textvae_vocabulary(pretrained, tokenizer):
    model = hf_vae(tokenizer.vocab_size, decoder=str(pretrained["gpt2"])).eval()
    decoder: HFCausalDecoder = model.decoder
    batch = batch_of(tokenizer, TEXTS)
    z = torch.randn(len(TEXTS), LATENT)
    logits, _ = decoder.logits(batch.inputs, z)
    assert logits.shape == (*batch.inputs.shape, tokenizer.vocab_size)
    log_probs = logits.log_softmax(-1)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(batch.inputs.shape), atol=1e-5)
    eos = tokenizer.hf.eos_token_id
    assert torch.isinf(logits[..., [PAD, UNK, BOS, eos + 4]]).all()
    assert torch.isfinite(logits[..., EOS]).all() and torch.isfinite(logits[..., 5:]).all()
    ll = model.log_likelihood(batch.tokens, z.unsqueeze(1))
    assert torch.isfinite(ll).all() and (ll < 0).all()


def test_from_config_gets_a_fresh_vocabulary_and_matches_the_raw_model():
    """No injection (z = 0): textvae logits are the raw model's, gathered; real tokens at positions 0, 1, ..."""
    model = hf_vae(30, latent_injection="embedding").eval()
    decoder = model.decoder
    assert decoder.model.config.vocab_size == 29 and decoder.specials.eos == 27
    inputs = torch.tensor([[BOS, 4, 5, 6, EOS], [BOS, 7, 8, EOS, PAD]])
    logits, _ = decoder.logits(inputs, torch.zeros(2, LATENT))
    raw = decoder.model(input_ids=decoder.specials.to_hf(inputs)).logits
    assert torch.allclose(logits[..., 4:], raw[..., :26], atol=1e-5)
    assert torch.allclose(logits[..., EOS], raw[..., 27], atol=1e-5)


@pytest.mark.parametrize("injection", ["embedding", "memory", "both"])
def test_each_injection_makes_the_likelihood_depend_on_z(tokenizer, pretrained, injection):
    model = hf_vae(tokenizer.vocab_size, decoder=str(pretrained["gpt2"]), latent_injection=injection).eval()
    decoder = model.decoder
    assert (decoder.to_embedding is not None) == (injection != "memory")
    assert (decoder.to_memory is not None) == (injection != "embedding")
    tokens = batch_of(tokenizer, TEXTS).tokens
    z = torch.randn(len(TEXTS), 2, LATENT, requires_grad=True)
    ll = model.log_likelihood(tokens, z)
    assert (ll[:, 0] - ll[:, 1]).abs().min() > 1e-4
    ll.sum().backward()
    assert z.grad.abs().sum() > 0
    for layer in (decoder.to_embedding, decoder.to_memory):
        if layer is not None:
            assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("injection", ["embedding", "memory", "both"])
def test_stepwise_logits_match_whole_sequence(tokenizer, pretrained, injection):
    model = hf_vae(tokenizer.vocab_size, decoder=str(pretrained["gpt2"]), latent_injection=injection).eval()
    decoder = model.decoder
    positions = []
    decoder.model.transformer.wpe.register_forward_hook(lambda m, args, out: positions.append(args[0].flatten()))
    inputs, z = batch_of(tokenizer, TEXTS[:2]).inputs, torch.randn(2, LATENT)
    whole, _ = decoder.logits(inputs, z)
    assert positions[-1].tolist() == list(range(inputs.shape[1]))  # the memory slot takes no position
    state, steps = None, []
    for t in range(inputs.shape[1]):
        logits, state = decoder.logits(inputs[:, t : t + 1], z, state)
        steps.append(logits)
    assert state.position == inputs.shape[1]
    assert torch.allclose(torch.cat(steps, 1), whole, atol=1e-5)
    flipped = decoder.reorder_state(state, torch.tensor([1, 0]))
    nxt = torch.tensor([[5], [6]])
    assert torch.allclose(
        decoder.logits(nxt, z.flip(0), flipped)[0], decoder.logits(nxt.flip(0), z, state)[0].flip(0), atol=1e-5
    )


def test_from_pretrained_directories_and_the_rewritten_config(pretrained, tokenizer):
    from transformers import AutoModel, AutoModelForCausalLM

    model = hf_vae(tokenizer.vocab_size, decoder=str(pretrained["gpt2"]), encoder=str(pretrained["bert"]))
    gpt2 = AutoModelForCausalLM.from_pretrained(pretrained["gpt2"])
    bert = AutoModel.from_pretrained(pretrained["bert"])
    for mine, theirs in ((model.decoder.model, gpt2), (model.encoder.model, bert)):
        own = mine.state_dict()
        assert all(torch.equal(own[k], v) for k, v in theirs.state_dict().items() if k in own)  # not re-initialised
    assert model.encoder.model.pooler is None and model.encoder.retokenizer is None
    section = model.config.section.huggingface
    assert section.decoder is None and section.encoder is None
    assert section.decoder_config["model_type"] == "gpt2" and section.encoder_config["model_type"] == "bert"
    rebuilt = build_model(model.config.section, tokenizer.vocab_size)  # from the rewritten config dicts
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def copy_dirs(pretrained: dict[str, Path], tmp_path: Path, *names: str) -> list[str]:
    out = []
    for name in names:
        shutil.copytree(pretrained[name], tmp_path / name)
        out.append(str(tmp_path / name))
    return out


def test_saved_model_is_self_contained_and_keeps_gpt2_tied(tmp_path, pretrained, tokenizer):
    from safetensors import safe_open

    decoder_dir, encoder_dir = copy_dirs(pretrained, tmp_path, "gpt2", "bert")
    model = hf_vae(tokenizer.vocab_size, decoder=decoder_dir, encoder=encoder_dir).eval()
    model.save_pretrained(tmp_path / "saved")
    shutil.rmtree(decoder_dir)
    shutil.rmtree(encoder_dir)
    with safe_open(str(tmp_path / "saved" / "model.safetensors"), "pt") as f:
        assert "decoder.model.lm_head.weight" not in set(f.keys())  # stored once, as the tied wte
    loaded = load_model(tmp_path / "saved")
    gpt2 = loaded.decoder.model
    assert gpt2.lm_head.weight is gpt2.transformer.wte.weight
    batch = batch_of(tokenizer, TEXTS)
    z = torch.randn(len(TEXTS), 2, LATENT)
    assert torch.equal(model.log_likelihood(batch.tokens, z), loaded.log_likelihood(batch.tokens, z))
    assert torch.equal(model.encode(batch.tokens, batch.lengths).mean, loaded.encode(batch.tokens, batch.lengths).mean)


def test_encoder_with_its_own_tokenizer_retokenizes(tmp_path, pretrained, tokenizer):
    decoder_dir, encoder_dir = copy_dirs(pretrained, tmp_path, "gpt2", "bert_wp")
    model = hf_vae(tokenizer.vocab_size, decoder=decoder_dir, encoder=encoder_dir, pooling="first").eval()
    encoder: HFEncoder = model.encoder
    assert encoder.retokenizer is not None
    batch = batch_of(tokenizer, TEXTS)
    ids, mask = encoder.retokenizer(batch.tokens, batch.lengths)
    words = [t.split() for t in TEXTS]
    assert mask.sum(1).tolist() == [len(w) + 2 for w in words]  # [CLS] words [SEP], by the encoder's vocabulary
    assert ids[:, 0].tolist() == [2] * len(TEXTS)
    posterior = model.encode(batch.tokens, batch.lengths)
    posterior.mean.sum().backward()
    assert encoder.model.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    model.save_pretrained(tmp_path / "saved")
    shutil.rmtree(encoder_dir)
    shutil.rmtree(decoder_dir)
    loaded = load_model(tmp_path / "saved")
    assert torch.equal(loaded.encode(batch.tokens, batch.lengths).mean, posterior.mean)


def test_vamp_prior_reads_pseudo_inputs_through_the_encoder():
    model = hf_vae(30, prior={"type": "vamp", "components": 3, "pseudo_length": 4})
    assert model.prior.pseudo_inputs.shape == (3, 6, 32)
    posterior = model.encode(torch.tensor([[BOS, 4, 5, EOS]]), torch.tensor([2]))
    kl = model.kl(posterior, posterior.rsample(2))
    kl.sum().backward()
    assert torch.isfinite(kl).all() and model.prior.pseudo_inputs.grad.abs().sum() > 0


def test_reload_keeps_the_attention_implementation(tmp_path):
    model = hf_vae(30, decoder_config={**GPT2, "attn_implementation": "eager"})
    model.save_pretrained(tmp_path)
    assert load_model(tmp_path).decoder.model.config._attn_implementation == "eager"


def test_configuration_errors(pretrained, tokenizer):
    with pytest.raises(TextVAEError, match="model_type"):
        hf_vae(30, decoder_config={"n_layer": 1})
    with pytest.raises(TextVAEError, match="ordinary tokens"):
        hf_vae(tokenizer.vocab_size + 10, decoder=str(pretrained["gpt2"]))
    with pytest.raises(TextVAEError, match="no such pretrained model directory"):
        hf_vae(30, decoder=str(pretrained["gpt2"] / "missing"))
    decoder = hf_vae(30).decoder
    with pytest.raises(TextVAEError, match="max_position_embeddings"):
        decoder.logits(torch.full((1, GPT2["n_positions"] + 1), 5), torch.zeros(1, LATENT))


DOCS = [[4 + (i * 7 + j) % 20 for j in range(2 + i % 6)] for i in range(40)]
UPDATES = {
    "joint": (JointUpdateConfig(), "sdpa"),
    "aggressive": (AggressiveUpdateConfig(type="aggressive", max_inner_steps=4, check_every=2), "sdpa"),
    "savae_fd": (SemiAmortizedUpdateConfig(type="savae", svi=SVIConfig(steps=2, hvp="finite_difference")), "sdpa"),
    "savae_exact": (SemiAmortizedUpdateConfig(type="savae", svi=SVIConfig(steps=2, hvp="exact")), "eager"),
}


@pytest.mark.parametrize("name", list(UPDATES))
def test_update_rules_train_encoder_and_decoder(name):
    cfg, attention = UPDATES[name]
    model = hf_vae(30, decoder_config={**GPT2, "attn_implementation": attention})
    ctx = UpdateContext(
        model=model,
        objective=build_objective(ElboConfig(), 5, 1),
        optim=OptimConfig(type="adam", lr=1e-3),
        cfg=cfg,
        lr=1e-3,
        sample_batch=RandomBatches(TokenizedSplit(DOCS), 8, seed=0),
    )
    assert_rule_trains_both_networks(build_update(ctx), model)


def exact_savae_context(model) -> UpdateContext:
    """SA-VAE with exact Hessian-vector products (double backward) on batches of 4."""
    return UpdateContext(
        model=model,
        objective=build_objective(ElboConfig(), 5, 1),
        optim=OptimConfig(lr=0.1),
        cfg=UPDATES["savae_exact"][0],
        lr=0.1,
        sample_batch=RandomBatches(TokenizedSplit(DOCS), 4, seed=0),
    )


def test_exact_hvp_through_fused_attention_asks_for_finite_differences():
    """Without attention dropout, CPU sdpa takes a fused kernel that has no double backward."""
    model = hf_vae(30, decoder_config={**GPT2, "attn_pdrop": 0.0})
    rule = build_update(exact_savae_context(model))
    with pytest.raises(TextVAEError, match="finite_difference"):
        rule(rule.sample_batch(), 0)


@pytest.mark.parametrize("attention", [None, "eager"])
def test_pretrained_directories_choose_the_attention_kernel(pretrained, tokenizer, attention):
    """Without dropout, CPU sdpa has no double backward: `attn_implementation: eager` makes exact SA-VAE work."""
    model = hf_vae(
        tokenizer.vocab_size, decoder=str(pretrained["gpt2"]), encoder=str(pretrained["bert"]), attention=attention
    )
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    ctx = exact_savae_context(model)
    if attention is None:
        with pytest.raises(TextVAEError, match="finite_difference"):
            build_update(ctx)(ctx.sample_batch(), 0)
    else:
        assert model.decoder.model.config._attn_implementation == "eager"
        assert_rule_trains_both_networks(build_update(ctx), model)


def test_beam_search_runs_on_the_hugging_face_decoder(tokenizer, pretrained):
    from textvae.generation.decoding import DecodingConfig, decode

    model = hf_vae(tokenizer.vocab_size, decoder=str(pretrained["gpt2"])).eval()
    z = torch.randn(3, LATENT)
    greedy = decode(model.decoder, z, DecodingConfig(strategy="greedy", max_length=6))
    assert decode(model.decoder, z, DecodingConfig(strategy="beam", beam_size=1, max_length=6)) == greedy
    beams = decode(model.decoder, z, DecodingConfig(strategy="beam", beam_size=3, length_penalty=0.0, max_length=6))
    with torch.no_grad():
        scores = [
            model.decoder.log_prob(collate([(0, ids)]).tokens, z[i : i + 1, None]).item()
            for rows in (greedy, beams)
            for i, ids in enumerate(rows)
        ]
    assert all(b >= g - 1e-4 for g, b in zip(scores[:3], scores[3:]))  # never worse than greedy here
