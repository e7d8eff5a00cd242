"""`ambientgen evaluate-generation` on hand-made MIDI whose measures are known in advance."""

from __future__ import annotations

import json
import subprocess
import sys

import note_seq
import numpy as np
import pytest
from note_seq.protobuf import music_pb2

from ambientgen.music import quality
from ambientgen.stages.evaluate_generation import evaluate_generation

SCALE = [60, 62, 64, 65, 67, 69, 71, 72]


def write_midi(path, notes):
    """notes: (start, end, pitch) rows."""
    ns = music_pb2.NoteSequence()
    ns.tempos.add(qpm=120)
    ns.ticks_per_quarter = 220
    for s, e, p in notes:
        ns.notes.add(start_time=s, end_time=e, pitch=p, velocity=80)
        ns.total_time = max(ns.total_time, e)
    path.parent.mkdir(parents=True, exist_ok=True)
    note_seq.sequence_proto_to_midi_file(ns, str(path))
    return path


def scale_piece(offset=0.0, pitches=SCALE):
    return [(offset + 0.5 * i, offset + 0.5 * i + 0.5, p) for i, p in enumerate(pitches)]


def test_a_copy_of_the_reference_matches_it_in_every_measure(tmp_path):
    write_midi(tmp_path / "ref" / "a.mid", scale_piece())
    write_midi(tmp_path / "gen" / "a-0.mid", scale_piece())
    res = evaluate_generation(tmp_path / "gen", tmp_path / "ref")
    g, r = res["generated"], res["reference"]
    assert g["polyphony"] == pytest.approx(1.0) and r["polyphony"] == pytest.approx(1.0)
    assert g["duration_p90"] == pytest.approx(0.5) and g["notes_per_s"] == pytest.approx(2.0)
    assert g["pitch_class_overlap"] == pytest.approx(1.0) and g["interval_overlap"] == pytest.approx(1.0)
    assert g["pitch_class_overlap_set"] == pytest.approx(1.0) and g["interval_overlap_set"] == pytest.approx(1.0)
    assert g["stuck_rate"] == 0
    assert (g["pitch_low"], g["pitch_high"]) == (60, 72)
    assert g["pitch_median"] == r["pitch_median"] == 65  # half of the scale's sounding time lies at or below F4
    events = len(note_seq_events(tmp_path / "gen" / "a-0.mid"))
    assert res["pieces"][0]["longest_copy"] == events  # the whole piece is a verbatim copy
    assert g["copied_windows"] == pytest.approx(1.0)


def note_seq_events(path):
    from ambientgen.music import performance
    from ambientgen.music.midi_io import load_midi

    return performance.encode(load_midi(path))


def test_held_chords_are_polyphonic_stuck_and_not_copied(tmp_path):
    write_midi(tmp_path / "ref" / "a.mid", scale_piece())
    # three notes held 10 s: polyphony 3, all stuck (longer than 2 x the reference's p99 of 0.5 s)
    write_midi(tmp_path / "gen" / "b-0.mid", [(0.0, 10.0, 48), (0.0, 10.0, 55), (0.0, 10.0, 64)])
    res = evaluate_generation(tmp_path / "gen", tmp_path / "ref")
    g = res["generated"]
    assert g["polyphony"] == pytest.approx(3.0)
    assert g["stuck_rate"] == pytest.approx(1.0)
    assert res["stuck_threshold_s"] == pytest.approx(1.0)
    assert g["duration_p50"] == pytest.approx(10.0)
    assert g["pitch_median"] == 55  # the middle of three equally held notes
    assert g["copied_windows"] == 0 and res["pieces"][0]["longest_copy"] < 16
    # pitch classes C, G, E against a C major scale's C, D, E, F, G, A, B, C (duration-weighted)
    ref_pc = np.bincount(np.array(SCALE) % 12, minlength=12) / len(SCALE)
    gen_pc = np.zeros(12)
    gen_pc[[0, 7, 4]] = 1 / 3
    assert g["pitch_class_overlap"] == pytest.approx(1 - 0.5 * np.abs(ref_pc - gen_pc).sum(), abs=1e-4)


def test_the_primer_is_not_measured(tmp_path):
    write_midi(tmp_path / "ref" / "a.mid", scale_piece())
    # 4 s of primer copied from the reference, then one new note: only the new note counts
    write_midi(tmp_path / "gen" / "c-0.mid", scale_piece() + [(4.5, 5.0, 90)])
    (tmp_path / "gen" / "c-0.json").write_text(json.dumps({"primer": {"seconds": 4.0},
                                                           "request": {"include_primer": True}}))
    res = evaluate_generation(tmp_path / "gen", tmp_path / "ref")
    assert res["pieces"][0]["notes"] == 1
    assert res["pieces"][0]["pitch_low"] == 90


def test_the_register_is_weighted_by_sounding_time():
    # one long low note against three short high ones: the register is the low note's
    assert quality.pitch_median(np.array([72, 74, 76, 48]), np.array([0.5, 0.5, 0.5, 4.0])) == 48
    assert quality.pitch_median(np.array([72, 74, 76, 48]), np.array([1.0, 1.0, 1.0, 1.0])) == 72
    assert quality.pitch_median(np.zeros(0, dtype=np.int64), np.zeros(0)) is None


def test_interval_histogram_uses_the_top_voice():
    n = quality.Notes(np.array([0.0, 0.0, 1.0, 1.0]), np.array([1.0, 1.0, 2.0, 2.0]), np.array([48, 67, 50, 69]))
    assert quality.skyline_intervals(n).tolist() == [2]  # 67 -> 69, the chord tones below do not count


def test_longest_copy_matches_a_brute_force_search():
    rng = np.random.default_rng(3)
    train = [rng.integers(2, 40, size=n) for n in (300, 120, 80)]
    idx = quality.TrainingIndex(train)
    for trial in range(5):
        gen = np.concatenate([rng.integers(2, 40, size=30), train[trial % 3][10:10 + 12 + trial * 7],
                              rng.integers(2, 40, size=20)])
        brute = 0
        for t in train:
            for i in range(len(gen)):
                for j in range(len(t)):
                    k = 0
                    while i + k < len(gen) and j + k < len(t) and gen[i + k] == t[j + k]:
                        k += 1
                    brute = max(brute, k)
        assert idx.longest_copy(gen) == brute


def test_cli_prints_the_table_and_writes_json(tmp_path):
    write_midi(tmp_path / "ref" / "a.mid", scale_piece())
    write_midi(tmp_path / "ref" / "b.mid", scale_piece(pitches=SCALE[::-1]))
    write_midi(tmp_path / "gen" / "x-0.mid", scale_piece(pitches=[60, 64, 67, 72, 67, 64, 60, 55]))
    out = subprocess.run([sys.executable, "-m", "ambientgen", "evaluate-generation", str(tmp_path / "gen"),
                          "--reference", str(tmp_path / "ref"), "--output", str(tmp_path / "q.json")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "polyphony" in out.stdout and "interval overlap between reference halves" in out.stdout
    data = json.loads((tmp_path / "q.json").read_text())
    # the two reference halves (ascending and descending scale) share no interval
    assert data["reference"]["interval_overlap_halves"] == pytest.approx(0.0)
