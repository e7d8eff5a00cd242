"""The public-domain symbolic corpus that ships with music21, as MIDI files for the base model's data set.

Every score of music21's bundled corpus that parses (Palestrina, Bach, Monteverdi, Trecento, Josquin, the
quartets, ...) and every tune of its ABC tune books (Ryan's Mammoth, O'Neill, Essen, Aird's Airs, ...) becomes
one MIDI file. Notes are read straight from the parsed score (flattened per part, ties merged), which is both
faster and more robust than music21's MIDI writer (it refuses about a fifth of the Essen tunes).

Scores carry no dynamics worth the name, so each piece gets a varied, reproducible performance: a base
loudness, a slow swell over phrases, a louder top voice and a little jitter per note, all drawn from a seed
made of the piece's id. Without that the model learns one constant velocity. The timing is played too: a slow
tempo drift, onsets scattered by a few tens of milliseconds (so a chord's notes do not start on one step) and an
articulation from legato to detached, with each note's end scattered as well. A model that has only seen notes
on a grid and ended exactly at the next onset meets transcribed audio, where nothing is, as a new language.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..util import atomic_path, progress

log = logging.getLogger(__name__)

# Formats that hold notes (roman-numeral analyses, .rntxt, do not).
SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn", ".abc", ".mei")
# A score without a metronome mark is played so that its median note lasts a drawn 0.3-0.6 s: notations differ
# (Palestrina in breves and semibreves, folk tunes in eighths), a performer's pace much less.
MEDIAN_NOTE_SECONDS = (0.3, 0.6)
MAX_PIECE_SECONDS = 1800.0
LEAD_IN = 0.05  # seconds before the first onset, so that the first chord's scatter is not clipped at 0


@dataclass
class PieceStats:
    source: str
    pieces: int = 0
    notes: int = 0
    seconds: float = 0.0
    failed: int = 0
    reason: str = ""


def corpus_files() -> list[Path]:
    """Every note-bearing score file of music21's bundled corpus, sorted by path."""
    from music21 import corpus

    return sorted(p for p in corpus.getPaths() if p.suffix.lower() in SCORE_SUFFIXES)


def corpus_id(path: Path) -> str:
    """'palestrina/Agnus_01' style id: the path below the corpus folder, without the suffix."""
    parts = path.with_suffix("").parts
    i = len(parts) - 1 - parts[::-1].index("corpus")
    return "/".join(parts[i + 1:])


def _rng(piece_id: str) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(int(hashlib.sha1(piece_id.encode()).hexdigest()[:16], 16)))


def _qpm(score, notes: list[tuple[float, float, int, int]], rng: np.random.Generator) -> float:
    """The score's first metronome mark in quarter notes per minute, or a tempo drawn from its note values."""
    try:
        for mm in score.flatten().getElementsByClass("MetronomeMark"):
            q = mm.getQuarterBPM()
            if q and 30 <= q <= 240:
                return float(q)
    except Exception:  # a mark music21 cannot convert: draw one
        pass
    median_ql = float(np.median([e - s for s, e, _, _ in notes])) if notes else 1.0
    return float(np.clip(60.0 * median_ql / rng.uniform(*MEDIAN_NOTE_SECONDS), 30.0, 320.0))


def score_notes(score) -> list[tuple[float, float, int, int]]:
    """(start, end, pitch, part index) in quarter lengths, ties merged, zero-length (grace) notes dropped."""
    parts = list(score.parts) if hasattr(score, "parts") and len(score.parts) else [score]
    out: list[tuple[float, float, int, int]] = []
    for pi, part in enumerate(parts):
        open_ties: dict[int, int] = {}  # midi pitch -> index in out of the note a tie continues
        for n in part.flatten().notes:
            ql = float(n.duration.quarterLength)
            off = float(n.offset)
            if ql <= 0:
                continue
            for p in getattr(n, "pitches", ()):
                midi = int(round(p.ps))
                if not 0 <= midi < 128:
                    continue
                tie = n.tie.type if n.tie is not None else None
                j = open_ties.get(midi)
                if j is not None and tie in ("continue", "stop") and abs(out[j][1] - off) < 1e-3:
                    s, _, _, _ = out[j]
                    out[j] = (s, off + ql, midi, pi)
                    if tie == "stop":
                        del open_ties[midi]
                    continue
                out.append((off, off + ql, midi, pi))
                if tie in ("start", "continue"):
                    open_ties[midi] = len(out) - 1
                else:
                    open_ties.pop(midi, None)
    return out


def perform(notes: list[tuple[float, float, int, int]], qpm: float, rng: np.random.Generator):
    """A NoteSequence from score notes: seconds from the tempo, velocities varied (see the module docstring)."""
    from note_seq.protobuf import music_pb2

    ns = music_pb2.NoteSequence()
    ns.ticks_per_quarter = 220
    ns.tempos.add(qpm=qpm)
    if not notes:
        return ns
    spq = 60.0 / qpm
    base = rng.uniform(48, 96)
    swell_period = rng.uniform(6.0, 20.0)
    phase = rng.uniform(0, 2 * math.pi)
    swell = rng.uniform(4, 14)
    top_part = 0  # music21 lists the highest voice first
    notes = sorted(notes)
    jitter = rng.normal(0, 5, size=len(notes))
    seconds = _played_time(notes, spq, rng)
    for (_, _, pitch, part), jit, (start, end) in zip(notes, jitter, seconds):
        if start >= MAX_PIECE_SECONDS:
            break
        v = base + swell * math.sin(2 * math.pi * start / swell_period + phase) + jit
        v += 6 if part == top_part else 0
        n = ns.notes.add(pitch=pitch, velocity=int(np.clip(round(v), 20, 124)), start_time=start,
                         end_time=min(end, MAX_PIECE_SECONDS), instrument=part, program=0)
        ns.total_time = max(ns.total_time, n.end_time)
    return ns


def _played_time(notes: list[tuple[float, float, int, int]], spq: float,
                 rng: np.random.Generator) -> list[tuple[float, float]]:
    """(start, end) in seconds of sorted score notes, played: tempo drift, scattered onsets and ends, articulation.

    Per piece: a tempo that swells by up to 6% over a few bars, an onset scatter of 4-25 ms, a held fraction of
    0.7-1.0 of each written length. A note never starts before 0, lasts at least 40 ms, and ends before the next
    onset of its pitch, so the played notes keep the score's order of events per pitch."""
    drift, period, phase = rng.uniform(0, 0.06), rng.uniform(8.0, 32.0), rng.uniform(0, 2 * math.pi)
    scatter, held = rng.uniform(0.004, 0.025), rng.uniform(0.7, 1.0)

    def at(q: float) -> float:  # the clock: derivative spq * (1 + drift * cos) stays positive
        return spq * (q + drift * period / (2 * math.pi) * math.sin(2 * math.pi * q / period + phase))

    out: list[tuple[float, float]] = []
    next_onset: dict[int, tuple[float, float]] = {}  # pitch -> (score, played) onset of its next note
    onsets = [max(0.0, LEAD_IN + at(s) + rng.normal(0, scatter)) for s, _, _, _ in notes]
    ends = [LEAD_IN + at(s) + (at(e) - at(s)) * held + rng.normal(0, scatter) for s, e, _, _ in notes]
    for i in range(len(notes) - 1, -1, -1):
        pitch = notes[i][2]
        end = max(ends[i], onsets[i] + 0.04)
        later = next_onset.get(pitch)
        if later is not None and later[0] > notes[i][0]:  # a unison of two voices is not clipped
            end = min(end, later[1] - 0.01)
        next_onset[pitch] = (notes[i][0], onsets[i])
        out.append((onsets[i], max(end, onsets[i] + 0.01)))
    return out[::-1]


def _scores(path: Path):
    """The scores in one corpus file: an ABC tune book gives one per tune."""
    from music21 import converter, stream

    parsed = converter.parse(str(path))
    if isinstance(parsed, stream.Opus):
        return [(f"tune{i:04d}", s) for i, s in enumerate(parsed.scores)]
    return [("", parsed)]


def convert_file(path: Path, out_dir: Path) -> PieceStats:
    """Write every piece of one corpus file as OUT_DIR/<collection>/<name>[-tuneNNNN].mid; a marker records it.

    A file converted before (its marker exists) is not parsed again, so an interrupted build resumes.
    """
    import note_seq

    cid = corpus_id(path)
    marker = out_dir / ".done" / (cid.replace("/", "__") + ".json")
    if marker.is_file():
        try:
            return PieceStats(**json.loads(marker.read_text()))
        except (ValueError, TypeError):
            pass
    st = PieceStats(cid)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = _scores(path)
    except Exception as exc:  # music21 cannot parse every file of its own corpus
        st.failed, st.reason = 1, f"{type(exc).__name__}: {exc}"[:300]
        scores = []
    for suffix, score in scores:
        pid = f"{cid}-{suffix}" if suffix else cid
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rng = _rng(pid)
                notes = score_notes(score)
                ns = perform(notes, _qpm(score, notes, rng), rng)
        except Exception as exc:
            st.failed += 1
            st.reason = f"{pid}: {type(exc).__name__}: {exc}"[:300]
            continue
        if len(ns.notes) < 8:
            continue
        dest = out_dir / (pid + ".mid")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            note_seq.sequence_proto_to_midi_file(ns, str(tmp))
        st.pieces += 1
        st.notes += len(ns.notes)
        st.seconds += ns.total_time
    marker.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(marker) as tmp:
        tmp.write_text(json.dumps(st.__dict__))
    return st


def _convert_one(path: str, out_dir: str) -> PieceStats:
    return convert_file(Path(path), Path(out_dir))


def build_corpus_midi(out_dir: str | Path, jobs: int = 2, limit: int | None = None,
                      collections: tuple[str, ...] | None = None) -> dict:
    """Convert the corpus (or some collections of it) into MIDI under out_dir; returns the tally."""
    from concurrent.futures import ProcessPoolExecutor

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = corpus_files()
    if collections:
        files = [f for f in files if corpus_id(f).split("/")[0] in collections]
    # big tune books first, so the pool does not end waiting on one of them
    files.sort(key=lambda p: -p.stat().st_size)
    files = files[:limit] if limit else files
    stats: list[PieceStats] = []
    if jobs <= 1:
        it = (convert_file(f, out_dir) for f in files)
        for st in progress(it, "corpus", total=len(files), unit="file"):
            stats.append(st)
    else:
        import multiprocessing

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            it = pool.map(_convert_one, [str(f) for f in files], [str(out_dir)] * len(files), chunksize=4)
            for st in progress(it, "corpus", total=len(files), unit="file"):
                stats.append(st)
    by_coll: dict[str, dict] = {}
    for st in stats:
        c = by_coll.setdefault(st.source.split("/")[0], {"files": 0, "pieces": 0, "notes": 0, "hours": 0.0,
                                                          "failed": 0})
        c["files"] += 1
        c["pieces"] += st.pieces
        c["notes"] += st.notes
        c["hours"] += st.seconds / 3600
        c["failed"] += st.failed
    for c in by_coll.values():
        c["hours"] = round(c["hours"], 2)
    tally = {"files": len(stats), "pieces": sum(s.pieces for s in stats), "notes": sum(s.notes for s in stats),
             "hours": round(sum(s.seconds for s in stats) / 3600, 2), "failed": sum(s.failed for s in stats),
             "collections": dict(sorted(by_coll.items())),
             "failures": [{"source": s.source, "reason": s.reason} for s in stats if s.failed][:200]}
    with atomic_path(out_dir / "corpus.json") as tmp:
        tmp.write_text(json.dumps(tally, indent=1))
    return tally
