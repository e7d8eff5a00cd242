"""Fine-tuning the shipped base model against training from scratch, same data, same wall-clock budget.

Three small data sets, each made the way a user's would be (rendered to MP3, transcribed by the default backend,
then `make-dataset`):

  chorales  the demo's six 24-second chorales
  folk      20 folk tunes the base model never saw (its held-out hash split), 40 s each, soft sounds
  consort   12 pieces in parts (Monteverdi, Trecento, Palestrina) from the base model's held-out split, 40 s
            each, soft sounds: a third set, which checked what the first two chose (round ten)
  quartets  11 pieces of 40 s cut from held-out Beethoven and Haydn quartet movements, soft sounds: a fourth
            set, never used to choose a default (round eleven chose on the other three)

On each: `train --init scratch` (the CPU default config) and `train --init base`, each for --minutes. Eval NLL is
measured for both on the same windows of the data set's eval split; then each model generates --pieces pieces,
which `evaluate-generation` scores against the transcriptions. The last lines print the ratios and whether the
goals hold.

  .venv/bin/python bench/bench_finetune.py                      # 4 minutes per run, all three data sets
  .venv/bin/python bench/bench_finetune.py --variants base,base-replay50   # none against half rehearsal
  .venv/bin/python bench/bench_finetune.py --minutes 2 --sets chorales --work runs/bench-ft
  .venv/bin/python bench/bench_finetune.py --regenerate --work runs/bench-ft   # the same models, decoding changed
  .venv/bin/python bench/bench_finetune.py --regenerate --pieces 36 --decodings gen   # more pieces, as sampled
  .venv/bin/python bench/bench_finetune.py --variants scratch,base,dir --init-dir runs/old-base   # two bases
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path


def chorales(dest: Path) -> Path:
    """The demo's inputs: six chorales, 24 s each, rendered to MP3."""
    from ambientgen.demo import sample_inputs

    return sample_inputs(dest, 6, 24.0)[0].parent


def render_piece(ns, program: int, mid: Path, mp3: Path) -> None:
    """One cut of a score played by one soft General MIDI program: its MIDI written, then rendered to MP3."""
    import note_seq

    from ambientgen.sample_data import render_midi

    for n in ns.notes:
        n.program = program
    note_seq.sequence_proto_to_midi_file(ns, str(mid))
    render_midi(mid, mp3)


def folk(dest: Path, count: int = 20, seconds: float = 40.0) -> Path:
    """Folk tunes from the base model's held-out split, soft General MIDI programs, rendered to MP3."""
    import note_seq

    from ambientgen.music.corpus import convert_file, corpus_files, corpus_id
    from ambientgen.sample_data import SOFT_PROGRAMS
    from ambientgen.stages.heard_corpus import base_held_out

    dest.mkdir(parents=True, exist_ok=True)
    if len(list(dest.glob("*.mp3"))) >= count:
        return dest
    scratch = dest / ".midi"
    made = 0
    for path in corpus_files():
        # Ryan's Mammoth holds one tune per file, so the base model's held-out split is by tune
        if made >= count or not corpus_id(path).startswith("ryansMammoth/"):
            continue
        if not base_held_out(corpus_id(path) + ".mid"):
            continue
        convert_file(path, scratch)
        mid = scratch / (corpus_id(path) + ".mid")
        if not mid.is_file():
            continue
        ns = note_seq.sequences_lib.trim_note_sequence(note_seq.midi_file_to_note_sequence(str(mid)), 0, seconds)
        render_piece(ns, SOFT_PROGRAMS[made % len(SOFT_PROGRAMS)], scratch / f"tune{made:02d}.mid",
                     dest / f"tune{made:02d}.mp3")
        made += 1
    shutil.rmtree(scratch, ignore_errors=True)
    return dest


def consort(dest: Path, count: int = 12, seconds: float = 40.0) -> Path:
    """Works in parts from the base model's held-out split, soft programs, rendered to MP3."""
    from ambientgen.sample_data import corpus_works, make_samples
    from ambientgen.stages.heard_corpus import base_held_out

    if len(list(dest.glob("*.mp3"))) >= count:
        return dest

    def held(composer: str) -> list[str]:
        return [w for w in corpus_works(composer) if base_held_out(w + ".mid")]

    # the few held-out Monteverdi and Trecento works, then Palestrina's spread over his masses' movements
    works = held("monteverdi") + held("trecento") + held("palestrina")[::5]
    scratch = dest / ".midi"
    for path in make_samples(scratch, count, seconds, mp3=True, works=works):
        if path.suffix == ".mp3":
            path.replace(dest / path.name)
    shutil.rmtree(scratch, ignore_errors=True)
    return dest


def quartets(dest: Path, count: int = 11, seconds: float = 40.0) -> Path:
    """String-quartet movements from the base model's held-out split (Beethoven, Haydn), cut into consecutive
    pieces of ``seconds``, soft programs, rendered to MP3: a fourth set, of faster music in four parts."""
    import note_seq

    from ambientgen.sample_data import SOFT_PROGRAMS, corpus_works, score_to_midi
    from ambientgen.stages.heard_corpus import base_held_out

    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.glob("*.mp3")):  # the pieces are moved in together, at the end
        return dest
    works = [w for c in ("beethoven", "haydn") for w in corpus_works(c) if base_held_out(w + ".mid")]
    scratch = dest / ".midi"
    scratch.mkdir(exist_ok=True)
    cuts = []
    for work in works:
        try:
            whole = note_seq.midi_file_to_note_sequence(str(score_to_midi(work, scratch / "whole.mid")))
        except Exception:  # music21 cannot expand some scores' repeats: make_samples skips them too
            continue
        for k in range(3):  # up to three pieces a movement: the held-out movements are few (four convert)
            if whole.total_time >= (k + 1) * seconds:
                cuts.append((work, note_seq.sequences_lib.extract_subsequence(whole, k * seconds, (k + 1) * seconds)))
    for i, (work, ns) in enumerate(cuts[::max(1, len(cuts) // count)][:count]):
        name = f"{work.replace('/', '_')}_{i:02d}"
        render_piece(ns, SOFT_PROGRAMS[i % len(SOFT_PROGRAMS)], scratch / f"{name}.mid", scratch / f"{name}.mp3")
    for mp3 in scratch.glob("*.mp3"):
        mp3.replace(dest / mp3.name)
    shutil.rmtree(scratch, ignore_errors=True)
    return dest


SETS = {"chorales": chorales, "folk": folk, "consort": consort, "quartets": quartets}


def prepare(name: str, work: Path) -> tuple[Path, Path]:
    """MP3s -> WAV -> MIDI (default transcriber) -> data set; returns (midi dir, data set dir)."""
    from ambientgen.stages.make_dataset import DatasetOptions, make_dataset
    from ambientgen.stages.mp3_to_wav import convert
    from ambientgen.stages.transcribe import transcribe_dir

    root = work / name
    mp3 = SETS[name](root / "mp3")
    midi, ds = root / "midi", root / "dataset"
    if not (ds / "summary.json").is_file():
        convert(mp3, root / "wav")
        transcribe_dir(root / "wav", midi)
        make_dataset(midi, ds, DatasetOptions(cache_dir=None))
    return midi, ds


def common_eval(model_dir: Path, ds: Path, window: int = 257) -> float:
    """Eval NLL of a model folder on fixed windows of the data set's eval split (the same for every model)."""
    from ambientgen.models.weights import load_model_dir
    from ambientgen.music.tfrecord_io import load_split
    from ambientgen.stages.train_data import eval_windows, evaluate

    model, _ = load_model_dir(model_dir)
    pieces = load_split(ds, "eval")
    nll, _ = evaluate(model, eval_windows(pieces, window, 64), 8, "cpu")
    return nll


# name -> TrainOptions fields over `train`'s own defaults for that init. Since round eleven `train` fine-tunes
# without rehearsal, so the -noreplay variants equal their plain ones; they stay for earlier rounds' commands.
VARIANTS: dict[str, dict] = {
    "scratch": {"init": "scratch"}, "base": {"init": "base"}, "base-noreplay": {"init": "base", "replay": 0.0},
    "base-dropout0": {"init": "base", "dropout": 0.0}, "base-dropout0-noreplay": {"init": "base", "replay": 0.0,
                                                                                  "dropout": 0.0},
    "base-256": {"init": "base", "seq_len": 256}, "base-512": {"init": "base", "seq_len": 512},
    "base-replay25": {"init": "base", "replay": 0.25}, "base-replay50": {"init": "base", "replay": 0.5},
    "base-256-lr6e-4": {"init": "base", "seq_len": 256, "lr": 6e-4},
    "base-256-lr1e-3": {"init": "base", "seq_len": 256, "lr": 1e-3},
    "base-lr1e-3": {"init": "base", "lr": 1e-3}, "base-lr6e-4": {"init": "base", "lr": 6e-4},
    "base-lr1e-4": {"init": "base", "lr": 1e-4}, "base-lr5e-5": {"init": "base", "lr": 5e-5},
    "base-noreplay-lr1e-4": {"init": "base", "replay": 0.0, "lr": 1e-4},
    "base-noreplay-lr2.5e-5": {"init": "base", "replay": 0.0, "lr": 2.5e-5},
}


DECODINGS = {"gen": {"note_off_mask": False}, "gen-default": {},
             "gen-share-model": {"note_off_share": "model"}}  # round three's note-off rule


def run_one(ds: Path, midi: Path, out: Path, variant: str, minutes: float, pieces: int,
            trained: dict | None = None, decodings: tuple[str, ...] = tuple(DECODINGS)) -> dict:
    """Train one variant (``trained``: the record of a model already trained in ``out``, only generated from
    again), generate pieces as the model samples them (no note-off constraint, no hold guard: the figures the
    goals are judged on), as `generate` does by default (the note-off rule, stray offs to the notes sounding
    longest) and with round three's rule (stray offs shared as the model ranks the sounding notes); score all."""
    from ambientgen.stages.evaluate_generation import evaluate_generation
    from ambientgen.stages.generate import GenerationRequest, generate
    from ambientgen.stages.train import TrainOptions, train

    fields = VARIANTS[variant]
    if trained:
        steps, best_step, train_s = trained["steps"], trained["best_step"], trained["train_s"]
    else:
        if out.exists():
            shutil.rmtree(out)
        t = time.monotonic()
        res = train(ds, out / "model", TrainOptions(minutes=minutes, **fields))
        steps, best_step, train_s = res.step, res.best_step, time.monotonic() - t
    quality = {}
    for folder in ("gen", *(d for d in decodings if d != "gen")):
        decoding = DECODINGS[folder]
        req = GenerationRequest(name="piece", num_samples=pieces, seconds=30.0, seed=1, **decoding)
        gen = out / folder
        shutil.rmtree(gen, ignore_errors=True)
        generate(out / "model", gen, defaults=req)
        quality[folder] = evaluate_generation(gen, midi, ds)
    q = quality["gen"]
    return {**fields, "steps": steps, "best_step": best_step, "train_s": round(train_s, 1),
            "eval_nll_common": round(common_eval(out / "model", ds), 4), "quality": q["generated"],
            "quality_default": quality.get("gen-default", {}).get("generated", {}),
            "quality_share_model": quality.get("gen-share-model", {}).get("generated", {}),
            "reference": q["reference"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/bench-finetune")
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--pieces", type=int, default=4)
    ap.add_argument("--sets", default="chorales,folk,consort")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default="scratch,base",
                    help=f"what to train: {', '.join(VARIANTS)} (base: train's own fine-tuning defaults)")
    ap.add_argument("--init-dir", default=None, metavar="DIR",
                    help="a base model folder to fine-tune as variant 'dir' (e.g. a train-base export, or an "
                         "earlier shipped base, to compare with the shipped one in the same run)")
    ap.add_argument("--regenerate", action="store_true",
                    help="do not train: generate again from the models of --work's results.json and score them")
    ap.add_argument("--decodings", default=",".join(DECODINGS),
                    help="how to generate, besides 'gen' (sampled as it is, the goal figures): gen-default "
                         "(generate's defaults), gen-share-model (round three's note-off rule)")
    args = ap.parse_args()
    unknown = sorted(set(args.decodings.split(",")) - set(DECODINGS))
    if unknown:
        ap.error(f"unknown --decodings {', '.join(unknown)}: choose from {', '.join(DECODINGS)}")
    unknown = sorted(set(args.variants.split(",")) - set(VARIANTS) - ({"dir"} if args.init_dir else set()))
    if unknown:
        ap.error(f"unknown --variants {', '.join(unknown)}: choose from {', '.join(VARIANTS)}, or dir with --init-dir")
    import os

    import torch

    os.environ.setdefault("AMBIENTGEN_NO_PROGRESS", "1")
    torch.set_num_threads(args.threads)
    if args.init_dir:
        VARIANTS["dir"] = {"init": str(Path(args.init_dir).resolve())}
    work = Path(args.work)
    before = json.loads((work / "results.json").read_text()) if args.regenerate else {}
    results = {}
    for name in args.sets.split(","):
        midi, ds = prepare(name, work)
        results[name] = {v: run_one(ds, midi, work / name / v, v, args.minutes, args.pieces,
                                    before.get(name, {}).get(v) if args.regenerate else None,
                                    tuple(args.decodings.split(",")))
                         for v in args.variants.split(",")}
    (work / "results.json").write_text(json.dumps(results, indent=1))
    cols = ("eval_nll_common", "notes_per_s", "polyphony", "duration_p50", "duration_p90", "pitch_median", "stuck_rate",
            "interval_overlap_set", "pitch_class_overlap_set", "interval_overlap", "longest_copy", "copied_windows")
    for name, r in results.items():
        ref = next(iter(r.values()))["reference"]
        print(f"\n== {name}: {args.minutes:g} min each, {args.pieces} pieces of 30 s")
        names = list(r)
        shipped = r.get("base") or r[names[-1]]  # the last column: base (or the last variant) as generate's defaults
        print(f"{'measure':<22}" + "".join(f"{v:>15}" for v in names) + f"{'+rule':>15}{'+rule(model)':>15}"
              f"{'reference':>11}")
        for c in cols:
            vals = [r[i]["eval_nll_common"] if c == "eval_nll_common" else r[i]["quality"].get(c) for i in names]
            for key in ("quality_default", "quality_share_model"):
                vals.append(None if c == "eval_nll_common" else shipped.get(key, {}).get(c))
            refv = ref.get("interval_overlap_halves") if c == "interval_overlap_set" else ref.get(c, "")
            print(f"{c:<22}" + "".join(f"{v:>15.4g}" if isinstance(v, int | float) else f"{'-':>15}" for v in vals)
                  + (f"{refv:>11.4g}" if isinstance(refv, int | float) else f"{'':>11}"))
        if "scratch" not in r or "base" not in r:
            continue
        s, b = r["scratch"], r["base"]
        q = b["quality"]
        goals = {
            "eval NLL >= 20% lower": b["eval_nll_common"] <= 0.8 * s["eval_nll_common"],
            "polyphony within x1.5": 1 / 1.5 <= q["polyphony"] / ref["polyphony"] <= 1.5,
            "duration p90 within x1.5": 1 / 1.5 <= q["duration_p90"] / ref["duration_p90"] <= 1.5,
            "stuck notes < 1%": q["stuck_rate"] < 0.01,
            "interval overlap (set) >= reference halves": q["interval_overlap_set"] >= ref["interval_overlap_halves"],
            "longest copy < 64 events": q.get("longest_copy", 0) < 64,
        }
        print(f"ratio eval NLL base+ft / scratch: {b['eval_nll_common'] / s['eval_nll_common']:.3f} "
              "(goals judged on 'base' without the mask)")
        for g, ok in goals.items():
            print(f"  {'met ' if ok else 'MISS'} {g}")


if __name__ == "__main__":
    main()
