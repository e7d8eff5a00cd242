"""Audio -> notes, the parts every transcriber shares: streamed audio reading, block stitching, NoteSequence I/O
and onset scoring (the basic-pitch model itself is music/basic_pitch_onnx.py, Onsets and Frames models/).

Long recordings (sleep music runs for hours) are never held whole: audio is read and resampled block by
block, and notes are decoded in blocks (default 60 s) with look-behind/look-ahead context. A note belongs to the block its onset falls in, so no note is lost or doubled at block edges;
only a note that sounds longer than the look-ahead (default 30 s) is cut there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

log = logging.getLogger(__name__)


class Note(NamedTuple):
    start: float  # seconds
    end: float
    pitch: int
    velocity: int


@dataclass
class StreamOptions:
    """How long files are cut: decode blocks, their context, and the model batch."""

    block_s: float = 60.0
    lookahead_s: float = 30.0
    lookbehind_s: float = 1.0
    batch_windows: int = 8


# ---------------------------------------------------------------------------------------------- audio


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the file header (soundfile/libsndfile: WAV, FLAC, OGG, MP3)."""
    import soundfile

    info = soundfile.info(str(path))
    return info.frames / info.samplerate if info.samplerate else 0.0


def read_audio_blocks(path: str | Path, sample_rate: int, block_s: float = 10.0) -> Iterator[np.ndarray]:
    """Yield the file as mono float32 blocks at sample_rate, resampled on the fly (soxr), in bounded memory."""
    import soundfile
    import soxr

    with soundfile.SoundFile(str(path)) as f:
        src_rate = f.samplerate
        stream = None if src_rate == sample_rate else soxr.ResampleStream(src_rate, sample_rate, 1, dtype="float32")
        block = max(1, int(block_s * src_rate))
        while True:
            data = f.read(block, dtype="float32", always_2d=True)
            last = len(data) < block
            mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
            out = mono if stream is None else stream.resample_chunk(mono, last=last)
            if len(out):
                yield np.ascontiguousarray(out, dtype=np.float32)
            if last:
                break


def _with_progress(blocks: Iterator[np.ndarray], path: str | Path, duration: float,
                   block_s: float = 10.0) -> Iterable[np.ndarray]:
    """A progress bar (rate, ETA) over a long file's blocks; short files get none."""
    if duration < 120:
        return blocks
    from ..util import progress

    return progress(blocks, Path(path).name, total=int(np.ceil(duration / block_s)), unit="block")


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """The whole file as one mono float32 array (for short files and tests)."""
    blocks = list(read_audio_blocks(path, sample_rate))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


# ------------------------------------------------------------------------------------- NoteSequence I/O


def notes_to_sequence(notes: Iterable[Note], total_time: float | None = None, program: int = 0,
                      qpm: float = 120.0) -> Any:
    """A note_seq.NoteSequence from notes (sorted by start, pitch), one instrument, no pedal."""
    import note_seq

    ns = note_seq.NoteSequence()
    ns.ticks_per_quarter = note_seq.constants.STANDARD_PPQ
    ns.tempos.add(time=0.0, qpm=qpm)
    end = 0.0
    for n in sorted(notes, key=lambda n: (n.start, n.pitch)):
        ns.notes.add(start_time=float(n.start), end_time=float(n.end), pitch=int(n.pitch),
                     velocity=int(min(127, max(1, n.velocity))), program=program, instrument=0)
        end = max(end, float(n.end))
    ns.total_time = max(end, float(total_time or 0.0))
    return ns


def sequence_to_arrays(ns: Any) -> tuple[np.ndarray, np.ndarray]:
    """(intervals [n, 2] seconds, pitches in Hz) for mir_eval."""
    notes = [n for n in ns.notes if not n.is_drum]
    intervals = np.array([[n.start_time, n.end_time] for n in notes], dtype=float).reshape(-1, 2)
    pitches = 440.0 * 2.0 ** ((np.array([n.pitch for n in notes], dtype=float) - 69.0) / 12.0)
    return intervals, pitches


def write_midi(ns: Any, dest: str | Path) -> Path:
    """Write a NoteSequence as a standard MIDI file, atomically (an empty sequence gives a valid empty MIDI)."""
    import note_seq

    from ..util import atomic_path

    dest = Path(dest)
    with atomic_path(dest, suffix=".mid") as tmp:
        note_seq.sequence_proto_to_midi_file(ns, str(tmp))
    return dest


def onset_scores(ref: Any, est: Any, onset_tolerance: float = 0.05) -> dict[str, float]:
    """Precision/recall/F1 of est against ref, onset only and with offsets (mir_eval.transcription)."""
    import mir_eval

    ri, rp = sequence_to_arrays(ref)
    ei, ep = sequence_to_arrays(est)
    if len(ri) == 0 or len(ei) == 0:
        return {k: 0.0 for k in ("precision", "recall", "f1", "precision_offset", "recall_offset", "f1_offset")}
    p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ri, rp, ei, ep, onset_tolerance=onset_tolerance, offset_ratio=None)
    po, ro, fo, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ri, rp, ei, ep, onset_tolerance=onset_tolerance, offset_ratio=0.2, offset_min_tolerance=0.05)
    return {"precision": p, "recall": r, "f1": f, "precision_offset": po, "recall_offset": ro, "f1_offset": fo}


FRAME_HOP_S = 0.01  # mir_eval.multipitch's customary 10 ms grid


def sounding_roll(ns: Any, n_frames: int, hop: float = FRAME_HOP_S) -> np.ndarray:
    """(n_frames, 128) booleans: frame i (at i * hop seconds) holds pitch p when a note of p has
    start <= i * hop < end."""
    roll = np.zeros((n_frames, 128), bool)
    for n in ns.notes:
        if n.is_drum or not 0 <= n.pitch < 128:
            continue
        s, e = int(np.ceil(n.start_time / hop - 1e-9)), min(int(np.ceil(n.end_time / hop - 1e-9)), n_frames)
        roll[max(s, 0):max(e, 0), n.pitch] = True
    return roll


def frame_scores(ref: Any, est: Any, hop: float = FRAME_HOP_S) -> dict[str, float]:
    """Frame-level precision/recall/F1: which pitches sound in each 10 ms frame, what offsets and sustained notes
    are judged by. The counts are those of mir_eval.multipitch on the same frame grid (a test checks it); they
    are taken on piano rolls, since MIDI pitches need no frequency tolerance, at a thousandth of the cost."""
    end = max([0.0, *(n.end_time for n in ref.notes), *(n.end_time for n in est.notes)])
    n_frames = int(np.ceil(end / hop)) + 1
    r, e = sounding_roll(ref, n_frames, hop), sounding_roll(est, n_frames, hop)
    tp, n_ref, n_est = int((r & e).sum()), int(r.sum()), int(e.sum())
    p = tp / n_est if n_est else 0.0
    rec = tp / n_ref if n_ref else 0.0
    return {"frame_precision": p, "frame_recall": rec, "frame_f1": 2 * p * rec / (p + rec) if p + rec else 0.0}


def transcription_scores(ref: Any, est: Any) -> dict[str, float]:
    """Onset F1, onset-and-offset F1 and frame F1 of est against ref, in one dict."""
    return {**onset_scores(ref, est), **frame_scores(ref, est)}


# ---------------------------------------------------------------------------- streamed decoding

Decoder = Callable[[tuple[np.ndarray, ...], int], list[tuple[int, Note]]]


def decode_stream(acts: Iterable[tuple[tuple[np.ndarray, ...], int]], decode: Decoder, fps: float,
                  stream: StreamOptions) -> Iterator[Note]:
    """Notes from a stream of model outputs, decoded block by block in bounded memory.

    `acts` yields (arrays, n_total): consecutive frames of each output (note/onset/... activations, frames
    first); n_total, the stream's frame count, comes with the last chunk (0 before), and frames past it are
    padding. `decode(arrays, first_frame)` turns a window into (start_frame, Note) pairs. Each block of
    stream.block_s is decoded with look-behind and look-ahead context, and a note belongs to the block of its
    onset, so a note is never cut at a block edge unless it outlasts the look-ahead.
    """
    block = max(1, int(stream.block_s * fps))
    ahead = int(stream.lookahead_s * fps)
    behind = max(4, int(stream.lookbehind_s * fps))
    bufs: list[list[np.ndarray]] = []
    buf_start = buf_len = own_start = total = 0
    for arrays, n_total in acts:
        if not bufs:
            bufs = [[] for _ in arrays]
        for b, arr in zip(bufs, arrays):
            b.append(arr)
        buf_len += len(arrays[0])
        total = n_total or total
        final = bool(n_total)
        if final and buf_start + buf_len > total:  # trim the padding frames of the last chunk
            excess = buf_start + buf_len - total
            bufs = [[c[: len(c) - excess]] for c in (np.concatenate(b) for b in bufs)]
            buf_len -= excess
        while buf_start + buf_len >= own_start + block + ahead or (final and own_start < buf_start + buf_len):
            cat = [np.concatenate(b) for b in bufs]
            own_end = own_start + block
            lo = own_start - buf_start - min(behind, own_start - buf_start)
            hi = min(buf_len, own_end + ahead - buf_start)
            for start, note in decode(tuple(c[lo:hi] for c in cat), buf_start + lo):
                if own_start <= start < own_end:
                    yield note
            own_start = own_end
            keep_from = max(0, own_start - behind - buf_start)
            bufs = [[c[keep_from:]] for c in cat]
            buf_start += keep_from
            buf_len -= keep_from
