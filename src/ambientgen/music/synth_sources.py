"""The scores that rendered transcription data is made from: music21's bundled corpus, by kind of music.

Five kinds, so that the transcriber learns and is judged on more than chorales: chorales, vocal polyphony
(masses, madrigals, Trecento), string quartets, piano music and songs with piano, and folk tunes from the ABC tune
books given a simple sustained accompaniment (root and fifth, or a triad, under each two-second span), because a
tune played alone is rarely what a listener's ambient track holds.

A work is one corpus file (a tune book counts as one work, so no tune of a held-out book is ever trained on); its
id is the path below the corpus folder, which is also what the split hash is taken of. Scores are turned into
performed NoteSequences by ambientgen.music.corpus (the base model's reader: ties merged, velocities varied),
once, into a cache folder, so an interrupted rendering run resumes without parsing again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..util import StageError
from .midi_io import load_midi

SOURCE_KINDS: dict[str, tuple[str, ...]] = {
    "chorales": ("bach",),
    "polyphony": ("palestrina", "monteverdi", "trecento", "josquin", "luca", "ciconia", "lusitano"),
    "quartets": ("beethoven", "haydn", "mozart", "schumann_robert", "corelli"),
    "piano": ("joplin", "chopin", "schumann_clara", "beach", "cpebach", "handel", "weber", "schubert", "verdi",
              "liliuokalani", "johnson_j_r"),
    "folk": ("oneills1850", "ryansMammoth", "airdsAirs", "miscFolk"),
}
TEST_FRACTION_PERCENT = 8  # works held out from transcriber training (the development set is made of them)
MIN_HELD_OUT = 4
ACCOMPANY_SPAN_S = 2.0


def work_id(path: Path) -> str:
    """'bach/bwv66.6.mxl': a corpus file's path below the corpus folder (the split is a hash of this)."""
    from .corpus import corpus_id

    return corpus_id(Path(path)) + Path(path).suffix


def _hash(text: str) -> int:
    return int(hashlib.sha1(text.encode()).hexdigest(), 16)


def split_of(work: str) -> str:
    """'test' for the held-out works, else 'train': a stable hash of the work id holds out 8 %, and a kind with
    few works (piano music, quartets) has its lowest-hashed works held out until it has MIN_HELD_OUT of them."""
    return "test" if _hash(work) % 100 < TEST_FRACTION_PERCENT or work in _held_out_extra() else "train"


def dev_part_of(work: str) -> str:
    """For held-out works: 'tune' (decoding settings may be chosen on it) or 'test' (reported, never tuned on).
    Alternate ranks of each kind's held-out works, by hash, so that both parts hold every kind."""
    ranked = _held_out_ranked().get(kind_of(work) or "", [])
    if work not in ranked:
        raise StageError(None, f"{work} is not a held-out work")
    return "test" if ranked.index(work) % 2 == 0 else "tune"


def kind_of(work: str) -> str | None:
    collection = work.split("/")[0]
    return next((k for k, cols in SOURCE_KINDS.items() if collection in cols), None)


@lru_cache(maxsize=1)
def _all_works() -> dict[str, list[str]]:
    from .corpus import corpus_files

    out: dict[str, list[str]] = {k: [] for k in SOURCE_KINDS}
    for p in corpus_files():
        w = work_id(p)
        k = kind_of(w)
        if k:
            out[k].append(w)
    return out


@lru_cache(maxsize=1)
def _held_out_extra() -> frozenset[str]:
    extra: set[str] = set()
    for works in _all_works().values():
        by_hash = sorted(works, key=_hash)
        held = [w for w in by_hash if _hash(w) % 100 < TEST_FRACTION_PERCENT]
        extra.update(w for w in by_hash[:MIN_HELD_OUT] if w not in held and len(held) < MIN_HELD_OUT)
    return frozenset(extra)


@lru_cache(maxsize=1)
def _held_out_ranked() -> dict[str, list[str]]:
    return {k: sorted((w for w in works if split_of(w) == "test"), key=_hash) for k, works in _all_works().items()}


def works_of(kind: str, split: str) -> list[Path]:
    """The corpus files of one kind and split, sorted."""
    from .corpus import corpus_files

    if kind not in SOURCE_KINDS:
        raise StageError(None, f"unknown source kind {kind!r}: choose from {', '.join(SOURCE_KINDS)}")
    return [p for p in corpus_files() if kind_of(work_id(p)) == kind and split_of(work_id(p)) == split]


def pieces_of(path: Path, cache_dir: Path) -> list[Path]:
    """The MIDI files (one per score or tune) of one corpus file, converted into cache_dir on first use."""
    from .corpus import convert_file, corpus_id

    st = convert_file(path, cache_dir)
    cid = corpus_id(path)
    base = cache_dir / cid
    found = ([base.with_name(base.name + ".mid")] if base.with_name(base.name + ".mid").is_file() else []) + sorted(
        base.parent.glob(base.name + "-tune*.mid"))
    if not found:
        raise StageError(path, f"no usable piece in this corpus file ({st.reason or 'fewer than 8 notes'})")
    return found


def load_piece(path: Path, cache_dir: Path, rng: np.random.Generator, keep: Callable[[str], bool] | None = None,
               solo: bool = False):
    """One performed piece of a corpus file (a random tune of a tune book), accompanied when it has one part;
    ``keep`` (given a piece's path below cache_dir) narrows the choice, e.g. to another model's training split.
    ``solo``: a single line instead, the tune as written or one part of a piece in parts, never accompanied."""
    pieces = pieces_of(path, cache_dir)
    if keep is not None:
        pieces = [p for p in pieces if keep(p.relative_to(cache_dir).as_posix())]
        if not pieces:
            raise StageError(path, "no piece of this corpus file may be used here")
    ns = load_midi(pieces[int(rng.integers(len(pieces)))], allow_empty=True)
    if solo:
        return one_part(ns, rng)
    if len({n.instrument for n in ns.notes}) == 1:
        ns = accompany(ns, rng)
    return ns


def one_part(ns, rng: np.random.Generator, min_notes: int = 8):
    """A random part of the sequence (one with at least ``min_notes`` notes when there is one), alone."""
    counts: dict[int, int] = {}
    for n in ns.notes:
        counts[n.instrument] = counts.get(n.instrument, 0) + 1
    if len(counts) <= 1:
        return ns
    parts = sorted(p for p, c in counts.items() if c >= min_notes) or sorted(counts)
    part = parts[int(rng.integers(len(parts)))]
    out = type(ns)()
    out.CopyFrom(ns)
    del out.notes[:]
    out.notes.extend(n for n in ns.notes if n.instrument == part)
    out.total_time = max((n.end_time for n in out.notes), default=0.0)
    return out


def accompany(ns, rng: np.random.Generator, span_s: float = ACCOMPANY_SPAN_S):
    """Add a sustained accompaniment (instrument 1) to a one-part tune: under each span, the root the melody
    dwells on most, with its fifth and, half the time, the third the melody uses, an octave or two below."""
    out = type(ns)()
    out.CopyFrom(ns)
    notes = list(ns.notes)
    if not notes:
        return out
    low = min(n.pitch for n in notes)
    end = max(n.end_time for n in notes)
    triads = rng.random() < 0.5
    t = 0.0
    while t < end:
        weights = np.zeros(12)
        for n in notes:
            overlap = min(n.end_time, t + span_s) - max(n.start_time, t)
            if overlap > 0:
                weights[n.pitch % 12] += overlap
        if weights.any():
            root = int(np.argmax(weights))
            chord = [0, 7]
            if triads:
                chord.append(3 if weights[(root + 3) % 12] > weights[(root + 4) % 12] else 4)
            base = low - 12 - ((low - 12 - root) % 12)  # the root an octave or so below the tune's lowest note
            velocity = int(np.clip(np.mean([n.velocity for n in notes]) - 12, 20, 110))
            for iv in chord:
                p = base + iv
                if 28 <= p <= 96:
                    out.notes.add(pitch=p, start_time=t, end_time=min(t + span_s, end), velocity=velocity,
                                  instrument=1, program=0)
        t += span_s
    return out
