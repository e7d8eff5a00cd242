"""Incremental decoding: the key/value cache, and one new token per row through the model in a lean step.

At batch 1 a small model's token costs its weight reads (one to two milliseconds for the peer-sized model on a
2-core CPU, bench/RESULTS.md) plus overhead: each module call, view or mask costs microseconds. The lean
step runs the same layers as ``MusicTransformer.forward`` with plain functional calls on the modules' own
weights: residual adds fused into the projections (``addmm``), the relative term folded into the keys (for one
query, ``q . Er[d(i - j)]`` is ``q . e_j`` with the embeddings aligned to the keys, so ``q (K + E)^T`` is one
product), no dropout and no causal mask (one new query sees every cached key). Its logits equal ``forward``'s
to float rounding (tests/test_transformer.py), so the tokens drawn from them are the same.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import state


class KVCache:
    """Preallocated keys/values for one layer: (B, H, capacity, Dh)."""

    def __init__(self, batch: int, n_head: int, capacity: int, head_dim: int, device, dtype):
        self.k = torch.zeros(batch, n_head, capacity, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.pos = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = k.shape[-2]
        if self.pos + n > self.k.shape[-2]:
            raise ValueError("key/value cache is full")
        self.k[:, :, self.pos:self.pos + n] = k
        self.v[:, :, self.pos:self.pos + n] = v
        self.pos += n
        return self.k[:, :, :self.pos], self.v[:, :, :self.pos]

    def drop_oldest(self, n: int) -> None:
        """Forget the n oldest positions (the rest move to the front, in order)."""
        keep = self.pos - n
        self.k[:, :, :keep] = self.k[:, :, n:self.pos].clone()
        self.v[:, :, :keep] = self.v[:, :, n:self.pos].clone()
        self.pos = keep


class Caches(list):
    """One KVCache per layer, and the sounding-notes state after the last token (models/state.py), which goes
    on across a rolling window: the oldest keys may be dropped, the notes they struck are still known."""

    def __init__(self, caches=()):
        super().__init__(caches)
        self.sounding = None


def can_step(model: nn.Module, idx: torch.Tensor, caches: list[KVCache] | None, targets) -> bool:
    """Whether ``forward`` may take the lean step: one token per row, a cache, inference, no loss asked."""
    return (caches is not None and idx.shape[1] == 1 and targets is None and not model.training
            and not torch.is_grad_enabled())


def step(model: nn.Module, idx: torch.Tensor, caches: Caches) -> torch.Tensor:
    """Logits (B, 1, V) for one new token per row (idx: (B, 1)); the caches advance by one position."""
    cfg = model.cfg
    B, D, H = idx.shape[0], cfg.d_model, cfg.n_head
    hd = D // H
    p = caches[0].pos
    x = F.embedding(idx[:, 0], model.wte.weight)
    if model.wpe is not None:
        x = x + model.wpe.weight[p]
    feats = model.sounding_features(idx, caches)[:, 0] if model.wse is not None else None
    if feats is not None:
        x = x + F.linear(feats.to(x.dtype), model.wse.weight)
    for block, cache in zip(model.blocks, caches):
        x = _layer(block, cache, x, B, D, H, hd)
    x = F.layer_norm(x, (D,), model.ln_f.weight, model.ln_f.bias)
    logits = F.linear(x, model.head.weight, model.head.bias)
    if model.state_bias is not None:
        logits = logits + state.logit_bias(feats, model.state_bias, cfg.vocab_size).to(logits.dtype)
    return logits.unsqueeze(1)


def _layer(block: nn.Module, cache: KVCache, x: torch.Tensor, B: int, D: int, H: int, hd: int) -> torch.Tensor:
    attn, fc1, fc2 = block.attn, block.mlp[0], block.mlp[2]
    h = F.layer_norm(x, (D,), block.ln1.weight, block.ln1.bias)
    q, k, v = F.linear(h, attn.qkv.weight, attn.qkv.bias).view(B, 3, H, hd).unbind(1)
    keys, values = cache.append(k.unsqueeze(2), v.unsqueeze(2))
    if attn.relative:  # Er holds distances max_len-1 .. 0: its last rows line up with the cached keys
        keys = keys + attn.er[:, attn.er.shape[1] - cache.pos:]
    att = torch.softmax((q * hd ** -0.5).unsqueeze(2) @ keys.transpose(-1, -2), dim=-1)
    y = (att @ values).view(B, D)
    x = _linear_add(x, y, attn.proj)
    h = F.gelu(F.linear(F.layer_norm(x, (D,), block.ln2.weight, block.ln2.bias), fc1.weight, fc1.bias))
    return _linear_add(x, h, fc2)


def _linear_add(x: torch.Tensor, h: torch.Tensor, lin: nn.Linear) -> torch.Tensor:
    """x + lin(h) in one product."""
    out = torch.addmm(x, h, lin.weight.t())
    return out if lin.bias is None else out.add_(lin.bias)
