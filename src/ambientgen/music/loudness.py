"""Loudness of a signal fed in blocks (ITU-R BS.1770-4, as pyloudnorm measures it), for output of any length."""

from __future__ import annotations

import math
from typing import Any


def db(x: float) -> float:
    """Amplitude ratio in dB (-inf for 0)."""
    return 20 * math.log10(x) if x > 0 else float("-inf")


class LoudnessMeter:
    """Integrated loudness (ITU-R BS.1770-4, as pyloudnorm measures it) of a signal fed in blocks.

    Uses pyloudnorm's K-weighting filter coefficients with carried filter state, keeps one energy per
    100 ms step (a few hundred kB for an hour) and gates at the end exactly as ``pyloudnorm.Meter``.
    """

    def __init__(self, sample_rate: int, channels: int = 2):
        import numpy as np
        import pyloudnorm

        self.rate = sample_rate
        meter = pyloudnorm.Meter(sample_rate)
        self._stages = [(np.asarray(f.b, float), np.asarray(f.a, float), float(f.passband_gain))
                        for f in meter._filters.values()]
        self._zi = [np.zeros((channels, max(len(a), len(b)) - 1)) for b, a, _ in self._stages]
        self._step = int(round(0.1 * sample_rate))
        self._energies: list[Any] = []
        self._acc = np.zeros(channels)
        self._acc_n = 0
        self.frames = 0
        self.peak = 0.0

    def add(self, block) -> None:
        """Feed a (n, channels) block."""
        import numpy as np
        from scipy.signal import lfilter

        if len(block) == 0:
            return
        self.peak = max(self.peak, float(np.max(np.abs(block))))
        x = np.asarray(block, dtype=np.float64).T
        for k, (b, a, g) in enumerate(self._stages):
            x, self._zi[k] = lfilter(b, a, x, axis=1, zi=self._zi[k])
            if g != 1.0:
                x = x * g
        sq = np.square(x)
        self.frames += sq.shape[1]
        pos = 0
        if self._acc_n:
            take = min(self._step - self._acc_n, sq.shape[1])
            self._acc += sq[:, :take].sum(axis=1)
            self._acc_n += take
            pos = take
            if self._acc_n == self._step:
                self._energies.append(self._acc.copy())
                self._acc[:] = 0
                self._acc_n = 0
        full = (sq.shape[1] - pos) // self._step
        if full:
            chunk = sq[:, pos:pos + full * self._step].reshape(sq.shape[0], full, self._step).sum(axis=2)
            self._energies.extend(chunk.T)
            pos += full * self._step
        if pos < sq.shape[1]:
            self._acc += sq[:, pos:].sum(axis=1)
            self._acc_n += sq.shape[1] - pos

    def integrated(self) -> float:
        """Integrated loudness in LUFS (-inf for silence or less than 0.4 s)."""
        import numpy as np

        seconds = self.frames / self.rate
        n_blocks = int(np.round((seconds - 0.4) / 0.1)) + 1
        if seconds < 0.4 or n_blocks <= 0:
            return float("-inf")
        steps = list(self._energies) + ([self._acc.copy()] if self._acc_n else [])
        e = np.zeros((n_blocks + 4, len(self._acc)))
        e[:len(steps)] = np.array(steps)[: n_blocks + 4]
        window = 4 * self._step
        z = np.stack([e[j:j + 4].sum(axis=0) for j in range(n_blocks)]) / window  # (blocks, channels)
        with np.errstate(divide="ignore"):
            lj = -0.691 + 10 * np.log10(z.sum(axis=1))
            gated = lj >= -70.0
            if not gated.any():
                return float("-inf")
            rel = -0.691 + 10 * np.log10(z[gated].mean(axis=0).sum()) - 10.0
            keep = (lj > rel) & (lj > -70.0)
            if not keep.any():
                return float("-inf")
            return float(-0.691 + 10 * np.log10(z[keep].mean(axis=0).sum()))


