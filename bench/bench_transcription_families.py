"""Transcription accuracy per timbre family on the development set's 'test' part, every backend in one run.

The baseline is stock basic-pitch (basic_pitch.inference.predict with its own defaults) on the same audio. The
goals, per family: sustained, pads and the mixes at least +0.15 onset F1 over stock and frame F1 at least 0.6;
struck at least +0.03 onset F1 over stock. Nothing here was tuned on these clips: decoding settings are chosen
on the 'tune' part (bench/tune_transcription.py), which holds other works.

    python bench/bench_transcription_families.py --dev-set runs/devset
    python bench/bench_transcription_families.py --dev-set runs/devset --backend onsets-frames --json r.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ambientgen.util import cpu_name

GOAL_STRUCK, GOAL_OTHER, GOAL_FRAME = 0.03, 0.15, 0.6


def verdicts(means: dict, backend: str) -> list[str]:
    stock = means["stock-basic-pitch"]
    lines = []
    for fam, m in means[backend].items():
        if fam == "all":
            continue
        gain = m["f1"] - stock[fam]["f1"]
        if fam == "struck":
            ok = gain >= GOAL_STRUCK
            goal = f"onset +{GOAL_STRUCK}"
        else:
            ok = gain >= GOAL_OTHER and m["frame_f1"] >= GOAL_FRAME
            goal = f"onset +{GOAL_OTHER}, frame >= {GOAL_FRAME}"
        lines.append(f"{fam:12} onset {m['f1']:.3f} ({gain:+.3f} over stock {stock[fam]['f1']:.3f}), "
                     f"offset {m['f1_offset']:.3f} ({m['f1_offset'] - stock[fam]['f1_offset']:+.3f}), "
                     f"frame {m['frame_f1']:.3f} ({m['frame_f1'] - stock[fam]['frame_f1']:+.3f})   "
                     f"goal {goal}: {'met' if ok else 'MISSED'}")
    return lines


def main() -> None:
    from ambientgen.stages.evaluate_transcriber import evaluate, format_report

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dev-set", required=True, help="development set folder (made there when missing)")
    ap.add_argument("--backend", action="append", default=None,
                    help="backends besides stock basic-pitch (default: onsets-frames, basic-pitch)")
    ap.add_argument("--checkpoint", default=None, help="onsets-frames checkpoint (default: the shipped one)")
    ap.add_argument("--per-family", type=int, default=12)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ.setdefault("AMBIENTGEN_NO_PROGRESS", "1")
    backends = ["stock-basic-pitch", *(args.backend or ["onsets-frames", "basic-pitch"])]
    res = evaluate(backends, args.dev_set, "test", args.per_family, checkpoint=args.checkpoint)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores")
    print(format_report(res))
    for b in backends[1:]:
        print(f"\n{b} against stock basic-pitch:")
        print("\n".join(verdicts(res["means"], b)))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
