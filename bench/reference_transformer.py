"""A straightforward reference Music Transformer: the textbook PyTorch version, the baseline of the benchmarks.

Same model as ambientgen.models.transformer (pre-norm decoder, relative global attention with the paper's
skewing, per-head relative embeddings, tied embeddings, GELU MLP), written the way a tutorial would:
separate Q/K/V projections, explicit ``softmax(QK^T + S_rel)`` attention with a -inf mask, a plain
(for-loop) Adam optimizer step, no fused kernels, and generation that recomputes the whole prefix for
every new token (no key/value cache).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class RefRelativeAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int, max_len: int, dropout: float, relative: bool = True):
        super().__init__()
        self.h, self.dh = n_head, d_model // n_head
        self.wq = nn.Linear(d_model, d_model)
        self.wk = nn.Linear(d_model, d_model)
        self.wv = nn.Linear(d_model, d_model)
        self.wo = nn.Linear(d_model, d_model)
        self.relative = relative
        if relative:
            self.er = nn.Parameter(torch.randn(n_head, max_len, self.dh) * self.dh ** -0.5)
        self.drop = nn.Dropout(dropout)
        self.max_len = max_len

    @staticmethod
    def skew(qer: torch.Tensor) -> torch.Tensor:
        L = qer.shape[-1]
        padded = F.pad(qer, (1, 0))
        padded = padded.reshape(qer.shape[0], qer.shape[1], L + 1, L)
        return padded[:, :, 1:, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q = self.wq(x).view(B, L, self.h, self.dh).transpose(1, 2)
        k = self.wk(x).view(B, L, self.h, self.dh).transpose(1, 2)
        v = self.wv(x).view(B, L, self.h, self.dh).transpose(1, 2)
        logits = torch.matmul(q, k.transpose(-2, -1))
        if self.relative:
            er = self.er[:, self.max_len - L:, :]
            logits = logits + self.skew(torch.matmul(q, er.transpose(-2, -1)))
        logits = logits / math.sqrt(self.dh)
        mask = torch.triu(torch.ones(L, L, device=x.device), diagonal=1).bool()
        logits = logits.masked_fill(mask, float("-inf"))
        weights = self.drop(torch.softmax(logits, dim=-1))
        out = torch.matmul(weights, v).transpose(1, 2).reshape(B, L, D)
        return self.wo(out)


class RefBlock(nn.Module):
    def __init__(self, d_model: int, n_head: int, d_ff: int, max_len: int, dropout: float, relative: bool):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = RefRelativeAttention(d_model, n_head, max_len, dropout, relative)
        self.ln2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, d_ff)
        self.ff2 = nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.ff2(F.gelu(self.ff1(self.ln2(x)))))


class RefMusicTransformer(nn.Module):
    def __init__(self, vocab_size: int, n_layer: int, n_head: int, d_model: int, d_ff: int, max_len: int,
                 dropout: float = 0.1, attention: str = "relative", pad_id: int = 0, **_ignored):
        super().__init__()
        self.pad_id = pad_id
        self.max_len = max_len
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model) if attention == "vanilla" else None
        self.blocks = nn.ModuleList(RefBlock(d_model, n_head, d_ff, max_len, dropout, attention == "relative")
                                    for _ in range(n_layer))
        self.ln = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)
        if self.pos is not None:
            x = x + self.pos(torch.arange(idx.shape[1], device=idx.device))
        x = self.drop(x)
        for b in self.blocks:
            x = b(x)
        return torch.matmul(self.ln(x), self.embed.weight.t())

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self(idx)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=self.pad_id)


def make_reference_optimizer(model: nn.Module, lr: float = 1e-3) -> torch.optim.Optimizer:
    """Adam with the per-parameter for-loop implementation (neither foreach nor fused)."""
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-9, foreach=False, fused=False)


@torch.no_grad()
def reference_generate(model: RefMusicTransformer, prompt: torch.Tensor, n_new: int, temperature: float = 1.0,
                       seed: int = 0) -> torch.Tensor:
    """Sample n_new tokens, running the whole sequence through the model for every one of them."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    seq = prompt
    for _ in range(n_new):
        logits = model(seq[:, -model.max_len:])[:, -1] / temperature
        probs = torch.softmax(logits, dim=-1)
        nxt = torch.multinomial(probs, 1, generator=gen)
        seq = torch.cat([seq, nxt], dim=1)
    return seq
