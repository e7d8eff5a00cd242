"""Stage 4: MIDI files -> NoteSequence + Music Transformer TFRecord data set.

Output layout (what `ambientgen train` reads)::

    OUT/notesequences/{train,eval,test}.tfrecord   one serialized NoteSequence per record (as Magenta's
                                                    convert_dir_to_note_sequences writes them)
    OUT/performance/{train,eval,test}.tfrecord     tf.train.Example records, int64 feature `targets`:
                                                    score2perf performance event ids (ambientgen.music.performance)
    OUT/summary.json                                files, notes, events, records, tokens per split,
                                                    vocabulary use, rejected files with reasons, settings

Processing follows Magenta's score2perf: sustain pedal applied (when the file has one; pedal-free files,
like every transcription, are encoded as they are), drum notes dropped, train files augmented with every
combination of time stretch and transposition (default 0.95-1.05 x -3..+3 semitones), each sequence
encoded to event ids, an EOS id appended and the result cut into windows of at most --max-events events.

Files are assigned to a split by a hash of their path relative to the input directory, so adding a file
never moves another one. A bad file is reported (log + summary.json) and skipped; the stage fails only when
no file at all could be used (or with --strict, when any file was rejected).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from ..music import performance as perf
from ..music.midi_io import MidiLimits, is_midi_path
from ..util import StageError, iter_files, progress, write_json
from .make_dataset_files import NoteCache, default_cache_dir, load_one, ordered_map

HELP = "MIDI files -> NoteSequence + Music Transformer TFRecord data set (train/eval/test)"
DESCRIPTION = """MIDI files -> NoteSequence + Music Transformer TFRecord data set (train/eval/test).

Writes OUTPUT_DIR/notesequences/{train,eval,test}.tfrecord (NoteSequence records),
OUTPUT_DIR/performance/{train,eval,test}.tfrecord (tf.train.Example, int64 feature 'targets': score2perf
performance ids, vocabulary 390 with PAD 0 and EOS 1) and OUTPUT_DIR/summary.json.
Files go to a split by a hash of their path (about 90/5/5; adding a file never moves another). Train files
are augmented (stretch x transposition, as score2perf). A bad MIDI file is named, listed in summary.json and
skipped; the exit status is 1 only when no file could be used (or, with --strict, when any was rejected)."""
EXAMPLES = """
  ambientgen make-dataset /pfs/midi /pfs/out
  ambientgen make-dataset midi/ dataset/ --max-events 1024 --hop 512
  ambientgen make-dataset midi/ dataset/ --no-augment --no-cache
  ambientgen make-dataset midi/ dataset/ --stretch 1 --transpose=-2,0,2 --eval-percent 10
"""
log = logging.getLogger(__name__)

SPLITS = ("train", "eval", "test")
# Bump when load/preprocessing changes what a cache entry holds (the entry's key includes it).
DEFAULT_STRETCH = (0.95, 0.975, 1.0, 1.025, 1.05)
DEFAULT_TRANSPOSE = (-3, -2, -1, 0, 1, 2, 3)


@dataclass
class DatasetOptions:
    """Settings of one data set build (all recorded in summary.json)."""

    max_events: int = 2048
    hop: int | None = None  # None: max_events (windows do not overlap)
    min_events: int = 64  # a trailing window shorter than this is dropped (a file's first window never is)
    eval_percent: float = 5.0
    test_percent: float = 5.0
    tail_eval_percent: float = 10.0  # with no file hashed into eval: the last part of each file's time instead
    stretch: tuple[float, ...] = DEFAULT_STRETCH
    transpose: tuple[int, ...] = DEFAULT_TRANSPOSE
    augment: bool = True
    eos: bool = True
    limits: MidiLimits = field(default_factory=MidiLimits)
    cache_dir: str | None = None  # None: no cache
    jobs: int = 1  # worker processes reading MIDI files
    liked_weight: int = 1  # how many times a liked piece's training windows are written (see is_liked)

    def augmentations(self, split: str) -> list[tuple[float, int]]:
        """(stretch, transpose) pairs to encode for a file of this split (identity only outside train)."""
        if split != "train" or not self.augment:
            return [(1.0, 0)]
        return list(product(self.stretch, self.transpose))


def split_of(name: str, eval_percent: float = 5.0, test_percent: float = 5.0) -> str:
    """The split of a file, from a SHA-256 of its relative path: stable, independent of the other files."""
    h = int(hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:15], 16) / 16**15
    if h < test_percent / 100:
        return "test"
    if h < (test_percent + eval_percent) / 100:
        return "eval"
    return "train"


def windows(ids: np.ndarray, max_events: int, hop: int, min_events: int) -> list[np.ndarray]:
    """Cut a sequence into windows of at most max_events, starting every hop events.

    The first window is always kept; a later one shorter than min_events is dropped.
    """
    n = len(ids)
    if n <= max_events:
        return [ids] if n else []
    out = []
    for start in range(0, n, hop):
        w = ids[start:start + max_events]
        if start > 0 and len(w) < min_events:
            break
        out.append(w)
        if start + max_events >= n:
            break
    return out


def augment_arrays(notes: tuple[np.ndarray, ...], stretch: float, transpose: int) -> tuple[np.ndarray, ...]:
    """score2perf's augmentation on note arrays: times x stretch, pitches + transpose (out-of-range dropped)."""
    start, end, pitch, velocity = notes
    if stretch != 1.0:
        start, end = start * stretch, end * stretch
    if transpose:
        pitch = pitch + transpose
        keep = (pitch >= 0) & (pitch < perf.NUM_PITCHES)
        start, end, pitch, velocity = start[keep], end[keep], pitch[keep], velocity[keep]
    return start, end, pitch, velocity


# ---- the build ----

@dataclass
class SplitStats:
    files: int = 0
    notes: int = 0
    events: int = 0  # events of the un-augmented encoding
    seconds: float = 0.0
    records: int = 0
    tokens: int = 0  # ids written, augmented copies and EOS included
    id_counts: np.ndarray = field(default_factory=lambda: np.zeros(perf.VOCAB_SIZE, dtype=np.int64))

    def to_json(self) -> dict[str, Any]:
        c = self.id_counts
        return {
            "files": self.files, "notes": self.notes, "events": self.events, "hours": round(self.seconds / 3600, 3),
            "records": self.records, "tokens": self.tokens,
            "vocabulary_used": int((c > 0).sum()),
        }


LIKED_PREFIX = "liked_"


def is_liked(rel: str) -> bool:
    """A piece the listener liked: from a liked/ folder of the input repo (``liked_NAME`` once normalized).
    It always trains (a generated piece is no test of the model) and counts --liked-weight times."""
    return rel.startswith("liked/") or Path(rel).name.startswith(LIKED_PREFIX)


def _assign_splits(rels: list[str], opts: DatasetOptions) -> dict[str, str]:
    splits = {rel: "train" if is_liked(rel) else split_of(rel, opts.eval_percent, opts.test_percent)
              for rel in rels}
    if rels and "train" not in splits.values():
        log.warning("only %d MIDI file(s), none hashed into train: using all of them for training", len(rels))
        splits = dict.fromkeys(rels, "train")
    return splits


def split_tail(arrays: tuple[np.ndarray, ...], percent: float) -> tuple[tuple[np.ndarray, ...], tuple | None]:
    """(head, tail) of a file's notes: notes starting in the last ``percent`` of its time go to the tail,
    shifted to start at 0, so a small data set's eval windows are music the model never trained on."""
    start, end, pitch, velocity = arrays
    if not len(start) or percent <= 0:
        return arrays, None
    cut = float(start.min() + (end.max() - start.min()) * (1 - percent / 100))
    head = start < cut
    if head.all() or not head.any():
        return arrays, None
    tail = ~head
    t0 = float(start[tail].min())
    return ((start[head], end[head], pitch[head], velocity[head]),
            (start[tail] - t0, end[tail] - t0, pitch[tail], velocity[tail]))


def make_dataset(input_dir: str | os.PathLike, output_dir: str | os.PathLike,
                 options: DatasetOptions | None = None) -> dict[str, Any]:
    """Build the data set from every MIDI file under input_dir into output_dir; returns the summary dict."""
    opts = options or DatasetOptions()
    if opts.max_events < 1 or (opts.hop is not None and opts.hop < 1):
        raise StageError(None, "--max-events and --hop must be positive")
    if opts.eval_percent < 0 or opts.test_percent < 0 or opts.eval_percent + opts.test_percent >= 100:
        raise StageError(None, "--eval-percent and --test-percent must be >= 0 and leave room for train")
    hop = opts.hop or opts.max_events
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise StageError(input_dir, "input directory does not exist")
    collection = input_dir.name or "midi"

    all_files = iter_files(input_dir)
    skipped = [{"file": p.relative_to(input_dir).as_posix(), "reason": f"not a MIDI file ({p.suffix or 'no suffix'})"}
               for p in all_files if not is_midi_path(p) and p.suffix.lower() != ".json"]
    for s in skipped:
        log.info("%s: skipped, %s", input_dir / s["file"], s["reason"])
    midis = [p for p in all_files if is_midi_path(p)]
    rels = [p.relative_to(input_dir).as_posix() for p in midis]
    splits = _assign_splits(rels, opts)
    # Too few files for the hash to put any in eval: hold out the end of every file instead of evaluating on
    # the training windows.
    tail_eval = bool(rels) and "eval" not in splits.values() and opts.tail_eval_percent > 0
    if tail_eval:
        log.warning("no file hashed into eval (%d files): the last %g%% of each file is the eval split",
                    len(rels), opts.tail_eval_percent)

    cache = NoteCache(opts.cache_dir, opts.limits)
    stats = {s: SplitStats() for s in SPLITS}
    rejected: list[dict[str, str]] = []
    per_file: list[dict[str, Any]] = []
    from ..music.tfrecord_io import RecordWriter, serialize_example

    writers = {}
    try:
        for split in SPLITS:
            writers["ns", split] = RecordWriter(output_dir / "notesequences" / f"{split}.tfrecord")
            writers["perf", split] = RecordWriter(output_dir / "performance" / f"{split}.tfrecord")
        from note_seq.protobuf import music_pb2

        cache_root = str(cache.root) if cache.root else None
        work = [(path, rel, cache_root, opts.limits, collection) for path, rel in zip(midis, rels)]
        loaded = ordered_map(load_one, work, opts.jobs)
        for (path, rel), (ns_bytes, arrays, reason, hits, misses) in progress(
                zip(zip(midis, rels), loaded), "make-dataset", total=len(midis), unit="file"):
            cache.hits += hits
            cache.misses += misses
            split = splits[rel]
            if reason is not None:
                log.error("%s: %s", path, reason)
                rejected.append({"file": rel, "reason": reason})
                continue
            ns = music_pb2.NoteSequence.FromString(ns_bytes)
            st = stats[split]
            n_records = n_tokens = 0
            if tail_eval and split == "train" and not is_liked(rel):
                arrays, tail = split_tail(arrays, opts.tail_eval_percent)
                if tail is not None:
                    ids = perf.encode_arrays(*tail)
                    ids = np.append(ids, perf.EOS_ID) if opts.eos and len(ids) else ids
                    ev = stats["eval"]
                    for w in windows(ids, opts.max_events, hop, opts.min_events):
                        writers["perf", "eval"].write(serialize_example({"targets": w}))
                        ev.id_counts += np.bincount(w, minlength=perf.VOCAB_SIZE)
                        ev.records += 1
                        ev.tokens += len(w)
                    ev.notes += len(tail[0])
                    ev.events += len(ids)
            augmentations = opts.augmentations(split)
            weight = max(1, opts.liked_weight) if is_liked(rel) and split == "train" else 1
            events = 0 if (1.0, 0) in augmentations else len(perf.encode_arrays(*arrays))
            for stretch, transpose in augmentations:
                ids = perf.encode_arrays(*augment_arrays(arrays, stretch, transpose))
                if stretch == 1.0 and transpose == 0:
                    events = len(ids)
                if opts.eos and len(ids):
                    ids = np.append(ids, perf.EOS_ID)
                for w in windows(ids, opts.max_events, hop, opts.min_events) * weight:
                    writers["perf", split].write(serialize_example({"targets": w}))
                    st.id_counts += np.bincount(w, minlength=perf.VOCAB_SIZE)
                    n_records += 1
                    n_tokens += len(w)
            writers["ns", split].write(ns.SerializeToString())
            st.files += 1
            st.notes += len(arrays[0])
            st.events += events
            st.seconds += ns.total_time
            st.records += n_records
            st.tokens += n_tokens
            per_file.append({"file": rel, "split": split, "notes": len(arrays[0]), "events": events,
                             "records": n_records, "seconds": round(ns.total_time, 3), "weight": weight})
            log.debug("%s: %s, %d notes, %d events, %d records", rel, split, len(arrays[0]), events, n_records)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    for w in writers.values():
        w.close()

    summary = _summary(opts, hop, stats, per_file, rejected, skipped, tail_eval)
    write_json(output_dir / "summary.json", summary)
    log.info("cache: %d file(s) reused, %d read%s", cache.hits, cache.misses,
             f" ({cache.root})" if cache.root else " (no cache)")
    # Not in summary.json: the output depends only on the input files and the settings that shape it.
    return {**summary, "cache": {"hits": cache.hits, "misses": cache.misses}}


def _summary(opts: DatasetOptions, hop: int, stats: dict[str, SplitStats], per_file: list[dict[str, Any]],
             rejected: list[dict[str, str]], skipped: list[dict[str, str]], tail_eval: bool = False) -> dict[str, Any]:
    total = SplitStats()
    for s in stats.values():
        total.id_counts += s.id_counts
        for k in ("files", "notes", "events", "seconds", "records", "tokens"):
            setattr(total, k, getattr(total, k) + getattr(s, k))
    counts = total.id_counts
    notes: list[str] = []
    if tail_eval:
        notes.append(f"too few files for a hash split: eval is the last {opts.tail_eval_percent:g}% of each "
                     "file's time, which train does not contain")
    elif stats["train"].files and not stats["eval"].files:
        notes.append("eval split is empty")
    settings = json.loads(json.dumps(asdict(opts)))  # tuples -> lists, as summary.json holds them
    settings["hop"] = hop
    settings["eval_mode"] = "tail" if tail_eval else "hash"
    del settings["cache_dir"], settings["jobs"]  # how it was built, not what was built
    return {
        "format": {
            "notesequences": "notesequences/{split}.tfrecord: serialized note_seq NoteSequence per record",
            "performance": "performance/{split}.tfrecord: tf.train.Example, int64 feature 'targets'",
            "encoding": "score2perf performance events, steps_per_second 100, max_shift_steps 100, "
                        "num_velocity_bins 32, ids offset by 2 reserved ids (PAD 0, EOS 1)",
            "vocab_size": perf.VOCAB_SIZE, "pad_id": perf.PAD_ID, "eos_id": perf.EOS_ID,
        },
        "settings": settings,
        "splits": {name: s.to_json() for name, s in stats.items()},
        "total": total.to_json(),
        "vocabulary": {
            "size": perf.VOCAB_SIZE,
            "used": int((counts > 0).sum()),
            "event_tokens": {
                "note_on": int(counts[perf.NOTE_ON_OFFSET:perf.NOTE_OFF_OFFSET].sum()),
                "note_off": int(counts[perf.NOTE_OFF_OFFSET:perf.TIME_SHIFT_OFFSET].sum()),
                "time_shift": int(counts[perf.TIME_SHIFT_OFFSET:perf.VELOCITY_OFFSET].sum()),
                "velocity": int(counts[perf.VELOCITY_OFFSET:].sum()),
                "eos": int(counts[perf.EOS_ID]),
            },
            "pitch_range": _pitch_range(counts),
            "unused_ids": [int(i) for i in np.flatnonzero(counts == 0) if i >= perf.NUM_RESERVED_IDS],
        },
        "files": per_file,
        "rejected": rejected,
        "skipped": skipped,
        "notes": notes,
    }


def _pitch_range(counts: np.ndarray) -> list[int] | None:
    on = np.flatnonzero(counts[perf.NOTE_ON_OFFSET:perf.NOTE_OFF_OFFSET])
    return [int(on[0]), int(on[-1])] if len(on) else None


def format_table(summary: dict[str, Any]) -> str:
    """The summary as a small text table (printed by the CLI)."""
    cols = ("files", "notes", "events", "hours", "records", "tokens")
    lines = [f"{'split':<7}" + "".join(f"{c:>12}" for c in cols)]
    for name, row in [*summary["splits"].items(), ("total", summary["total"])]:
        lines.append(f"{name:<7}" + "".join(f"{row[c]:>12,}" if isinstance(row[c], int) else f"{row[c]:>12}"
                                             for c in cols))
    voc = summary["vocabulary"]
    lines.append(f"vocabulary: {voc['used']}/{voc['size']} ids used, pitches {voc['pitch_range']}")
    if summary["rejected"]:
        lines.append(f"rejected: {len(summary['rejected'])} file(s)")
        lines.extend(f"  {r['file']}: {r['reason']}" for r in summary["rejected"])
    if summary["skipped"]:
        lines.append(f"skipped: {len(summary['skipped'])} non-MIDI file(s)")
    lines.extend(f"note: {n}" for n in summary["notes"])
    return "\n".join(lines)


# ---- CLI ----

def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> tuple[int, ...]:
    text = text.strip()
    try:
        if ":" in text:  # -3:3 -> -3..3
            lo, hi = (int(x) for x in text.split(":"))
            return tuple(range(lo, hi + 1))
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers or LO:HI, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input_dir", help="directory of MIDI files, searched recursively (e.g. /pfs/midi)")
    p.add_argument("output_dir", help="where the data set goes (e.g. /pfs/out)")
    p.add_argument("--max-events", type=int, default=2048, help="events per training example (default 2048)")
    p.add_argument("--hop", type=int, default=None, help="events between window starts (default: --max-events)")
    p.add_argument("--min-events", type=int, default=64,
                   help="drop a trailing window shorter than this (default 64)")
    p.add_argument("--eval-percent", type=float, default=5.0, help="share of files in eval (default 5)")
    p.add_argument("--test-percent", type=float, default=5.0, help="share of files in test (default 5)")
    p.add_argument("--tail-eval-percent", type=float, default=10.0,
                   help="when no file hashes into eval (a small data set), hold out the last N%% of each file's "
                        "time as eval (default 10; 0: no eval split)")
    p.add_argument("--stretch", type=_floats, default=DEFAULT_STRETCH,
                   help="train-time stretch factors (default 0.95,0.975,1,1.025,1.05)")
    p.add_argument("--transpose", type=_ints, default=DEFAULT_TRANSPOSE,
                   help="train-time transpositions in semitones, list or LO:HI (default -3:3)")
    p.add_argument("--no-augment", action="store_true", help="no stretch/transposition copies")
    p.add_argument("--no-eos", action="store_true", help="do not end each sequence with the EOS id")
    p.add_argument("--max-notes", type=int, default=MidiLimits.max_notes,
                   help=f"refuse a MIDI file with more notes (default {MidiLimits.max_notes:,})")
    p.add_argument("--max-hours", type=float, default=MidiLimits.max_seconds / 3600,
                   help=f"refuse a MIDI file lasting longer (default {MidiLimits.max_seconds / 3600:g})")
    p.add_argument("--max-mib", type=float, default=MidiLimits.max_bytes / 2**20,
                   help=f"refuse a MIDI file larger than this (default {MidiLimits.max_bytes / 2**20:g} MiB)")
    p.add_argument("--cache-dir", default=None,
                   help="per-file cache keyed by content hash (default $XDG_CACHE_HOME/ambientgen/make-dataset)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.add_argument("--jobs", type=int, default=1, help="processes reading MIDI files in parallel (default 1)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any MIDI file was rejected")
    p.add_argument("--liked-weight", type=int, default=1,
                   help="pieces the listener liked (from a liked/ folder of the input: liked_* files) are always "
                        "trained on, and their windows written this many times (default 1)")


def options_from_args(args: argparse.Namespace) -> DatasetOptions:
    cache_dir = None if args.no_cache else (args.cache_dir or str(default_cache_dir()))
    return DatasetOptions(
        max_events=args.max_events, hop=args.hop, min_events=args.min_events,
        eval_percent=args.eval_percent, test_percent=args.test_percent, tail_eval_percent=args.tail_eval_percent,
        stretch=tuple(args.stretch), transpose=tuple(args.transpose), augment=not args.no_augment,
        eos=not args.no_eos, cache_dir=cache_dir, jobs=max(1, args.jobs), liked_weight=max(1, args.liked_weight),
        limits=MidiLimits(max_bytes=int(args.max_mib * 2**20), max_notes=args.max_notes,
                          max_seconds=args.max_hours * 3600),
    )


def main(args: argparse.Namespace) -> int:
    summary = make_dataset(args.input_dir, args.output_dir, options_from_args(args))
    print(format_table(summary))
    if summary["total"]["files"] == 0:
        log.error("%s: no usable MIDI file; the data set is empty", args.input_dir)
        return 1
    if args.strict and summary["rejected"]:
        return 1
    return 0


def iter_split_targets(dataset_dir: str | os.PathLike, split: str) -> Iterator[np.ndarray]:
    """Convenience for readers: the `targets` arrays of one split of a built data set."""
    from ..music.tfrecord_io import read_targets

    return read_targets(Path(dataset_dir) / "performance" / f"{split}.tfrecord")
