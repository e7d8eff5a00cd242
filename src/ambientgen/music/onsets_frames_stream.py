"""The Onsets and Frames model over a stream of audio, for the transcribe stage.

The network runs once per frame: audio is cut into blocks of StreamOptions.block_s on the frame grid, each
block carries CONTEXT_FRAMES of real audio either side (so its first and last frames see what surrounds them),
and only the block's own frames are kept. Notes are then decoded from the probability stream with look-ahead
(ambientgen.music.transcription.decode_stream), as basic-pitch's are, so memory stays bounded for long files.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .transcription import (
    Note,
    StreamOptions,
    _with_progress,
    audio_duration,
    decode_stream,
    notes_to_sequence,
    read_audio_blocks,
)

CONTEXT_FRAMES = 32  # about 1 s of audio either side of each block


@dataclass
class OnsetsFramesStream:
    """A loaded ambientgen.models.onsets_frames.Transcriber, streamed."""

    model: Any
    stream: StreamOptions = field(default_factory=StreamOptions)
    extra: dict[str, Any] = field(default_factory=dict)
    name: str = "onsets-frames"

    @property
    def sample_rate(self) -> int:
        return int(self.model.cfg.features.sample_rate)

    def parameters(self) -> dict[str, Any]:
        return {**self.extra, **self.model.parameters(), **asdict(self.stream)}

    def probabilities(self, blocks: Iterable[np.ndarray]) -> Iterator[tuple[tuple[np.ndarray, ...], int]]:
        """(onset, frame, velocity) for consecutive frames; the stream's frame count comes with the last."""
        hop = self.model.cfg.features.hop_length
        per_block = max(1, int(self.stream.block_s * self.sample_rate / hop))
        ctx = CONTEXT_FRAMES * hop
        buf = np.zeros(0, np.float32)
        buf_start = 0  # sample index of buf[0]
        next_frame = 0
        total = 0
        done = False
        it = iter(blocks)
        while True:
            while not done and buf_start + len(buf) < (next_frame + per_block) * hop + ctx:
                nxt = next(it, None)
                if nxt is None:
                    done = True
                else:
                    buf = np.concatenate([buf, np.asarray(nxt, np.float32)])
                    total += len(nxt)
            n_frames = total // hop + 1  # frames of the whole signal (centred STFT), known once it has ended
            end = min(next_frame + per_block, n_frames) if done else next_frame + per_block
            if next_frame >= end:
                break
            lo, hi = next_frame * hop - ctx, end * hop + ctx  # in samples; outside the signal is silence
            seg = np.zeros(hi - lo, np.float32)
            a, b = max(lo, buf_start), min(hi, buf_start + len(buf))
            if b > a:
                seg[a - lo:b - lo] = buf[a - buf_start:b - buf_start]
            p = self.model.predict(seg, self.sample_rate)
            own = slice(CONTEXT_FRAMES, CONTEXT_FRAMES + end - next_frame)
            next_frame = end
            last = done and next_frame >= n_frames
            yield (p["onset"][own], p["frame"][own], p["velocity"][own]), (n_frames if last else 0)
            drop = max(0, next_frame * hop - ctx - buf_start)
            buf, buf_start = buf[drop:], buf_start + drop
            if last:
                break

    def transcribe_blocks(self, blocks: Iterable[np.ndarray]) -> list[Note]:
        from ..models.onsets_frames import decode_notes

        m = self.model
        fps = m.cfg.features.frames_per_second

        def decode(arrays: tuple[np.ndarray, ...], first: int) -> list[tuple[int, Note]]:
            notes = decode_notes(*arrays, fc=m.cfg.features, onset_threshold=m.onset_threshold,
                                 frame_threshold=m.frame_threshold, frame_start_threshold=m.frame_start_threshold)
            return [(first + int(round(s * fps)), Note(s + first / fps, e + first / fps, p, v))
                    for s, e, p, v in notes]

        return sorted(decode_stream(self.probabilities(blocks), decode, fps, self.stream))

    def transcribe_file(self, path: str | Path) -> Any:
        """A NoteSequence of any audio file soundfile reads, streamed at the model's rate."""
        duration = audio_duration(path)
        blocks = _with_progress(read_audio_blocks(path, self.sample_rate), path, duration)
        return notes_to_sequence(self.transcribe_blocks(blocks), duration)

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> Any:
        """A NoteSequence of a mono signal in memory."""
        if sample_rate != self.sample_rate:
            import soxr

            audio = soxr.resample(np.asarray(audio, np.float32), sample_rate, self.sample_rate)
        return notes_to_sequence(self.transcribe_blocks([np.asarray(audio, np.float32)]),
                                 len(audio) / self.sample_rate)
