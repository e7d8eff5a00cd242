"""MIDI played by FluidSynth: in process (pyfluidsynth, float output) through a preset's layers and pedalboard
effects, streamed in blocks so memory does not grow with the length of the piece, for render; and by the
FluidSynth program, as it is, for the sample music and the transcriber's training data (render_file)."""

from __future__ import annotations

import ctypes
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..util import StageError, find_soundfont, require_binary
from .presets import POLYPHONY, Preset

BLOCK = 8192  # frames per processing block (~0.19 s at 44.1 kHz)
SYNTH_GAIN = 0.3  # FluidSynth master gain; levels are normalised afterwards
LEAD_IN_S = 0.5  # leading silence kept before the first note
MAX_RELEASE_S = 10.0  # longest wait for voices to die out after the last note


@dataclass
class Events:
    """MIDI events as (sample, order, kind, channel, a, b) sorted by time; channel set-up per channel."""

    items: list[tuple[int, int, str, int, int, int]]
    channels: list[tuple[int, int, int, float, float]]  # (channel, bank, program, pan, volume)
    notes: int
    end_sample: int


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


def render_file(midi: str | Path, wav: str | Path, sample_rate: int, soundfont: str | Path | None = None,
                gain: float = 0.5) -> Path:
    """MIDI file -> WAV with the FluidSynth program and a General MIDI soundfont (no effects); StageError names
    the MIDI file when FluidSynth fails."""
    if soundfont is not None and not Path(soundfont).is_file():
        raise StageError(soundfont, "soundfont not found")
    fluidsynth = require_binary("fluidsynth")
    sf2 = Path(soundfont) if soundfont is not None else find_soundfont()
    cmd = [fluidsynth, "-ni", "-g", str(gain), "-r", str(sample_rate), "-F", str(wav), str(sf2), str(midi)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not Path(wav).exists():
        raise StageError(midi, f"fluidsynth failed: {proc.stderr.strip()[-500:]}")
    return Path(wav)
