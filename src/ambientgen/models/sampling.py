"""Sampling from the Music Transformer: temperature, top-k and nucleus (top-p) draws, and generation with the
key/value cache, a sliding context past max_len and an optional constraint on what may follow."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import state
from .transformer import MusicTransformer


@torch.no_grad()
def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None, banned: tuple[int, ...] = ()) -> torch.Tensor:
    """Draw one token per row from (B, V) logits with temperature, top-k and nucleus (top-p) filtering.

    Sampling is by inverse CDF on one uniform draw per row, so equal probabilities give equal tokens.
    """
    logits = logits.double() / temperature
    for b in banned:  # one basic-indexed fill per id: cheaper than a fancy index built every token
        logits[:, b] = float("-inf")
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        cum = sorted_p.cumsum(-1)
        drop = (cum - sorted_p) >= top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    probs = probs / probs.sum(-1, keepdim=True)
    u = torch.rand(probs.shape[0], 1, generator=generator, dtype=torch.float64, device="cpu").to(probs.device)
    cdf = probs.cumsum(-1)
    tok = torch.searchsorted(cdf, u * cdf[:, -1:]).clamp_max(probs.shape[-1] - 1)
    # never land on a zero-probability token through rounding at a boundary
    zero = probs.gather(-1, tok) == 0
    if zero.any():
        tok = torch.where(zero, probs.argmax(-1, keepdim=True), tok)
    return tok


@torch.no_grad()
def generate_tokens(model: MusicTransformer, prompt: torch.Tensor, max_new: int, temperature: float = 1.0,
                    top_k: int = 0, top_p: float = 1.0, seed: int = 0, use_cache: bool = True,
                    stop_at_eos: bool = True, should_stop=None, window: str = "auto", constraint=None
                    ) -> torch.Tensor:
    """Continue each row of ``prompt`` (B, T >= 1) by up to ``max_new`` tokens; returns (B, T + n).

    With ``use_cache`` each step runs only the new token through the model (key/value cache, relative
    term included); without it the whole context is recomputed every step. Both see the same context, so
    they give the same tokens up to max_len. Beyond it the context slides (``window``), and a model with the
    sounding-notes input (models/state.py) still follows the notes struck before the window's start:

    * ``roll`` (the default with the cache and relative attention): the oldest eighth of the cache is dropped and
      the rest kept, so the model always sees at least 7/8 of its context. Relative attention has no absolute
      positions, so the kept keys stay valid; it is what keeps notes that started long ago from never ending.
    * ``restart`` (the default otherwise): the context restarts from its last half, recomputed.

    A row that emits EOS keeps emitting PAD.
    ``should_stop(tokens)`` may end generation early (e.g. once enough seconds exist).
    ``constraint`` (``ban(logits) -> logits`` before each draw, ``push(tokens)`` after it) rules out tokens that
    mean nothing in their context, e.g. music.performance.SoundingNotes.
    """
    model.eval()
    cfg = model.cfg
    gen = torch.Generator().manual_seed(seed)
    B, n = prompt.shape
    out = torch.full((B, n + max_new), cfg.pad_id, dtype=prompt.dtype, device=prompt.device)  # filled in place
    out[:, :n] = prompt
    seq = out[:, :n]
    done = torch.zeros(B, 1, dtype=torch.bool, device=seq.device)
    if window == "auto":
        window = "roll" if use_cache and cfg.attention == "relative" else "restart"
    if window not in ("roll", "restart") or (window == "roll" and (not use_cache or cfg.attention != "relative")):
        raise ValueError(f"window {window!r} needs the cache and relative attention" if window == "roll"
                         else f"window must be auto, roll or restart, not {window!r}")
    ws = max(0, seq.shape[1] - cfg.max_len)  # start of the model's context window
    caches = None
    step_input = None
    for _ in range(max_new):
        if seq.shape[1] - ws >= cfg.max_len:
            if window == "roll" and caches is not None:
                drop = max(1, cfg.max_len // 8)
                for c in caches:
                    c.drop_oldest(drop)
                ws += drop
            else:
                ws = seq.shape[1] - cfg.max_len // 2
                caches = None
        if use_cache:
            if caches is None:
                caches = model.new_caches(B)
                step_input = seq[:, ws:]
                if cfg.state_features and ws > 0:  # notes struck before the window still sound
                    caches.sounding = state.advance(seq[:, :ws], state.silence(B, seq.device))[1]
            logits, _ = model(step_input, caches=caches)
        else:
            logits, _ = model(seq[:, ws:])
        last = logits[:, -1] if constraint is None else constraint.ban(logits[:, -1])
        tok = sample_next(last, temperature, top_k, top_p, gen, banned=(cfg.pad_id,))
        tok = torch.where(done, torch.full_like(tok, cfg.pad_id), tok)
        if constraint is not None:
            constraint.push(tok)
        out[:, n] = tok[:, 0]
        n += 1
        seq = out[:, :n]
        step_input = tok
        if stop_at_eos:
            done |= tok == cfg.eos_id
            if bool(done.all()):
                break
        if should_stop is not None and should_stop(seq):
            break
    return seq
