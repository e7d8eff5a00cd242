"""The shipped base model on its own: unconditioned pieces scored against the corpus pieces it never saw.

Generates --pieces pieces of 30 s from src/ambientgen/assets/base-model with the default request (no primer) and
measures them with `evaluate-generation` against the held-out corpus pieces (the data set's hash eval split), with
copying searched in the training pieces in all seven transpositions that training used.

  .venv/bin/python bench/bench_base.py --base-run runs/base          # needs train-base's corpus-midi/
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-run", default="runs/base", help="train-base's folder (for corpus-midi/)")
    ap.add_argument("--model", default=None, help="model folder (default: the shipped base)")
    ap.add_argument("--pieces", type=int, default=8)
    ap.add_argument("--reference-limit", type=int, default=400, help="held-out pieces to compare with")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("AMBIENTGEN_NO_PROGRESS", "1")
    import numpy as np
    import torch

    from ambientgen.models.base import BASE_DIR
    from ambientgen.music import performance as perf
    from ambientgen.music.midi_io import load_midi
    from ambientgen.music.quality import (
        Notes,
        TrainingIndex,
        load_pieces,
        make_reference,
        pooled_overlaps,
        score_piece,
        set_summary,
    )
    from ambientgen.stages.evaluate_generation import format_table
    from ambientgen.stages.generate import GenerationRequest, generate
    from ambientgen.stages.heard_corpus import BASE_EVAL_PERCENT
    from ambientgen.stages.make_dataset import augment_arrays, split_of
    from ambientgen.stages.make_dataset_files import performance_notes
    from ambientgen.stages.train_base import BASE_TRANSPOSE

    torch.set_num_threads(args.threads)
    corpus = Path(args.base_run) / "corpus-midi"
    model = Path(args.model) if args.model else BASE_DIR
    files = sorted(corpus.rglob("*.mid"))
    held = [p for p in files if split_of(p.relative_to(corpus).as_posix(), BASE_EVAL_PERCENT, 0.0) == "eval"]
    train = [p for p in files if split_of(p.relative_to(corpus).as_posix(), BASE_EVAL_PERCENT, 0.0) == "train"]
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        ref = tmp / "reference"
        ref.mkdir()
        step = max(1, len(held) // args.reference_limit)
        for p in held[::step]:
            shutil.copy(p, ref / p.relative_to(corpus).as_posix().replace("/", "__"))
        events = []
        for p in train:
            arrays = performance_notes(load_midi(p))
            events += [perf.encode_arrays(*augment_arrays(arrays, 1.0, t)) for t in BASE_TRANSPOSE]
        index = TrainingIndex(events)
        gen = tmp / "gen"
        generate(model, gen, defaults=GenerationRequest(name="base", num_samples=args.pieces, seconds=30.0, seed=1))
        ref_notes = [Notes.of(ns) for _, ns in load_pieces(ref)]
        reference = make_reference(ref_notes)
        reference.index = index
        rows, notes = [], []
        for path, ns in load_pieces(gen, skip_primer=True):
            n = Notes.of(ns)
            rows.append({"file": path.name, **score_piece(n, np.asarray(perf.encode(ns)), reference)})
            notes.append(n)
        generated = {**set_summary(notes, [{k: v for k, v in r.items() if k != "file"} for r in rows]),
                     **pooled_overlaps(notes, reference)}
        res = {"generated": generated, "reference": {**reference.summary,
                                                      "interval_overlap_halves": round(reference.self_interval_overlap, 4)},
               "pieces": rows, "stuck_threshold_s": round(2 * reference.dur_p99, 3),
               "copy_source": f"{len(train):,} training pieces x {len(BASE_TRANSPOSE)} transpositions "
                              f"({sum(len(e) for e in events):,} events)"}
        print(f"model: {model} ({json.loads((model / 'config.json').read_text()).get('step')} steps); "
              f"reference: {len(ref_notes)} held-out corpus pieces")
        print(format_table(res))


if __name__ == "__main__":
    main()
