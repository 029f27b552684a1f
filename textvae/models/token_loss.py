"""The output layer and the token cross-entropy fused: -log softmax(W h + b)[target] without [N, T, V] logits.

A text decoder's loss is dominated by the output layer (Yahoo: 20k words x 1024 hidden). The unfused path
writes the logits, their log-softmax, its gradient and (under bf16 autocast) fp32 copies of each: about
ten passes over an [N, T, V] tensor. Here the logits are made a chunk of rows at a time and reduced while in
cache; the backward keeps only softmax - one-hot (in the compute dtype) and, since the loss's gradient
scales each row, applies it to the small sides of the two matmuls. Padding rows are skipped.

The result equals `F.cross_entropy(layer(h), target)` up to float rounding. No double backward: the
unfused path is used where one is needed (`TokenDecoder.twice_differentiable`).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

CHUNK_LOGITS = 2**23  # logits made at once (32 MB in fp32): ~400 rows of a 20k vocabulary (fastest on CPU)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The autocast dtype in force on `x`'s device (bf16 under `torch.autocast`), else `x`'s dtype."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def loss_dtype(dtype: torch.dtype) -> torch.dtype:
    """Softmax and losses are never computed in less than fp32."""
    return torch.promote_types(dtype, torch.float32)


def _chunk_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-log softmax(logits)[target] for a chunk of rows ([m, V], [m, 1]), in at least fp32."""
    logits = logits.to(loss_dtype(logits.dtype))
    return (torch.logsumexp(logits, dim=1, keepdim=True) - logits.gather(1, target)).squeeze(1)


def _chunk_nll_and_grad_(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The chunk's nll; the logits are overwritten by d nll / d logits = softmax - one-hot (in their dtype)."""
    wide = logits.to(loss_dtype(logits.dtype))
    log_norm = torch.logsumexp(wide, dim=1, keepdim=True)
    nll = (log_norm - wide.gather(1, target)).squeeze(1)
    probs = (wide - log_norm).exp().scatter_add(1, target, torch.full_like(target, -1.0, dtype=wide.dtype))
    logits.copy_(probs)
    return nll


@functools.cache
def _compiled(kernel):
    """`kernel` through torch.compile: the cast, reductions and softmax of a chunk fused into two passes
    over the logits instead of about eight (~3x faster on CPU; compiled once per process, ~20 s)."""
    return torch.compile(kernel, dynamic=True)


def _logits(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, out: torch.Tensor | None) -> torch.Tensor:
    """x W^T + b, written into `out` when given."""
    if out is None:
        return F.linear(x, w, b)
    if b is None:
        return torch.mm(x, w.t(), out=out)
    return torch.addmm(b, x, w.t(), out=out)


class _LinearCrossEntropy(torch.autograd.Function):
    """rows [M, H], weight [V, H], bias [V] | None, targets [M] -> -log softmax(rows W^T + b)[targets], [M]."""

    @staticmethod
    def forward(ctx, rows, weight, bias, targets, dtype, want_grad, compiled):  # type: ignore[override]
        with torch.autocast(rows.device.type, enabled=False):
            x, w = rows.to(dtype), weight.to(dtype)
            b = None if bias is None else bias.to(dtype)
            kernel = _chunk_nll_and_grad_ if want_grad else _chunk_nll
            kernel = _compiled(kernel) if compiled else kernel
            nll = torch.empty(len(rows), dtype=loss_dtype(dtype), device=rows.device)
            # with a backward to come, each chunk's logits are made in place in d nll / d logits
            dlogits = torch.empty(len(rows), len(weight), dtype=dtype, device=rows.device) if want_grad else None
            step = max(1, CHUNK_LOGITS // len(weight))
            for start in range(0, len(rows), step):
                stop = min(start + step, len(rows))
                logits = _logits(x[start:stop], w, b, None if dlogits is None else dlogits[start:stop])
                nll[start:stop] = kernel(logits, targets[start:stop].unsqueeze(1))
        if want_grad:
            ctx.save_for_backward(x, w, dlogits)
        return nll

    @staticmethod
    def backward(ctx, grad_nll):  # type: ignore[override]
        if torch.is_grad_enabled():  # create_graph=True: a second derivative would silently be missing
            raise RuntimeError(
                "double backward is not implemented for the fused token loss; score inside "
                "`decoder.twice_differentiable()`"
            )
        x, w, dlogits = ctx.saved_tensors
        need_rows, need_weight, need_bias = ctx.needs_input_grad[:3]
        scale = grad_nll.unsqueeze(1)  # each row's loss gradient scales its row of dlogits
        grad_rows = grad_weight = grad_bias = None
        with torch.autocast(x.device.type, enabled=False):
            if need_rows:
                grad_rows = (dlogits @ w).to(grad_nll.dtype) * scale
            if need_weight:
                grad_weight = (dlogits.t() @ (x.to(scale.dtype) * scale).to(x.dtype)).to(grad_nll.dtype)
            if need_bias:
                grad_bias = (grad_nll.to(dlogits.dtype) @ dlogits).to(grad_nll.dtype)
        return grad_rows, grad_weight, grad_bias, None, None, None, None


def linear_cross_entropy(
    features: torch.Tensor, layer: nn.Linear, targets: torch.Tensor, ignore_index: int, compiled: bool = False
) -> torch.Tensor:
    """-log p(target) per position, [N, T] fp32 (0 where the target is `ignore_index`), from features [N, T, H]
    through `layer` (the decoder's output projection), under the autocast dtype in force. `compiled`: the
    per-chunk softmax through torch.compile (needs a C++ compiler on CPU)."""
    keep = targets != ignore_index
    # ctx.needs_input_grad ignores no_grad and inference mode: whether a backward can come is decided here
    want_grad = torch.is_grad_enabled() and (features.requires_grad or layer.weight.requires_grad)
    rows = _LinearCrossEntropy.apply(
        features[keep], layer.weight, layer.bias, targets[keep], compute_dtype(features), want_grad, compiled
    )
    nll = rows.new_zeros(targets.shape)
    nll[keep] = rows
    return nll
