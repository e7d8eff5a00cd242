"""Benchmark: the shipped Onsets and Frames checkpoint against basic-pitch, measured in the same run.

Speed: seconds of audio transcribed per second of compute (x real time) on the same rendered audio, with
torch/onnxruntime limited to --threads. Accuracy: mir_eval note P/R/F1 (onset only and with offsets) on the
held-out rendered pieces of `ambientgen evaluate-transcriber`. Prints ratios onsets-frames / basic-pitch.

  .venv/bin/python bench/bench_onsets_frames.py                 # speed + accuracy on 8 held-out pieces
  .venv/bin/python bench/bench_onsets_frames.py --pieces 20 --data runs/eval
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from ambientgen.util import cpu_name


def speed(threads: int, seconds: float, data_dir: Path, repeats: int = 3) -> dict[str, float]:
    """x real time of both backends on the same held-out audio (best of `repeats`)."""
    import numpy as np
    import soundfile as sf
    import torch

    from ambientgen.stages.evaluate_transcriber import heldout_examples, make_backend

    torch.set_num_threads(threads)
    wavs = heldout_examples(data_dir, pieces=4, seconds=30.0)
    audio = np.concatenate([sf.read(str(w), dtype="float32")[0] for w in wavs])[: int(seconds * 16000)]
    dur = len(audio) / 16000
    res = {"audio_seconds": round(dur, 1)}
    for name in ("onsets-frames", "basic-pitch"):
        model = make_backend(name)
        if name == "basic-pitch" and hasattr(model, "parameters"):  # the transcribe stage's: pin its threads
            from ambientgen.stages.transcribe import make_transcriber

            model = make_transcriber("basic-pitch", threads=threads)
        model.transcribe(audio[:16000 * 5], 16000)  # warm-up
        best = best_cpu = float("inf")
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            model.transcribe(audio, 16000)
            best = min(best, time.perf_counter() - t0)
            best_cpu = min(best_cpu, time.process_time() - c0)
        res[name] = round(dur / best, 1)
        # CPU seconds spent: on a machine shared with other jobs this shows the cost without the waiting
        res[f"{name} (cpu time)"] = round(dur / best_cpu, 1)
    res["ratio"] = round(res["onsets-frames"] / res["basic-pitch"], 2)
    return res


def accuracy(pieces: int, data_dir: Path) -> dict[str, dict]:
    from ambientgen.stages.evaluate_transcriber import evaluate

    out = {}
    for name in ("onsets-frames", "basic-pitch"):
        r = evaluate(name, data_dir=data_dir, pieces=pieces)
        out[name] = {**r["mean"], "x_realtime": r["x_realtime"], "pieces": r["pieces"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=60.0, help="audio length for the speed test")
    ap.add_argument("--pieces", type=int, default=8, help="held-out pieces for the accuracy test")
    ap.add_argument("--data", default=None, help="folder for the held-out renderings (kept)")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ.setdefault("AMBIENTGEN_NO_PROGRESS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data or tmp)
        print(f"machine: {cpu_name()}, {os.cpu_count()} cores; threads {args.threads}")
        sp = speed(args.threads, args.seconds, data)
        print(f"speed on {sp['audio_seconds']} s of audio: onsets-frames {sp['onsets-frames']}x real time, "
              f"basic-pitch {sp['basic-pitch']}x -> ratio {sp['ratio']}")
        print(f"  per CPU second (all threads): onsets-frames {sp['onsets-frames (cpu time)']}x, "
              f"basic-pitch {sp['basic-pitch (cpu time)']}x; load average {os.getloadavg()[0]:.1f}")
        result = {"machine": cpu_name(), "threads": args.threads, "speed": sp}
        if not args.skip_accuracy:
            acc = accuracy(args.pieces, data)
            of, bp = acc["onsets-frames"], acc["basic-pitch"]
            print(f"accuracy on {of['pieces']} held-out pieces (mean per piece):")
            print(f"{'':22}{'onsets-frames':>14}{'basic-pitch':>12}{'ratio':>8}")
            for key, label in (("f1", "onset F1"), ("precision", "onset precision"), ("recall", "onset recall"),
                               ("f1_offset", "onset+offset F1")):
                ratio = of[key] / bp[key] if bp[key] else float("nan")
                print(f"{label:22}{of[key]:14.3f}{bp[key]:12.3f}{ratio:8.2f}")
            result["accuracy"] = acc
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
