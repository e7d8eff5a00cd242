"""Which notes sound after each token, and for how long: an input the model gets beside each token's embedding.

A performance sequence says which notes are held only implicitly: a NOTE_OFF refers back to a NOTE_ON that may
lie hundreds of events earlier, and the model must find it by attention before it can end the right note. A
model fine-tuned on a handful of pieces does that badly: it aims offs at pitches that are silent and leaves the
sounding ones held (bench/RESULTS.md, fine-tuning rounds two to five). So the model also gets, after every token,
the state that decoding would reach there: for each of the 128 pitches whether it sounds, and log(1 + seconds)
since it began to sound. The state follows decoding's rules exactly: a NOTE_OFF of a silent pitch does nothing,
repeated NOTE_ONs of one pitch stack up, time moves with TIME_SHIFTs alone.

``advance`` computes it for a whole (B, L) block at once, from the state before the block: training and
evaluation start every window from silence (windows open with the notes sounding at their start, so that is
exact); incremental decoding carries the state from one step to the next, so a note struck before the rolling
context's start is still known to sound.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..vocab import (
    NOTE_OFF_OFFSET,
    NOTE_ON_OFFSET,
    NUM_PITCHES,
    STEPS_PER_SECOND,
    TIME_SHIFT_OFFSET,
    VELOCITY_OFFSET,
    VOCAB_SIZE,
)

NUM_FEATURES = 2 * NUM_PITCHES  # sounding (0/1) and log(1 + seconds sounding), per pitch
NUM_BIAS_WEIGHTS = 5  # logit_bias's weights
BIAS_SCALE = 300.0  # the weights act multiplied by this, so that a fine-tuning learning rate moves them in steps


class Sounding(NamedTuple):
    """The state of each row after its last token."""

    count: torch.Tensor  # (B, 128) int64: notes sounding per pitch
    start: torch.Tensor  # (B, 128) int64: the step at which the pitch began to sound (meaningful where count > 0)
    now: torch.Tensor  # (B,) int64: steps of time so far


def silence(batch: int, device: torch.device | str = "cpu") -> Sounding:
    """The state before any token: nothing sounds, time 0."""
    z = torch.zeros(batch, NUM_PITCHES, dtype=torch.int64, device=device)
    return Sounding(z, z.clone(), torch.zeros(batch, dtype=torch.int64, device=device))


def advance(idx: torch.Tensor, state: Sounding) -> tuple[torch.Tensor, Sounding]:
    """Features (B, L, NUM_FEATURES) float32 of the state after each token of ``idx`` (B, L), and the final state.

    Vectorised over the block: the count of a pitch is a running sum of +1 (on) and -1 (off) floored at zero,
    which is the running sum minus its running minimum (where that is negative); the step a pitch began to
    sound is the running maximum of the times at which its count rose from zero.
    """
    on = (idx >= NOTE_ON_OFFSET) & (idx < NOTE_OFF_OFFSET)
    off = (idx >= NOTE_OFF_OFFSET) & (idx < TIME_SHIFT_OFFSET)
    shift = (idx >= TIME_SHIFT_OFFSET) & (idx < VELOCITY_OFFSET)
    pitch = torch.where(on, idx - NOTE_ON_OFFSET, idx - NOTE_OFF_OFFSET).clamp(0, NUM_PITCHES - 1)
    sign = on.long() - off.long()
    delta = torch.zeros(*idx.shape, NUM_PITCHES, dtype=torch.int64, device=idx.device)
    delta.scatter_(2, pitch.unsqueeze(-1), sign.unsqueeze(-1))
    total = state.count.unsqueeze(1) + delta.cumsum(1)
    count = total - total.cummin(1).values.clamp(max=0)
    now = state.now.unsqueeze(1) + torch.where(shift, idx - TIME_SHIFT_OFFSET + 1, 0).cumsum(1)
    before = torch.cat([state.count.unsqueeze(1), count[:, :-1]], 1)
    began = torch.where((before == 0) & (count > 0), now.unsqueeze(-1), -1).cummax(1).values
    start = torch.maximum(began, state.start.unsqueeze(1))
    sounding = count > 0
    seconds = torch.where(sounding, now.unsqueeze(-1) - start, 0).float() / STEPS_PER_SECOND
    feats = torch.cat([sounding.float(), torch.log1p(seconds)], -1)
    return feats, Sounding(count[:, -1], start[:, -1], now[:, -1])


def logit_bias(feats: torch.Tensor, weights: torch.Tensor, vocab_size: int = VOCAB_SIZE) -> torch.Tensor:
    """A bias (B, L, vocab_size) on the NOTE_ON and NOTE_OFF logits from the sounding-notes features.

    The same five weights for every pitch (transposition changes nothing): for NOTE_OFF of pitch p,
    ``w0 (1 - sounding_p) + w1 log(1 + seconds_p) + w2 log(1 + notes sounding)``; for NOTE_ON of p,
    ``w3 sounding_p + w4 log(1 + notes sounding)``. The input alone (``wse``) has to pass through every layer to
    tell the head that an off of a silent pitch never occurs and that a note held long is likely to end; a model
    fine-tuned for a few hundred steps learns that slowly, and its notes are left held. Here it is a handful of
    weights, learned from the data like the rest (zero at first: no bias)."""
    w = weights.to(feats.dtype) * BIAS_SCALE
    sounding, held = feats[..., :NUM_PITCHES], feats[..., NUM_PITCHES:]
    busy = torch.log1p(sounding.sum(-1, keepdim=True))
    on = w[3] * sounding + w[4] * busy
    off = w[0] * (1 - sounding) + w[1] * held + w[2] * busy
    return F.pad(torch.cat([on, off], -1), (NOTE_ON_OFFSET, vocab_size - TIME_SHIFT_OFFSET))
