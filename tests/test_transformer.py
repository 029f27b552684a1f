"""The from-scratch transformer encoder and causal decoder (model.type transformer_vae / transformer_lm)."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_rule_trains_both_networks, savae_hvp_mismatch

import textvae.models.transformer  # noqa: F401  (registers the architectures)
from textvae.config import (
    AggressiveUpdateConfig,
    ElboConfig,
    JointUpdateConfig,
    ModelConfig,
    OptimConfig,
    SemiAmortizedUpdateConfig,
    SVIConfig,
)
from textvae.data.batching import RandomBatches, TextBatch, TokenizedSplit, collate
from textvae.errors import TextVAEError
from textvae.models.model import LatentVariableModel, build_model, load_model
from textvae.models.posteriors import Deterministic, DiagonalGaussian
from textvae.models.transformer import TransformerDecoder, TransformerEncoder
from textvae.objectives import build_objective
from textvae.training.updates import UpdateContext, build_update

pytestmark = pytest.mark.usefixtures("torch_single_thread")

VOCAB = 20
LATENT = 3
TINY = dict(d_model=16, n_heads=2, ff_dim=32, encoder_layers=1, decoder_layers=2, dropout=0.0, max_length=16)
DOCS = [[4 + (i * 7 + j) % 16 for j in range(2 + i % 6)] for i in range(40)]
INJECTIONS = ["embedding", "memory", "both"]


def tiny(seed: int = 0, transformer: dict | None = None, **overrides) -> LatentVariableModel:
    """A tiny transformer VAE (or LM with type="transformer_lm"), in eval mode."""
    spec = dict(type="transformer_vae", latent_dim=LATENT, transformer={**TINY, **(transformer or {})})
    torch.manual_seed(seed)
    return build_model(ModelConfig(**{**spec, **overrides}), VOCAB).eval()


def sharpen(module: torch.nn.Module, std: float = 0.5) -> torch.nn.Module:
    """Large random weights (in float64), so that every path has a clearly visible effect."""
    torch.manual_seed(1)
    module.double()
    with torch.no_grad():
        for param in module.parameters():
            param.normal_(0.0, std)
    return module


def batch(docs: list[list[int]] = DOCS[:5]) -> TextBatch:
    return collate(list(enumerate(docs)))


def test_shapes_and_tied_output():
    model = tiny()
    data = batch()
    posterior = model.encode(data.tokens, data.lengths)
    assert isinstance(posterior, DiagonalGaussian) and posterior.mean.shape == posterior.logvar.shape == (5, LATENT)
    assert isinstance(model.encoder, TransformerEncoder) and model.encoder.embedding_dim == 16
    logits, state = model.decoder.logits(data.inputs, posterior.mean)
    assert logits.shape == (*data.inputs.shape, VOCAB) and len(state) == TINY["decoder_layers"]
    out = model(data.tokens, data.lengths, n_samples=3)
    assert out.log_likelihood.shape == (5, 3) and out.kl.shape == (5,)
    assert model.decoder.output is None  # tied: the token embedding is the output layer
    untied = tiny(transformer=dict(tie_embeddings=False))
    assert untied.decoder.output.weight.shape == (VOCAB, 16)
    extra = sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in model.parameters())
    assert extra == VOCAB * 16


def test_gpt2_initialisation():
    model = tiny(transformer=dict(d_model=32, ff_dim=64))
    weights, biases, norms = [], [], []
    for name, param in model.named_parameters():
        if "norm" in name:
            (norms if name.endswith("weight") else biases).append(param.flatten())
        elif name.endswith("bias"):
            biases.append(param.flatten())
        else:
            weights.append(param.flatten())
    assert torch.cat(weights).std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.cat(biases).abs().max() == 0 and torch.all(torch.cat(norms) == 1)


@pytest.mark.parametrize("injection", INJECTIONS)
def test_decoder_is_causal(injection):
    decoder = sharpen(tiny(latent_injection=injection).decoder)
    inputs, z = torch.randint(4, VOCAB, (3, 8)), torch.randn(3, LATENT, dtype=torch.double)
    changed = inputs.clone()
    changed[:, 5] = (changed[:, 5] + 1 - 4) % (VOCAB - 4) + 4
    before, _ = decoder.logits(inputs, z)
    after, _ = decoder.logits(changed, z)
    torch.testing.assert_close(before[:, :5], after[:, :5], rtol=0, atol=1e-12)
    assert not torch.allclose(before[:, 5:], after[:, 5:])


@pytest.mark.parametrize(
    ("model_type", "injection"), [*(("transformer_vae", i) for i in INJECTIONS), ("transformer_lm", "both")]
)
def test_token_by_token_decoding_matches_the_whole_sequence(model_type, injection):
    decoder = sharpen(tiny(type=model_type, latent_injection=injection).decoder)
    inputs, z = torch.randint(4, VOCAB, (3, 9)), torch.randn(3, LATENT, dtype=torch.double)
    whole, _ = decoder.logits(inputs, z)
    pieces, state = [], None
    for chunk in inputs.split([1, 1, 3, 1, 3], dim=1):  # one token at a time, and a few at once
        logits, state = decoder.logits(chunk, z, state)
        pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole)


def test_reordered_state_continues_the_chosen_rows():
    decoder = sharpen(tiny().decoder)
    inputs, z = torch.randint(4, VOCAB, (3, 6)), torch.randn(3, LATENT, dtype=torch.double)
    _, state = decoder.logits(inputs[:, :4], z)
    index = torch.tensor([2, 0, 0])
    logits, _ = decoder.logits(inputs[index, 4:], z[index], decoder.reorder_state(state, index))
    torch.testing.assert_close(logits, decoder.logits(inputs[index], z[index])[0][:, 4:])


def first_block_inputs(decoder: TransformerDecoder, inputs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """What the first decoder layer receives: token + position (+ latent) embeddings."""
    seen = []
    handle = decoder.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    decoder.logits(inputs, z)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("injection", INJECTIONS)
def test_each_injection_makes_the_likelihood_depend_on_z(injection):
    decoder = sharpen(tiny(latent_injection=injection).decoder)
    tokens = batch().tokens
    z1, z2 = torch.randn(2, 5, 1, LATENT, dtype=torch.double)
    assert not torch.allclose(decoder.log_prob(tokens, z1), decoder.log_prob(tokens, z2))
    same_embeddings = torch.equal(
        first_block_inputs(decoder, tokens, z1[:, 0]), first_block_inputs(decoder, tokens, z2[:, 0])
    )
    assert same_embeddings == (injection == "memory")  # memory: z reaches attention only, never the embeddings
    assert (decoder.latent_embedding is None) == (injection == "memory")
    assert all((block.memory is None) == (injection == "embedding") for block in decoder.blocks)


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_padding_does_not_change_the_posterior(pooling):
    encoder = sharpen(tiny(pooling=pooling).encoder)
    data = batch()
    padded = torch.cat([data.tokens, torch.zeros(5, 3, dtype=torch.long)], dim=1)
    garbage = padded.clone()
    garbage[padded == 0] = torch.randint(4, VOCAB, (int((padded == 0).sum()),))
    alone = [
        encoder(data.tokens[i : i + 1, : n + 2], data.lengths[i : i + 1]) for i, n in enumerate(data.lengths.tolist())
    ]
    for tokens in (data.tokens, padded, garbage):  # only the lengths say where a document ends
        posterior = encoder(tokens, data.lengths)
        torch.testing.assert_close(posterior.mean, torch.cat([q.mean for q in alone]))
        torch.testing.assert_close(posterior.logvar, torch.cat([q.logvar for q in alone]))


def test_deterministic_posterior():
    model = tiny(posterior="deterministic")
    data = batch()
    assert isinstance(model.encode(data.tokens, data.lengths), Deterministic)
    out = model(data.tokens, data.lengths)
    assert out.kl is None and out.log_likelihood.shape == (5, 1)


def test_language_model_needs_no_latent():
    model = tiny(type="transformer_lm")
    data = batch()
    assert model.encoder is None and model.decoder.latent_dim == 0
    assert model(data.tokens, data.lengths).log_likelihood.shape == (5, 1)
    without, _ = model.decoder.logits(data.inputs, None)
    torch.testing.assert_close(model.decoder.logits(data.inputs, torch.randn(5, LATENT))[0], without)
    with pytest.raises(ValueError, match="needs a latent"):
        tiny().decoder.logits(data.inputs, None)


def test_too_long_input_is_refused():
    model = tiny(latent_injection="memory")  # the memory slot takes no position: max_length tokens fit
    tokens, z = torch.randint(4, VOCAB, (2, 17)), torch.zeros(2, LATENT)
    assert model.decoder.logits(tokens[:, :16], z)[0].shape == (2, 16, VOCAB)
    model.encoder(tokens[:, :16], torch.tensor([14, 14]))
    with pytest.raises(TextVAEError, match="max_length"):
        model.encoder(tokens, torch.tensor([15, 15]))
    with pytest.raises(TextVAEError, match="max_length"):
        model.decoder.logits(tokens, z)
    _, state = model.decoder.logits(tokens[:, :15], z)
    with pytest.raises(TextVAEError, match="max_length"):
        model.decoder.logits(tokens[:, 15:], z, state)


@pytest.mark.parametrize("injection", INJECTIONS)
def test_double_backward_through_the_decoder(injection):
    """SA-VAE's exact mode: d/dz log p(x|z) with create_graph, then backward again to the parameters."""
    model = tiny(latent_injection=injection, transformer=dict(dropout=0.1)).train()
    decoder = sharpen(model.decoder, std=0.3)
    tokens = batch().tokens
    z = torch.randn(5, 2, LATENT, dtype=torch.double, requires_grad=True)
    (grad,) = torch.autograd.grad(decoder.log_prob(tokens, z).sum(), z, create_graph=True)
    grad.pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.blocks.parameters())
    decoder.eval()
    assert torch.autograd.gradgradcheck(lambda z: decoder.log_prob(tokens[:2], z), z[:2].detach().requires_grad_())


@pytest.mark.parametrize(
    ("model_type", "tie"), [("transformer_vae", True), ("transformer_vae", False), ("transformer_lm", True)]
)
def test_save_and_load_round_trip(tmp_path, model_type, tie):
    model = tiny(type=model_type, transformer=dict(tie_embeddings=tie), pooling="first")
    data = batch()
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.config.section == model.config.section
    assert isinstance(loaded.decoder, TransformerDecoder)
    z = None if model_type == "transformer_lm" else torch.randn(5, 2, LATENT)
    expected = model.log_likelihood(data.tokens, z)
    torch.testing.assert_close(loaded.log_likelihood(data.tokens, z), expected, rtol=0, atol=0)
    if model.has_latent:
        torch.testing.assert_close(
            loaded.encode(data.tokens, data.lengths).mean, model.encode(data.tokens, data.lengths).mean
        )


def test_vamp_prior_reads_pseudo_inputs_through_the_encoder():
    model = tiny(prior=dict(type="vamp", components=3, pseudo_length=4)).train()
    data = batch()
    out = model(data.tokens, data.lengths)
    assert torch.isfinite(out.kl).all()
    out.kl.sum().backward()
    assert model.prior.pseudo_inputs.grad.abs().sum() > 0


UPDATES = {
    "joint": JointUpdateConfig(),
    "aggressive": AggressiveUpdateConfig(type="aggressive", max_inner_steps=4, check_every=2),
    "savae_exact": SemiAmortizedUpdateConfig(type="savae", svi=SVIConfig(steps=3, lr=0.5, hvp="exact")),
    "savae_fd": SemiAmortizedUpdateConfig(type="savae", svi=SVIConfig(steps=3, lr=0.5, hvp="finite_difference")),
}


def update_context(model: LatentVariableModel, cfg) -> UpdateContext:
    return UpdateContext(
        model=model,
        objective=build_objective(ElboConfig(), 5, 1),
        optim=OptimConfig(lr=0.1),
        cfg=cfg,
        lr=0.1,
        sample_batch=RandomBatches(TokenizedSplit(DOCS), 8, seed=0),
    )


@pytest.mark.parametrize("rule", list(UPDATES))
def test_update_rules_train_encoder_and_decoder(rule):
    model = tiny(transformer=dict(dropout=0.1)).train()
    assert_rule_trains_both_networks(build_update(update_context(model, UPDATES[rule])), model)


def test_savae_exact_and_finite_difference_updates_agree():
    """Double backward through the transformer gives SA-VAE's finite-difference update (float64, with dropout)."""
    mismatch = savae_hvp_mismatch(
        lambda model, svi: build_update(update_context(model, SemiAmortizedUpdateConfig(type="savae", svi=svi))),
        lambda: tiny(transformer=dict(dropout=0.1)).train().double(),
        steps=3,
        lr=0.5,
        clip=1.0,
        fd_scheme="central",
        fd_eps=1e-4,
    )
    assert mismatch < 1e-4
