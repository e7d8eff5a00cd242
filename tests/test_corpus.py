"""The corpus conversion plays each score: varied loudness and timing, reproducibly, the score's notes kept."""

from __future__ import annotations

from collections import defaultdict

import note_seq
import numpy as np
import pytest

from ambientgen.music.corpus import convert_file, corpus_files, corpus_id


@pytest.fixture(scope="module")
def chorale(tmp_path_factory):
    """bwv66.6 as converted, with its parsed score's note count."""
    from music21 import corpus

    from ambientgen.music.corpus import score_notes

    path = next(f for f in corpus_files() if corpus_id(f) == "bach/bwv66.6")
    out = tmp_path_factory.mktemp("corpus")
    stats = convert_file(path, out)
    midi = out / "bach" / "bwv66.6.mid"
    return note_seq.midi_file_to_note_sequence(str(midi)), len(score_notes(corpus.parse(str(path)))), stats, midi


def test_every_score_note_is_played_once(chorale):
    ns, written, stats, _ = chorale
    assert stats.pieces == 1 and stats.failed == 0
    assert len(ns.notes) == written == stats.notes


def test_a_chords_notes_do_not_start_on_one_step(chorale):
    """Scattered onsets: in a four-voice chorale most onsets are shared by several voices in the score, and
    played, the notes of such a chord spread over more than 10 ms (one encoding step) in most chords."""
    ns = chorale[0]
    onsets = np.sort([n.start_time for n in ns.notes])
    groups, spreads = [[onsets[0]]], []
    for t in onsets[1:]:
        (groups[-1].append(t) if t - groups[-1][0] < 0.08 else groups.append([t]))
    spreads = [g[-1] - g[0] for g in groups if len(g) >= 3]
    assert len(spreads) >= 20
    assert np.mean(np.array(spreads) > 0.01) > 0.5
    assert max(spreads) < 0.15  # scattered, not smeared


def test_played_notes_of_one_pitch_never_overlap_and_keep_the_velocity_varied(chorale):
    ns = chorale[0]
    by_pitch = defaultdict(list)
    for n in ns.notes:
        assert n.end_time - n.start_time >= 0.009
        by_pitch[n.pitch].append((n.start_time, n.end_time))
    for spans in by_pitch.values():
        spans.sort()
        for (s0, e0), (s1, _) in zip(spans, spans[1:]):
            assert e0 <= s1 + 1e-6 or abs(s1 - s0) < 0.2  # only a unison of two voices may overlap
    assert len({n.velocity for n in ns.notes}) > 10


def test_legato_and_detached_pieces_differ_and_each_is_reproducible(chorale, tmp_path):
    """A piece's performance is drawn from its id: converting again gives the same file; another piece gets
    another articulation (the share of each written length that sounds)."""
    ns, _, _, midi = chorale
    path = next(f for f in corpus_files() if corpus_id(f) == "bach/bwv66.6")
    convert_file(path, tmp_path)
    assert (tmp_path / "bach" / "bwv66.6.mid").read_bytes() == midi.read_bytes()
    other = next(f for f in corpus_files() if corpus_id(f) == "bach/bwv84.5")
    convert_file(other, tmp_path)
    ns2 = note_seq.midi_file_to_note_sequence(str(tmp_path / "bach" / "bwv84.5.mid"))

    def gaps(seq) -> float:  # median silence between a note's end and the next onset of its voice
        by_voice = defaultdict(list)
        for n in seq.notes:
            by_voice[n.instrument].append((n.start_time, n.end_time))
        g = [s1 - e0 for spans in by_voice.values() for (_, e0), (s1, _) in zip(sorted(spans), sorted(spans)[1:])]
        return float(np.median(g))

    assert gaps(ns) != pytest.approx(gaps(ns2), abs=0.005)
