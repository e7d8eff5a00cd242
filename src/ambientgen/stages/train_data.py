"""Training data for `ambientgen train`: length-grouped random windows (resumable sampler positions), the
rehearsal mix for fine-tuning, padded batches, the eval NLL, and the primers saved beside a model."""

from __future__ import annotations

import logging

import numpy as np

from ..music.performance import complete_window
from .train_state import TrainOptions, autocast

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------
# Data


class WindowSampler:
    """Random training windows, batched by similar length, reproducible from a JSON-serialisable state.

    Batches come in chunks of ``pool`` batches: a chunk draws pool*batch windows (piece chosen with
    probability proportional to its length, start uniform, each opened with the notes sounding at its start:
    ``performance.complete_window``), sorts them by length and cuts them into batches,
    which are visited in a shuffled order. The state is the RNG state at the chunk's start plus the index
    inside it, so a resumed run regenerates the same chunk and continues where it stopped.
    """

    def __init__(self, pieces: list[np.ndarray], batch_size: int, window: int, seed: int, pool: int = 8):
        if not pieces:
            raise ValueError("no training pieces")
        self.pieces = pieces
        self.batch_size = batch_size
        self.window = window
        self.pool = pool
        lengths = np.array([len(p) for p in pieces], dtype=np.float64)
        self.weights = lengths / lengths.sum()
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.chunk_state = self.rng.bit_generator.state
        self.chunk: list[list[np.ndarray]] = []
        self.index = 0
        self._new_chunk()

    def _new_chunk(self) -> None:
        self.chunk_state = self.rng.bit_generator.state
        n = self.pool * self.batch_size
        which = self.rng.choice(len(self.pieces), size=n, p=self.weights)
        wins = []
        for i in which:
            p = self.pieces[i]
            s = int(self.rng.integers(0, len(p) - self.window + 1)) if len(p) > self.window else 0
            wins.append(complete_window(p, s, self.window).ids)
        wins.sort(key=len)
        batches = [wins[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        order = self.rng.permutation(len(batches))
        self.chunk = [batches[i] for i in order]
        self.index = 0

    def next(self) -> list[np.ndarray]:
        if self.index >= len(self.chunk):
            self._new_chunk()
        b = self.chunk[self.index]
        self.index += 1
        return b

    def state(self) -> dict:
        return {"chunk_state": self.chunk_state, "index": self.index}

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["chunk_state"]
        self._new_chunk()
        self.index = int(state["index"])


class MixedSampler:
    """Batches of the user's windows with rehearsal windows (the base model's corpus) mixed in: ``replay`` of
    each batch comes from the corpus, so fine-tuning keeps seeing the music the base learned from."""

    def __init__(self, pieces: list[np.ndarray], replay: list[np.ndarray], batch_size: int, window: int, seed: int,
                 share: float):
        n_replay = min(batch_size - 1, max(1, round(batch_size * share)))
        self.user = WindowSampler(pieces, batch_size - n_replay, window, seed)
        self.replay = WindowSampler(replay, n_replay, window, seed + 1)

    def next(self) -> list[np.ndarray]:
        return self.user.next() + self.replay.next()

    def state(self) -> dict:
        return {"user": self.user.state(), "replay": self.replay.state()}

    def set_state(self, state: dict) -> None:
        self.user.set_state(state["user"])
        self.replay.set_state(state["replay"])


def make_sampler(pieces: list[np.ndarray], replay: list[np.ndarray], opts: TrainOptions, window: int):
    """The training batches: the data set's windows alone, or mixed with rehearsal windows (--replay)."""
    if replay and opts.replay and opts.replay > 0 and opts.batch_size > 1:
        return MixedSampler(pieces, replay, opts.batch_size, window, opts.seed, opts.replay)
    return WindowSampler(pieces, opts.batch_size, window, opts.seed)


def collate(windows: list[np.ndarray], pad_id: int):
    """(inputs, targets) LongTensors, right-padded with pad_id to the longest window."""
    import torch

    L = max(len(w) for w in windows) - 1
    x = np.full((len(windows), L), pad_id, dtype=np.int64)
    y = np.full((len(windows), L), pad_id, dtype=np.int64)
    for i, w in enumerate(windows):
        n = len(w) - 1
        x[i, :n] = w[:-1]
        y[i, :n] = w[1:]
    return torch.from_numpy(x), torch.from_numpy(y)


def eval_windows(pieces: list[np.ndarray], window: int, limit: int) -> list[tuple[np.ndarray, int]]:
    """A fixed evaluation set: consecutive (window, context) pairs of each piece in turn, round-robin, up to
    ``limit``. Each window opens with the notes sounding at its start (``complete_window``); those ``context``
    ids are not scored, so every next-token target of a piece is scored once."""
    per_piece = []
    for p in pieces:
        wins, s = [], 0
        while s < len(p) - 1:
            w = complete_window(p, s, window)
            context = w.context + (s > 0)  # a later window repeats the last id of the one before
            if len(w.ids) - context < 1 or w.stop <= s + 1:
                break
            wins.append((w.ids, context))
            s = w.stop - 1
        per_piece.append(wins)
    out: list[tuple[np.ndarray, int]] = []
    depth = 0
    while len(out) < limit and any(depth < len(w) for w in per_piece):
        for w in per_piece:
            if depth < len(w) and len(out) < limit:
                out.append(w[depth])
        depth += 1
    return sorted(out, key=lambda wc: len(wc[0]))


def evaluate(model, windows: list[tuple[np.ndarray, int]], batch_size: int, device,
             amp_dtype=None) -> tuple[float, float]:
    """(NLL per scored token, next-token accuracy) over (window, context) pairs: the targets after the first
    ``context`` ids, padding excluded."""
    import torch
    import torch.nn.functional as F

    if not windows:
        return float("nan"), float("nan")
    model.eval()
    total_nll, total_ok, total_n = 0.0, 0, 0
    pad = model.cfg.pad_id
    with torch.no_grad():
        for i in range(0, len(windows), batch_size):
            part = windows[i:i + batch_size]
            x, y = collate([w for w, _ in part], pad)
            x, y = x.to(device), y.to(device)
            scored = torch.arange(y.shape[1], device=device)[None, :] >= torch.tensor(
                [max(c - 1, 0) for _, c in part], device=device)[:, None]
            with autocast(device, amp_dtype):
                logits, _ = model(x)
            logits = logits.float()
            mask = (y != pad) & scored
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
            total_nll += float(nll[mask.reshape(-1)].sum())
            total_ok += int(((logits.argmax(-1) == y) & mask).sum())
            total_n += int(mask.sum())
    model.train()
    return total_nll / max(total_n, 1), total_ok / max(total_n, 1)


def first_tokens(pieces: list[np.ndarray]) -> dict[str, int]:
    """How often each id opens a training piece (as a window opens it: a later part of a long file does not
    open with the offs of notes struck before it): what unprimed generation draws its first token from."""
    firsts = [int(w.ids[0]) for w in (complete_window(p, 0, 2) for p in pieces) if len(w.ids)]
    return {str(k): int(v) for k, v in zip(*np.unique(firsts, return_counts=True))} if firsts else {}


# ---------------------------------------------------------------------------------------------------------
# Primers


def make_primers(pieces: list[tuple[str, np.ndarray]], seconds: float, count: int) -> list[dict]:
    """The first ``seconds`` of up to ``count`` pieces as token ids (decoded, trimmed, re-encoded)."""
    import note_seq

    from ..music import performance

    out = []
    for name, ids in pieces[:count]:
        try:
            ns = performance.decode([int(t) for t in ids])
            if ns.total_time <= 0:
                continue
            cut = note_seq.sequences_lib.trim_note_sequence(ns, 0.0, min(seconds, ns.total_time))
            toks = [int(t) for t in performance.encode(cut)]
            while toks and toks[-1] in (performance.EOS_ID, performance.PAD_ID):
                toks.pop()
        except Exception as exc:  # a piece that does not decode is not a primer
            log.warning("%s: cannot make a primer: %s", name, exc)
            continue
        if toks:
            out.append({"name": name, "seconds": round(min(seconds, ns.total_time), 3), "tokens": toks})
    return out
