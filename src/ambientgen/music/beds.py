"""Sound beds and slow movement for rendered music: noise or rain under the notes, an optional binaural beat,
and an auto-pan or stereo drift of the music itself.

Every generator is a stream: ``next(n)`` continues exactly where the previous call stopped (filter states,
phases and random state are carried), so a bed has no seam anywhere in an output of any length, including the
places where loop mode crossfades one repetition of the music into the next. A bed is the same for the same seed.

A bed's ``level`` is its loudness relative to the music, in LU (ITU-R BS.1770, as the render stage measures the
music): -12 puts the rain 12 LU under the notes. ``Mixer`` measures a stretch of each bed once and scales it to
that level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BED_TYPES = ("pink-noise", "brown-noise", "rain", "binaural")
MOTION_TYPES = ("auto-pan", "stereo-drift")
# the keys each kind takes besides `type` (and `level` for beds), with their defaults and ranges
BED_PARAMS: dict[str, dict[str, tuple[float, float, float]]] = {
    "pink-noise": {},
    "brown-noise": {},
    "rain": {"intensity": (0.5, 0.0, 1.0)},  # 0 drizzle .. 1 downpour
    "binaural": {"carrier_hz": (200.0, 40.0, 1000.0), "beat_hz": (6.0, 0.5, 40.0)},
}
MOTION_PARAMS: dict[str, dict[str, tuple[float, float, float]]] = {
    "auto-pan": {"period_s": (30.0, 2.0, 600.0), "depth": (0.5, 0.0, 1.0)},
    "stereo-drift": {"depth": (0.4, 0.0, 1.0)},
}
LEVEL_RANGE = (-40.0, 6.0)
CALIBRATION_S = 20.0  # seconds of a bed measured to set its gain (beds are stationary)
BINAURAL_CAUTION = ("A binaural beat plays a slightly different tone in each ear; listen on headphones at a low "
                    "volume, and not while driving or if you have epilepsy or a seizure disorder. It is "
                    "sound, not treatment.")

# Julius O. Smith's pink-noise filter: -3 dB/octave within 0.3 dB from 10 Hz to 20 kHz at 44.1 kHz
_PINK_B = np.array([0.049922035, -0.095993537, 0.050612699, -0.004408786])
_PINK_A = np.array([1.0, -2.494956002, 2.017265875, -0.522189400])


@dataclass
class BedSpec:
    """One bed as a preset or the command line asks for it."""

    type: str
    level: float = -14.0
    params: dict[str, float] = field(default_factory=dict)


@dataclass
class MotionSpec:
    type: str
    params: dict[str, float] = field(default_factory=dict)


def _params(kind: str, raw: dict[str, Any], table: dict[str, dict[str, tuple[float, float, float]]],
            skip: tuple[str, ...]) -> dict[str, float]:
    allowed = table[kind]
    unknown = sorted(set(raw) - set(allowed) - {"type", *skip})
    if unknown:
        raise ValueError(f"{kind}: unknown keys {unknown} (takes: {', '.join(allowed) or 'no other keys'})")
    out = {}
    for key, (default, lo, hi) in allowed.items():
        v = raw.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise ValueError(f"{kind}: {key} must be a number from {lo:g} to {hi:g}, not {v!r}")
        out[key] = float(v)
    return out


def parse_bed(raw: dict[str, Any]) -> BedSpec:
    """A bed from a presets-file table; ValueError says what is wrong."""
    kind = raw.get("type")
    if kind not in BED_TYPES:
        raise ValueError(f"bed type must be one of {', '.join(BED_TYPES)}, not {kind!r}")
    level = raw.get("level", BedSpec.level)
    if isinstance(level, bool) or not isinstance(level, int | float) or not LEVEL_RANGE[0] <= level <= LEVEL_RANGE[1]:
        raise ValueError(f"{kind}: level (LU relative to the music) must be from {LEVEL_RANGE[0]:g} to "
                         f"{LEVEL_RANGE[1]:g}, not {level!r}")
    return BedSpec(kind, float(level), _params(kind, raw, BED_PARAMS, ("level",)))


def parse_bed_option(text: str) -> BedSpec:
    """``rain`` or ``rain:-10`` (level in LU) from the command line or a generation request."""
    kind, _, level = text.strip().partition(":")
    raw: dict[str, Any] = {"type": kind}
    if level:
        try:
            raw["level"] = float(level)
        except ValueError:
            raise ValueError(f"bed {text!r}: the level after ':' must be a number of LU, e.g. rain:-12") from None
    return parse_bed(raw)


def parse_bed_options(texts: list[str] | tuple[str, ...]) -> list[BedSpec]:
    """A list of bed options (``--bed`` or a request's ``beds``); ``["none"]`` alone means no bed at all."""
    if list(texts) == ["none"]:
        return []
    return [parse_bed_option(t) for t in texts]


def parse_motion(raw: dict[str, Any]) -> MotionSpec:
    kind = raw.get("type")
    if kind not in MOTION_TYPES:
        raise ValueError(f"motion type must be one of {', '.join(MOTION_TYPES)}, not {kind!r}")
    return MotionSpec(kind, _params(kind, raw, MOTION_PARAMS, ()))


# ------------------------------------------------------------------------------------------------ generators
class _Filtered:
    """White noise through an IIR filter, per channel, with the filter state carried between blocks."""

    def __init__(self, b, a, seed: int, sample_rate: int, channels: int = 2):
        self.b, self.a = np.asarray(b, float), np.asarray(a, float)
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.zi = np.zeros((channels, max(len(self.a), len(self.b)) - 1))
        self.channels, self.rate = channels, sample_rate

    def next(self, n: int) -> np.ndarray:
        from scipy.signal import lfilter

        white = self.rng.standard_normal((n, self.channels)).T  # sample-major: the same stream for any block size
        out, self.zi = lfilter(self.b, self.a, white, axis=1, zi=self.zi)
        return out.T


def _one_pole_lowpass(cutoff_hz: float, sample_rate: int) -> tuple[list[float], list[float]]:
    k = math.exp(-2 * math.pi * cutoff_hz / sample_rate)
    return [1 - k], [1.0, -k]


class PinkNoise(_Filtered):
    def __init__(self, seed: int, sample_rate: int, **_: float):
        super().__init__(_PINK_B, _PINK_A, seed, sample_rate)


class BrownNoise(_Filtered):
    """-6 dB/octave above about 20 Hz (a leaky integrator: no drift, no DC)."""

    def __init__(self, seed: int, sample_rate: int, **_: float):
        b, a = _one_pole_lowpass(20.0, sample_rate)
        super().__init__(b, a, seed, sample_rate)


class Rain:
    """Rain-like noise: a band of hiss (400 Hz - 8 kHz) under many small drops (Poisson-timed, decaying bursts)."""

    def __init__(self, seed: int, sample_rate: int, intensity: float = 0.5):
        from scipy.signal import butter

        self.rate = sample_rate
        b, a = butter(2, [400 / (sample_rate / 2), min(0.95, 8000 / (sample_rate / 2))], btype="band")
        self.hiss = _Filtered(b, a, seed, sample_rate)
        self.when = np.random.Generator(np.random.PCG64(seed + 7919))
        self.size = np.random.Generator(np.random.PCG64(seed + 7927))
        self.drop_rate = 30.0 + 400.0 * intensity  # drops per second per channel
        self.decay = math.exp(-1.0 / (0.006 * sample_rate))  # 6 ms drops
        self.env_zi = np.zeros((2, 1))

    def next(self, n: int) -> np.ndarray:
        from scipy.signal import lfilter

        hiss = self.hiss.next(n).T
        p = self.drop_rate / self.rate
        hits = ((self.when.random((n, 2)) < p) * self.size.uniform(0.3, 3.0, (n, 2))).T
        env, self.env_zi = lfilter([1.0], [1.0, -self.decay], hits, axis=1, zi=self.env_zi)
        return (hiss * (0.35 + env)).T


class Binaural:
    """A sine at carrier_hz in the left ear and carrier_hz + beat_hz in the right, phases carried."""

    def __init__(self, seed: int, sample_rate: int, carrier_hz: float = 200.0, beat_hz: float = 6.0):
        self.rate = sample_rate
        self.freqs = np.array([carrier_hz, carrier_hz + beat_hz])
        self.pos = 0

    def next(self, n: int) -> np.ndarray:
        t = (self.pos + np.arange(n)) / self.rate
        self.pos += n
        return np.sin(2 * np.pi * self.freqs[None, :] * t[:, None]) * 0.5


GENERATORS = {"pink-noise": PinkNoise, "brown-noise": BrownNoise, "rain": Rain, "binaural": Binaural}


def make_bed(spec: BedSpec, seed: int, sample_rate: int):
    return GENERATORS[spec.type](seed, sample_rate, **spec.params)


def pan_position(spec: MotionSpec, frames: np.ndarray, sample_rate: int, seed: int) -> np.ndarray:
    """Pan position -1..1 at the given absolute frame numbers (a pure function of time: no state, no seam)."""
    t = frames / sample_rate
    depth = spec.params["depth"]
    if spec.type == "auto-pan":
        return depth * np.sin(2 * np.pi * t / spec.params["period_s"])
    # stereo drift: three slow sines with incommensurate periods and seeded phases wander without repeating
    phases = np.random.Generator(np.random.PCG64(seed)).uniform(0, 2 * np.pi, 3)
    periods = (47.0, 73.0, 113.0)
    wander = sum(np.sin(2 * np.pi * t / p + ph) for p, ph in zip(periods, phases, strict=True)) / 3
    return depth * wander


# ----------------------------------------------------------------------------------------------------- mixer
class Mixer:
    """Moves the music in the stereo field and adds the beds under it, block by block, at absolute positions."""

    def __init__(self, beds: list[BedSpec], motion: list[MotionSpec], music_lufs: float, sample_rate: int,
                 seed: int = 0):
        from ..music.loudness import LoudnessMeter

        self.rate, self.motion, self.seed = sample_rate, motion, seed
        self.beds: list[tuple[BedSpec, Any, float]] = []
        self.described: list[dict[str, float | str]] = []  # each bed as asked (for the rendering's JSON)
        for i, spec in enumerate(beds):
            meter = LoudnessMeter(sample_rate)
            probe = make_bed(spec, seed + 101 * i, sample_rate)
            for _ in range(int(CALIBRATION_S * sample_rate) // 8192):
                meter.add(probe.next(8192))
            own = meter.integrated()
            gain = 10 ** ((music_lufs + spec.level - own) / 20) if math.isfinite(own) else 0.0
            self.beds.append((spec, make_bed(spec, seed + 101 * i, sample_rate), gain))
            self.described.append({"type": spec.type, "level_lu": spec.level, **spec.params})

    def __bool__(self) -> bool:
        return bool(self.beds or self.motion)

    def __call__(self, start: int, block: np.ndarray) -> None:
        """Mix in place: block is float32 (n, 2) music at output frames start..start+n."""
        n = len(block)
        if self.motion:
            frames = start + np.arange(n, dtype=np.float64)
            pos = np.clip(sum(pan_position(m, frames, self.rate, self.seed) for m in self.motion), -1.0, 1.0)
            angle = (pos + 1.0) * np.pi / 4  # equal power: 1, 1 at the centre
            block[:, 0] *= (np.cos(angle) * math.sqrt(2)).astype(np.float32)
            block[:, 1] *= (np.sin(angle) * math.sqrt(2)).astype(np.float32)
        for _, gen, gain in self.beds:
            block += (gen.next(n) * gain).astype(np.float32)
