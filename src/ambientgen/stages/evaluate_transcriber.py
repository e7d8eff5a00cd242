"""`ambientgen evaluate-transcriber`: transcribers scored per timbre family on the rendered development set.

The development set (ambientgen.music.synth_data.make_dev_set) is made of works that transcriber training never
sees, rendered for six timbre families with rooms from dry to cathedral, EQ, noise and MP3 round trips. Its
'tune' part is the only audio any decoding default may be chosen on; the 'test' part (the default here) is what
results are reported on. Every backend scores the very same audio, so one run gives comparable figures:
note-onset F1 (mir_eval, 50 ms), F1 with offsets (20 % or 50 ms) and frame F1 (mir_eval.multipitch, 10 ms).
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

HELP = "score transcribers per timbre family on the rendered development set (onset, offset and frame F1)"
EXAMPLES = """
  ambientgen evaluate-transcriber
  ambientgen evaluate-transcriber --backend stock-basic-pitch --backend basic-pitch --dev-set runs/devset
  ambientgen evaluate-transcriber --backend onsets-frames --checkpoint runs/of/ckpt-0003000 --json of.json
"""
BACKENDS = ("basic-pitch", "onsets-frames", "stock-basic-pitch")
METRICS = ("f1", "f1_offset", "frame_f1", "precision", "recall")
log = logging.getLogger(__name__)


class StockBasicPitch:
    """basic-pitch exactly as its authors ship it: basic_pitch.inference.predict with its own defaults
    (onset 0.5, frame 0.3, 127.7 ms, melodia on) on its ICASSP 2022 model; the baseline every default must beat."""

    name = "stock-basic-pitch"

    def __init__(self) -> None:
        import note_seq  # noqa: F401  (fail early if missing)

    def parameters(self) -> dict[str, Any]:
        return {"implementation": "basic_pitch.inference.predict", "defaults": "basic-pitch's own"}

    def transcribe_path(self, path: Path):
        from basic_pitch import ICASSP_2022_MODEL_PATH
        from basic_pitch.inference import predict

        _, midi, _ = predict(str(path), ICASSP_2022_MODEL_PATH)
        with tempfile.TemporaryDirectory() as tmp:
            midi.write(str(Path(tmp) / "bp.mid"))
            return load_midi(Path(tmp) / "bp.mid", allow_empty=True)


def make_backend(backend: str, checkpoint: str | Path | None = None) -> Any:
    """An object with transcribe_file(path) or transcribe_path(path) for the backend."""
    if backend == "stock-basic-pitch":
        return StockBasicPitch()
    if backend not in BACKENDS:
        raise StageError(None, f"unknown backend {backend!r}: choose from {', '.join(BACKENDS)}")
    from .transcribe import make_transcriber

    return make_transcriber(backend, checkpoint if backend != "basic-pitch" else None)


def evaluate(backends: list[str] | tuple[str, ...] = ("onsets-frames",), dev_dir: str | Path | None = None,
             part: str = "test", per_family: int = 12, seconds: float = 20.0,
             checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Transcribe every clip of the development set's `part` with each backend and score it; returns per-clip
    rows, means per backend and family, and speed."""
    from ..music.synth_data import make_dev_set
    from ..music.transcription import transcription_scores

    with tempfile.TemporaryDirectory(prefix="ambientgen-devset-") as tmp:
        wavs = make_dev_set(dev_dir or tmp, part, per_family, seconds)
        if not wavs:
            raise StageError(dev_dir, "no development clips could be rendered")
        refs = {w: load_midi(w.with_suffix(".mid"), allow_empty=True) for w in wavs}
        metas = {w: json.loads(w.with_suffix(".json").read_text()) for w in wavs}
        rows: list[dict[str, Any]] = []
        speed: dict[str, float] = {}
        params: dict[str, Any] = {}
        for backend in backends:
            model = make_backend(backend, checkpoint)
            params[backend] = model.parameters() if callable(getattr(model, "parameters", None)) else {}
            audio_s = compute_s = 0.0
            for wav in progress(wavs, f"evaluate {backend}", unit="clip"):
                t0 = time.perf_counter()
                est = model.transcribe_path(wav) if hasattr(model, "transcribe_path") else model.transcribe_file(wav)
                compute_s += time.perf_counter() - t0
                audio_s += metas[wav]["seconds"]
                rows.append({"backend": backend, "clip": wav.stem, "family": metas[wav]["family"],
                             "work": metas[wav]["work"], "ref_notes": len(refs[wav].notes),
                             "est_notes": len(est.notes), **transcription_scores(refs[wav], est)})
            speed[backend] = round(audio_s / compute_s, 1) if compute_s else 0.0
    return {"part": part, "clips": len(wavs), "audio_seconds": round(sum(m["seconds"] for m in metas.values()), 1),
            "x_realtime": speed, "parameters": params, "means": summarize(rows), "per_clip": rows}


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean of each metric per backend and family, plus 'all' (every clip)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for backend in dict.fromkeys(r["backend"] for r in rows):
        mine = [r for r in rows if r["backend"] == backend]
        fams = {"all": mine, **{f: [r for r in mine if r["family"] == f] for f in dict.fromkeys(r["family"]
                                                                                                  for r in mine)}}
        out[backend] = {f: {m: float(np.mean([r[m] for r in rs])) for m in METRICS} for f, rs in fams.items()}
    return out


def format_report(res: dict[str, Any]) -> str:
    """One table per metric: families down, backends across."""
    means = res["means"]
    backends = list(means)
    families = list(next(iter(means.values())))
    lines = [f"development set, part '{res['part']}': {res['clips']} clips, {res['audio_seconds']} s of audio"]
    for metric, title in (("f1", "onset F1"), ("f1_offset", "onset+offset F1"), ("frame_f1", "frame F1")):
        lines += ["", f"{title:14}" + "".join(f"{b:>20}" for b in backends)]
        for fam in families:
            lines.append(f"{fam:14}" + "".join(f"{means[b][fam][metric]:20.3f}" for b in backends))
    lines += ["", f"{'x real time':14}" + "".join(f"{res['x_realtime'][b]:20.1f}" for b in backends)]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", action="append", choices=BACKENDS, default=None,
                   help="transcriber to score; repeat for several (default: onsets-frames)")
    p.add_argument("--checkpoint", default=None,
                   help="onsets-frames checkpoint dir or model.safetensors (default: the shipped one)")
    p.add_argument("--dev-set", default=None, metavar="DIR",
                   help="folder of the development set (made there when missing, then reused; default: temporary)")
    p.add_argument("--part", choices=("test", "tune"), default="test",
                   help="'test' (reported, never tuned on; default) or 'tune' (where defaults are chosen)")
    p.add_argument("--per-family", type=int, default=12, help="clips per timbre family (12)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds per clip (20)")
    p.add_argument("--json", default=None, help="also write the full results (per clip) to this JSON file")


def main(args: argparse.Namespace) -> int:
    res = evaluate(args.backend or ["onsets-frames"], args.dev_set, args.part, args.per_family, args.seconds,
                   args.checkpoint)
    print(format_report(res))
    if args.json:
        write_json(args.json, res)
    return 0
