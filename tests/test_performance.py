"""The performance encoding: same ids as note_seq's score2perf encoding, lossless round trip, fuzzing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ambientgen.music import performance as P


def reference_ids(ns) -> np.ndarray:
    """score2perf's MidiPerformanceEncoder.encode_note_sequence, with note_seq's own classes."""
    from note_seq import performance_lib, sequences_lib
    from note_seq.performance_encoder_decoder import PerformanceOneHotEncoding

    enc = PerformanceOneHotEncoding(num_velocity_bins=32, max_shift_steps=100, min_pitch=0, max_pitch=127)
    perf = performance_lib.Performance(sequences_lib.quantize_note_sequence_absolute(ns, 100), num_velocity_bins=32)
    return np.array([enc.encode_event(e) + 2 for e in perf], dtype=np.int64)


def make_ns(notes):
    from note_seq.protobuf import music_pb2

    ns = music_pb2.NoteSequence(ticks_per_quarter=220)
    for start, dur, pitch, vel in notes:
        ns.notes.add(start_time=start, end_time=start + dur, pitch=pitch, velocity=vel)
        ns.total_time = max(ns.total_time, start + dur)
    return ns


def quantised_notes(ns):
    """(pitch, start step, end step, velocity bin) of each note, as the encoding keeps them, sorted."""
    out = []
    for n in ns.notes:
        s, e = int(n.start_time * 100 + 0.5), int(n.end_time * 100 + 0.5)
        out.append((n.pitch, s, max(e, s + 1), int(P.velocity_to_bin(n.velocity))))
    return sorted(out)


def test_vocabulary_layout():
    from note_seq.performance_encoder_decoder import PerformanceOneHotEncoding

    assert P.VOCAB_SIZE == 390 and P.PAD_ID == 0 and P.EOS_ID == 1 and P.NUM_EVENTS == 388
    assert PerformanceOneHotEncoding(num_velocity_bins=32, max_shift_steps=100).num_classes == P.NUM_EVENTS
    assert P.event_names([0, 1, 2, 129, 130, 258, 357, 358, 389, 390]) == [
        "PAD", "EOS", "ON0", "ON127", "OFF0", "SHIFT1", "SHIFT100", "VEL1", "VEL32", "?390"]


def test_ids_match_note_seq_on_chorales(sample_midis):
    import note_seq

    for path in sample_midis:
        ns = note_seq.midi_file_to_note_sequence(str(path))
        ids = P.encode(ns)
        assert len(ns.notes) > 50
        assert ids.dtype == np.int64 and ids.min() >= 2 and ids.max() < P.VOCAB_SIZE
        np.testing.assert_array_equal(ids, reference_ids(ns), err_msg=str(path))


def test_ids_match_note_seq_with_varied_velocity_gaps_and_chords():
    rng = np.random.default_rng(7)
    notes = []
    t = 0.0
    for _ in range(400):
        t += float(rng.choice([0.0, 0.004, 0.013, 0.25, 1.7, 3.456]))  # chords, tiny and >1 s gaps
        notes.append((t, float(rng.uniform(0.001, 4.0)), int(rng.integers(0, 128)), int(rng.integers(1, 128))))
    ns = make_ns(notes)
    np.testing.assert_array_equal(P.encode(ns), reference_ids(ns))


note_strategy = st.tuples(
    st.floats(0, 12, allow_nan=False).map(lambda x: round(x, 4)),
    st.floats(0, 3, allow_nan=False).map(lambda x: round(x, 4)),
    st.integers(0, 127),
    st.integers(1, 127),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(note_strategy, max_size=40))
def test_ids_match_note_seq_fuzz(notes):
    ns = make_ns(notes)
    np.testing.assert_array_equal(P.encode(ns), reference_ids(ns))


def test_round_trip_lossless_up_to_quantisation(sample_midis):
    import note_seq

    for path in sample_midis:
        ns = note_seq.midi_file_to_note_sequence(str(path))
        back = P.decode(P.encode(ns))
        assert quantised_notes(back) == quantised_notes(ns), path
        for n in back.notes:  # velocities come back as the bottom of their 4-wide bin
            assert (n.velocity - 1) % 4 == 0


def test_pedal_free_notes_encode_to_events():
    ns = make_ns([(0.0, 0.5, 60, 80), (0.5, 0.5, 64, 80)])  # no control changes at all
    ids = P.encode(ns)
    assert P.event_names(ids) == ["VEL20", "ON60", "SHIFT50", "OFF60", "ON64", "SHIFT50", "OFF64"]


def test_long_gap_splits_into_max_shifts_and_drums_are_dropped():
    ns = make_ns([(0.0, 0.1, 60, 64), (2.5, 0.1, 62, 64)])
    ns.notes.add(start_time=1.0, end_time=1.1, pitch=36, velocity=100, is_drum=True)
    names = P.event_names(P.encode(ns))
    assert names == ["VEL16", "ON60", "SHIFT10", "OFF60", "SHIFT100", "SHIFT100", "SHIFT40", "ON62", "SHIFT10", "OFF62"]
    assert "ON36" in P.event_names(P.encode(ns, drop_drums=False))


def test_decode_closes_notes_still_sounding_and_ignores_reserved_ids():
    ids = [P.PAD_ID, 358 + 19, 2 + 60, 2 + 64, 258 + 49, 130 + 60, 258 + 99, P.EOS_ID, P.PAD_ID]
    ns = P.decode(ids)
    got = sorted((n.pitch, n.start_time, n.end_time, n.velocity) for n in ns.notes)
    assert got == [(60, 0.0, 0.5, 77), (64, 0.0, 1.5, 77)]
    assert ns.total_time == 1.5


def test_empty_sequences():
    assert P.encode(make_ns([])).shape == (0,)
    assert len(P.decode([]).notes) == 0
    assert len(P.decode(np.array([P.EOS_ID, P.PAD_ID])).notes) == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-5, 400), max_size=300))
def test_decode_never_crashes_and_reencoding_is_a_fixpoint(ids):
    ns = P.decode(ids)
    for n in ns.notes:
        assert 0 <= n.pitch < 128 and 1 <= n.velocity <= 127 and n.end_time > n.start_time
    once = P.encode(ns)
    assert ((once >= 2) & (once < P.VOCAB_SIZE)).all()
    np.testing.assert_array_equal(P.encode(P.decode(once)), once)


grid_note_strategy = st.tuples(
    st.integers(0, 1200).map(lambda k: k / 100),
    st.integers(1, 300).map(lambda k: k / 100),
    st.integers(0, 127),
    st.integers(1, 127),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(note_strategy, max_size=40))
def test_decode_keeps_every_note(notes):
    ns = make_ns(notes)
    q = quantised_notes(ns)
    back = P.decode(P.encode(ns))
    assert len(back.notes) == len(ns.notes)
    overlapping = any(a[0] == b[0] and b[1] < a[2] for a, b in zip(q, q[1:]))
    if not overlapping:  # two notes of one pitch sounding together may swap their ends (FIFO), as in note_seq
        assert quantised_notes(back) == q


@settings(max_examples=200, deadline=None)
@given(st.lists(grid_note_strategy, max_size=40))
def test_encode_decode_encode_is_stable(notes):
    # Notes on the 10 ms grid, no two of one pitch sounding together: events -> notes -> events is the identity.
    ns = make_ns(notes)
    q = quantised_notes(ns)
    overlapping = any(a[0] == b[0] and b[1] < a[2] for a, b in zip(q, q[1:]))
    ids = P.encode(ns)
    if not overlapping:
        np.testing.assert_array_equal(P.encode(P.decode(ids)), ids)


@pytest.mark.parametrize("velocity,expected", [(1, 1), (4, 1), (5, 2), (100, 25), (127, 32), (0, 1), (300, 32)])
def test_velocity_bins(velocity, expected):
    assert P.velocity_to_bin(velocity) == expected


def test_sustain_pedal_is_applied_when_present():
    ns = make_ns([(0.0, 0.2, 60, 80), (0.5, 0.1, 62, 80)])
    ns.control_changes.add(time=0.0, control_number=64, control_value=127)
    ns.control_changes.add(time=1.0, control_number=64, control_value=0)
    ends = sorted(n.end_time for n in P.decode(P.encode(ns)).notes)
    assert ends == [1.0, 1.0]
    ends = sorted(n.end_time for n in P.decode(P.encode(ns, sustain=False)).notes)
    assert ends == [0.2, 0.6]


def _steps(ns) -> set[tuple[int, int, int]]:
    return {(n.pitch, round(n.start_time * 100), round(n.end_time * 100)) for n in ns.notes}


def test_a_window_opens_with_the_notes_sounding_and_every_off_ends_a_struck_note(sample_midis):
    """A crop inside held notes restates them, so the window decodes to the original notes clipped to its span."""
    import note_seq

    ids = P.encode(note_seq.midi_file_to_note_sequence(str(sample_midis[0])))
    shifts = np.flatnonzero((ids >= P.TIME_SHIFT_OFFSET) & (ids < P.VELOCITY_OFFSET))
    step_after = np.cumsum(np.where((ids >= P.TIME_SHIFT_OFFSET) & (ids < P.VELOCITY_OFFSET),
                                    ids - P.TIME_SHIFT_OFFSET + 1, 0))
    original = _steps(P.decode(ids))
    checked = 0
    for s in shifts[2::3] + 1:  # just after a time shift: every event of that step is inside the window
        held = P._note_spans(ids[:s])[1]  # the decoder's own pairing: notes sounding at s
        w = P.complete_window(ids, int(s), 400)
        if not any(held.values()):
            continue
        assert w.context == 1 + sum(len(q) for q in held.values())
        assert w.ids[0] >= P.VELOCITY_OFFSET and w.stop > s and (len(w.ids) == 400 or w.stop == len(ids))
        count = np.zeros(128, dtype=int)
        for i in w.ids.tolist():  # no off without a sounding note of its pitch
            if P.NOTE_ON_OFFSET <= i < P.NOTE_OFF_OFFSET:
                count[i - P.NOTE_ON_OFFSET] += 1
            elif P.NOTE_OFF_OFFSET <= i < P.TIME_SHIFT_OFFSET:
                assert count[i - P.NOTE_OFF_OFFSET] > 0
                count[i - P.NOTE_OFF_OFFSET] -= 1
        t0, t1 = int(step_after[s - 1]), int(step_after[w.stop - 1])
        expected = {(p, max(a, t0) - t0, min(b, t1) - t0) for p, a, b in original if a < t1 and b > t0}
        assert _steps(P.decode(w.ids)) == {n for n in expected if n[2] > n[1]}
        checked += 1
    assert checked >= 5


def test_a_window_drops_offs_of_notes_it_never_struck_and_caps_its_context():
    ids = np.array([P.VELOCITY_OFFSET + 20] + [P.NOTE_ON_OFFSET + p for p in range(60, 70)]
                   + [P.TIME_SHIFT_OFFSET + 9] + [P.NOTE_OFF_OFFSET + p for p in range(60, 70)] + [P.EOS_ID])
    w = P.complete_window(ids, 12, 8, max_context=4)  # ten notes sounding, room to restate three
    assert w.context == 4 and w.ids[:4].tolist() == [P.VELOCITY_OFFSET + 20] + [P.NOTE_ON_OFFSET + p for p in (60, 61, 62)]
    assert w.ids[4:].tolist() == [P.NOTE_OFF_OFFSET + p for p in (60, 61, 62)] + [P.EOS_ID]
    assert w.stop == len(ids)
    bare = P.complete_window(ids[12:], 0, 100)  # a stream that starts inside the notes: nothing to pair
    assert bare.context == 0 and bare.ids.tolist() == [P.EOS_ID]
