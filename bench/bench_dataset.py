"""make-dataset speed, as ratios against baselines measured in the same run (one core).

1. Performance encoder: ambientgen.music.performance.encode vs note_seq's pure-Python Performance +
   PerformanceOneHotEncoding (what score2perf runs) on the same NoteSequences: real Bach chorales (music21
   corpus, whole pieces) with score2perf's 35 stretch x transposition copies each. Ids are checked equal.
2. MIDI reading: the bounded structural scan (midi_io.scan_midi) vs the full pretty_midi parse it guards.
3. The stage: a cold build (no cache) vs a rebuild from the content-hash cache vs a rebuild after adding
   one file, on the same folder.

Usage: .venv/bin/python bench/bench_dataset.py [--pieces N] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("AMBIENTGEN_NO_PROGRESS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

from ambientgen.music import performance as P  # noqa: E402
from ambientgen.music.midi_io import load_midi, scan_midi  # noqa: E402
from ambientgen.stages.make_dataset import (  # noqa: E402
    DatasetOptions,
    augment_arrays,
    make_dataset,
)
from ambientgen.stages.make_dataset_files import performance_notes  # noqa: E402


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def note_seq_encode(ns) -> np.ndarray:
    from note_seq import performance_lib, sequences_lib
    from note_seq.performance_encoder_decoder import PerformanceOneHotEncoding

    enc = PerformanceOneHotEncoding(num_velocity_bins=32, max_shift_steps=100)
    perf = performance_lib.Performance(sequences_lib.quantize_note_sequence_absolute(ns, 100), num_velocity_bins=32)
    return np.array([enc.encode_event(e) + 2 for e in perf], dtype=np.int64)


def augmented_sequences(seqs: list) -> list:
    """score2perf's train copies of each sequence: 5 stretches x 7 transpositions, as NoteSequences."""
    from note_seq import sequences_lib

    out = []
    for ns in seqs:
        for stretch in (0.95, 0.975, 1.0, 1.025, 1.05):
            for transpose in range(-3, 4):
                aug = sequences_lib.stretch_note_sequence(ns, stretch)
                out.append(sequences_lib.transpose_note_sequence(aug, transpose)[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pieces", type=int, default=12, help="Bach chorales (whole pieces)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    from music21 import corpus

    from ambientgen.sample_data import DEFAULT_WORKS, make_samples

    root = Path(corpus.__file__).parent
    works = list(DEFAULT_WORKS) + [str(Path(p).relative_to(root).with_suffix("")) for p in
                                   sorted(corpus.getComposer("bach")) if "chorale" not in str(p)]
    works = list(dict.fromkeys(works))[:args.pieces + 1]
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        midis = make_samples(tmp / "midi", count=args.pieces, seconds=None, works=works[:-1])
        extra = make_samples(tmp / "extra", count=1, seconds=None, works=works[-1:])[0]
        seqs = [load_midi(p) for p in midis]

        # 1. Encoder.
        aug = augmented_sequences(seqs)
        n_notes = sum(len(ns.notes) for ns in aug)
        ours = [P.encode(ns) for ns in aug]
        ref = [note_seq_encode(ns) for ns in aug]
        assert all(np.array_equal(a, b) for a, b in zip(ours, ref)), "ids differ from note_seq"
        n_events = sum(len(a) for a in ours)
        t_ours = best_of(lambda: [P.encode(ns) for ns in aug], args.repeat)
        t_ref = best_of(lambda: [note_seq_encode(ns) for ns in aug], 1)
        arrays = [performance_notes(ns) for ns in seqs]
        t_arr = best_of(lambda: [P.encode_arrays(*augment_arrays(a, s, t)) for a in arrays
                                 for s in (0.95, 0.975, 1.0, 1.025, 1.05) for t in range(-3, 4)], args.repeat)
        print(f"encoder: {len(aug)} sequences ({args.pieces} chorales x 35 copies), {n_notes:,} notes, "
              f"{n_events:,} events; ids identical to note_seq")
        print(f"  note_seq Performance + OneHot : {n_notes / t_ref:>12,.0f} notes/s")
        print(f"  performance.encode(ns)        : {n_notes / t_ours:>12,.0f} notes/s  "
              f"({t_ref / t_ours:.1f}x note_seq)")
        print(f"  augment + encode_arrays       : {n_notes / t_arr:>12,.0f} notes/s  "
              f"({t_ref / t_arr:.1f}x note_seq; the stage's path)")

        # One long sequence (a 'transcription' of all chorales back to back) for the per-call overhead.
        from note_seq import sequences_lib
        long_ns = sequences_lib.concatenate_sequences(seqs * 4)
        t_long = best_of(lambda: P.encode(long_ns), args.repeat)
        t_long_ref = best_of(lambda: note_seq_encode(long_ns), 1)
        print(f"  one long sequence ({len(long_ns.notes):,} notes, {long_ns.total_time / 60:.1f} min): "
              f"{len(long_ns.notes) / t_long:,.0f} notes/s ({t_long_ref / t_long:.1f}x note_seq)")

        # 2. MIDI reading.
        datas = [p.read_bytes() for p in midis]
        t_scan = best_of(lambda: [scan_midi(d) for d in datas], args.repeat)
        t_parse = best_of(lambda: [load_midi(p) for p in midis], args.repeat)
        print(f"midi_io: scan {t_scan * 1e3 / len(datas):.2f} ms/file vs full load {t_parse * 1e3 / len(datas):.1f} "
              f"ms/file (scan = {100 * t_scan / t_parse:.1f}% of the load)")
        import note_seq

        long_mid = tmp / "long.mid"
        note_seq.sequence_proto_to_midi_file(long_ns, str(long_mid))
        t_scan = best_of(lambda: scan_midi(long_mid.read_bytes()), args.repeat)
        t_parse = best_of(lambda: load_midi(long_mid), 1)
        print(f"  long file ({len(long_ns.notes):,} notes, {long_ns.total_time / 60:.0f} min): scan {t_scan * 1e3:.0f} ms, "
              f"load {t_parse:.2f} s = {len(long_ns.notes) / t_parse:,.0f} notes/s "
              f"(scan = {100 * t_scan / t_parse:.1f}% of the load)")

        # 3. The stage.
        opts = DatasetOptions(cache_dir=str(tmp / "cache"))
        t_cold = best_of(lambda: make_dataset(tmp / "midi", tmp / "out1", opts), 1)
        t_warm = best_of(lambda: make_dataset(tmp / "midi", tmp / "out2", opts), 1)
        shutil.copy(extra, tmp / "midi" / extra.name)
        t_add = best_of(lambda: make_dataset(tmp / "midi", tmp / "out3", opts), 1)
        s = make_dataset(tmp / "midi", tmp / "out4", DatasetOptions(cache_dir=str(tmp / "cache")))
        print(f"make-dataset ({s['total']['files']} files, {s['total']['notes']:,} notes, "
              f"{s['total']['tokens']:,} tokens written with augmentation):")
        print(f"  cold build (no cache)         : {t_cold:6.2f} s")
        print(f"  rebuild, all cached           : {t_warm:6.2f} s  ({t_cold / t_warm:.1f}x faster)")
        print(f"  rebuild after adding one file : {t_add:6.2f} s  ({t_cold / t_add:.1f}x faster)")
        print(f"  stage throughput (cold)       : {s['total']['notes'] / t_cold:,.0f} source notes/s, "
              f"{s['total']['tokens'] / t_cold:,.0f} tokens/s")


if __name__ == "__main__":
    main()
