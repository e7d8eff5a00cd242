"""Does `compose --more-like` steer toward the liked piece? Variations primed from a liked piece against pieces
from the same model without it, scored by pitch-class and melodic-interval histogram overlap with the liked piece.

For each model: --liked pieces are generated unprimed (the pieces a listener would pick from); for each liked
piece, --k variations are made exactly as `compose --more-like` asks for them (the liked piece's first three
quarters as primer, left out of the output; `--whole-primer`: all of it, as before) and --k pieces without a
primer (other seeds). Only the new music is scored, so a variation gains nothing from repeating its primer. The
last lines print, per model, the mean overlaps of both kinds and the share of liked pieces whose variations are
closer.

  .venv/bin/python bench/bench_more_like.py                                  # the shipped base model
  .venv/bin/python bench/bench_more_like.py --model runs/bench-finetune/folk/base --liked 4
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ambientgen.util import cpu_name


def notes_of(path: Path):
    from ambientgen.music.midi_io import load_midi
    from ambientgen.music.quality import Notes

    return Notes.of(load_midi(path, allow_empty=True))  # a variation may be empty: the model ended at the primer


def closeness(a, b) -> tuple[float, float]:
    from ambientgen.music.quality import interval_hist, overlap, pitch_class_hist

    return overlap(pitch_class_hist(a), pitch_class_hist(b)), overlap(interval_hist(a), interval_hist(b))


def run_model(model: Path, work: Path, liked_n: int, k: int, seconds: float, whole_primer: bool = False) -> dict:
    from ambientgen.stages.gen_request import GenerationRequest, more_like_primer_seconds
    from ambientgen.stages.generate import generate

    common = {"seconds": seconds, "temperature": 0.95, "top_p": 0.95}
    rows = []
    for i in range(liked_n):
        liked = generate(model, work / "liked", defaults=GenerationRequest(name=f"liked{i}", seed=1000 + i,
                                                                           **common))["written"][0]
        var = generate(model, work / "var", defaults=GenerationRequest(
            name=f"var{i}", num_samples=k, seed=2000 + i, primer_midi=str(liked),
            primer_seconds=None if whole_primer else more_like_primer_seconds(liked),
            include_primer=False, **common))["written"]
        plain = generate(model, work / "plain", defaults=GenerationRequest(
            name=f"plain{i}", num_samples=k, seed=3000 + i, **common))["written"]
        target = notes_of(liked)
        v = np.array([closeness(notes_of(p), target) for p in var]).reshape(-1, 2)  # nan for a piece with no notes
        u = np.array([closeness(notes_of(p), target) for p in plain]).reshape(-1, 2)
        rows.append({"liked": liked.name, "liked_notes": len(target.pitch),
                     "variation_notes": float(np.mean([len(notes_of(p).pitch) for p in var])),
                     "empty_variations": sum(len(notes_of(p).pitch) == 0 for p in var),
                     "variation_pc": float(np.nanmean(v[:, 0])),
                     "variation_iv": float(np.nanmean(v[:, 1])), "plain_pc": float(np.nanmean(u[:, 0])),
                     "plain_iv": float(np.nanmean(u[:, 1]))})
        r = rows[-1]
        print(f"  {liked.name}: pitch-class overlap {r['variation_pc']:.3f} (variations) vs {r['plain_pc']:.3f} "
              f"(no primer); interval overlap {r['variation_iv']:.3f} vs {r['plain_iv']:.3f}", flush=True)
    mean = {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key not in ("liked", "empty_variations")}
    mean["empty_variations"] = int(sum(r["empty_variations"] for r in rows))
    closer = {"pc": float(np.mean([r["variation_pc"] > r["plain_pc"] for r in rows])),
              "iv": float(np.mean([r["variation_iv"] > r["plain_iv"] for r in rows]))}
    return {"model": str(model), "pieces": rows, "mean": mean, "share_closer": closer}


def main() -> int:
    from ambientgen.models.base import BASE_DIR

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=None, help="model folder (repeat; default the shipped base)")
    ap.add_argument("--liked", type=int, default=6, help="liked pieces per model (default 6)")
    ap.add_argument("--k", type=int, default=3, help="variations and plain pieces per liked piece (default 3)")
    ap.add_argument("--seconds", type=float, default=40.0, help="length of every piece (default 40)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--whole-primer", action="store_true",
                    help="prime the variations with the whole liked piece (before round four) instead")
    args = ap.parse_args()
    models = [Path(m) for m in (args.model or [BASE_DIR])]
    print(f"machine: {cpu_name()}; {args.liked} liked pieces x {args.k} variations / plain pieces, "
          f"{args.seconds:g} s each")
    results = []
    for model in models:
        t0 = time.perf_counter()
        print(f"model {model}:", flush=True)
        with tempfile.TemporaryDirectory(prefix="ambientgen-more-like-") as tmp:
            res = run_model(model, Path(tmp), args.liked, args.k, args.seconds, args.whole_primer)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        results.append(res)
    print("\nmodel | pitch-class overlap: variations / no primer | interval overlap: variations / no primer | "
          "liked pieces whose variations are closer (pc, iv)")
    for r in results:
        m, c = r["mean"], r["share_closer"]
        print(f"{Path(r['model']).name or r['model']} | {m['variation_pc']:.3f} / {m['plain_pc']:.3f} "
              f"(x{m['variation_pc'] / m['plain_pc']:.2f}) | {m['variation_iv']:.3f} / {m['plain_iv']:.3f} "
              f"(x{m['variation_iv'] / m['plain_iv']:.2f}) | {c['pc']:.0%}, {c['iv']:.0%} "
              f"(notes: liked {m['liked_notes']:.0f}, variation {m['variation_notes']:.0f}; "
              f"{m['empty_variations']} empty variations)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
