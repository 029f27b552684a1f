"""Hugging Face models as VAE networks (model.type hf_vae): a causal LM decoder (GPT-2 family) and an encoder
(BERT family), each from a local pretrained directory or from a config with random weights.

z reaches the decoder through public APIs only (Optimus, Li et al. 2020): a linear map of z added to every
input embedding (`inputs_embeds`), one key/value "memory" slot per layer computed from z and passed as
`past_key_values` (a `DynamicCache`), or both. Real tokens keep positions 0, 1, ... (explicit `position_ids`).

Ids: textvae reserves 0-3 for <pad>, <unk>, <s>, </s>; ordinary textvae id k is HF id k - 4 (the pretrained
tokenizer, `textvae.data.tokenizers.PretrainedTokenizer`, shifts the same way). </s> scores with the HF eos
logit; <pad>, <unk>, <s> and the shifted copy of eos get -inf, so probabilities sum to one over textvae's
vocabulary. A model built from a config with no `vocab_size` gets textvae's ordinary tokens plus three fresh
ids (bos, eos, pad), so any textvae tokenizer works with it.

An encoder whose directory holds its own tokenizer with another vocabulary than the decoder's (Optimus: BERT
word pieces, GPT-2 BPE) re-tokenizes: each encoder call decodes the textvae ids to text with the decoder's
tokenizer and encodes that text with the encoder's (a CPU round trip per call, fast tokenizers in Rust). Both
tokenizers are then kept, serialised, in the model config.

After loading from a directory the builder rewrites the model config (`huggingface.decoder_config` /
`encoder_config` = the loaded models' configs, directories None): a saved textvae model is self-contained.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

import torch
from pydantic import model_validator
from safetensors import SafetensorError
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, DynamicCache, PreTrainedModel

from textvae.config.sections import Section, TextModelSection
from textvae.data.tokenizers import SPECIAL_TOKENS, has_hf_tokenizer
from textvae.errors import TextVAEError
from textvae.models.base import TokenDecoder, architecture, check_pooling, document_mask, pool
from textvae.models.posteriors import Posterior, PosteriorHead
from textvae.models.weights import check_weights

if TYPE_CHECKING:
    from textvae.config.recipe import Recipe
    from textvae.models.model import LatentVariableConfig


class HuggingFaceConfig(Section):
    """Where the two networks come from (`model.huggingface`): a local pretrained directory or a config each."""

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


class HuggingFaceModelConfig(TextModelSection):
    """A VAE on Hugging Face networks (model.type hf_vae): a BERT-family encoder and a GPT-2-family decoder."""

    example: ClassVar = {
        "latent_dim": 2,
        "huggingface": {
            "decoder_config": {"model_type": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 64},
            "encoder_config": {
                "model_type": "bert",
                "hidden_size": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 32,
            },
        },
    }

    huggingface: HuggingFaceConfig | None = None  # required; None only so that the error says what to add
    # how z reaches the decoder: added to every input embedding, as one key/value memory slot per layer, or both
    latent_injection: Literal["embedding", "memory", "both"] = "both"

    @model_validator(mode="after")
    def _needs_its_section(self) -> HuggingFaceModelConfig:
        if self.huggingface is None:
            raise ValueError("model.type hf_vae needs a model.huggingface section")
        return self

    def check(self, recipe: Recipe) -> None:
        super().check(recipe)
        pretrained = self.huggingface.decoder
        if pretrained is not None and recipe.data.tokenizer.type != "pretrained":
            raise ValueError(
                "a pretrained Hugging Face decoder reads its own token ids: set data.tokenizer.type: pretrained "
                f"with data.tokenizer.path: {pretrained}"
            )


OFFSET = len(SPECIAL_TOKENS)  # textvae id of HF id 0
INJECTIONS = ("embedding", "memory", "both")
KeyValue = tuple[torch.Tensor, torch.Tensor]  # keys and values, each [N, kv_heads, positions, head_dim]


class SpecialIds(NamedTuple):
    """The HF ids fed for textvae's <pad>, <unk>, <s> and </s>."""

    pad: int
    unk: int
    bos: int
    eos: int

    def to_hf(self, tokens: torch.Tensor) -> torch.Tensor:
        """textvae ids -> HF ids (ordinary ids shifted back by 4, specials looked up)."""
        table = torch.tensor(self, device=tokens.device)
        return torch.where(tokens >= OFFSET, tokens - OFFSET, table[tokens.clamp(max=OFFSET - 1)])


class DecoderState(NamedTuple):
    """What `HFCausalDecoder.logits` carries between calls: the key/value cache and the next token's position."""

    past: tuple[KeyValue, ...]
    position: int


def _single(token_id: int | list[int] | None) -> int | None:
    return token_id[0] if isinstance(token_id, (list, tuple)) else token_id


def _first(*ids: int | list[int] | None) -> int | None:
    return next((_single(i) for i in ids if _single(i) is not None), None)


def fresh_vocabulary(vocab_size: int) -> dict[str, int]:
    """Config defaults for a model with random weights: textvae's ordinary tokens, then bos, eos and pad."""
    words = vocab_size - OFFSET
    return {"vocab_size": words + 3, "bos_token_id": words, "eos_token_id": words + 1, "pad_token_id": words + 2}


def load_hf_model(
    auto_class: type,
    directory: str | None,
    config: dict[str, Any] | None,
    vocab_size: int,
    attn_implementation: str | None = None,
):
    """`auto_class.from_pretrained(directory)`, or `from_config` (random weights) of the config dict.

    A config dict without `vocab_size` gets `fresh_vocabulary` defaults (a dict's own keys win);
    `attn_implementation` (eager, sdpa) overrides the attention kernel either way.
    """
    attention = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if directory is not None:
        if not Path(directory).is_dir():
            raise TextVAEError(f"{directory}: no such pretrained model directory")
        check_weights(Path(directory))  # safetensors only: never pytorch_model.bin or another pickle
        try:
            # float32 like the rest of the model (mixed precision is the trainer's business)
            return auto_class.from_pretrained(
                directory, dtype=torch.float32, local_files_only=True, use_safetensors=True, **attention
            )
        except (OSError, ValueError, KeyError, SafetensorError) as err:
            raise TextVAEError(f"{directory}: cannot load a Hugging Face model ({str(err).splitlines()[0]})") from err
    spec = {**(config or {}), **attention}
    if "vocab_size" not in spec:
        spec = {**fresh_vocabulary(vocab_size), **spec}
    model_type = spec.pop("model_type", None)
    if model_type is None:
        raise TextVAEError("model.huggingface: a *_config needs a model_type (e.g. gpt2, bert)")
    try:
        return auto_class.from_config(AutoConfig.for_model(model_type, **spec))
    except (ValueError, TypeError, KeyError) as err:
        reason = str(err).splitlines()[0]
        raise TextVAEError(f"model.huggingface: cannot build a {model_type} model ({reason})") from err


def portable_config(model: PreTrainedModel) -> dict[str, Any]:
    """The model's config as a plain dict that `AutoConfig.for_model(**d)` rebuilds (no directory needed)."""
    spec = model.config.to_diff_dict()
    spec.pop("_name_or_path", None)
    # kept so that a reloaded model attends as the trained one did (eager attention allows double backward)
    spec["attn_implementation"] = model.config._attn_implementation
    return {"model_type": model.config.model_type, **spec}


def _check_positions(model: PreTrainedModel, needed: int, side: str) -> None:
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and needed > limit:
        raise TextVAEError(
            f"a sequence of {needed} positions is longer than the {side}'s max_position_embeddings ({limit}); "
            "shorten the documents (data.max_length)"
        )


def _check_vocabulary(model: PreTrainedModel, vocab_size: int, side: str) -> None:
    words = vocab_size - OFFSET
    if words > model.config.vocab_size:
        raise TextVAEError(
            f"model.huggingface.{side}: the tokenizer has {words} ordinary tokens but the model's vocabulary "
            f"only {model.config.vocab_size}; use the model's own tokenizer (data.tokenizer.type: pretrained)"
        )


class HFCausalDecoder(TokenDecoder):
    """p(x|z) from a Hugging Face causal LM; z enters per `injection` (see the module docstring).

    With z None the decoder is the plain pretrained LM. `logits` carries a `DecoderState`; beam search
    reorders it with `reorder_state`.
    """

    def __init__(self, model: PreTrainedModel, vocab_size: int, latent_dim: int, injection: str = "both") -> None:
        if injection not in INJECTIONS:
            raise ValueError(f"unknown latent injection {injection!r}; expected one of {', '.join(INJECTIONS)}")
        super().__init__()
        _check_vocabulary(model, vocab_size, "decoder")
        config = model.config.get_text_config(decoder=True)
        eos = _single(config.eos_token_id)
        if eos is None or not 0 <= eos < config.vocab_size:
            raise TextVAEError(f"model.huggingface.decoder: needs an eos_token_id in its vocabulary (got {eos})")
        self.model = model
        # The LatentVariableModel gathers its children's tied weights (GPT-2's lm_head is its wte) when it is
        # created, so that saving stores the matrix once and loading ties it again.
        self.all_tied_weights_keys = {f"model.{k}": f"model.{v}" for k, v in model.all_tied_weights_keys.items()}
        self.vocab_size = vocab_size
        self.latent_dim = latent_dim
        self.specials = SpecialIds(_first(config.pad_token_id, eos), eos, _first(config.bos_token_id, eos), eos)
        self.layers = config.num_hidden_layers
        self.kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        std = getattr(config, "initializer_range", 0.02)
        self.to_embedding = self.to_memory = None
        if latent_dim and injection in ("embedding", "both"):
            self.to_embedding = _normal_linear(latent_dim, config.hidden_size, std)
        if latent_dim and injection in ("memory", "both"):
            self.to_memory = _normal_linear(latent_dim, self.layers * 2 * self.kv_heads * self.head_dim, std)

    @property
    def max_positions(self) -> int | None:
        """The longest input the decoder can read (<s> and the words), or None when unbounded."""
        return getattr(self.model.config, "max_position_embeddings", None)

    def memory(self, z: torch.Tensor) -> tuple[KeyValue, ...]:
        """One key/value slot per layer from z [N, Z]: ([N, kv_heads, 1, head_dim], same) per layer."""
        slots = self.to_memory(z).view(z.shape[0], self.layers, 2, self.kv_heads, 1, self.head_dim)
        return tuple((slots[:, i, 0], slots[:, i, 1]) for i in range(self.layers))

    def logits(self, inputs: torch.Tensor, z: torch.Tensor | None, state: DecoderState | None = None):
        """Next-token logits [N, t, V] over textvae's vocabulary; returns (logits, state)."""
        if self.to_memory is not None and self.training and _checkpointing(self.model):
            raise TextVAEError(
                "latent_injection memory cannot pass through gradient checkpointing (it drops the cache)"
            )
        if z is not None:
            z = z.to(self.model.dtype)
        if state is None:
            past = self.memory(z) if self.to_memory is not None and z is not None else ()
            state = DecoderState(past, 0)
        _check_positions(self.model, state.position + inputs.shape[1], "decoder")
        embeds = self.model.get_input_embeddings()(self.specials.to_hf(inputs))
        if self.to_embedding is not None and z is not None:
            embeds = embeds + self.to_embedding(z).unsqueeze(1)
        positions = torch.arange(state.position, state.position + inputs.shape[1], device=inputs.device)
        cache = DynamicCache(state.past or None, config=self.model.config)
        out = self.model(
            inputs_embeds=embeds, past_key_values=cache, position_ids=positions.unsqueeze(0), use_cache=True
        )
        past = tuple((keys, values) for keys, values, *_ in out.past_key_values)
        return self.textvae_logits(out.logits), DecoderState(past, state.position + inputs.shape[1])

    def textvae_logits(self, hf_logits: torch.Tensor) -> torch.Tensor:
        """[..., V_hf] -> [..., V]: </s> takes the eos logit; <pad>, <unk>, <s> and the shifted eos get -inf."""
        words, eos = self.vocab_size - OFFSET, self.specials.eos
        blocked = hf_logits.new_full((*hf_logits.shape[:-1], OFFSET - 1), float("-inf"))
        parts = [blocked, hf_logits[..., eos : eos + 1]]
        if eos < words:
            parts += [hf_logits[..., :eos], blocked[..., :1], hf_logits[..., eos + 1 : words]]
        else:
            parts.append(hf_logits[..., :words])
        return torch.cat(parts, dim=-1)

    @staticmethod
    def reorder_state(state: DecoderState, index: torch.Tensor) -> DecoderState:
        """The cache of rows `index` (beam search: which hypothesis each new row continues)."""
        past = tuple((k.index_select(0, index), v.index_select(0, index)) for k, v in state.past)
        return DecoderState(past, state.position)


def _checkpointing(model: nn.Module) -> bool:
    """Whether activation (gradient) checkpointing is on: HF layers then run without the cache."""
    return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


def _normal_linear(in_dim: int, out_dim: int, std: float) -> nn.Linear:
    """A bias-free linear map initialised N(0, std²), as the pretrained model's own layers."""
    layer = nn.Linear(in_dim, out_dim, bias=False)
    nn.init.normal_(layer.weight, 0.0, std)
    return layer


class Retokenizer:
    """textvae ids -> text (the decoder's tokenizer) -> the encoder's ids, for an encoder with its own vocabulary."""

    def __init__(self, decoder_tokenizer: str, encoder_tokenizer: str, pad_id: int, max_length: int) -> None:
        from tokenizers import Tokenizer

        self.source = Tokenizer.from_str(decoder_tokenizer)
        self.target = Tokenizer.from_str(encoder_tokenizer)
        self.target.no_padding()
        self.target.enable_truncation(max_length)
        self.pad_id = pad_id

    def __call__(self, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) [B, T'] for textvae tokens [B, T] = <s> w_1 .. w_n </s> <pad> ..."""
        rows = [row[1 : n + 1] for row, n in zip(tokens.tolist(), lengths.tolist())]
        texts = self.source.decode_batch([[i - OFFSET for i in row if i >= OFFSET] for row in rows])
        encoded = [e.ids for e in self.target.encode_batch(texts, add_special_tokens=True)]
        sizes = torch.tensor([len(row) for row in encoded], device=tokens.device)
        width = int(sizes.max())
        ids = torch.tensor([row + [self.pad_id] * (width - len(row)) for row in encoded], device=tokens.device)
        return ids, torch.arange(width, device=tokens.device) < sizes.unsqueeze(1)


class HFEncoder(nn.Module):
    """q(z|x) from a Hugging Face encoder: the first ([CLS] / <s>) or mean hidden state, then a posterior head.

    With `bridge` (serialised decoder and encoder tokenizers, see `Retokenizer`) the encoder reads its own
    re-tokenization of the text; otherwise the textvae ids map onto its vocabulary directly.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        vocab_size: int,
        latent_dim: int,
        pooling: str = "mean",
        posterior: str = "gaussian",
        bridge: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if getattr(model, "pooler", None) is not None:
            model.pooler = None  # BERT's own pooler is unused: the summary is taken here
        config = model.config
        self.model = model
        self.pooling = check_pooling(pooling)
        self.to_posterior = PosteriorHead(config.hidden_size, latent_dim, posterior)
        self.retokenizer = None
        if bridge is not None:
            length = getattr(config, "max_position_embeddings", None) or 512
            self.retokenizer = Retokenizer(bridge["decoder"], bridge["encoder"], bridge["pad_id"], length)
            return
        _check_vocabulary(model, vocab_size, "encoder")
        bos, eos = _first(config.bos_token_id, config.eos_token_id), _first(config.eos_token_id, config.bos_token_id)
        if bos is None:
            raise TextVAEError("model.huggingface.encoder: needs bos_token_id / eos_token_id (or a tokenizer)")
        self.specials = SpecialIds(_first(config.pad_token_id, eos), eos, bos, eos)

    @property
    def embedding_dim(self) -> int:
        return self.model.get_input_embeddings().embedding_dim

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Input embeddings [B, T, E] of textvae tokens (same-vocabulary encoders only)."""
        if self.retokenizer is not None:
            raise TypeError("an encoder that re-tokenizes has no embedding per textvae token")
        return self.model.get_input_embeddings()(self.specials.to_hf(tokens))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> Posterior:
        if self.retokenizer is None:
            return self.embedded(self.embed(tokens), lengths)
        ids, mask = self.retokenizer(tokens, lengths)
        return self.summarise(self.model.get_input_embeddings()(ids), mask)

    def embedded(self, embeddings: torch.Tensor, lengths: torch.Tensor) -> Posterior:
        """q(z|x) from input embeddings [B, T, E]; document i fills positions 0..lengths[i] + 1."""
        _check_positions(self.model, embeddings.shape[1], "encoder")
        return self.summarise(embeddings, document_mask(lengths.to(embeddings.device), embeddings.shape[1]))

    def summarise(self, embeddings: torch.Tensor, mask: torch.Tensor) -> Posterior:
        """The posterior from input embeddings [B, T, E] and a mask [B, T] of real positions."""
        hidden = self.model(inputs_embeds=embeddings, attention_mask=mask.long()).last_hidden_state
        return self.to_posterior(pool(hidden, mask, self.pooling))


def _hf_tokenizer(directory: str | None):
    """The Hugging Face tokenizer saved in a model directory, or None."""
    if directory is None or not has_hf_tokenizer(Path(directory)):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _encoder_bridge(model: PreTrainedModel, decoder_dir: str | None, encoder_dir: str | None) -> dict | None:
    """Set the encoder's bos / eos ids from its own tokenizer; return a `Retokenizer` bridge when its vocabulary
    differs from the decoder's (the run's tokenizer is taken to be the decoder directory's)."""
    own = _hf_tokenizer(encoder_dir)
    if own is None:
        return None
    config = model.config
    config.bos_token_id = _first(config.bos_token_id, own.cls_token_id, own.bos_token_id)
    config.eos_token_id = _first(config.eos_token_id, own.sep_token_id, own.eos_token_id)
    run = _hf_tokenizer(decoder_dir)
    if run is None or run.get_vocab() == own.get_vocab():
        return None
    pad = _first(own.pad_token_id, config.pad_token_id, 0)
    return {"decoder": run.backend_tokenizer.to_str(), "encoder": own.backend_tokenizer.to_str(), "pad_id": pad}


@architecture("hf_vae", config=HuggingFaceModelConfig)
def build_hf_vae(cfg: LatentVariableConfig) -> tuple[HFEncoder, HFCausalDecoder]:
    """Encoder and decoder from `model.huggingface`; rewrites the config so that reloading needs no directory."""
    section = cfg.section
    hf = section.huggingface
    attention = hf.attn_implementation
    decoder_model = load_hf_model(AutoModelForCausalLM, hf.decoder, hf.decoder_config, cfg.vocab_size, attention)
    decoder = HFCausalDecoder(decoder_model, cfg.vocab_size, cfg.latent_dim, section.latent_injection)
    encoder_model = load_hf_model(AutoModel, hf.encoder, hf.encoder_config, cfg.vocab_size, attention)
    bridge = getattr(cfg, "hf_tokenizers", None) or _encoder_bridge(encoder_model, hf.decoder, hf.encoder)
    encoder = HFEncoder(
        encoder_model, cfg.vocab_size, cfg.latent_dim, section.encoder_pooling, section.posterior, bridge
    )
    cfg.huggingface = {
        **cfg.huggingface,
        "decoder": None,
        "decoder_config": portable_config(decoder_model),
        "encoder": None,
        "encoder_config": portable_config(encoder_model),
    }
    if bridge is not None:
        cfg.hf_tokenizers = bridge
    return encoder, decoder
