"""`ambientgen evaluate-generation`: generated MIDI measured against the music the model learned from.

For each generated piece and for the set: notes/s, polyphony, note-duration p50/p90, pitch range and register
(the duration-weighted median pitch), pitch-class and melodic-interval histogram overlap with the reference, the
rate of stuck notes and copying (see ambientgen.music.quality). The reference set's own figures and the interval
overlap between its two halves are printed beside them, so "close to the reference" has a yardstick. The primer of
a primed piece (its sidecar JSON says how long) is left out: only what the model wrote is measured.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..music.quality import evaluate_generation
from ..util import write_json

HELP = "measure generated MIDI against a reference set (polyphony, durations, histograms, stuck notes, copying)"
DESCRIPTION = __doc__.split("\n\n", 1)[1] if __doc__ else HELP
EXAMPLES = """
  ambientgen evaluate-generation generated/ --reference midi/
  ambientgen evaluate-generation generated/ --reference midi/ --training dataset/ --output quality.json
  ambientgen evaluate-generation runs/demo/music-transformer-generate --reference runs/demo/midi
"""
log = logging.getLogger(__name__)
SET_COLUMNS = ("pieces", "notes_per_s", "polyphony", "duration_p50", "duration_p90", "pitch_low", "pitch_high",
               "pitch_median", "pitch_class_overlap", "interval_overlap", "pitch_class_overlap_set",
               "interval_overlap_set", "stuck_rate", "longest_copy", "copied_windows")


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
