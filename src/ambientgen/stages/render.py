"""Stage 7: render generated MIDI to ambient audio (WAV + MP3) with a piano-roll picture beside each piece.

The chain, all streamed in blocks (memory does not grow with the length of the output):

1. FluidSynth (pyfluidsynth, in process, float output) plays the MIDI notes on the preset's layers, General MIDI
   programs from a soundfont (``ambientgen.util.find_soundfont``).
2. pedalboard applies the preset's effects (reverb, delay, chorus, filters, gentle compression) block by block,
   keeping its state between blocks, and lets them ring for the preset's ``tail`` seconds.
3. The piece goes to a temporary float WAV while a streaming ITU-R BS.1770 meter (pyloudnorm's K-weighting
   filters, same gating) measures its loudness.
4. The piece is read back with the gain that brings it to the target loudness (never above -1 dBFS sample
   peak), fades, and with ``--loop-minutes`` repeated with equal-power crossfades into one long seamless piece;
   the blocks go to the WAV (soundfile) and, through a pipe, to ffmpeg for the MP3.

Presets live in a small TOML file (``ambientgen/assets/render_presets.toml``; ``--presets FILE`` for your own).
Leading silence before the first note is cut to half a second. A MIDI file with no notes is skipped with a
warning (nothing is written for it: a silent file helps no one); a file that cannot be read as MIDI is an
error naming it, the other files are still rendered and the command exits 1.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..music.midi_io import MIDI_SUFFIXES, MidiLimits, load_pretty_midi
from ..util import StageError, atomic_path, find_soundfont, iter_files, progress, require_binary, write_json

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser from PyPI
    import tomli as tomllib

HELP = "render MIDI to ambient WAV/MP3 (FluidSynth + pedalboard effects, loudness, long loops) with piano rolls"
EXAMPLES = """
  ambientgen render /pfs/music-transformer-generate /pfs/out
  ambientgen render generated/ audio/ --preset pad --loop-minutes 30
  ambientgen render generated/ audio/ --presets my_presets.toml --preset dreamy --loudness -24 --formats mp3
"""
# The longest piece rendered (three hours, the longest generate writes); longer listening comes from --loop-minutes.
RENDER_LIMITS = MidiLimits(max_bytes=16 * 2**20, max_notes=200_000, max_seconds=3 * 3600.0)
DEFAULT_SAMPLE_RATE = 44100
BLOCK = 8192  # frames per processing block (~0.19 s at 44.1 kHz)
SYNTH_GAIN = 0.3  # FluidSynth master gain; levels are normalised afterwards
POLYPHONY = 64  # voices; the quietest released voices are stolen first (halves the cost of long pads)
PEAK_CEILING_DB = -1.0
LEAD_IN_S = 0.5  # leading silence kept before the first note
MAX_RELEASE_S = 10.0  # longest wait for voices to die out after the last note
EFFECT_TYPES = (
    "Reverb", "Delay", "Chorus", "Phaser", "LowpassFilter", "HighpassFilter", "LowShelfFilter", "HighShelfFilter",
    "PeakFilter", "Compressor", "Limiter", "Gain",
)
FORMATS = ("wav", "mp3")

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------- presets
@dataclass
class Layer:
    """One instrument every note is played on."""

    program: int | None = None  # None: keep the MIDI file's programs (and its drums)
    velocity: float = 1.0
    transpose: int = 0
    pan: float = 0.0
    volume: float = 0.8


@dataclass
class Preset:
    name: str
    description: str = ""
    layers: list[Layer] = field(default_factory=lambda: [Layer(program=0)])
    effects: list[dict[str, Any]] = field(default_factory=list)
    fade_in: float = 1.0
    fade_out: float = 6.0
    crossfade: float = 8.0
    tail: float = 5.0
    loudness: float = -20.0
    polyphony: int = POLYPHONY

    def board(self):
        """A fresh pedalboard.Pedalboard for this preset's effects."""
        import pedalboard

        return pedalboard.Pedalboard([getattr(pedalboard, fx["type"])(**{k: v for k, v in fx.items() if k != "type"})
                                      for fx in self.effects])


def default_presets_path() -> Path:
    """The presets file shipped with the package."""
    return Path(str(resources.files("ambientgen") / "assets" / "render_presets.toml"))


def load_presets(path: str | Path | None = None) -> tuple[dict[str, Preset], str]:
    """Read and check a presets TOML file; return ({name: Preset}, default preset name)."""
    import pedalboard

    path = Path(path) if path else default_presets_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageError(path, "presets file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StageError(path, f"not a valid TOML presets file ({exc})") from None
    table = data.get("presets")
    if not isinstance(table, dict) or not table:
        raise StageError(path, "no [presets.NAME] tables")
    presets: dict[str, Preset] = {}
    scalar = ("description", "fade_in", "fade_out", "crossfade", "tail", "loudness", "polyphony")
    for name, raw in table.items():
        where = f"preset {name!r}"
        if not isinstance(raw, dict):
            raise StageError(path, f"{where}: must be a table")
        unknown = set(raw) - {*scalar, "layers", "effects"}
        if unknown:
            raise StageError(path, f"{where}: unknown keys {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for key in scalar:
            if key in raw:
                want = str if key == "description" else (int, float)
                if not isinstance(raw[key], want) or isinstance(raw[key], bool):
                    raise StageError(path, f"{where}: {key} must be {'text' if want is str else 'a number'}")
                kwargs[key] = raw[key]
        for key in ("fade_in", "fade_out", "crossfade", "tail"):
            if kwargs.get(key, 0) < 0:
                raise StageError(path, f"{where}: {key} must be >= 0")
        if not isinstance(kwargs.get("polyphony", POLYPHONY), int) or not 1 <= kwargs.get("polyphony", POLYPHONY) <= 4096:
            raise StageError(path, f"{where}: polyphony must be a whole number 1-4096")
        layers = []
        for i, lay in enumerate(raw.get("layers", [{"program": 0}])):
            if not isinstance(lay, dict):
                raise StageError(path, f"{where}: layer {i + 1} must be a table")
            bad = set(lay) - {f.name for f in Layer.__dataclass_fields__.values()}
            if bad:
                raise StageError(path, f"{where}: layer {i + 1}: unknown keys {sorted(bad)}")
            layer = Layer(**lay)
            if layer.program is not None and not (isinstance(layer.program, int) and 0 <= layer.program <= 127):
                raise StageError(path, f"{where}: layer {i + 1}: program must be 0-127")
            if not (-1.0 <= layer.pan <= 1.0 and 0.0 <= layer.volume <= 1.0 and layer.velocity > 0):
                raise StageError(path, f"{where}: layer {i + 1}: pan -1..1, volume 0..1, velocity > 0")
            layers.append(layer)
        if not layers:
            raise StageError(path, f"{where}: needs at least one layer")
        effects = []
        for i, fx in enumerate(raw.get("effects", [])):
            kind = fx.get("type") if isinstance(fx, dict) else None
            if kind not in EFFECT_TYPES:
                raise StageError(path, f"{where}: effect {i + 1}: type must be one of {', '.join(EFFECT_TYPES)}")
            try:
                getattr(pedalboard, kind)(**{k: v for k, v in fx.items() if k != "type"})
            except (TypeError, ValueError) as exc:
                raise StageError(path, f"{where}: effect {i + 1} ({kind}): {exc}") from None
            effects.append(dict(fx))
        presets[name] = Preset(name=name, layers=layers, effects=effects, **kwargs)
    default = data.get("default", next(iter(presets)))
    if default not in presets:
        raise StageError(path, f"default preset {default!r} is not defined")
    return presets, default


def _preset_lines() -> str:
    """'  name  description' for each shipped preset (for --help)."""
    try:
        data = tomllib.loads(default_presets_path().read_text(encoding="utf-8"))
        return "\n".join(f"  {name:<12} {p.get('description', '')}" for name, p in data["presets"].items())
    except (OSError, tomllib.TOMLDecodeError, KeyError):
        return "  (shipped presets file not found)"


DESCRIPTION = (
    HELP + ".\n\nEach NAME.mid gives NAME.wav, NAME.mp3, NAME.png (piano roll) and NAME.json (what was done).\n"
    "Presets shipped (edit a copy of ambientgen/assets/render_presets.toml and pass --presets FILE):\n"
    + _preset_lines()
)


# ------------------------------------------------------------------------------------------------- MIDI events
@dataclass
class Events:
    """MIDI events as (sample, order, kind, channel, a, b) sorted by time; channel set-up per channel."""

    items: list[tuple[int, int, str, int, int, int]]
    channels: list[tuple[int, int, int, float, float]]  # (channel, bank, program, pan, volume)
    notes: int
    end_sample: int


def read_midi(path: str | Path):
    """pretty_midi.PrettyMIDI for path, read through the one MIDI reader with its limits (StageError naming the
    file when it is unreadable, or longer than RENDER_LIMITS allow: a 43-byte file can hold a 14-hour note)."""
    return load_pretty_midi(path, RENDER_LIMITS, allow_empty=True)


def midi_events(pm, preset: Preset, sample_rate: int) -> Events:
    """Turn a PrettyMIDI into synth events on the preset's layers (one FluidSynth channel per layer and part)."""
    starts = [n.start for inst in pm.instruments for n in inst.notes]
    shift = max(0.0, min(starts) - LEAD_IN_S) if starts else 0.0
    items: list[tuple[int, int, str, int, int, int]] = []
    channels: list[tuple[int, int, int, float, float]] = []
    notes = 0

    def at(t: float) -> int:
        return max(0, int(round((t - shift) * sample_rate)))

    for layer in preset.layers:
        for inst in pm.instruments:
            if inst.is_drum and layer.program is not None:
                continue  # drums have no place in a pitched ambient layer
            ch = len(channels)
            bank = 128 if inst.is_drum else 0
            channels.append((ch, bank, inst.program if layer.program is None else layer.program, layer.pan,
                             layer.volume))
            for cc in inst.control_changes:
                if cc.number in (1, 11, 64, 66, 67):  # modulation, expression, sustain, sostenuto, soft
                    items.append((at(cc.time), 1, "cc", ch, cc.number, cc.value))
            for pb in inst.pitch_bends:
                items.append((at(pb.time), 1, "bend", ch, pb.pitch, 0))
            for n in inst.notes:
                key = n.pitch + (0 if inst.is_drum else layer.transpose)
                if not 0 <= key <= 127 or n.end <= n.start:
                    continue
                vel = max(1, min(127, int(round(n.velocity * layer.velocity))))
                items.append((at(n.start), 2, "on", ch, key, vel))
                items.append((at(n.end), 0, "off", ch, key, 0))
                notes += 1
    items.sort(key=lambda e: (e[0], e[1]))
    return Events(items=items, channels=channels, notes=notes, end_sample=items[-1][0] if items else 0)


# ---------------------------------------------------------------------------------------------------- synth
class Synth:
    """pyfluidsynth in process, writing float stereo straight into numpy blocks (no 16-bit step)."""

    def __init__(self, soundfont: Path, sample_rate: int, n_channels: int, polyphony: int = POLYPHONY):
        try:
            import fluidsynth
        except (ImportError, OSError) as exc:
            raise StageError(None, f"FluidSynth is not usable ({exc}): install pyfluidsynth and the FluidSynth "
                                   "library (Debian: apt-get install libfluidsynth3)") from None

        # effects come from pedalboard; FluidSynth's own reverb and chorus stay off
        self._fs = fluidsynth.Synth(gain=SYNTH_GAIN, samplerate=float(sample_rate),
                                    channels=max(16, -(-n_channels // 16) * 16),
                                    **{"synth.reverb.active": 0, "synth.chorus.active": 0,
                                       "synth.polyphony": int(polyphony)})
        self.sfid = self._fs.sfload(str(soundfont))
        if self.sfid < 0:
            raise StageError(soundfont, "FluidSynth could not load this soundfont")
        write = fluidsynth._fl.fluid_synth_write_float
        write.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                          ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        write.restype = ctypes.c_int
        self._write = write

    def setup(self, channels: list[tuple[int, int, int, float, float]]) -> None:
        for ch, bank, program, pan, volume in channels:
            if self._fs.program_select(ch, self.sfid, bank, program) != 0 and bank == 0:
                self._fs.program_select(ch, self.sfid, 0, 0)  # program missing from the soundfont: piano
            self._fs.cc(ch, 10, int(round(64 + pan * 63)))
            self._fs.cc(ch, 7, int(round(volume * 127)))

    def apply(self, kind: str, ch: int, a: int, b: int) -> None:
        if kind == "on":
            self._fs.noteon(ch, a, b)
        elif kind == "off":
            self._fs.noteoff(ch, a)
        elif kind == "cc":
            self._fs.cc(ch, a, b)
        else:
            self._fs.pitch_bend(ch, a)

    def write(self, buf, start: int, frames: int) -> None:
        """Synthesize `frames` frames into buf[start:start+frames] (buf: C-contiguous float32 (n, 2))."""
        ptr = buf.ctypes.data + start * 8
        self._write(self._fs.synth, frames, ptr, 0, 2, ptr, 1, 2)

    def voices(self) -> int:
        return int(self._fs.get_active_voice_count())

    def close(self) -> None:
        self._fs.delete()


def synthesize(events: Events, preset: Preset, soundfont: Path, sample_rate: int, block: int = BLOCK
               ) -> Iterator[Any]:
    """Yield float32 (n, 2) blocks: the events played by FluidSynth, through the preset's effects, plus the tail."""
    import numpy as np

    synth = Synth(soundfont, sample_rate, len(events.channels), preset.polyphony)
    board = preset.board()
    try:
        synth.setup(events.channels)
        items, i, pos = events.items, 0, 0
        release_until = events.end_sample + int(MAX_RELEASE_S * sample_rate)
        while True:
            buf = np.zeros((block, 2), dtype=np.float32)
            filled = 0
            while filled < block:
                while i < len(items) and items[i][0] <= pos + filled:
                    _, _, kind, ch, a, b = items[i]
                    synth.apply(kind, ch, a, b)
                    i += 1
                upto = block if i >= len(items) else min(block, items[i][0] - pos)
                synth.write(buf, filled, upto - filled)
                filled = upto
            pos += block
            if board:
                buf = board.process(buf.T, sample_rate, reset=False).T
            yield np.ascontiguousarray(buf, dtype=np.float32)
            if i >= len(items) and (synth.voices() == 0 or pos >= release_until):
                break
        # let reverb and delay ring out
        tail = int(preset.tail * sample_rate) if board else 0
        silence = np.zeros((2, block), dtype=np.float32)
        while tail > 0:
            n = min(block, tail)
            out = board.process(silence[:, :n], sample_rate, reset=False).T if board else silence[:, :n].T
            yield np.ascontiguousarray(out, dtype=np.float32)
            tail -= n
    finally:
        synth.close()


# -------------------------------------------------------------------------------------------------- loudness
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


# ------------------------------------------------------------------------------------------------- assembly
def equal_power(n: int, rising: bool):
    """Equal-power crossfade curve of n samples (sin rising, cos falling), float32 (n, 1)."""
    import numpy as np

    t = (np.arange(n, dtype=np.float64) + 0.5) / max(n, 1)
    curve = np.sin(t * np.pi / 2) if rising else np.cos(t * np.pi / 2)
    return curve.astype(np.float32)[:, None]


def smooth_fade(n: int, rising: bool):
    """Raised-cosine fade of n samples, float32 (n, 1)."""
    import numpy as np

    t = (np.arange(n, dtype=np.float64) + 0.5) / max(n, 1)
    curve = 0.5 - 0.5 * np.cos(np.pi * t)
    return (curve if rising else curve[::-1]).astype(np.float32)[:, None]


def arrange(piece, piece_frames: int, total_frames: int, crossfade: int, fade_in: int, fade_out: int,
            gain: float, music_end: int | None = None, block: int = BLOCK) -> Iterator[Any]:
    """Yield the output in blocks: the piece (a seekable soundfile) repeated with crossfades up to total_frames.

    music_end is where the last note stops (the effects' tail follows it). When the output is longer than the
    piece, repetition k + 1 starts `crossfade` frames before repetition k's music ends: k fades out and k + 1
    fades in over that span with equal-power curves, so the music never pauses and no seam clicks. The last
    repetition keeps its tail. The whole output fades in and out; gain is applied throughout.
    """
    import numpy as np

    end = min(piece_frames, music_end or piece_frames)
    looping = total_frames > piece_frames
    crossfade = min(crossfade, end // 3) if looping else 0
    stride = end - crossfade if looping else piece_frames
    fade_in = min(fade_in, total_frames // 2)
    fade_out = min(fade_out, total_frames // 2)
    rise, fall = equal_power(crossfade, True), equal_power(crossfade, False)
    fin, fout = smooth_fade(fade_in, True), smooth_fade(fade_out, False)
    t0 = 0
    while t0 < total_frames:
        t1 = min(total_frames, t0 + block)
        out = np.zeros((t1 - t0, 2), dtype=np.float32)
        for k in range(max(0, (t0 - piece_frames) // stride), (t1 - 1) // stride + 1):
            start = k * stride
            followed = looping and (k + 1) * stride < total_frames
            length = end if followed else piece_frames
            a, b = max(t0, start), min(t1, start + length)
            if a >= b:
                continue
            p0, p1 = a - start, b - start  # positions in the piece
            piece.seek(p0)
            seg = piece.read(p1 - p0, dtype="float32", always_2d=True)
            if seg.shape[1] == 1:
                seg = np.repeat(seg, 2, axis=1)
            if k > 0 and p0 < crossfade:
                e = min(p1, crossfade)
                seg[: e - p0] *= rise[p0:e]
            if followed and crossfade and p1 > end - crossfade:
                s = max(p0, end - crossfade)
                seg[s - p0:] *= fall[s - (end - crossfade):p1 - (end - crossfade)]
            out[a - t0:b - t0] += seg
        out *= gain
        if t0 < fade_in:
            e = min(t1, fade_in)
            out[: e - t0] *= fin[t0:e]
        if t1 > total_frames - fade_out:
            s = max(t0, total_frames - fade_out)
            out[s - t0:] *= fout[s - (total_frames - fade_out):t1 - (total_frames - fade_out)]
        np.clip(out, -1.0, 1.0, out=out)
        yield out
        t0 = t1


class AudioWriter:
    """Write float blocks to a 16-bit WAV (soundfile) and/or an MP3 (ffmpeg reading raw float from a pipe)."""

    def __init__(self, wav: Path | None, mp3: Path | None, sample_rate: int, bitrate: str = "192k"):
        import soundfile

        self.wav_file = soundfile.SoundFile(str(wav), "w", sample_rate, 2, subtype="PCM_16", format="WAV") \
            if wav else None
        self.proc = None
        self._err = None
        if mp3:
            self._err = tempfile.TemporaryFile()
            cmd = [require_binary("ffmpeg"), "-nostdin", "-hide_banner", "-v", "error", "-y", "-f", "f32le",
                   "-ar", str(sample_rate), "-ac", "2", "-i", "pipe:0", "-c:a", "libmp3lame", "-b:a", bitrate,
                   "-f", "mp3", str(mp3)]
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._err)

    def write(self, block) -> None:
        if self.wav_file is not None:
            self.wav_file.write(block)
        if self.proc is not None:
            try:
                self.proc.stdin.write(block.astype("<f4", copy=False).tobytes())
            except BrokenPipeError:
                raise StageError(None, f"ffmpeg stopped: {self._stderr()}") from None

    def _stderr(self) -> str:
        self._err.seek(0)
        return self._err.read().decode(errors="replace").strip()[-500:] or "no message"

    def close(self) -> None:
        if self.wav_file is not None:
            self.wav_file.close()
        if self.proc is not None:
            self.proc.stdin.close()
            rc = self.proc.wait()
            msg = self._stderr()
            self._err.close()
            if rc != 0:
                raise StageError(None, f"ffmpeg failed to encode MP3 (exit {rc}): {msg}")

    def abort(self) -> None:
        if self.wav_file is not None:
            self.wav_file.close()
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self._err.close()


# -------------------------------------------------------------------------------------------------- renderer
@dataclass
class RenderOptions:
    preset: str | None = None  # None: the sidecar's "preset", else the presets file's default
    presets_file: str | None = None
    loudness: float | None = None  # None: the preset's
    loop_minutes: float | None = None
    crossfade: float | None = None
    fade_in: float | None = None
    fade_out: float | None = None
    sample_rate: int = DEFAULT_SAMPLE_RATE
    formats: tuple[str, ...] = FORMATS
    mp3_bitrate: str = "192k"
    soundfont: str | None = None
    pianoroll: bool = True


@dataclass
class RenderInfo:
    """What render_file did; written as NAME.json beside the audio."""

    source: str
    preset: str
    soundfont: str
    sample_rate: int
    notes: int
    piece_seconds: float
    duration_seconds: float
    loop_minutes: float | None
    piece_loudness_lufs: float
    target_loudness_lufs: float
    gain_db: float
    loudness_lufs: float  # the piece after gain (fades and loop crossfades not counted)
    peak_dbfs: float
    files: list[str]
    render_seconds: float
    generation: dict[str, Any] | None = None


@dataclass
class RenderResult:
    rendered: dict[str, RenderInfo] = field(default_factory=dict)  # input relative path -> info
    failed: dict[str, str] = field(default_factory=dict)  # input relative path -> cause
    skipped: dict[str, str] = field(default_factory=dict)  # input relative path -> reason


def _db(x: float) -> float:
    return 20 * math.log10(x) if x > 0 else float("-inf")


def _read_sidecar(midi: Path) -> dict[str, Any] | None:
    side = midi.with_suffix(".json")
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s: sidecar is not valid JSON (%s); ignored", side, exc)
        return None
    return data if isinstance(data, dict) else None


def render_file(midi: str | Path, out_stem: str | Path, options: RenderOptions | None = None,
                presets: tuple[dict[str, Preset], str] | None = None) -> RenderInfo | None:
    """Render one MIDI file to out_stem.{wav,mp3,png,json}. None (and a warning) when it has no notes.

    Raises StageError naming the file when it is not readable MIDI or rendering fails.
    """
    import numpy as np
    import soundfile

    opts = options or RenderOptions()
    midi, out_stem = Path(midi), Path(out_stem)
    t_start = time.perf_counter()
    presets_map, default_name = presets or load_presets(opts.presets_file)
    sidecar = _read_sidecar(midi)
    asked = (sidecar or {}).get("preset") or ((sidecar or {}).get("request") or {}).get("preset")
    name = opts.preset or (asked if isinstance(asked, str) else None) or default_name
    if name not in presets_map:
        if opts.preset:
            raise StageError(opts.presets_file or default_presets_path(),
                             f"no preset {name!r} (have: {', '.join(presets_map)})")
        log.warning("%s: sidecar asks for unknown preset %r; using %r", midi, name, default_name)
        name = default_name
    preset = presets_map[name]
    pm = read_midi(midi)
    sr = int(opts.sample_rate)
    events = midi_events(pm, preset, sr)
    if events.notes == 0:
        log.warning("%s: no notes to render; skipped (nothing written)", midi)
        return None
    soundfont = find_soundfont(opts.soundfont)
    target = preset.loudness if opts.loudness is None else opts.loudness
    crossfade = preset.crossfade if opts.crossfade is None else opts.crossfade
    fade_in = preset.fade_in if opts.fade_in is None else opts.fade_in
    fade_out = preset.fade_out if opts.fade_out is None else opts.fade_out
    formats = tuple(f.lower() for f in opts.formats)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ambientgen-render-") as tmp_dir:
        piece_path = Path(tmp_dir) / "piece.wav"
        meter = LoudnessMeter(sr)
        with soundfile.SoundFile(str(piece_path), "w", sr, 2, subtype="FLOAT", format="WAV") as piece:
            for blk in synthesize(events, preset, soundfont, sr):
                meter.add(blk)
                piece.write(blk)
        piece_frames = meter.frames
        piece_lufs = meter.integrated()
        if not math.isfinite(piece_lufs):
            raise StageError(midi, f"rendered audio is silent (soundfont {soundfont} has no sound for its notes?)")
        gain_db = target - piece_lufs
        ceiling = PEAK_CEILING_DB - _db(meter.peak)
        if gain_db > ceiling:
            log.info("%s: gain limited to %.1f dB by the %.0f dBFS peak ceiling (%.1f LU under target)",
                     midi, ceiling, PEAK_CEILING_DB, gain_db - ceiling)
            gain_db = ceiling
        total = int(round(opts.loop_minutes * 60 * sr)) if opts.loop_minutes else piece_frames
        out_peak = 0.0
        with ExitStack() as stack:
            tmp = {fmt: stack.enter_context(atomic_path(out_stem.with_suffix(f".{fmt}"))) for fmt in formats}
            writer = AudioWriter(tmp.get("wav"), tmp.get("mp3"), sr, opts.mp3_bitrate)
            try:
                with soundfile.SoundFile(str(piece_path)) as piece:
                    for blk in arrange(piece, piece_frames, total, int(crossfade * sr), int(fade_in * sr),
                                       int(fade_out * sr), 10 ** (gain_db / 20), events.end_sample):
                        out_peak = max(out_peak, float(np.max(np.abs(blk))))
                        writer.write(blk)
                writer.close()
            except BaseException:
                writer.abort()
                raise
        written = [out_stem.with_suffix(f".{fmt}") for fmt in FORMATS if fmt in formats]
    if opts.pianoroll:
        from ..report.pianoroll import save_pianoroll

        save_pianoroll(pm, out_stem.with_suffix(".png"), title=midi.name)
        written.append(out_stem.with_suffix(".png"))
    info = RenderInfo(
        source=midi.name, preset=name, soundfont=soundfont.name, sample_rate=sr, notes=events.notes,
        piece_seconds=round(piece_frames / sr, 3), duration_seconds=round(total / sr, 3),
        loop_minutes=opts.loop_minutes, piece_loudness_lufs=round(piece_lufs, 2), target_loudness_lufs=target,
        gain_db=round(gain_db, 2), loudness_lufs=round(piece_lufs + gain_db, 2),
        peak_dbfs=round(_db(out_peak), 2), files=[p.name for p in written],
        render_seconds=round(time.perf_counter() - t_start, 2), generation=sidecar,
    )
    write_json(out_stem.with_suffix(".json"), asdict(info))
    return info


def render(input_dir: str | Path, output_dir: str | Path, options: RenderOptions | None = None) -> RenderResult:
    """Render every MIDI file under input_dir into output_dir (same relative names). Bad files are recorded
    in the result's ``failed`` and logged; the others are still rendered."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.exists():
        raise StageError(input_dir, "input directory does not exist")
    opts = options or RenderOptions()
    bad = set(f.lower() for f in opts.formats) - set(FORMATS)
    if bad or not opts.formats:
        raise StageError(None, f"--formats takes a comma-separated subset of {', '.join(FORMATS)}")
    presets = load_presets(opts.presets_file)
    if opts.preset and opts.preset not in presets[0]:
        raise StageError(opts.presets_file or default_presets_path(),
                         f"no preset {opts.preset!r} (have: {', '.join(presets[0])})")
    result = RenderResult()
    files = iter_files(input_dir)
    midis = [p for p in files if p.suffix.lower() in MIDI_SUFFIXES]
    for p in files:
        if p.suffix.lower() not in MIDI_SUFFIXES | {".json"}:
            log.warning("%s: not a MIDI file, skipped", p)
            result.skipped[p.name] = "not a MIDI file"
    for path in progress(midis, "render", unit="piece"):
        rel = path.relative_to(input_dir).as_posix() if path != input_dir else path.name
        try:
            info = render_file(path, output_dir / Path(rel).with_suffix(""), opts, presets)
        except StageError as exc:
            cause = exc.cause if exc.path == str(path) else str(exc)
            log.error("%s: %s", path, cause)
            result.failed[rel] = cause
            continue
        except (OSError, RuntimeError) as exc:  # a write error (disk full) or libsndfile's: this file alone fails
            cause = f"cannot write the rendering: {getattr(exc, 'strerror', None) or exc}"
            log.error("%s: %s", path, cause)
            result.failed[rel] = cause
            continue
        if info is None:
            result.skipped[rel] = "no notes"
            continue
        result.rendered[rel] = info
        log.info("%s -> %s (%.0f s, %s, %.1f LUFS) in %.1f s", rel, ", ".join(info.files), info.duration_seconds,
                 info.preset, info.loudness_lufs, info.render_seconds)
    return result


# ------------------------------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input_dir", help="directory of .mid files (+ .json sidecars), e.g. /pfs/music-transformer-generate")
    p.add_argument("output_dir", help="where NAME.wav/.mp3/.png/.json go (e.g. /pfs/out)")
    p.add_argument("--preset", default=None,
                   help="preset name (default: the sidecar's \"preset\", else the presets file's default)")
    p.add_argument("--presets", dest="presets_file", default=None, metavar="FILE",
                   help="presets TOML file (default: the shipped ambientgen/assets/render_presets.toml)")
    p.add_argument("--loop-minutes", type=float, default=None, metavar="N",
                   help="extend each piece to an N-minute seamless loop with crossfades (e.g. 30 for sleep)")
    p.add_argument("--loudness", type=float, default=None, metavar="LUFS",
                   help="target integrated loudness (default: the preset's, about -20)")
    p.add_argument("--crossfade", type=float, default=None, metavar="S", help="loop crossfade seconds (preset's)")
    p.add_argument("--fade-in", type=float, default=None, metavar="S", help="fade-in seconds (preset's)")
    p.add_argument("--fade-out", type=float, default=None, metavar="S", help="fade-out seconds (preset's)")
    p.add_argument("--sample-rate", type=int, default=DEFAULT_SAMPLE_RATE, help="output sample rate (44100)")
    p.add_argument("--formats", default="wav,mp3", help="comma-separated: wav, mp3 (default both)")
    p.add_argument("--mp3-bitrate", default="192k", help="MP3 bit rate for ffmpeg (default 192k)")
    p.add_argument("--soundfont", default=None, help="General MIDI .sf2 (default: FluidR3_GM or pretty_midi's)")
    p.add_argument("--no-pianoroll", action="store_true", help="do not draw NAME.png")


def main(args: argparse.Namespace) -> int:
    if args.loop_minutes is not None and args.loop_minutes <= 0:
        raise StageError(None, "--loop-minutes must be > 0")
    opts = RenderOptions(
        preset=args.preset, presets_file=args.presets_file, loudness=args.loudness, loop_minutes=args.loop_minutes,
        crossfade=args.crossfade, fade_in=args.fade_in, fade_out=args.fade_out, sample_rate=args.sample_rate,
        formats=tuple(f.strip() for f in args.formats.split(",") if f.strip()), mp3_bitrate=args.mp3_bitrate,
        soundfont=args.soundfont, pianoroll=not args.no_pianoroll,
    )
    res = render(args.input_dir, args.output_dir, opts)
    for rel, info in res.rendered.items():
        print(f"{rel} -> {', '.join(info.files)}")
    if res.failed:
        log.error("%d of %d MIDI files failed: %s", len(res.failed), len(res.failed) + len(res.rendered),
                  ", ".join(res.failed))
        return 1
    return 0
