"""`ambientgen evaluate-generation`: generated MIDI measured against the music the model learned from.

For each generated piece and for the set: notes/s, polyphony, note-duration p50/p90, pitch range, pitch-class and
melodic-interval histogram overlap with the reference, the rate of stuck notes and copying (see
ambientgen.music.quality). The reference set's own figures and the interval overlap between its two halves are
printed beside them, so "close to the reference" has a yardstick. The primer of a primed piece (its sidecar
JSON says how long) is left out: only what the model wrote is measured.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from ..util import StageError, iter_files, write_json

HELP = "measure generated MIDI against a reference set (polyphony, durations, histograms, stuck notes, copying)"
DESCRIPTION = __doc__.split("\n\n", 1)[1] if __doc__ else HELP
EXAMPLES = """
  ambientgen evaluate-generation generated/ --reference midi/
  ambientgen evaluate-generation generated/ --reference midi/ --training dataset/ --output quality.json
  ambientgen evaluate-generation runs/demo/music-transformer-generate --reference runs/demo/midi
"""
log = logging.getLogger(__name__)
SET_COLUMNS = ("pieces", "notes_per_s", "polyphony", "duration_p50", "duration_p90", "pitch_low", "pitch_high",
               "pitch_class_overlap", "interval_overlap", "pitch_class_overlap_set", "interval_overlap_set",
               "stuck_rate", "longest_copy", "copied_windows")


def _midi_files(root: Path) -> list[Path]:
    from ..music.midi_io import is_midi_path

    if not root.exists():
        raise StageError(root, "does not exist")
    return [p for p in iter_files(root) if is_midi_path(p)]


def _primer_seconds(mid: Path) -> float:
    """Seconds at the start of a generated file that are its primer (from the sidecar), else 0."""
    side = mid.with_suffix(".json")
    try:
        meta = json.loads(side.read_text())
        if meta.get("primer") and meta.get("request", {}).get("include_primer", True):
            return float(meta["primer"].get("seconds") or 0.0)
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    return 0.0


def load_pieces(root: Path, skip_primer: bool = False) -> list[tuple[Path, object]]:
    """(path, NoteSequence) of every readable MIDI file under root; unreadable ones are logged and skipped."""
    from ..music.midi_io import load_midi

    out = []
    for p in _midi_files(root):
        try:
            ns = load_midi(p)
        except StageError as exc:
            log.error("%s", exc)
            continue
        if skip_primer:
            cut = _primer_seconds(p)
            if cut > 0:
                import note_seq

                ns = note_seq.sequences_lib.extract_subsequence(ns, cut, max(ns.total_time, cut))
        out.append((p, ns))
    return out


def training_events(reference: list[tuple[Path, object]], dataset_dir: Path | None) -> list[np.ndarray]:
    """Event sequences the copying measure searches: the data set's train split, else the reference encoded."""
    from ..music import performance as perf

    if dataset_dir is not None:
        from .train import load_split

        pieces = load_split(dataset_dir, "train")
        if not pieces:
            raise StageError(dataset_dir, "no train split to search for copies")
        return [p[(p != perf.EOS_ID) & (p != perf.PAD_ID)] for p in pieces]
    return [np.asarray(perf.encode(ns), dtype=np.int64) for _, ns in reference]


def evaluate_generation(gen_dir: str | Path, reference_dir: str | Path,
                        dataset_dir: str | Path | None = None) -> dict:
    """The measures of every generated piece and of the set, beside the reference set's own."""
    from ..music import performance as perf
    from ..music.quality import Notes, make_reference, pooled_overlaps, score_piece, set_summary

    gen_dir, reference_dir = Path(gen_dir), Path(reference_dir)
    ref_pieces = load_pieces(reference_dir)
    if not ref_pieces:
        raise StageError(reference_dir, "no readable reference MIDI files")
    gen = load_pieces(gen_dir, skip_primer=True)
    if not gen:
        raise StageError(gen_dir, "no readable generated MIDI files")
    ref_notes = [Notes.of(ns) for _, ns in ref_pieces]
    ref = make_reference(ref_notes, training_events(ref_pieces, Path(dataset_dir) if dataset_dir else None))
    rows, notes = [], []
    for path, ns in gen:
        n = Notes.of(ns)
        events = np.asarray(perf.encode(ns), dtype=np.int64)
        row = {"file": path.relative_to(gen_dir).as_posix(), **score_piece(n, events, ref)}
        rows.append(row)
        notes.append(n)
    generated = set_summary(notes, [{k: v for k, v in r.items() if k != "file"} for r in rows])
    generated.update(pooled_overlaps(notes, ref))
    reference = dict(ref.summary)
    reference["interval_overlap_halves"] = round(ref.self_interval_overlap, 4)
    return {"generated": generated, "reference": reference, "pieces": rows,
            "stuck_threshold_s": round(2 * ref.dur_p99, 3),
            "reference_dir": str(reference_dir), "generated_dir": str(gen_dir),
            "copy_source": str(dataset_dir) if dataset_dir else "reference MIDI"}


def format_table(res: dict) -> str:
    """The set measures of generated and reference side by side, then one line per piece."""
    def cell(v) -> str:
        if v is None:
            return "-"
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = [f"{'measure':<22}{'generated':>12}{'reference':>12}"]
    for k in SET_COLUMNS:
        g, r = res["generated"].get(k), res["reference"].get(k)
        if g is None and r is None:
            continue
        lines.append(f"{k:<22}{cell(g):>12}{cell(r):>12}")
    lines.append(f"{'interval overlap between reference halves':<46}{cell(res['reference'].get('interval_overlap_halves'))}")
    lines.append(f"stuck = longer than {res['stuck_threshold_s']} s; copying searched in {res['copy_source']}")
    for r in res["pieces"]:
        lines.append(f"  {r['file']}: {r['notes']} notes, polyphony {cell(r['polyphony'])}, p90 "
                     f"{cell(r['duration_p90'])} s, stuck {cell(r['stuck_rate'])}, longest copy "
                     f"{cell(r.get('longest_copy'))}")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("generated_dir", help="generated MIDI (with generate's .json sidecars)")
    p.add_argument("--reference", required=True, help="the MIDI the model learned from (e.g. the transcriptions)")
    p.add_argument("--training", default=None,
                   help="a data set folder whose train split is searched for copies (default: the reference)")
    p.add_argument("--output", default=None, help="also write the results as JSON here")


def main(args: argparse.Namespace) -> int:
    res = evaluate_generation(args.generated_dir, args.reference, args.training)
    print(format_table(res))
    if args.output:
        write_json(Path(args.output), res)
    return 0
