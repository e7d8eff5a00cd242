"""basic-pitch's ICASSP 2022 model on ONNX Runtime (no TensorFlow), streamed: windows on a fixed frame grid,
silence skipped, notes decoded per block with basic-pitch's own decoder (ambientgen.music.transcription holds
the audio reading, the notes and the block rules that every transcriber shares)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import env
from .transcription import (
    Note,
    StreamOptions,
    _with_progress,
    audio_duration,
    decode_stream,
    notes_to_sequence,
    read_audio_blocks,
)

log = logging.getLogger(__name__)

# basic-pitch model geometry (basic_pitch.constants): 22050 Hz input, 256-sample frames, 2-s windows.
BP_SAMPLE_RATE = 22050
BP_HOP = 256
BP_WINDOW = 2 * BP_SAMPLE_RATE - BP_HOP  # 43844 samples -> 172 frames
BP_WINDOW_FRAMES = 172
# Frames dropped at each end of a window (edge effects); the stream is padded by as much in front.
# basic-pitch itself drops 15 + 15 and advances by a fractional number of frames; 8 + 8 gave the same F1 on
# the benchmark pieces with 10 % less model time, and a whole-frame advance makes the frames join exactly.
BP_TRIM = 8
BP_KEEP = BP_WINDOW_FRAMES - 2 * BP_TRIM  # frames kept per window; windows advance by BP_KEEP * BP_HOP samples
MIDI_OFFSET = 21  # pitch of frequency bin 0 (A0)
N_KEYS = 88
# A model window whose peak stays below this (about -80 dBFS) holds no note: its activations are zero and the
# model is not run, so long pauses (sleep and ASMR recordings) cost almost nothing.
SILENT_PEAK = 1e-4



@dataclass
class BasicPitchParams:
    """Note-decoding settings of basic-pitch.

    Chosen on the development set's tune part, all six timbre families at once (bench/tune_transcription.py):
    basic-pitch's own defaults (0.5 / 0.3 / 127.7 ms / melodia on) with a stricter onset, 0.6, which gained
    0.02-0.09 onset F1 on pads, mixes and doubled sounds and lost nothing on struck ones.
    """

    onset_threshold: float = 0.6
    frame_threshold: float = 0.3
    minimum_note_length_ms: float = 127.7
    minimum_frequency: float | None = None
    maximum_frequency: float | None = None
    melodia_trick: bool = True
    infer_onsets: bool = True
    energy_tolerance: int = 11
    harmonic_ratio: float = 0.0  # drop a note starting with a louder one 12/19/24 semitones below (0: off)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)




@contextlib.contextmanager
def _quiet_import() -> Iterator[None]:
    """basic_pitch logs a warning for every optional runtime it lacks (TF, CoreML, TFLite); hide them."""
    import warnings

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # resampy's pkg_resources deprecation notice
            yield
    finally:
        logging.disable(previous)


def basic_pitch_model_path() -> Path:
    """The ONNX model shipped inside the basic-pitch wheel (no TensorFlow, no download)."""
    with _quiet_import():
        from basic_pitch import FilenameSuffix, build_icassp_2022_model_path

    return Path(build_icassp_2022_model_path(FilenameSuffix.onnx))


_SESSIONS: dict[tuple[str, int], Any] = {}


def onnx_session(model_path: str | Path, threads: int = 0) -> Any:
    """One onnxruntime session per (model, threads) per process; later calls reuse it."""
    key = (str(model_path), threads)
    if key not in _SESSIONS:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # no busy-waiting between operators: on shared CPUs spinning threads burn time other work needs
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        _SESSIONS[key] = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        log.debug("loaded %s (%d threads)", model_path, threads)
    return _SESSIONS[key]


def _frame_windows(blocks: Iterable[np.ndarray], batch: int) -> Iterator[tuple[np.ndarray, int]]:
    """Cut a 22050 Hz stream into model windows on the 256-sample grid; yield (batch [b, 43844, 1], n_samples).

    n_samples is the total length of the stream, known only with the last batch (0 before).
    """
    step = BP_KEEP * BP_HOP
    buf = np.zeros(BP_TRIM * BP_HOP, dtype=np.float32)  # left padding: frame BP_TRIM of window 0 is time 0
    total = 0
    cut = 0
    pending: list[np.ndarray] = []
    for block in blocks:
        total += len(block)
        buf = np.concatenate([buf, block])
        while len(buf) >= BP_WINDOW:
            pending.append(buf[:BP_WINDOW])
            buf = buf[step:]
            cut += 1
            if len(pending) == batch:
                yield np.stack(pending)[..., None], 0
                pending = []
    # flush: zero-padded windows until every frame of the stream is covered
    n_frames = -(-total // BP_HOP)
    needed = -(-n_frames // BP_KEEP)
    while cut < needed:
        w = buf[:BP_WINDOW]
        pending.append(np.pad(w, (0, BP_WINDOW - len(w))))
        buf = buf[step:]
        cut += 1
    if pending:
        yield np.stack(pending)[..., None], total
    else:
        yield np.zeros((0, BP_WINDOW, 1), dtype=np.float32), total


HARMONIC_INTERVALS = (12, 19, 24)  # the 2nd, 3rd and 4th partials, in semitones above the fundamental
HARMONIC_ONSET_FRAMES = 3  # onsets this close (about 35 ms) count as simultaneous


def suppress_harmonics(events: list[tuple[int, int, int, float]], ratio: float) -> list[tuple[int, int, int, float]]:
    """Drop notes that are likely a partial of a lower note: same onset (within a few frames), an octave,
    twelfth or double octave above, and quieter than `ratio` times that note."""
    by_pitch: dict[int, list[tuple[int, float]]] = {}
    for s, _, pitch, amp in events:
        by_pitch.setdefault(int(pitch), []).append((int(s), float(amp)))
    kept = []
    for ev in events:
        s, _, pitch, amp = ev
        partial = any(
            abs(s2 - s) <= HARMONIC_ONSET_FRAMES and amp < ratio * a2
            for interval in HARMONIC_INTERVALS
            for s2, a2 in by_pitch.get(int(pitch) - interval, ())
        )
        if not partial:
            kept.append(ev)
    return kept


def decode_activations(note: np.ndarray, onset: np.ndarray, p: BasicPitchParams,
                       frame_offset: int = 0) -> list[tuple[int, int, int, float]]:
    """basic-pitch's own note decoding (note_creation.output_to_notes_polyphonic) of (frames, 88) activations;
    returns (start_frame, end_frame, pitch, amplitude)."""
    with _quiet_import():
        from basic_pitch import note_creation

    min_len = int(round(p.minimum_note_length_ms / 1000 * BP_SAMPLE_RATE / BP_HOP))
    if len(note) < 3:
        return []
    events = note_creation.output_to_notes_polyphonic(
        note.astype(np.float32, copy=True), onset.astype(np.float32, copy=True),
        onset_thresh=p.onset_threshold, frame_thresh=p.frame_threshold, min_note_len=min_len,
        infer_onsets=p.infer_onsets, max_freq=p.maximum_frequency, min_freq=p.minimum_frequency,
        melodia_trick=p.melodia_trick, energy_tol=p.energy_tolerance,
    )
    if p.harmonic_ratio > 0:
        events = suppress_harmonics(events, p.harmonic_ratio)
    return [(s + frame_offset, e + frame_offset, pitch, amp) for s, e, pitch, amp in events]


class BasicPitchTranscriber:
    """basic-pitch (ICASSP 2022) through onnxruntime, streamed; the model is loaded once per process."""

    name = "basic-pitch"
    sample_rate = BP_SAMPLE_RATE

    def __init__(self, params: BasicPitchParams | None = None, stream: StreamOptions | None = None,
                 threads: int = 0, model_path: str | Path | None = None):
        self.params = params or BasicPitchParams()
        self.stream = stream or StreamOptions()
        self.model_path = Path(model_path) if model_path else basic_pitch_model_path()
        self.session = onnx_session(self.model_path, threads)
        self._input = self.session.get_inputs()[0].name
        outs = {o.name for o in self.session.get_outputs()}
        # basic-pitch's ONNX export: :1 = note (frame) activations, :2 = onsets, :0 = pitch contours
        self._outputs = ["StatefulPartitionedCall:1", "StatefulPartitionedCall:2"]
        missing = set(self._outputs) - outs
        if missing:
            from ..util import StageError

            raise StageError(self.model_path, f"not a basic-pitch ONNX model (outputs {sorted(outs)})")
        with _quiet_import():
            from basic_pitch import note_creation  # noqa: F401  (fail at load time, not at the first file)
        self.windows = {"run": 0, "silent": 0}  # model windows so far: run, or skipped as silent

    def parameters(self) -> dict[str, Any]:
        return {**self.params.as_dict(), "model": self.model_path.name, **asdict(self.stream)}

    # -- activations

    def activations(self, blocks: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """Yield (note [n, 88], onset [n, 88], total_frames) for consecutive frames; total_frames at the end only."""
        keep = slice(BP_TRIM, BP_TRIM + BP_KEEP)
        for batch, total in _frame_windows(blocks, self.stream.batch_windows):
            note = np.zeros((len(batch), BP_KEEP, N_KEYS), dtype=np.float32)
            onset = np.zeros_like(note)
            loud = np.abs(batch).reshape(len(batch), -1).max(axis=1, initial=0.0) >= SILENT_PEAK
            if loud.any():
                n, o = self.session.run(self._outputs, {self._input: batch[loud]})
                note[loud], onset[loud] = n[:, keep, :], o[:, keep, :]
            self.windows["run"] += int(loud.sum())
            self.windows["silent"] += int(len(batch) - loud.sum())
            n_frames = -(-total // BP_HOP) if total else 0
            yield note.reshape(-1, N_KEYS), onset.reshape(-1, N_KEYS), n_frames

    def activations_of(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whole-signal activations (22050 Hz mono audio), trimmed to the signal's frames."""
        notes, onsets, n = [], [], 0
        for note, onset, total in self.activations([audio]):
            notes.append(note)
            onsets.append(onset)
            n = total or n
        return np.concatenate(notes)[:n], np.concatenate(onsets)[:n]

    # -- decoding

    def decode(self, note: np.ndarray, onset: np.ndarray, params: BasicPitchParams | None = None,
               frame_offset: int = 0) -> list[tuple[int, int, int, float]]:
        """basic-pitch's note decoding on one block; returns (start_frame, end_frame, pitch, amplitude)."""
        return decode_activations(note, onset, params or self.params, frame_offset)

    def decode_stream(self, acts: Iterable[tuple[np.ndarray, np.ndarray, int]],
                      params: BasicPitchParams | None = None) -> Iterator[Note]:
        """Decode notes from streamed activations block by block; a note belongs to the block of its onset."""
        fps = BP_SAMPLE_RATE / BP_HOP

        def decode(arrays: tuple[np.ndarray, ...], first: int) -> list[tuple[int, Note]]:
            return [(s, Note(s / fps, e / fps, int(pitch), int(round(127 * float(amp)))))
                    for s, e, pitch, amp in self.decode(arrays[0], arrays[1], params, frame_offset=first)]

        return decode_stream((((n, o), total) for n, o, total in acts), decode, fps, self.stream)

    def transcribe_blocks(self, blocks: Iterable[np.ndarray], params: BasicPitchParams | None = None) -> list[Note]:
        """Notes of a 22050 Hz mono stream."""
        return sorted(self.decode_stream(self.activations(blocks), params))

    def transcribe_file(self, path: str | Path) -> Any:
        """A NoteSequence of any audio file soundfile reads (WAV, FLAC, OGG, MP3), streamed."""
        duration = audio_duration(path)
        notes = self.transcribe_blocks(_with_progress(read_audio_blocks(path, BP_SAMPLE_RATE), path, duration))
        return notes_to_sequence(notes, duration)

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> Any:
        """A NoteSequence of a mono signal held in memory (the same interface as the onsets-frames model)."""
        if sample_rate != BP_SAMPLE_RATE:
            import soxr

            audio = soxr.resample(audio.astype(np.float32), sample_rate, BP_SAMPLE_RATE)
        notes = self.transcribe_blocks([np.asarray(audio, dtype=np.float32)])
        return notes_to_sequence(notes, len(audio) / BP_SAMPLE_RATE)


def default_threads() -> int:
    """Threads for the model: $AMBIENTGEN_THREADS, else 0 (onnxruntime's choice: the physical cores)."""
    return env.threads()
