"""Stage 3: polyphonic transcription, audio -> NAME.mid + NAME.json sidecar.

Backends (both give a note_seq.NoteSequence, so MIDI and sidecar writing are shared):

* ``onsets-frames`` (default): ``ambientgen.models.onsets_frames``, the shipped checkpoint (``--checkpoint``
  for another), streamed (ambientgen.music.onsets_frames_stream).
* ``basic-pitch``: Spotify's basic-pitch ICASSP 2022 model, the ONNX file shipped in its wheel, run
  with onnxruntime (no TensorFlow, no download). Streamed in blocks, so hour-long files use bounded memory.

The model is loaded once per process and every file gets its own, fresh decoding (a folder of files gives
each file its own notes). Silent audio gives a valid MIDI file without notes and a warning.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import time
from pathlib import Path
from typing import Any

from ..music.midi_io import MIDI_SUFFIXES
from ..util import SOUNDFILE_SUFFIXES, FileResults, StageError, atomic_path, for_each_file, write_json

HELP = "transcribe audio (WAV, FLAC, OGG, MP3) to MIDI + JSON sidecar (basic-pitch ONNX by default)"
EXAMPLES = """
  ambientgen transcribe /pfs/audio-processed-wav /pfs/out
  ambientgen transcribe wav/ midi/ --onset-threshold 0.6 --min-note-ms 80
  ambientgen transcribe wav/ midi/ --backend onsets-frames --checkpoint model/onsets_frames.safetensors
"""
BACKENDS = ("basic-pitch", "onsets-frames")
DEFAULT_BACKEND = "onsets-frames"  # beats stock basic-pitch on every timbre family of the development set

log = logging.getLogger(__name__)


def load_onsets_frames(checkpoint: str | Path | None, stream: Any = None, decoding: dict[str, float] | None = None
                       ) -> Any:
    """The onsets-frames backend: ambientgen.models.onsets_frames.load_model(checkpoint), imported lazily."""
    from ..music.onsets_frames_stream import OnsetsFramesStream
    from ..music.transcription import StreamOptions

    modname = "ambientgen.models.onsets_frames"
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name and modname.startswith(exc.name):
            raise StageError(None, f"backend onsets-frames needs {modname}, which this installation does not "
                                   "include; use --backend basic-pitch") from None
        raise
    if checkpoint is not None and not Path(checkpoint).exists():
        raise StageError(checkpoint, "onsets-frames checkpoint not found")
    try:
        model = mod.load_model(checkpoint, **(decoding or {}))
    except FileNotFoundError as exc:
        raise StageError(checkpoint or exc.filename, f"onsets-frames checkpoint missing ({exc.strerror or exc})") from None
    extra = {"checkpoint": str(checkpoint) if checkpoint else "(packaged)"}
    return OnsetsFramesStream(model=model, stream=stream or StreamOptions(), extra=extra)


def make_transcriber(backend: str = DEFAULT_BACKEND, checkpoint: str | Path | None = None, params: Any = None,
                     stream: Any = None, threads: int | None = None, decoding: dict[str, float] | None = None
                     ) -> Any:
    """Build (and load the model of) a backend once; reuse it for every file. `params` are basic-pitch's
    decoding settings, `decoding` overrides of the onsets-frames checkpoint's (onset_threshold, ...)."""
    from ..music import basic_pitch_onnx as bp

    if backend == "basic-pitch":
        if checkpoint is not None:
            raise StageError(checkpoint, "--checkpoint is for --backend onsets-frames; basic-pitch uses its shipped model")
        return bp.BasicPitchTranscriber(params=params, stream=stream,
                                        threads=bp.default_threads() if threads is None else threads)
    if backend == "onsets-frames":
        return load_onsets_frames(checkpoint, stream, decoding)
    raise StageError(None, f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")


def transcribe_file(transcriber: Any, src: str | Path, out_dir: str | Path, out_rel: str | Path,
                    source_name: str | None = None) -> dict[str, Any]:
    """Transcribe one audio file to out_dir/out_rel(.mid) and its .json sidecar; return the sidecar."""
    import soundfile

    from .. import __version__
    from ..music.transcription import audio_duration, write_midi

    src, out_dir = Path(src), Path(out_dir)
    if src.stat().st_size == 0:
        raise StageError(src, "empty file (0 bytes)")
    try:
        duration = audio_duration(src)
        before = dict(getattr(transcriber, "windows", {}))
        t0 = time.perf_counter()
        ns = transcriber.transcribe_file(src)
        elapsed = time.perf_counter() - t0
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as exc:
        raise StageError(src, f"cannot read audio ({exc})") from None
    if duration <= 0:
        raise StageError(src, "no audio samples")
    midi_rel = Path(out_rel).with_suffix(".mid")
    if not ns.notes:
        log.warning("%s: no notes found (silent or unpitched audio); writing an empty MIDI file", src)
    write_midi(ns, out_dir / midi_rel)
    pitches = [n.pitch for n in ns.notes]
    sidecar = {
        "source": source_name or src.name,
        "midi": midi_rel.name,
        "backend": transcriber.name,
        "parameters": transcriber.parameters(),
        "notes": len(ns.notes),
        "duration_s": round(duration, 3),
        "pitch_min": min(pitches) if pitches else None,
        "pitch_max": max(pitches) if pitches else None,
        "ambientgen_version": __version__,
    }
    if before:  # how many model windows ran, and how many were skipped as silent
        sidecar["model_windows"] = {k: v - before.get(k, 0) for k, v in transcriber.windows.items()}
    write_json(out_dir / midi_rel.with_suffix(".json"), sidecar)
    log.info("%s -> %s: %d notes, %.1f s of audio in %.1f s (%.0fx real time)", src.name, midi_rel, len(ns.notes),
             duration, elapsed, duration / elapsed if elapsed > 0 else float("inf"))
    return sidecar


def given_midi_name(rel: str) -> str:
    """Where a MIDI input goes: NAME-midi.mid, so that song.mid beside song.mp3 (transcribed to song.mid) never
    collides with it."""
    p = Path(rel)
    return p.with_name(f"{p.stem}-midi.mid").as_posix()


def take_midi(src: str | Path, out_dir: str | Path, out_rel: str | Path, source_name: str | None = None
              ) -> dict[str, Any]:
    """A MIDI file among the inputs is its own transcription: checked with the MIDI limits, copied as it is, and
    described by the same sidecar (a listener's MIDI collection, or liked pieces joining the training)."""
    import shutil

    from .. import __version__
    from ..music.midi_io import load_midi

    src, out_dir = Path(src), Path(out_dir)
    ns = load_midi(src)
    midi_rel = Path(out_rel).with_suffix(".mid")
    with atomic_path(out_dir / midi_rel) as tmp:
        shutil.copyfile(src, tmp)
    pitches = [n.pitch for n in ns.notes]
    sidecar = {"source": source_name or src.name, "midi": midi_rel.name, "backend": "midi", "parameters": {},
               "notes": len(ns.notes), "duration_s": round(ns.total_time, 3),
               "pitch_min": min(pitches) if pitches else None, "pitch_max": max(pitches) if pitches else None,
               "ambientgen_version": __version__}
    write_json(out_dir / midi_rel.with_suffix(".json"), sidecar)
    log.info("%s -> %s: %d notes (MIDI, taken as it is)", src.name, midi_rel, len(ns.notes))
    return sidecar


def midi_name(rel: str) -> str:
    """The MIDI an input gives: NAME.mid for audio, NAME-midi.mid for a MIDI input (given_midi_name)."""
    return given_midi_name(rel) if Path(rel).suffix.lower() in MIDI_SUFFIXES else Path(rel).with_suffix(".mid").as_posix()


def transcribe_dir(input_dir: str | Path, output_dir: str | Path, backend: str = DEFAULT_BACKEND,
                   checkpoint: str | Path | None = None, params: Any = None, stream: Any = None,
                   threads: int | None = None, transcriber: Any = None,
                   decoding: dict[str, float] | None = None) -> FileResults:
    """Transcribe every audio file under input_dir into output_dir (``done``: input -> its sidecar); a bad file
    never stops the others, and the model is loaded only when there is audio (MIDI inputs are taken as they are)."""
    output_dir = Path(output_dir)
    model = [transcriber]

    def load_model(paths: list[Path]) -> None:
        if model[0] is None and any(p.suffix.lower() not in MIDI_SUFFIXES for p in paths):
            model[0] = make_transcriber(backend, checkpoint, params, stream, threads, decoding)

    def one(path: Path, rel: str) -> dict[str, Any]:
        if path.suffix.lower() in MIDI_SUFFIXES:
            return take_midi(path, output_dir, midi_name(rel), source_name=rel)
        return transcribe_file(model[0], path, output_dir, midi_name(rel), source_name=rel)

    return for_each_file(input_dir, SOUNDFILE_SUFFIXES | MIDI_SUFFIXES, one, what="transcribe",
                         output_name=midi_name, prepare=load_model)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..music.basic_pitch_onnx import BasicPitchParams
    from ..music.transcription import StreamOptions

    d, s = BasicPitchParams(), StreamOptions()
    p.add_argument("input_dir", help="directory of audio files (e.g. /pfs/audio-processed-wav)")
    p.add_argument("output_dir", help="where NAME.mid and NAME.json go (e.g. /pfs/out)")
    p.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                   help=f"transcription model (default {DEFAULT_BACKEND})")
    p.add_argument("--checkpoint", default=None, help="onsets-frames checkpoint (directory or .safetensors file); default: the packaged one")
    g = p.add_argument_group("basic-pitch note decoding")
    g.add_argument("--onset-threshold", type=float, default=d.onset_threshold,
                   help=f"onset activation needed to start a note (default {d.onset_threshold})")
    g.add_argument("--frame-threshold", type=float, default=d.frame_threshold,
                   help=f"frame activation needed to keep a note sounding (default {d.frame_threshold})")
    g.add_argument("--min-note-ms", type=float, default=d.minimum_note_length_ms,
                   help=f"drop notes shorter than this (default {d.minimum_note_length_ms:g} ms)")
    g.add_argument("--min-freq", type=float, default=None, help="ignore pitches below this frequency (Hz)")
    g.add_argument("--max-freq", type=float, default=None, help="ignore pitches above this frequency (Hz)")
    g.add_argument("--melodia", action=argparse.BooleanOptionalAction, default=d.melodia_trick,
                   help="also add notes found without a clear onset (basic-pitch's melodia trick; helps soft pads, "
                        f"costs a little precision on struck and plucked sounds; default {'on' if d.melodia_trick else 'off'})")
    g = p.add_argument_group("onsets-frames note decoding (default: the checkpoint's, chosen on the development set)")
    g.add_argument("--of-onset-threshold", type=float, default=None, help="onset probability that starts a note")
    g.add_argument("--of-frame-threshold", type=float, default=None, help="frame probability that keeps it sounding")
    g.add_argument("--of-frame-start-threshold", type=float, default=None,
                   help="frame probability whose steady run starts a note without an onset (swelling pads)")
    g = p.add_argument_group("long files")
    g.add_argument("--block-seconds", type=float, default=s.block_s, help=f"decoding block (default {s.block_s:g} s)")
    g.add_argument("--lookahead-seconds", type=float, default=s.lookahead_s,
                   help=f"context after each block; longer notes are cut (default {s.lookahead_s:g} s)")
    g.add_argument("--threads", type=int, default=None,
                   help="model threads (default $AMBIENTGEN_THREADS or all physical cores)")


def main(args: argparse.Namespace) -> int:
    from ..music.basic_pitch_onnx import BasicPitchParams
    from ..music.transcription import StreamOptions

    params = BasicPitchParams(onset_threshold=args.onset_threshold, frame_threshold=args.frame_threshold,
                              minimum_note_length_ms=args.min_note_ms, minimum_frequency=args.min_freq,
                              maximum_frequency=args.max_freq, melodia_trick=args.melodia)
    stream = StreamOptions(block_s=args.block_seconds, lookahead_s=args.lookahead_seconds)
    decoding = {k: v for k, v in (("onset_threshold", args.of_onset_threshold),
                                  ("frame_threshold", args.of_frame_threshold),
                                  ("frame_start_threshold", args.of_frame_start_threshold)) if v is not None}
    res = transcribe_dir(args.input_dir, args.output_dir, args.backend, args.checkpoint, params, stream, args.threads,
                         decoding=decoding)
    for src, side in res.done.items():
        print(f"{src} -> {side['midi']} ({side['notes']} notes)")
    return res.exit_status()
