"""What happens to rendered training and test audio after the synthesizer: the room, the tone, the noise floor,
the level and the MP3 round trip that a listener's own files have been through.

Rooms range from dry to a cathedral (pedalboard's Freeverb, room size up to 0.98 with a wet level up to 0.7);
pads always sit in a large room, as they do on ambient records. The MP3 round trip uses the real encoder and
decoder (ffmpeg with LAME), so its delay handling, band limit and artefacts are the ones users' files have.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..util import StageError, require_binary

MP3_RATES_KBPS = (64, 96, 128, 192, 256)


@dataclass
class Effects:
    """One draw of the chain: reverb, shelving EQ, a low-pass, pink noise, gain and an optional MP3 round trip."""

    reverb_room: float = 0.3
    reverb_wet: float = 0.1
    reverb_damping: float = 0.5
    low_shelf_db: float = 0.0
    high_shelf_db: float = 0.0
    lowpass_hz: float | None = None
    noise_db: float | None = None  # pink noise level relative to the signal's RMS (None: none)
    gain_db: float = -3.0
    mp3_kbps: int | None = None

    @classmethod
    def draw(cls, rng: np.random.Generator, large_room: bool = False) -> Effects:
        """Random effects; `large_room` (pads) keeps the room at hall to cathedral size."""
        if large_room or rng.random() < 0.2:
            room, wet = rng.uniform(0.75, 0.98), rng.uniform(0.3, 0.7)
        else:
            room, wet = rng.uniform(0.0, 0.8), rng.uniform(0.0, 0.45)
        return cls(
            reverb_room=float(room), reverb_wet=float(wet), reverb_damping=float(rng.uniform(0.1, 0.8)),
            low_shelf_db=float(rng.uniform(-6, 6)), high_shelf_db=float(rng.uniform(-9, 4)),
            lowpass_hz=float(rng.uniform(3000, 8000)) if rng.random() < 0.25 else None,
            noise_db=float(rng.uniform(-45, -20)) if rng.random() < 0.5 else None,
            gain_db=float(rng.uniform(-18.0, 0.0)),
            mp3_kbps=int(rng.choice(MP3_RATES_KBPS)) if rng.random() < 0.5 else None,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def apply_effects(audio: np.ndarray, fx: Effects, sample_rate: int, seed: int = 0) -> np.ndarray:
    """The chain on mono float audio; the result is kept within [-1, 1]."""
    from pedalboard import Gain, HighShelfFilter, LowpassFilter, LowShelfFilter, Pedalboard, Reverb

    from .beds import PinkNoise

    chain = [Reverb(room_size=fx.reverb_room, wet_level=fx.reverb_wet, dry_level=1.0 - fx.reverb_wet / 2,
                    damping=fx.reverb_damping),
             LowShelfFilter(cutoff_frequency_hz=200.0, gain_db=fx.low_shelf_db),
             HighShelfFilter(cutoff_frequency_hz=min(4000.0, sample_rate * 0.4), gain_db=fx.high_shelf_db)]
    if fx.lowpass_hz and fx.lowpass_hz < sample_rate / 2:
        chain.append(LowpassFilter(cutoff_frequency_hz=fx.lowpass_hz))
    out = Pedalboard(chain)(audio[None, :].astype(np.float32), sample_rate)[0]
    if fx.noise_db is not None and len(out):
        rms = float(np.sqrt(np.mean(out.astype(np.float64) ** 2)))
        noise = PinkNoise(seed, sample_rate).next(len(out))[:, 0]
        noise *= rms * 10 ** (fx.noise_db / 20) / max(float(np.sqrt(np.mean(noise ** 2))), 1e-12)
        out = out + noise.astype(np.float32)
    out = Pedalboard([Gain(gain_db=fx.gain_db)])(out[None, :], sample_rate)[0]
    peak = float(np.abs(out).max(initial=0.0))
    if peak > 0.99:
        out = out * (0.99 / peak)
    if fx.mp3_kbps:
        out = mp3_round_trip(out, sample_rate, fx.mp3_kbps)
    return out.astype(np.float32)


def mp3_round_trip(audio: np.ndarray, sample_rate: int, kbps: int) -> np.ndarray:
    """Encode to an MP3 file and decode it again with ffmpeg (LAME). The file (not a pipe) gets LAME's gapless
    header, so the decoder drops the encoder delay and the result lines up with the input; it is trimmed or padded
    to the input's length."""
    ffmpeg = require_binary("ffmpeg")
    raw = ["-f", "f32le", "-ar", str(sample_rate), "-ac", "1"]
    with tempfile.TemporaryDirectory(prefix="ambientgen-mp3-") as tmp:
        mp3 = Path(tmp) / "x.mp3"
        enc = subprocess.run([ffmpeg, "-v", "error", *raw, "-i", "pipe:0", "-c:a", "libmp3lame", "-b:a", f"{kbps}k",
                              str(mp3)], input=np.ascontiguousarray(audio, np.float32).tobytes(), capture_output=True)
        if enc.returncode != 0:
            raise StageError(None, f"ffmpeg could not encode MP3: {enc.stderr.decode(errors='replace')[-300:]}")
        dec = subprocess.run([ffmpeg, "-v", "error", "-i", str(mp3), *raw, "pipe:1"], capture_output=True)
    if dec.returncode != 0:
        raise StageError(None, f"ffmpeg could not decode MP3: {dec.stderr.decode(errors='replace')[-300:]}")
    out = np.frombuffer(dec.stdout, np.float32)
    if len(out) >= len(audio):
        return out[:len(audio)].copy()
    return np.concatenate([out, np.zeros(len(audio) - len(out), np.float32)])
