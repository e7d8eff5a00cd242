"""The rendered piece assembled into the output: gain, fades, loops with equal-power crossfades, beds mixed in,
and the blocks written to WAV (soundfile) and MP3 (ffmpeg through a pipe)."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..util import StageError, require_binary
from .synth import BLOCK


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


def loop_layout(piece_frames: int, total_frames: int, crossfade: int, music_end: int | None = None
                ) -> tuple[int, int, int]:
    """(end of the music, crossfade, stride) of a loop: repetition k starts at k * stride."""
    end = min(piece_frames, music_end or piece_frames)
    looping = total_frames > piece_frames
    crossfade = min(crossfade, end // 3) if looping else 0
    return end, crossfade, (end - crossfade if looping else piece_frames)


def arrange(piece, piece_frames: int, total_frames: int, crossfade: int, fade_in: int, fade_out: int,
            gain: float, music_end: int | None = None, block: int = BLOCK,
            mix: Callable[[int, Any], None] | None = None) -> Iterator[Any]:
    """Yield the output in blocks: the piece (a seekable soundfile) repeated with crossfades up to total_frames.

    music_end is where the last note stops (the effects' tail follows it). When the output is longer than the
    piece, repetition k + 1 starts `crossfade` frames before repetition k's music ends: k fades out and k + 1
    fades in over that span with equal-power curves, so the music never pauses and no seam clicks. The last
    repetition keeps its tail. The whole output fades in and out; gain is applied throughout. ``mix(start, block)``
    (beds, stereo motion) works on each block in place after the gain and before the fades, at its absolute
    position in the output, so what it adds runs on unbroken across the seams.
    """
    import numpy as np

    end, crossfade, stride = loop_layout(piece_frames, total_frames, crossfade, music_end)
    looping = total_frames > piece_frames
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
        if mix is not None:
            mix(t0, out)
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


