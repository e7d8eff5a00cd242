"""How generated music compares with the music it learned from: measures a listener would notice.

Per piece: notes per second, polyphony (the mean number of notes sounding while anything sounds), note-duration
percentiles, pitch range, the overlap of its duration-weighted pitch-class histogram and of its melodic-interval
histogram with the reference set's (1 - L1/2, so 1 is the same distribution), the share of stuck notes (longer
than twice the reference's 99th-percentile duration) and copying: the longest run of consecutive performance
events found verbatim in a training sequence, and the share of its 16-event windows found there.

Melodic intervals are taken on the skyline (the highest pitch at each onset), clipped to an octave either way,
so chords do not count as leaps. Copying is found with rolling hashes over the event ids (numpy, exact up to
64-bit hash collisions), which scales to the base model's millions of training events.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..util import StageError, iter_files

log = logging.getLogger(__name__)

COPY_WINDOW = 16
INTERVAL_CLIP = 12
_B = np.uint64(1_000_003)
_SEP_BASE = 1 << 20  # separator ids between concatenated sequences: never an event id


@dataclass
class Notes:
    """One piece's notes as arrays (seconds, MIDI pitch)."""

    start: np.ndarray
    end: np.ndarray
    pitch: np.ndarray

    @classmethod
    def of(cls, ns, after: float = 0.0) -> Notes:
        """The non-drum notes of a NoteSequence that start at or after ``after`` seconds."""
        rows = [(n.start_time, n.end_time, n.pitch) for n in ns.notes if not n.is_drum and n.start_time >= after]
        a = np.array(rows, dtype=np.float64).reshape(-1, 3)
        return cls(a[:, 0], a[:, 1], a[:, 2].astype(np.int64))

    @property
    def durations(self) -> np.ndarray:
        return np.maximum(self.end - self.start, 0.0)


def union_seconds(start: np.ndarray, end: np.ndarray) -> float:
    """Length of the union of [start, end) intervals."""
    if not len(start):
        return 0.0
    order = np.argsort(start)
    s, e = start[order], end[order]
    total, cur_s, cur_e = 0.0, s[0], e[0]
    for a, b in zip(s[1:], e[1:]):
        if a > cur_e:
            total += cur_e - cur_s
            cur_s, cur_e = a, b
        else:
            cur_e = max(cur_e, b)
    return float(total + cur_e - cur_s)


def pitch_class_hist(n: Notes) -> np.ndarray:
    h = np.bincount(n.pitch % 12, weights=n.durations, minlength=12)
    return h / h.sum() if h.sum() > 0 else h


def skyline_intervals(n: Notes) -> np.ndarray:
    """Pitch steps between successive onsets' highest notes (onsets within 10 ms are one), clipped to ±12."""
    if len(n.start) < 2:
        return np.zeros(0, dtype=np.int64)
    q = np.round(n.start * 100).astype(np.int64)
    order = np.lexsort((-n.pitch, q))
    q, p = q[order], n.pitch[order]
    first = np.r_[True, q[1:] != q[:-1]]
    top = p[first]
    return np.clip(np.diff(top), -INTERVAL_CLIP, INTERVAL_CLIP)


def interval_hist(n: Notes) -> np.ndarray:
    iv = skyline_intervals(n)
    h = np.bincount(iv + INTERVAL_CLIP, minlength=2 * INTERVAL_CLIP + 1).astype(np.float64)
    return h / h.sum() if h.sum() > 0 else h


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """1 - L1/2 between two normalised histograms (1: identical, 0: disjoint); nan if either is empty."""
    if a.sum() <= 0 or b.sum() <= 0:
        return float("nan")
    return float(1.0 - 0.5 * np.abs(a - b).sum())


# ---- copying: rolling hashes over event ids ----

def _prefix(seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P, powers): P[i] = hash of seq[:i] (mod 2^64), powers[i] = B^i."""
    with np.errstate(over="ignore"):
        powers = np.cumprod(np.r_[np.uint64(1), np.full(len(seq), _B, dtype=np.uint64)], dtype=np.uint64)
        p = np.zeros(len(seq) + 1, dtype=np.uint64)
        # P[i+1] = P[i] * B + s[i]  ==  sum_j s[j] * B^(i-j): computed as B^i * cumsum(s[j] * B^-j)
        inv = _inverse(_B)
        inv_pows = np.cumprod(np.r_[np.uint64(1), np.full(max(len(seq) - 1, 0), inv, dtype=np.uint64)],
                              dtype=np.uint64)[:len(seq)]
        acc = np.cumsum(seq.astype(np.uint64) * inv_pows, dtype=np.uint64)
        p[1:] = acc * powers[:len(seq)]
    return p, powers


def _inverse(b: np.uint64) -> np.uint64:
    """Multiplicative inverse of an odd number modulo 2^64 (Newton's iteration)."""
    x = int(b)
    y = x
    for _ in range(6):
        y = (y * (2 - x * y)) % (1 << 64)
    return np.uint64(y)


def _kgrams(p: np.ndarray, powers: np.ndarray, k: int) -> np.ndarray:
    n = len(p) - 1
    if n < k:
        return np.zeros(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return p[k:] - p[:n - k + 1] * powers[k]


class TrainingIndex:
    """Training sequences concatenated (with unique separators) for k-gram look-ups.

    A look-up sorts the few k-grams asked about and searches every training k-gram among them: time linear in
    the training events and no sorted copy of them kept per k, so a corpus of tens of millions of events (the
    base model's, in all its transpositions) is searched in seconds and a few bytes per event."""

    def __init__(self, sequences: list[np.ndarray]):
        parts = []
        for i, s in enumerate(sequences):
            parts.append(np.asarray(s, dtype=np.int64))
            parts.append(np.array([_SEP_BASE + i], dtype=np.int64))
        seq = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        self.size = len(seq)
        self.p, self.powers = _prefix(seq)

    def found(self, ids: np.ndarray, k: int) -> np.ndarray:
        """For each k-window of ids: is it in the training sequences?"""
        p, pw = _prefix(np.asarray(ids, dtype=np.int64))
        g = _kgrams(p, pw, k)
        if not len(g) or self.size < k:
            return np.zeros(len(g), dtype=bool)
        asked = np.unique(g)
        present = np.zeros(len(asked), dtype=bool)
        step = 1 << 24  # training k-grams in blocks, so the transient arrays stay small
        for i0 in range(0, self.size - k + 1, step):
            i1 = min(self.size - k + 1, i0 + step)
            with np.errstate(over="ignore"):
                t = self.p[i0 + k:i1 + k] - self.p[i0:i1] * self.powers[k]
            pos = np.minimum(np.searchsorted(asked, t), len(asked) - 1)
            present[pos[asked[pos] == t]] = True
        return present[np.searchsorted(asked, g)]

    def longest_copy(self, ids: np.ndarray) -> int:
        """Length of the longest run of ids found verbatim in a training sequence (binary search on k)."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids) or not self.size or not self.found(ids, 1).any():
            return 0
        lo, hi = 1, len(ids)  # found(lo) holds; find the largest k that does
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.found(ids, mid).any():
                lo = mid
            else:
                hi = mid - 1
        return lo


# ---- per piece and per set ----

@dataclass
class Reference:
    """What pieces are compared with: the reference set's histograms, durations and training events."""

    pc: np.ndarray
    intervals: np.ndarray
    dur_p99: float
    summary: dict
    index: TrainingIndex | None = None
    self_interval_overlap: float = float("nan")


def pitch_median(pitch: np.ndarray, weight: np.ndarray) -> int | None:
    """The register: the lowest pitch with half of the sounding time at or below it (the duration-weighted median).
    A model that plays a tune's notes an octave low matches its pitch classes and intervals, and misses this."""
    if not len(pitch) or weight.sum() <= 0:
        return None
    order = np.argsort(pitch, kind="stable")
    cum = np.cumsum(weight[order])
    return int(pitch[order][np.searchsorted(cum, 0.5 * cum[-1])])


def describe(n: Notes, seconds: float | None = None) -> dict:
    """The reference-free measures of one piece."""
    d = n.durations
    span = seconds if seconds is not None else (float(n.end.max() - n.start.min()) if len(d) else 0.0)
    sounding = union_seconds(n.start, n.end)
    return {
        "notes": int(len(d)), "seconds": round(span, 3),
        "notes_per_s": round(len(d) / span, 3) if span > 0 else 0.0,
        "polyphony": round(float(d.sum() / sounding), 3) if sounding > 0 else 0.0,
        "duration_p50": round(float(np.percentile(d, 50)), 3) if len(d) else None,
        "duration_p90": round(float(np.percentile(d, 90)), 3) if len(d) else None,
        "pitch_low": int(n.pitch.min()) if len(d) else None, "pitch_high": int(n.pitch.max()) if len(d) else None,
        "pitch_median": pitch_median(n.pitch, d),
    }


def make_reference(pieces: list[Notes], training_events: list[np.ndarray] | None = None) -> Reference:
    """The reference from its pieces (and the training event sequences used for the copying measures)."""
    allnotes = Notes(np.concatenate([p.start for p in pieces]) if pieces else np.zeros(0),
                     np.concatenate([p.end for p in pieces]) if pieces else np.zeros(0),
                     np.concatenate([p.pitch for p in pieces]) if pieces else np.zeros(0, dtype=np.int64))
    d = allnotes.durations
    pc = np.sum([pitch_class_hist(p) * p.durations.sum() for p in pieces], axis=0) if pieces else np.zeros(12)
    iv = np.sum([interval_hist(p) * max(len(p.start) - 1, 0) for p in pieces], axis=0) if pieces else np.zeros(25)
    pc = pc / pc.sum() if np.sum(pc) > 0 else pc
    iv = iv / iv.sum() if np.sum(iv) > 0 else iv
    summary = set_summary(pieces, [describe(p) for p in pieces])
    half_a, half_b = pieces[0::2], pieces[1::2]
    self_iv = overlap(_pooled_intervals(half_a), _pooled_intervals(half_b)) if half_a and half_b else float("nan")
    return Reference(pc, iv, float(np.percentile(d, 99)) if len(d) else float("inf"), summary,
                     TrainingIndex(training_events) if training_events else None, self_iv)


def pooled_overlaps(pieces: list[Notes], ref: Reference) -> dict:
    """The set's pooled pitch-class and interval histograms against the reference's: a set of short pieces is
    judged like the reference halves are, not piece by piece (a 20-note piece's histogram is mostly noise)."""
    if not pieces:
        return {}
    d = sum((pitch_class_hist(p) * p.durations.sum() for p in pieces), np.zeros(12))
    pc = d / d.sum() if d.sum() > 0 else d
    return {"pitch_class_overlap_set": round(overlap(pc, ref.pc), 4),
            "interval_overlap_set": round(overlap(_pooled_intervals(pieces), ref.intervals), 4)}


def _pooled_intervals(pieces: list[Notes]) -> np.ndarray:
    iv = np.concatenate([skyline_intervals(p) for p in pieces]) if pieces else np.zeros(0, dtype=np.int64)
    h = np.bincount(iv + INTERVAL_CLIP, minlength=2 * INTERVAL_CLIP + 1).astype(np.float64)
    return h / h.sum() if h.sum() > 0 else h


def score_piece(n: Notes, events: np.ndarray | None, ref: Reference) -> dict:
    """Every measure of one generated piece against the reference."""
    out = describe(n)
    d = n.durations
    out["pitch_class_overlap"] = round(overlap(pitch_class_hist(n), ref.pc), 4)
    out["interval_overlap"] = round(overlap(interval_hist(n), ref.intervals), 4)
    out["stuck_rate"] = round(float((d > 2 * ref.dur_p99).mean()), 4) if len(d) else 0.0
    if ref.index is not None and events is not None:
        out["longest_copy"] = ref.index.longest_copy(events)
        f = ref.index.found(events, COPY_WINDOW)
        out["copied_windows"] = round(float(f.mean()), 4) if len(f) else 0.0
    return out


def _aggregate(rows: list[dict]) -> dict:
    """Mean of each numeric measure over pieces (longest_copy: the maximum)."""
    if not rows:
        return {}
    out: dict = {"pieces": len(rows)}
    for k in rows[0]:
        vals = [r[k] for r in rows if isinstance(r.get(k), int | float) and not isinstance(r.get(k), bool)]
        vals = [v for v in vals if v == v]  # drop nan
        if not vals:
            continue
        if k == "longest_copy":
            out[k] = int(max(vals))
        elif k in ("pitch_low",):
            out[k] = int(min(vals))
        elif k in ("pitch_high",):
            out[k] = int(max(vals))
        else:
            out[k] = round(float(np.mean(vals)), 4)
    return out


def set_summary(pieces: list[Notes], rows: list[dict]) -> dict:
    """A set's measures: per-piece means, with durations, polyphony and density pooled over all its notes."""
    out = _aggregate(rows)
    if not pieces:
        return out
    d = np.concatenate([p.durations for p in pieces])
    sounding = sum(union_seconds(p.start, p.end) for p in pieces)
    seconds = sum(r["seconds"] for r in rows)
    if len(d):
        out["duration_p50"] = round(float(np.percentile(d, 50)), 3)
        out["duration_p90"] = round(float(np.percentile(d, 90)), 3)
        out["duration_p99"] = round(float(np.percentile(d, 99)), 3)
    out["polyphony"] = round(float(d.sum() / sounding), 3) if sounding > 0 else 0.0
    out["notes_per_s"] = round(len(d) / seconds, 3) if seconds > 0 else 0.0
    out["pitch_median"] = pitch_median(np.concatenate([p.pitch for p in pieces]), d)
    return out


# ---- folders of MIDI files: what `ambientgen evaluate-generation` and the report measure ----

def _midi_files(root: Path) -> list[Path]:
    from .midi_io import is_midi_path

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
    from .midi_io import load_midi

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
    from . import performance as perf

    if dataset_dir is not None:
        from .tfrecord_io import load_split

        pieces = load_split(Path(dataset_dir), "train")
        if not pieces:
            raise StageError(dataset_dir, "no train split to search for copies")
        return [p[(p != perf.EOS_ID) & (p != perf.PAD_ID)] for p in pieces]
    return [np.asarray(perf.encode(ns), dtype=np.int64) for _, ns in reference]


def evaluate_generation(gen_dir: str | Path, reference_dir: str | Path,
                        dataset_dir: str | Path | None = None) -> dict:
    """The measures of every generated piece and of the set, beside the reference set's own."""
    from . import performance as perf

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
