"""Base models side by side, before any fine-tuning: NLL per token on the kinds of music a base meets.

* corpus: held-out corpus pieces, played from the score (the base's own 5% hash split; Bach chorales, Ryan's
  Mammoth tunes and Palestrina, one piece per file, converted here);
* heard: held-out heard pieces (a `train-base --heard` run's data set eval split: rendered, then transcribed);
* the fine-tuning bench's user data sets (bench_finetune.py's chorales, folk tunes, consort and quartet pieces,
  their eval split), which no base trained on.

Every model is scored on the same windows (512 events, the notes sounding at a window's start restated and not
scored), so the columns compare directly.

  .venv/bin/python bench/bench_base_nll.py --models shipped,runs/heard/export --heard-run runs/heard \\
      --finetune-work runs/bench-finetune
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from bench_finetune import SETS

WINDOW, LIMIT = 512, 256


def corpus_heldout(dest: Path, per_collection: int) -> Path:
    """Held-out corpus pieces (one piece per file) as a data set in dest; returns its folder."""
    from ambientgen.music.corpus import convert_file, corpus_files, corpus_id
    from ambientgen.stages.heard_corpus import base_held_out
    from ambientgen.stages.make_dataset import DatasetOptions, make_dataset

    midi = dest / "midi"
    for coll in ("bach", "ryansMammoth", "palestrina"):
        files = [p for p in corpus_files() if corpus_id(p).startswith(coll + "/")
                 and base_held_out(corpus_id(p) + ".mid")]
        for p in files[:per_collection]:
            convert_file(p, midi)
    ds = dest / "dataset"
    make_dataset(midi, ds, DatasetOptions(eval_percent=5.0, test_percent=0.0, cache_dir=None))
    return ds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="shipped", help="comma-separated model folders ('shipped': the package's)")
    ap.add_argument("--heard-run", default=None, help="a train-base --heard folder (its dataset/ eval split)")
    ap.add_argument("--finetune-work", default="runs/bench-finetune", help="bench_finetune.py's --work")
    ap.add_argument("--per-collection", type=int, default=25, help="held-out corpus files per collection")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("AMBIENTGEN_NO_PROGRESS", "1")
    import torch

    from ambientgen.models.base import BASE_DIR
    from ambientgen.models.weights import load_model_dir
    from ambientgen.music.tfrecord_io import load_split
    from ambientgen.stages.train_data import eval_windows, evaluate

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"corpus (held out)": load_split(corpus_heldout(Path(tmp), args.per_collection), "eval")}
        if args.heard_run:
            sets["heard (held out)"] = load_split(Path(args.heard_run) / "dataset", "eval")
        for name in SETS:  # bench_finetune.py's, in this folder
            ds = Path(args.finetune_work) / name / "dataset"
            if (ds / "summary.json").is_file():
                sets[f"bench {name} (eval)"] = load_split(ds, "eval")
    windows = {k: eval_windows(v, WINDOW, LIMIT) for k, v in sets.items()}
    models = [BASE_DIR if m == "shipped" else Path(m) for m in args.models.split(",")]
    rows = {}
    for m in models:
        model, _ = load_model_dir(m)
        rows[str(m)] = {k: evaluate(model, w, 8, "cpu")[0] for k, w in windows.items()}
    print(f"\n{'model':<48}" + "".join(f"{k:>22}" for k in windows))
    print(f"{'(windows)':<48}" + "".join(f"{len(w):>22}" for w in windows.values()))
    for m, r in rows.items():
        print(f"{m[-48:]:<48}" + "".join(f"{v:>22.4f}" for v in r.values()))
    if len(rows) > 1:
        first = next(iter(rows.values()))
        for m, r in list(rows.items())[1:]:
            print(f"{'ratio ' + m[-42:]:<48}" + "".join(f"{r[k] / first[k]:>21.3f}x" for k in windows))


if __name__ == "__main__":
    main()
