"""Music Transformer: a decoder-only transformer with relative global self-attention (Huang et al. 2018).

Each layer learns relative position embeddings ``Er`` (per head, or shared by the heads) for distances
0..max_len-1. The relative logits ``S_rel[i, j] = q_i . Er[i - j]`` come from one matrix product
``Q Er^T`` followed by the paper's *skewing* (pad, reshape, slice), so no L x L x D tensor is ever built:
the extra memory is O(L*D) for the embeddings plus the L x L logits that attention has anyway.

Attention kernels (``attn_impl``):

* ``explicit``: the textbook ``softmax((QK^T + S_rel) / sqrt(d)) V``.
* ``chunked``: the same, one block of 128 queries at a time over the keys up to the block's last query, so the
  future half of the logits is mostly never computed; from L = 1024 recomputed in backward: memory O(L),
  not O(L^2); a sequence of one block runs the explicit kernel.
* ``sdpa``: ``F.scaled_dot_product_attention`` with the skewed relative logits as an additive float mask
  (the causal mask folded in), which uses PyTorch's fused kernels.
* ``flex``: ``torch.nn.attention.flex_attention`` with the relative logits in a ``score_mod``
  (fast only under ``torch.compile``, i.e. on GPU).
* ``auto``: by rule (kernel_order): chunked on a CPU; flex on CUDA when compiled, else sdpa.

The ``vanilla`` attention type (absolute learned positions, no relative term) is there for comparison.
Incremental decoding keeps a key/value cache per layer (decode.py); the relative term for new queries is computed
against the cached keys, so cached and uncached generation give the same tokens. One token per row at inference
takes decode.step, the same layers without per-module overhead.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import decode, state
from .decode import Caches, KVCache

ATTN_IMPLS = ("auto", "explicit", "chunked", "sdpa", "flex")
CHUNK = 128  # query rows per block of the chunked kernel (64, 128, 256, 512 measured: 128 fastest on a CPU)
RECOMPUTE_FROM = 1024  # the chunked kernel keeps its blocks' logits for backward below this length (faster), and
# recomputes them from it (memory O(L)): at 1024 keeping them trained x1.37 as fast in 1.6x the memory (RESULTS.md)


@dataclass
class TransformerConfig:
    """Model hyper-parameters; stored beside the weights as config.json."""

    vocab_size: int = 390
    n_layer: int = 6
    n_head: int = 8
    d_model: int = 512
    d_ff: int = 2048
    max_len: int = 2048
    dropout: float = 0.1
    attention: str = "relative"  # "relative" or "vanilla"
    rel_shared_heads: bool = False  # one Er per layer shared by all heads (else one per head)
    tie_embeddings: bool = True
    bias: bool = True
    pad_id: int = 0
    eos_id: int = 1
    state_features: bool = False  # the sounding-notes state as an input (models/state.py); absent in older folders
    state_logits: bool = False  # and as a bias on the note logits (state.logit_bias); needs state_features

    def __post_init__(self) -> None:
        if self.attention not in ("relative", "vanilla"):
            raise ValueError(f"attention must be 'relative' or 'vanilla', not {self.attention!r}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_head {self.n_head}")
        for name in ("vocab_size", "n_layer", "n_head", "d_model", "d_ff", "max_len"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if self.state_logits and not self.state_features:
            raise ValueError("state_logits needs state_features")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TransformerConfig:
        """Build from a dict; unknown keys are an error (a config from another program is not silently used)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**data)


# Named configurations. `base` is the paper's (6 layers, d 512, 8 heads, ff 2048, length 2048).
CONFIGS: dict[str, dict] = {
    "tiny": dict(n_layer=3, n_head=4, d_model=128, d_ff=384, max_len=256, dropout=0.1),
    "small": dict(n_layer=4, n_head=8, d_model=256, d_ff=1024, max_len=1024, dropout=0.1),
    # the shipped base model's shape: small's width at half its context, so a CPU trains it in hours
    "medium": dict(n_layer=4, n_head=8, d_model=256, d_ff=1024, max_len=512, dropout=0.1),
    "base": dict(n_layer=6, n_head=8, d_model=512, d_ff=2048, max_len=2048, dropout=0.1),
}
for _c in CONFIGS.values():  # every new model follows the sounding notes; a folder's config.json says for itself
    _c["state_features"] = _c["state_logits"] = True


def get_config(name: str, **overrides) -> TransformerConfig:
    """A named config with optional overrides, e.g. get_config('tiny', attention='vanilla')."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; choose one of {', '.join(CONFIGS)}")
    return TransformerConfig(**{**CONFIGS[name], **overrides})


def skew(qer: torch.Tensor) -> torch.Tensor:
    """The paper's skewing, for Lq queries that are the last of Lk keys: (..., Lq, Lk) logits with column c <->
    distance Lk-1-c  ->  S_rel[i, j] = d(i - j), row i shifted left by Lq-1-i.

    Pad one column on the left and read the flat buffer from offset Lq: for Lq = Lk that is the paper's view as
    (L+1, L) without its first row, and a block of queries after cached keys is the same copy, not a gather.
    Entries above the diagonal are meaningless and must be masked by the caller.
    """
    *lead, lq, lk = qer.shape
    padded = F.pad(qer, (1, 0))
    return padded.flatten(-2)[..., lq:lq + lq * lk].unflatten(-1, (lq, lk))


def rel_logits(q: torch.Tensor, er: torch.Tensor, past: int) -> torch.Tensor:
    """Relative logits (B, H, Lq, Lk) for queries at positions past..past+Lq-1 over keys 0..Lk-1.

    ``er`` holds embeddings for distances max_len-1 .. 0 along its second-to-last axis (distance 0 last).
    Above-diagonal (future) entries are unspecified.
    """
    lq = q.shape[-2]
    lk = past + lq
    e = er[..., er.shape[-2] - lk:, :]  # distances lk-1 .. 0
    qer = q @ e.transpose(-1, -2)  # (B, H, Lq, Lk): column c <-> distance lk-1-c
    if lq == 1:
        return qer  # the one query sits at position lk-1: column c is key c
    return skew(qer)


_MASKS: dict[tuple, torch.Tensor] = {}


def _future_mask(lq: int, lk: int, device: torch.device) -> torch.Tensor:
    """Bool (lq, lk): True where a key lies in the query's future (queries are the last lq positions)."""
    key = (lq, lk, str(device))
    m = _MASKS.get(key)
    if m is None:
        if len(_MASKS) > 64:
            _MASKS.clear()
        m = _MASKS[key] = torch.ones(lq, lk, dtype=torch.bool, device=device).triu(lk - lq + 1)
    return m


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout whose mask comes from 64-bit random words cut into 16-bit lanes.

    Same distribution as F.dropout up to p's rounding to 1/65536, drawn from the same (seeded) torch
    generator, but about 2.5x faster on CPU, where per-element Bernoulli draws dominate a small model's
    attention cost. ``masked_fill`` with the bool mask, not a product with it, so no float copy of the mask is made
    in forward or backward.
    """
    return x.masked_fill(drop_mask(x, p), 0.0) * (1.0 / (1.0 - p))


def drop_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """Bool tensor shaped like x, True (dropped) with probability p (see fast_dropout)."""
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-2 ** 63, 2 ** 63 - 1)
    lanes = words.view(torch.int16)[:n].view(x.shape)
    return lanes < (-32768 + round(p * 65536))


class FastDropout(nn.Dropout):
    """nn.Dropout with fast_dropout's cheaper mask on CPU (the built-in kernel elsewhere)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        return fast_dropout(x, self.p)


class Attention(nn.Module):
    """Causal multi-head self-attention, relative (Huang et al.) or vanilla."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.n_head = cfg.n_head
        self.head_dim = cfg.d_model // cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.attn_drop = FastDropout(cfg.dropout)
        self.resid_drop = FastDropout(cfg.dropout)
        self.relative = cfg.attention == "relative"
        if self.relative:
            n = 1 if cfg.rel_shared_heads else cfg.n_head
            self.er = nn.Parameter(torch.randn(n, cfg.max_len, self.head_dim) * self.head_dim ** -0.5)
        self.impl = "explicit"

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=-1)
        q = q.view(B, L, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(B, L, self.n_head, self.head_dim).transpose(1, 2)
        v = v.view(B, L, self.n_head, self.head_dim).transpose(1, 2)
        past = 0
        if cache is not None:
            past = cache.pos
            k, v = cache.append(k, v)
        y = self._attend(q, k, v, past)
        y = y.transpose(1, 2).reshape(B, L, D)
        return self.resid_drop(self.proj(y))

    def _causal_bias(self, q: torch.Tensor, past: int) -> torch.Tensor:
        """Additive (.., Lq, Lk) bias: scaled relative logits (if any) with -inf on future keys."""
        lq = q.shape[-2]
        lk = past + lq
        if lq == 1:  # one new query sees every cached key: nothing to mask
            if self.relative:
                return rel_logits(q, self.er.to(q.dtype), past) * (self.head_dim ** -0.5)
            return torch.zeros(1, lk, dtype=q.dtype, device=q.device)
        future = torch.ones(lq, lk, dtype=torch.bool, device=q.device).triu(past + 1)
        if self.relative:
            bias = rel_logits(q, self.er.to(q.dtype), past) * (self.head_dim ** -0.5)
            return bias.masked_fill(future, float("-inf"))
        return torch.zeros(lq, lk, dtype=q.dtype, device=q.device).masked_fill(future, float("-inf"))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int) -> torch.Tensor:
        drop = self.cfg.dropout if self.training else 0.0
        impl = self.impl
        if impl == "flex" and past == 0:
            return self._flex(q, k, v)
        if impl in ("sdpa", "flex"):
            if not self.relative and q.shape[-2] == 1:
                return F.scaled_dot_product_attention(q, k, v)
            if not self.relative and past == 0:
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=drop)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self._causal_bias(q, past), dropout_p=drop)
        if impl == "chunked" and past == 0 and q.shape[-2] > CHUNK:
            return self._chunked(q, k, v, drop)
        return self._explicit(q, k, v, past, drop)

    def _chunked(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, drop: float) -> torch.Tensor:
        """The explicit kernel one block of CHUNK queries at a time, each over the keys up to its last row (the
        rest is the future, so about half of the L x L logits are never computed). From RECOMPUTE_FROM the blocks
        are recomputed in backward: never more than CHUNK x L of logits are kept, so memory grows with L, not
        L^2. A block's relative term is the cached-decoding case (queries after ``past`` keys); the dropout masks
        are redrawn identically in the recomputation (checkpoint keeps the RNG state)."""
        from torch.utils.checkpoint import checkpoint

        L = q.shape[-2]
        out = []
        for i0 in range(0, L, CHUNK):
            i1 = min(L, i0 + CHUNK)
            qb, kb, vb = q[..., i0:i1, :], k[..., :i1, :], v[..., :i1, :]
            if torch.is_grad_enabled() and L >= RECOMPUTE_FROM:
                out.append(checkpoint(self._explicit, qb, kb, vb, i0, drop, use_reentrant=False))
            else:
                out.append(self._explicit(qb, kb, vb, i0, drop))
        return torch.cat(out, dim=-2)

    def _explicit(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int, drop: float) -> torch.Tensor:
        """Queries at positions past..past+Lq-1 over keys 0..past+Lq-1, in as few passes over the Lq x Lk logits
        as eager PyTorch allows: the scale folded into q (Lq x Dh, not Lq x Lk); the skewed relative term added by
        the key product itself (``baddbmm`` reads the skewed view, no copy); the causal mask filled in place on
        the last Lq keys only (the rest are all in the past); softmax in the logits' own dtype (under bf16
        autocast it reads and writes bf16 and sums in fp32, where autocast would copy the logits to fp32 and
        back); the cheap dropout mask, its 1/(1-p) applied to the Lq x Dh output."""
        B, H, lq, hd = q.shape
        lk = past + lq
        qs = q * (self.head_dim ** -0.5)
        kt = k.transpose(-1, -2)
        if self.relative:
            bias = rel_logits(qs, self.er.to(qs.dtype), past)
            att = torch.baddbmm(bias.reshape(B * H, lq, lk), qs.reshape(B * H, lq, hd),
                                kt.reshape(B * H, hd, lk)).view(B, H, lq, lk)
        else:
            att = qs @ kt
        if lq > 1:
            att[..., past:].masked_fill_(_future_mask(lq, lq, q.device), float("-inf"))
        att = F.softmax(att, dim=-1, dtype=att.dtype)
        if drop and q.device.type == "cpu":
            return (att.masked_fill(drop_mask(att, drop), 0.0) @ v) * (1.0 / (1.0 - drop))
        return self.attn_drop(att) @ v

    def _flex(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        from torch.nn.attention.flex_attention import flex_attention

        scale = self.head_dim ** -0.5
        if self.relative:
            srel = rel_logits(q, self.er.to(q.dtype), 0) * scale  # (B, H, L, L), skewed

            def score_mod(score, b, h, qi, kj):
                return torch.where(qi >= kj, score + srel[b, h, qi, kj], -float("inf"))
        else:
            def score_mod(score, b, h, qi, kj):
                return torch.where(qi >= kj, score, -float("inf"))
        return flex_attention(q, k, v, score_mod=score_mod, scale=scale)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)); x + mlp(ln(x))."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias),
            nn.GELU(),
            nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias),
            FastDropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache)
        return x + self.mlp(self.ln2(x))


class MusicTransformer(nn.Module):
    """Decoder-only Music Transformer over performance-event tokens."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.max_len, cfg.d_model) if cfg.attention == "vanilla" else None
        self.wse = nn.Linear(state.NUM_FEATURES, cfg.d_model, bias=False) if cfg.state_features else None
        self.state_bias = nn.Parameter(torch.zeros(state.NUM_BIAS_WEIGHTS)) if cfg.state_logits else None
        self.drop = FastDropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2 style scaled init of residual projections
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        if self.wse is not None:  # zero: a model given the state starts as the same model without it
            nn.init.zeros_(self.wse.weight)
        if cfg.tie_embeddings:
            self.head.weight = self.wte.weight

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def set_attn_impl(self, impl: str, amp_dtype: torch.dtype | None = None, compiled: bool = False) -> str:
        """Choose the attention kernel for every layer ('auto': by rule, pick_attn_impl); returns the choice."""
        if impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}")
        if impl == "auto":
            impl = pick_attn_impl(self.cfg, next(self.parameters()).device, compiled, amp_dtype)
        for block in self.blocks:
            block.attn.impl = impl
        return impl

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                caches: list[KVCache] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, L, V) and, given targets, the mean cross-entropy over non-pad target tokens."""
        B, L = idx.shape
        past = caches[0].pos if caches else 0
        if past + L > self.cfg.max_len:
            raise ValueError(f"sequence length {past + L} exceeds max_len {self.cfg.max_len}")
        if decode.can_step(self, idx, caches, targets):
            return decode.step(self, idx, caches), None
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(past, past + L, device=idx.device))
        feats = self.sounding_features(idx, caches) if self.wse is not None else None
        if feats is not None:
            x = x + self.wse(feats.to(x.dtype))
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, caches[i] if caches else None)
        logits = self.head(self.ln_f(x))
        if self.state_bias is not None:
            logits = logits + state.logit_bias(feats, self.state_bias, self.cfg.vocab_size).to(logits.dtype)
        loss = None
        if targets is not None:
            flat = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
            loss = F.cross_entropy(flat.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                   ignore_index=self.cfg.pad_id)
        return logits, loss

    def sounding_features(self, idx: torch.Tensor, caches: list[KVCache] | None) -> torch.Tensor:
        """The sounding-notes features after each token; with ``Caches``, from the state they carry (then
        advanced), else from silence."""
        before = getattr(caches, "sounding", None) or state.silence(idx.shape[0], idx.device)
        feats, after = state.advance(idx, before)
        if isinstance(caches, Caches):
            caches.sounding = after
        return feats

    def new_caches(self, batch: int, capacity: int | None = None) -> Caches:
        p = next(self.parameters())
        cap = capacity or self.cfg.max_len
        hd = self.cfg.d_model // self.cfg.n_head
        return Caches(KVCache(batch, self.cfg.n_head, cap, hd, p.device, p.dtype) for _ in self.blocks)


def kernel_order(device: torch.device | str, compiled: bool = False) -> list[str]:
    """The attention kernels for a device, best first, by rule and never by a timing, so that one command's speed
    and memory do not depend on the luck of a measurement on a busy machine.

    On a CPU the chunked kernel: its blocks skip most of the future half of the logits, so it trained faster than
    the explicit kernel at every length measured (batch 4, the peer's shape, bench/RESULTS.md: at L = 512 x1.3
    with bf16, x2.5 in fp32), and from L = 1024, recomputed in backward, in a fraction of its memory (a quarter
    at 2048). The explicit kernel was faster than SDPA with a float mask (SDPA's unfused path) in every step measured in
    bench/RESULTS.md. On CUDA flex_attention where the model is compiled (its relative term in a
    score_mod), else SDPA's fused kernels.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return ["chunked", "explicit", "sdpa"]
    return ["flex", "sdpa", "explicit"] if compiled else ["sdpa", "explicit"]


def pick_attn_impl(cfg: TransformerConfig, device: torch.device | str, compiled: bool = False,
                   amp_dtype: torch.dtype | None = None) -> str:
    """The first kernel of kernel_order() that runs here (one tiny forward + backward each; cached per device
    type and config shape). A kernel that fails is named in a warning and skipped."""
    device = torch.device(device)
    key = (device.type, compiled, cfg.attention, cfg.n_head, cfg.d_model, amp_dtype)
    if key not in _IMPL_CACHE:
        with torch.random.fork_rng(devices=[]):  # the check must not shift the caller's random stream
            _IMPL_CACHE[key] = _first_that_runs(cfg, device, kernel_order(device, compiled), amp_dtype)
    return _IMPL_CACHE[key]


def _first_that_runs(cfg: TransformerConfig, device: torch.device, candidates: list[str],
                     amp_dtype: torch.dtype | None = None) -> str:
    import contextlib
    import logging

    layer_cfg = TransformerConfig(**{**cfg.to_dict(), "n_layer": 1})
    attn = Attention(layer_cfg).to(device).train()
    x = torch.randn(2, min(16, cfg.max_len), cfg.d_model, device=device, requires_grad=True)
    cast = (torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None
            else contextlib.nullcontext())
    for impl in candidates:
        attn.impl = impl
        try:
            with cast:
                y = attn(x)
            y.float().sum().backward()
            return impl
        except Exception as exc:  # a kernel this build cannot run is not chosen, and the reason is shown
            logging.getLogger(__name__).warning("attention kernel %r cannot run here (%s: %s); not used",
                                                impl, type(exc).__name__, exc)
    raise RuntimeError(f"no attention kernel runs on {device} (tried {', '.join(candidates)})")


_IMPL_CACHE: dict[tuple, str] = {}
