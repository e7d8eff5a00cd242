"""`ambientgen train-base`: the base Music Transformer that `ambientgen train` fine-tunes, from the music21 corpus.

Three resumable steps in OUT/:

1. ``corpus-midi/``: every score and every ABC tune of music21's bundled corpus as MIDI (ambientgen.music.corpus);
   a file converted once is not parsed again;
2. ``dataset/``: the same data set builder and 390-token encoding as `make-dataset`, with score2perf stretch and
   transposition, works held out by a stable hash of their path (5% eval);
3. ``model/``: `ambientgen train` from scratch (or, ``--warm-start``, from the shipped base's weights), resumed
   from its last checkpoint when run again.

``--export DIR`` then writes the shipped form: fp16 model.safetensors, config.json, primers.json and TRAINING.md
(data, config, steps, wall time, machine, the held-out NLL curve). The package's copy lives in
src/ambientgen/assets/base-model/.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import time
from pathlib import Path

from ..music.performance import note_seconds
from ..util import StageError, atomic_path, cpu_name, write_json
from .finetune import REPLAY_FILE, REPLAY_WINDOWS, load_replay

HELP = "train the base Music Transformer on the music21 corpus (resumable), or export it for the package"
DESCRIPTION = __doc__.split("\n\n", 1)[1] if __doc__ else HELP
EXAMPLES = """
  ambientgen train-base runs/base --minutes 90              # run again later to continue
  ambientgen train-base runs/base --minutes 30 --threads 2
  ambientgen train-base runs/base --export src/ambientgen/assets/base-model
  ambientgen train-base runs/base2 --warm-start --minutes 75   # improve the shipped base further
  ambientgen train-base /tmp/b --collections bach --minutes 2   # a quick look on one collection
  ambientgen train-base runs/heard --warm-start --heard 1500 --steps 2900 --minutes 72   # learn the transcriber's ear
  ambientgen train-base runs/heard3 --warm-start --heard 1800 --solo 600 --steps 1900 --lr 1.5e-4  # lone lines too
"""
log = logging.getLogger(__name__)

BASE_CONFIG = "medium"
BASE_TRANSPOSE = (-3, -2, -1, 0, 1, 2, 3)
BASE_STRETCH = (0.95, 1.0, 1.05)
RUNS_FILE = "runs.json"  # one entry per training session: seconds, steps, machine
HEARD_DIR = "heard-midi"
HEARD_REPLAY = 0.5  # share of each batch rehearsing the shipped corpus windows while training on heard pieces


def machine() -> str:
    """The CPU (or GPU) this process trains on, in words."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
        threads = torch.get_num_threads()
    except ImportError:
        threads = os.cpu_count()
    return f"{cpu_name()}, {os.cpu_count()} cores, {threads} torch threads"


def build_dataset(out: Path, jobs: int, collections: tuple[str, ...] | None, limit: int | None,
                  heard: int = 0, solo: int = 0) -> dict:
    """Steps 1 and 2; the data set is rebuilt only when its input changed. With ``heard`` pieces (and ``solo``
    single lines), the input is the corpus as the transcriber hears it (stages.heard_corpus) instead of the
    converted scores."""
    from .heard_corpus import BASE_EVAL_PERCENT
    from .make_dataset import DatasetOptions, make_dataset

    if heard:
        from .heard_corpus import MANIFEST, build_heard_midi

        src, manifest = out / HEARD_DIR, MANIFEST
        tally = build_heard_midi(src, heard, jobs, solo=solo)
        print(f"heard corpus: {tally['pieces']:,} pieces ({tally['solo']:,} single lines) of {tally['works']:,} "
              f"works, {tally['notes']:,} notes, "
              f"{tally['hours']:,} hours; {tally['failed']} could not be used")
    else:
        from ..music.corpus import build_corpus_midi

        src, manifest = out / "corpus-midi", "corpus.json"
        tally = build_corpus_midi(src, jobs=jobs, limit=limit, collections=collections)
        print(f"corpus: {tally['pieces']:,} pieces from {tally['files']:,} files, {tally['notes']:,} notes, "
              f"{tally['hours']:,} hours; {tally['failed']} could not be read")
    stamp = out / "dataset" / manifest
    summary_path = out / "dataset" / "summary.json"
    if summary_path.is_file() and stamp.is_file() and json.loads(stamp.read_text()).get("pieces") == tally["pieces"]:
        return json.loads(summary_path.read_text())
    opts = DatasetOptions(max_events=2048, eval_percent=BASE_EVAL_PERCENT, test_percent=0.0, stretch=BASE_STRETCH,
                          transpose=BASE_TRANSPOSE, jobs=jobs, cache_dir=None)
    summary = make_dataset(src, out / "dataset", opts)
    shutil.copyfile(src / manifest, stamp)
    sp = summary["splits"]
    print(f"data set: train {sp['train']['files']:,} pieces / {sp['train']['tokens']:,} tokens (augmented), "
          f"eval {sp['eval']['files']:,} pieces / {sp['eval']['tokens']:,} tokens")
    return summary


WARM_START_LR, WARM_START_STEPS = 3e-4, 2000  # the from-scratch schedule's rate near its step 2,000


def _warm_start(out: Path, config: str, batch_size: int | None, steps: int | None, lr: float | None,
                replay: float = 0.0):
    """Options that continue from the shipped base: its weights (copied into OUT/init, so a later export does not
    move a resumed run's starting point), a fresh optimizer, a short warm-up and a cosine decay over ``steps``.
    The shipped model's own sessions open OUT/runs.json, so the record keeps the whole history."""
    from ..models.base import resolve_init
    from ..models.weights import add_state_features
    from ..music import performance
    from .train import TrainOptions

    init = out / "init"
    if not (init / "model.safetensors").is_file():
        shipped = resolve_init("base", performance.VOCAB_SIZE, performance.PAD_ID, performance.EOS_ID)
        if shipped is None:
            raise StageError(None, "--warm-start needs the shipped base model, and this install has none")
        shutil.copytree(shipped, init, dirs_exist_ok=True)
        if add_state_features(init):
            log.info("warm start: the shipped base gets the sounding-notes input and note-logit bias, their weights zero")
        meta = json.loads((init / "config.json").read_text())
        runs = meta.get("runs") or [{"started": "earlier", "seconds": meta.get("train_seconds", 0),
                                     "to_step": meta.get("step", 0), "machine": "see the earlier record",
                                     "tokens_per_s": 0, "schedule": "from scratch"}]
        if not (out / RUNS_FILE).is_file():
            write_json(out / RUNS_FILE, runs)
    return TrainOptions(config=config, init=str(init), batch_size=batch_size or 16, steps=steps or WARM_START_STEPS,
                        lr=lr or WARM_START_LR, warmup=50, schedule="cosine", eval_every=200, checkpoint_every=200,
                        patience=0, replay=replay, dropout=0.0, eval_windows=128)


def train_base(out: str | Path, minutes: float | None = None, steps: int | None = None, config: str = BASE_CONFIG,
               jobs: int = 2, collections: tuple[str, ...] | None = None, limit: int | None = None,
               batch_size: int | None = None, device: str = "auto", warm_start: bool = False,
               lr: float | None = None, heard: int = 0, solo: int = 0):
    """Build (or reuse) the corpus data set and train (or resume) the base model in OUT/model: from scratch, or
    (``warm_start``) from the shipped base's weights. ``heard`` pieces and ``solo`` single lines (a warm start
    only) train on the corpus as the transcriber hears it, half of each batch rehearsing the shipped corpus
    windows."""
    from dataclasses import replace

    from .train import TrainOptions, train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    heard, solo = heard or _heard_count(out), solo or _heard_count(out, "requested_solo")
    if heard and not (warm_start or (out / "init" / "model.safetensors").is_file()):
        raise StageError(out, "--heard continues the shipped base: add --warm-start")
    build_dataset(out, jobs, collections, limit, heard, solo)
    model_dir = out / "model"
    resume = (model_dir / "checkpoints").is_dir() and any((model_dir / "checkpoints").glob("step-*"))
    if warm_start or (out / "init" / "model.safetensors").is_file():
        opts = _warm_start(out, config, batch_size, steps, lr, HEARD_REPLAY if heard else 0.0)
        schedule = f"warm start from the shipped base, cosine from {opts.lr:g} over {opts.steps:,} steps"
        if heard:
            lines = f" --solo {solo:,}" if solo else ""
            schedule += (f", on the heard corpus (--heard {heard:,}{lines}) with {HEARD_REPLAY:.0%} of each batch "
                         "from the shipped corpus windows")
    else:
        opts = TrainOptions(config=config, steps=steps, batch_size=batch_size, lr=lr, schedule="inverse-sqrt",
                            dropout=0.0, eval_windows=128, init="scratch")
        schedule = "from scratch, inverse square root"
    opts = replace(opts, minutes=minutes, device=device, resume=resume)
    t0 = time.monotonic()
    res = train(out / "dataset", model_dir, opts)
    runs_path = out / RUNS_FILE
    runs = json.loads(runs_path.read_text()) if runs_path.is_file() else []
    runs.append({"started": time.strftime("%Y-%m-%d %H:%M", time.gmtime(time.time() - (time.monotonic() - t0))),
                 "seconds": round(time.monotonic() - t0, 1), "to_step": res.step, "machine": machine(),
                 "tokens_per_s": round(res.tokens_per_s, 1), "schedule": schedule})
    write_json(runs_path, runs)
    return res


def _heard_tally(out: Path) -> dict:
    from .heard_corpus import MANIFEST

    t = json.loads((out / HEARD_DIR / MANIFEST).read_text())
    return {k: t.get(k, 0) for k in ("pieces", "solo", "works", "notes", "hours", "families")}


def _heard_count(out: Path, key: str = "requested") -> int:
    """The heard pieces (``requested_solo``: single lines) an earlier session of OUT asked for (0 when it trained
    on the scores)."""
    from .heard_corpus import MANIFEST

    path = out / HEARD_DIR / MANIFEST
    return int(json.loads(path.read_text()).get(key, 0)) if path.is_file() else 0


def _curve(metrics: Path, points: int = 16) -> list[dict]:
    with open(metrics, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("eval_nll")]
    if len(rows) > points:
        idx = sorted({round(i * (len(rows) - 1) / (points - 1)) for i in range(points)})
        rows = [rows[i] for i in idx]
    return rows


def export_base(out: str | Path, dest: str | Path) -> Path:
    """Write the trained base in its shipped form (fp16 safetensors + config.json + primers.json + TRAINING.md)."""
    import torch
    from safetensors.torch import load_file, save_file

    out, dest = Path(out), Path(dest)
    model_dir = out / "model"
    meta = json.loads((model_dir / "config.json").read_text())
    tensors = {k: v.to(torch.float16).contiguous() for k, v in load_file(str(model_dir / "model.safetensors")).items()}
    summary = json.loads((out / "dataset" / "summary.json").read_text())
    heard = _heard_count(out)
    init = json.loads((out / "init" / "config.json").read_text()) if heard else {}
    corpus = None if heard else json.loads((out / "corpus-midi" / "corpus.json").read_text())
    runs = json.loads((out / RUNS_FILE).read_text()) if (out / RUNS_FILE).is_file() else []
    dest.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "dtype": "float16"})
    sp = summary["splits"]
    shipped = {
        "model": meta["model"], "config_name": meta.get("config_name"), "step": meta.get("step"),
        "best_step": meta.get("best_step"), "tokens_seen": meta.get("tokens_seen"), "eval_nll": meta.get("eval_nll"),
        "eval_accuracy": meta.get("eval_accuracy"), "first_tokens": meta.get("first_tokens", {}),
        "weights_dtype": "float16", "train_seconds": round(sum(r["seconds"] for r in runs), 1), "runs": runs,
        "data": {"pieces": corpus["pieces"], "notes": corpus["notes"], "hours": corpus["hours"],
                 "train_tokens": sp["train"]["tokens"], "eval_tokens": sp["eval"]["tokens"]} if corpus else
        {**init["data"], "heard": {**_heard_tally(out), "train_tokens": sp["train"]["tokens"],
                                   "eval_tokens": sp["eval"]["tokens"]}},
    }
    if (model_dir / "primers.json").is_file():
        shutil.copyfile(model_dir / "primers.json", dest / "primers.json")
    shipped["replay"] = write_replay(out / "dataset", dest / REPLAY_FILE, length=meta["model"]["max_len"] + 1,
                                     keep_from=out / "init" if heard else None)
    shipped["note_seconds"] = note_seconds(load_replay(dest, meta["model"]["vocab_size"], meta["model"]["pad_id"]))
    write_json(dest / "config.json", shipped)
    with atomic_path(dest / "TRAINING.md") as tmp:
        data = corpus_md(corpus, summary) if corpus else heard_md(shipped["data"]["heard"], summary, out / "init")
        tmp.write_text(training_md(shipped, data, runs, _curve(model_dir / "metrics.csv")))
    print(f"{dest}: {sum(t.numel() for t in tensors.values()) / 1e6:.2f}M parameters, "
          f"{(dest / 'model.safetensors').stat().st_size / 2**20:.1f} MiB, eval NLL {meta.get('eval_nll')}")
    return dest


def write_replay(dataset_dir: Path, dest: Path, count: int = REPLAY_WINDOWS, length: int = 513,
                 seed: int = 0, keep_from: Path | None = None) -> dict:
    """A rehearsal set for fine-tuning: ``count`` random windows of the corpus's training split (int16 ids,
    PAD after a short piece's end), so that fine-tuning on a user's few pieces keeps seeing the music the base
    learned from and does not unlearn what it knew (how to end notes, above all). ``keep_from`` (a model folder
    with a rehearsal set of the same length) keeps the first half of its windows, as a heard session's batches
    mixed the shipped windows with the heard ones."""
    import numpy as np
    from safetensors.numpy import save_file

    from ..music import performance as perf
    from ..music.tfrecord_io import load_split

    pieces = load_split(dataset_dir, "train")
    rng = np.random.Generator(np.random.PCG64(seed))
    lengths = np.array([len(p) for p in pieces], dtype=np.float64)
    out = np.full((count, length), perf.PAD_ID, dtype=np.int16)
    kept = 0
    if keep_from is not None:
        from safetensors.numpy import load_file

        old = load_file(str(keep_from / REPLAY_FILE))["tokens"]
        if old.shape[1] != length:
            raise StageError(keep_from / REPLAY_FILE, f"rehearsal windows of {old.shape[1]} tokens, not {length}")
        kept = min(count // 2, len(old))
        out[:kept] = old[:kept]
    for row, i in enumerate(rng.choice(len(pieces), size=count - kept, p=lengths / lengths.sum()), kept):
        p = pieces[i]
        start = int(rng.integers(0, max(1, len(p) - length + 1)))
        w = p[start:start + length]
        out[row, :len(w)] = w
    with atomic_path(dest) as tmp:
        save_file({"tokens": out}, str(tmp), metadata={"what": "corpus training windows for rehearsal"})
    return {"windows": count, "length": length, "tokens": int((out != perf.PAD_ID).sum()), "seed": seed,
            "kept": kept}


def corpus_md(corpus: dict, summary: dict) -> list[str]:
    """The data section of a session that trained on the converted scores."""
    sp = summary["splits"]
    lines = [
        "## Data: the music21 corpus", "",
        f"{corpus['pieces']:,} pieces (scores, and every tune of the ABC tune books) from {corpus['files']:,} files: "
        f"{corpus['notes']:,} notes, {corpus['hours']:,} hours; {corpus['failed']} pieces music21 could not read.", "",
        "| collection | files | pieces | notes | hours |", "|---|---:|---:|---:|---:|",
    ]
    for name, c in corpus["collections"].items():
        lines.append(f"| {name} | {c['files']:,} | {c['pieces']:,} | {c['notes']:,} | {c['hours']:,} |")
    st = summary["settings"]
    lines += [
        "", f"Encoding: {summary['format']['encoding']} (vocabulary {summary['format']['vocab_size']}).",
        f"Augmentation (train only): stretch {st['stretch']} x transposition {st['transpose']}. Velocities are "
        "varied per piece (base loudness, a slow swell, a louder top voice, jitter), and so is the timing (a tempo "
        "drift, onsets scattered by 4-25 ms, 70-100% of each written length held, ends scattered), seeded by the "
        "piece id (sessions before 2026-12-03 played the scores on the grid, every note held to its full length).",
        f"Held out by a stable hash of the path: {st['eval_percent']:g}% of the pieces.", "",
        "| split | pieces | notes | tokens |", "|---|---:|---:|---:|",
        f"| train | {sp['train']['files']:,} | {sp['train']['notes']:,} | {sp['train']['tokens']:,} (augmented) |",
        f"| eval | {sp['eval']['files']:,} | {sp['eval']['notes']:,} | {sp['eval']['tokens']:,} |", "",
    ]
    return lines


def heard_md(heard: dict, summary: dict, init: Path) -> list[str]:
    """The data section of a heard session: the corpus the init model was trained on (its own record), then the
    heard pieces."""
    earlier = (init / "TRAINING.md").read_text()
    if "## Data" in earlier and "## Model and training" in earlier:
        earlier = earlier[earlier.index("## Data"):earlier.index("## Model and training")].rstrip()
        earlier = earlier.replace("## Data:", "## Data of the earlier sessions:", 1).replace(
            "## Data of the latest session:", "## Data of an earlier session:")
    else:
        earlier = "## Data of the earlier sessions\n\nSee the init model's own TRAINING.md."
    sp = summary["splits"]
    fams = ", ".join(f"{k} {v:,}" for k, v in sorted(heard["families"].items()))
    return [earlier, "", "## Data of the latest session: the corpus as the transcriber hears it", "",
            f"{heard['pieces']:,} pieces of {heard['works']:,} corpus works ({heard['hours']:,} hours, "
            f"{heard['notes']:,} transcribed notes), each rendered in a timbre family of the transcriber's training "
            f"data ({fams}), through a room, EQ, noise and MP3, and transcribed by the default backend "
            f"(`stages/heard_corpus.py`).{solo_md(heard.get('solo', 0))} None of them is a held-out piece of the "
            "corpus split above, a work held "
            "out from the transcriber, or one of the demo's chorales. Half of every batch rehearsed the init "
            "model's corpus windows.",
            f"Augmentation (train only): stretch {summary['settings']['stretch']} x transposition "
            f"{summary['settings']['transpose']}; held out by a stable hash of the file name: "
            f"{summary['settings']['eval_percent']:g}% (the eval NLL below is on them).", "",
            "| split | pieces | notes | tokens |", "|---|---:|---:|---:|",
            f"| train | {sp['train']['files']:,} | {sp['train']['notes']:,} | {sp['train']['tokens']:,} (augmented) |",
            f"| eval | {sp['eval']['files']:,} | {sp['eval']['notes']:,} | {sp['eval']['tokens']:,} |", ""]


def solo_md(solo: int) -> str:
    """How many of the heard pieces are single lines, as a sentence of the data section (empty when none)."""
    return f" {solo:,} of them are single lines: a tune unaccompanied, or one part of a piece in parts." if solo else ""


def training_md(shipped: dict, data: list[str], runs: list[dict], curve: list[dict]) -> str:
    """The base model's training record, as Markdown."""
    m = shipped["model"]
    lines = [
        "# The base Music Transformer: training record", "",
        "Made by `ambientgen train-base OUT` (rerun to continue) and `ambientgen train-base OUT --export "
        "src/ambientgen/assets/base-model`. `ambientgen train` fine-tunes it by default (`--init base`).", "",
        *data,
        "## Model and training", "",
        f"Config `{shipped['config_name']}`: {m['n_layer']} layers, d_model {m['d_model']}, {m['n_head']} heads, "
        f"d_ff {m['d_ff']}, context {m['max_len']} tokens, {m['attention']} attention; trained with dropout 0, "
        "AdamW, batches of 16 windows of 512 tokens, each window opened with the notes sounding at its start "
        "(`performance.complete_window`; sessions before 2026-12-02 cut windows anywhere); the schedule of each "
        "session is below.",
        f"Steps: {shipped['step']:,} in the latest run ({shipped['tokens_seen']:,} tokens seen; a warm start counts "
        "from step 0 again, and a resumed run goes on counting); shipped weights "
        f"from its step {shipped['best_step']} (lowest held-out NLL), stored as float16.",
        f"Wall time: {shipped['train_seconds'] / 60:.0f} minutes in {len(runs)} session(s).", "",
        "| session started (UTC) | minutes | up to step | tokens/s | machine | schedule |",
        "|---|---:|---:|---:|---|---|",
    ]
    lines += [f"| {r['started']} | {r['seconds'] / 60:.1f} | {r['to_step']:,} | {r['tokens_per_s']:,.0f} | "
              f"{r['machine']} | {r.get('schedule', 'from scratch, inverse square root, peak 1e-3 after 200 steps')} |"
              for r in runs]
    lines += ["", "## Held-out NLL (nats per token)", "", "| step | train loss | eval NLL | eval accuracy |",
              "|---:|---:|---:|---:|"]
    lines += [f"| {r['step']} | {r.get('train_loss', '')} | {float(r['eval_nll']):.4f} | "
              f"{float(r['eval_accuracy']):.3f} |" for r in curve]
    lines += ["", f"Final held-out NLL: **{shipped['eval_nll']:.4f}** nats per token "
              f"(accuracy {shipped['eval_accuracy']:.3f}).", ""]
    if shipped.get("replay"):
        r = shipped["replay"]
        kept = (f" ({r['kept']:,} of them kept from the init model's rehearsal set, the rest from the heard "
                "pieces)") if r.get("kept") else ""
        lines += ["## Rehearsal set", "", f"`{REPLAY_FILE}`: {r['windows']:,} random windows of {r['length']} tokens "
                  f"from the training split{kept} ({r['tokens']:,} tokens, seed {r['seed']}). A warm start "
                  "(`train-base --warm-start`) rehearses them in half of every batch; fine-tuning mixes them in "
                  "only when asked (`ambientgen train --replay 0.5`), since they keep the base's texture in what "
                  "the model generates.", ""]
    if shipped.get("note_seconds"):
        n = shipped["note_seconds"]
        lines += [f"Note lengths in these windows (`note_seconds` in config.json, what `generate`'s hold guard goes "
                  f"by): median {n['p50']:g} s, 90th percentile {n['p90']:g} s, 99th percentile {n['p99']:g} s "
                  f"({n['notes']:,} notes).", ""]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("output_dir", help="working folder: corpus-midi/, dataset/, model/ (rerun to continue)")
    p.add_argument("--minutes", type=float, default=None, help="training budget of this session in minutes")
    p.add_argument("--steps", type=int, default=None, help="stop at this total step count")
    p.add_argument("--config", default=BASE_CONFIG, help=f"model config (default {BASE_CONFIG})")
    p.add_argument("--batch-size", type=int, default=None, help="windows per step (default 16)")
    p.add_argument("--jobs", type=int, default=2, help="processes converting the corpus (default 2)")
    p.add_argument("--collections", default=None,
                   help="comma-separated corpus collections only (e.g. bach,palestrina); default all")
    p.add_argument("--limit", type=int, default=None, help="convert at most N corpus files (a quick look)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--warm-start", action="store_true",
                   help="start from the shipped base's weights (fresh optimizer, cosine decay from --lr over "
                        f"--steps, defaults {WARM_START_LR:g} and {WARM_START_STEPS:,}) instead of from scratch")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--heard", type=int, default=0, metavar="N",
                   help="with --warm-start: train on N corpus pieces rendered and transcribed by the default "
                        "transcriber (what a user's data looks like), rehearsing the shipped corpus windows")
    p.add_argument("--solo", type=int, default=0, metavar="M",
                   help="with --heard: also M single lines (a tune unaccompanied, or one part of a piece in parts), "
                        "so that the base knows a lone melody as the transcriber hears it")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="do not train: write OUTPUT_DIR's model in shipped form into DIR")


def main(args: argparse.Namespace) -> int:
    if args.export:
        if not (Path(args.output_dir) / "model" / "model.safetensors").is_file():
            raise StageError(args.output_dir, "no trained model in model/: run train-base first")
        export_base(args.output_dir, args.export)
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    colls = tuple(c.strip() for c in args.collections.split(",") if c.strip()) if args.collections else None
    res = train_base(args.output_dir, args.minutes, args.steps, args.config, args.jobs, colls, args.limit,
                     args.batch_size, args.device, args.warm_start, args.lr, args.heard, args.solo)
    print(f"{res.out_dir}: step {res.step}, eval NLL {res.eval_nll}, best step {res.best_step}")
    return 143 if res.interrupted else 0
