"""`ambientgen evaluate-transcriber`: note precision/recall/F1 (mir_eval) on held-out rendered pieces.

The held-out pieces are corpus works that training never sees (synth_data.split_of), rendered with the same
kind of augmentation as the training data but a fixed seed, so every run and every backend scores the same audio.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..music.midi_io import load_midi
from ..util import StageError, progress, write_json

HELP = "score a transcriber (onsets-frames or basic-pitch) on held-out rendered pieces (mir_eval note F1)"
EXAMPLES = """
  ambientgen evaluate-transcriber
  ambientgen evaluate-transcriber --backend basic-pitch --data runs/eval --pieces 20
  ambientgen evaluate-transcriber --checkpoint runs/of/ckpt-0003000 --json of.json
"""
BACKENDS = ("onsets-frames", "basic-pitch")
EVAL_SEED = 20_180_101
log = logging.getLogger(__name__)


def heldout_examples(data_dir: str | Path, pieces: int = 20, seconds: float = 30.0) -> list[Path]:
    """The held-out examples in data_dir (rendered there first when missing): NAME.wav + NAME.mid pairs."""
    from ..music.synth_data import make_dataset, split_of

    data_dir = Path(data_dir)
    made = make_dataset(data_dir, "test", count=pieces, max_seconds=seconds, seed=EVAL_SEED)
    out = []
    for npz in made:
        meta = json.loads(npz.with_suffix(".json").read_text())
        if split_of(meta["work"]) != "test":
            raise StageError(npz, f"work {meta['work']} is not a held-out work")
        out.append(npz.with_suffix(".wav"))
    return out


class _PredictBasicPitch:
    """basic-pitch through basic_pitch.inference.predict and its ICASSP 2022 ONNX model."""

    name = "basic-pitch (basic_pitch.inference.predict)"

    def __init__(self) -> None:
        import note_seq  # noqa: F401  (fail early if missing)

    def transcribe_path(self, path: Path):
        from basic_pitch import ICASSP_2022_MODEL_PATH
        from basic_pitch.inference import predict

        _, midi, _ = predict(str(path), ICASSP_2022_MODEL_PATH)
        with tempfile.TemporaryDirectory() as tmp:
            midi.write(str(Path(tmp) / "bp.mid"))
            return load_midi(Path(tmp) / "bp.mid", allow_empty=True)


def make_backend(backend: str, checkpoint: str | Path | None = None, basic_pitch_impl: str = "stage",
                 onset_threshold: float | None = None, frame_threshold: float | None = None) -> Any:
    """An object with transcribe(audio, sr) (or transcribe_path(path)) for the backend."""
    if backend == "onsets-frames":
        from ..models.onsets_frames import load_model

        return load_model(checkpoint, onset_threshold, frame_threshold)
    if backend == "basic-pitch":
        if checkpoint is not None:
            raise StageError(checkpoint, "--checkpoint is for --backend onsets-frames")
        if basic_pitch_impl == "stage":
            try:
                from .transcribe import make_transcriber

                return make_transcriber("basic-pitch")
            except ImportError as exc:
                log.info("transcribe stage not available (%s); using basic_pitch.inference.predict", exc)
        return _PredictBasicPitch()
    raise StageError(None, f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")


def _arrays(ns) -> tuple[np.ndarray, np.ndarray]:
    import mir_eval

    notes = [n for n in ns.notes if n.end_time > n.start_time and not n.is_drum]
    if not notes:
        return np.zeros((0, 2)), np.zeros(0)
    intervals = np.array([[n.start_time, n.end_time] for n in notes])
    pitches = mir_eval.util.midi_to_hz(np.array([n.pitch for n in notes], dtype=float))
    return intervals, pitches


def note_scores(ref, est) -> dict[str, float]:
    """mir_eval note P/R/F1: onset only (50 ms) and with offsets (20 % or 50 ms)."""
    import mir_eval

    ri, rp = _arrays(ref)
    ei, ep = _arrays(est)
    if len(ri) == 0 or len(ei) == 0:
        return dict.fromkeys(("precision", "recall", "f1", "precision_offset", "recall_offset", "f1_offset"), 0.0)
    p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(ri, rp, ei, ep, offset_ratio=None)
    po, ro, fo, _ = mir_eval.transcription.precision_recall_f1_overlap(ri, rp, ei, ep)
    return {"precision": p, "recall": r, "f1": f, "precision_offset": po, "recall_offset": ro, "f1_offset": fo}


def evaluate(backend: str = "onsets-frames", checkpoint: str | Path | None = None, data_dir: str | Path | None = None,
             pieces: int = 20, seconds: float = 30.0, basic_pitch_impl: str = "stage",
             onset_threshold: float | None = None, frame_threshold: float | None = None) -> dict[str, Any]:
    """Transcribe every held-out piece and score it; returns per-piece and mean scores plus speed."""
    import soundfile as sf

    model = make_backend(backend, checkpoint, basic_pitch_impl, onset_threshold, frame_threshold)
    with tempfile.TemporaryDirectory(prefix="ambientgen-eval-") as tmp:
        wavs = heldout_examples(data_dir or tmp, pieces, seconds)
        if not wavs:
            raise StageError(data_dir, "no held-out pieces could be rendered")
        rows = []
        audio_s = compute_s = 0.0
        for wav in progress(wavs, f"evaluate {backend}", unit="piece"):
            ref = load_midi(wav.with_suffix(".mid"))
            audio, sr = sf.read(str(wav), dtype="float32")
            t0 = time.perf_counter()
            est = model.transcribe_path(wav) if hasattr(model, "transcribe_path") else model.transcribe(audio, sr)
            dt = time.perf_counter() - t0
            audio_s += len(audio) / sr
            compute_s += dt
            rows.append({"piece": wav.stem, "ref_notes": len(ref.notes), "est_notes": len(est.notes),
                         "seconds": round(len(audio) / sr, 2), **note_scores(ref, est)})
    keys = ("precision", "recall", "f1", "precision_offset", "recall_offset", "f1_offset")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    params = model.parameters() if callable(getattr(model, "parameters", None)) else {}
    return {"backend": getattr(model, "name", backend), "checkpoint": str(checkpoint) if checkpoint else None,
            "parameters": params,
            "pieces": len(rows), "audio_seconds": round(audio_s, 1), "compute_seconds": round(compute_s, 2),
            "x_realtime": round(audio_s / compute_s, 1) if compute_s else None, "mean": mean, "per_piece": rows}


def format_report(res: dict[str, Any]) -> str:
    m = res["mean"]
    lines = [f"backend: {res['backend']}   pieces: {res['pieces']}   audio: {res['audio_seconds']} s   "
             f"speed: {res['x_realtime']}x real time",
             f"{'':18}{'precision':>10}{'recall':>10}{'F1':>10}",
             f"{'onset only':18}{m['precision']:10.3f}{m['recall']:10.3f}{m['f1']:10.3f}",
             f"{'onset + offset':18}{m['precision_offset']:10.3f}{m['recall_offset']:10.3f}{m['f1_offset']:10.3f}"]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKENDS, default="onsets-frames", help="transcriber to score")
    p.add_argument("--checkpoint", default=None,
                   help="onsets-frames checkpoint dir or model.safetensors (default: the shipped one)")
    p.add_argument("--data", default=None,
                   help="folder for the held-out renderings (kept and reused; default: a temporary folder)")
    p.add_argument("--pieces", type=int, default=20, help="held-out pieces (20)")
    p.add_argument("--seconds", type=float, default=30.0, help="seconds per piece (30)")
    p.add_argument("--basic-pitch-impl", choices=("stage", "predict"), default="stage",
                   help="basic-pitch via the transcribe stage's library (default) or basic_pitch.inference.predict")
    p.add_argument("--onset-threshold", type=float, default=None,
                   help="onsets-frames onset threshold (default: the checkpoint's tuned value)")
    p.add_argument("--frame-threshold", type=float, default=None,
                   help="onsets-frames frame threshold (default: the checkpoint's tuned value)")
    p.add_argument("--json", default=None, help="also write the full results (per piece) to this JSON file")


def main(args: argparse.Namespace) -> int:
    res = evaluate(args.backend, args.checkpoint, args.data, args.pieces, args.seconds, args.basic_pitch_impl,
                   args.onset_threshold, args.frame_threshold)
    print(format_report(res))
    if args.json:
        write_json(args.json, res)
    return 0
