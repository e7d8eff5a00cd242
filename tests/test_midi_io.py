"""Bounded, robust MIDI reading: good files load, bad or absurd files are refused with a clear StageError."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ambientgen.music.midi_io import MAX_TICKS, MidiLimits, load_midi, midi_bytes_to_note_sequence, scan_midi
from ambientgen.util import StageError


def vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def smf(*tracks: bytes, division: int = 480, fmt: int = 1, header_len: int = 6) -> bytes:
    """A Standard MIDI File from raw track event bytes (end-of-track added)."""
    head = b"MThd" + struct.pack(">I", header_len) + struct.pack(">HHH", fmt, len(tracks), division)
    head += b"\0" * (header_len - 6)
    body = b""
    for t in tracks:
        t += b"\x00\xff\x2f\x00"
        body += b"MTrk" + struct.pack(">I", len(t)) + t
    return head + body


def note(pitch: int, dur: int = 240, vel: int = 80, delta: int = 0) -> bytes:
    return vlq(delta) + bytes([0x90, pitch, vel]) + vlq(dur) + bytes([0x80, pitch, 0])


def tempo(us: int, delta: int = 0) -> bytes:
    return vlq(delta) + b"\xff\x51\x03" + us.to_bytes(3, "big")


GOOD = smf(tempo(500_000) + note(60) + note(64) + note(67, delta=240))


def test_loads_real_files(sample_midis):
    for path in sample_midis:
        ns = load_midi(path)
        assert len(ns.notes) > 50 and 5 < ns.total_time < 60
        assert ns.filename == path.name
        assert scan_midi(path.read_bytes()).notes == len(ns.notes)


def test_loads_handmade_file_and_times_are_right():
    ns = midi_bytes_to_note_sequence(GOOD)
    got = [(n.pitch, round(n.start_time, 3), round(n.end_time, 3), n.velocity) for n in ns.notes]
    assert got == [(60, 0.0, 0.25, 80), (64, 0.25, 0.5, 80), (67, 0.75, 1.0, 80)]


@pytest.mark.parametrize("data,cause", [
    (b"", "empty file"),
    (b"hello, this is not MIDI at all", "not a Standard MIDI File"),
    (b"RIFF\0\0\0\0RMIDdata" + GOOD, "RIFF MIDI"),
    (smf(note(60), header_len=2), "malformed header"),
    (smf(note(60), fmt=7), "unknown MIDI format"),
    (smf(note(60), division=0xE728), "SMPTE"),
    (smf(note(60), division=0), "0 ticks per quarter"),
    (GOOD[:-9], "truncated"),
    (smf(b"\x00\xff\x03\x04name"), "no notes"),
    (smf(b"\x00\x90\x3c\x40\x00\x90\x3e\x40"), "no complete notes"),
    (smf(tempo(0) + note(60)), "absurd tempo"),
    (smf(tempo(999) + note(60)), "absurd tempo"),
    (smf(note(60, delta=MAX_TICKS + 5), division=1), "lasts"),
    (smf(b"\x00\x3c\x40" + note(60)), "data byte without a status byte"),
    (GOOD[:14], "no track chunk"),
])
def test_bad_files_are_refused_with_the_cause(tmp_path, data, cause):
    path = tmp_path / "bad.mid"
    path.write_bytes(data)
    with pytest.raises(StageError, match=cause) as err:
        load_midi(path)
    assert err.value.path == str(path)


def test_absurdly_slow_tempo_is_refused_as_too_long():
    # 16.7 s per quarter note at 1 tick per quarter: 3,000 ticks last ~14 h.
    data = smf(tempo(0xFFFFFF) + note(60, dur=3000), division=1)
    with pytest.raises(StageError, match="lasts 14.0 h"):
        midi_bytes_to_note_sequence(data, "slow.mid")
    assert len(midi_bytes_to_note_sequence(data, "slow.mid", MidiLimits(max_seconds=20 * 3600)).notes) == 1


def test_millions_of_notes_are_refused_before_parsing():
    many = b"\x00\x90\x3c\x40\x01\x3c\x00" + (b"\x00\x3c\x40\x01\x3c\x00" * 1_100_000)  # running status
    with pytest.raises(StageError, match="more than 1,000,000 notes"):
        midi_bytes_to_note_sequence(smf(many), "many.mid")
    with pytest.raises(StageError, match="limit of 0 MiB"):
        midi_bytes_to_note_sequence(smf(many), "many.mid", MidiLimits(max_bytes=1000))


def test_note_limit_is_configurable(sample_midis):
    with pytest.raises(StageError, match="more than 10 notes"):
        load_midi(sample_midis[0], MidiLimits(max_notes=10))


def test_unreadable_path(tmp_path):
    with pytest.raises(StageError, match="cannot read"):
        load_midi(tmp_path / "missing.mid")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_random_bytes_only_stage_errors(data):
    for blob in (data, b"MThd\0\0\0\x06\0\x01\0\x01\x01\xe0" + data, GOOD[:22] + data):
        try:
            ns = midi_bytes_to_note_sequence(blob, "fuzz.mid")
        except StageError as exc:
            assert exc.path == "fuzz.mid" and exc.cause
        else:
            assert len(ns.notes) > 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(1, len(GOOD)))
def test_fuzz_mutated_midi_only_stage_errors(edits, cut):
    blob = bytearray(GOOD)
    for pos, value in edits:
        blob[pos] = value
    for candidate in (bytes(blob), bytes(blob[:cut])):
        try:
            ns = midi_bytes_to_note_sequence(candidate, "mutant.mid")
        except StageError:
            continue
        assert 0 < len(ns.notes) <= 1_000_000 and ns.total_time < 12 * 3600


def test_long_high_resolution_file_is_rescaled_and_loads():
    # music21 writes 10080 ticks per quarter: 2**25 ticks are only 28 minutes at 120 bpm.
    data = smf(tempo(500_000) + note(60, dur=10080) + note(62, dur=10080, delta=MAX_TICKS), division=10080)
    ns = midi_bytes_to_note_sequence(data, "long.mid")
    assert 500 <= ns.ticks_per_quarter < 10080  # never coarser than 1 ms per tick at 120 bpm
    starts = [round(n.start_time, 3) for n in ns.notes]
    expected = (10080 + MAX_TICKS) / 10080 * 0.5
    assert starts[0] == 0.0 and abs(ns.notes[1].start_time - expected) < 1e-3
    assert [round(n.end_time - n.start_time, 3) for n in ns.notes] == [0.5, 0.5]


def test_rescaling_keeps_every_event_of_a_real_file(sample_midis):
    from ambientgen.music.midi_io import rescale_ticks

    data = sample_midis[0].read_bytes()
    small = rescale_ticks(data, scan_midi(data).ticks_per_quarter // 7)
    assert scan_midi(small).ticks_per_quarter < scan_midi(data).ticks_per_quarter
    a, b = midi_bytes_to_note_sequence(data), midi_bytes_to_note_sequence(small)
    assert [(n.pitch, n.velocity, n.program) for n in a.notes] == [(n.pitch, n.velocity, n.program) for n in b.notes]
    slowest_qpm = min([t.qpm for t in a.tempos] or [120.0])
    tick = 60 / slowest_qpm / scan_midi(small).ticks_per_quarter  # longest new tick, in seconds
    for x, y in zip(a.notes, b.notes):  # half a tick of rounding at each tempo change: a few ticks at most
        assert abs(x.start_time - y.start_time) <= 4 * tick and abs(x.end_time - y.end_time) <= 4 * tick


def test_event_limit():
    ccs = b"".join(b"\x00\xb0\x07" + bytes([i % 128]) for i in range(2000))
    with pytest.raises(StageError, match="more than 1,000 MIDI events"):
        midi_bytes_to_note_sequence(smf(ccs + note(60)), "cc.mid", MidiLimits(max_midi_events=1000))


def test_file_name_that_is_not_utf8(tmp_path, sample_midis):
    import os
    import shutil

    path = tmp_path / os.fsdecode(b"\xe9t\xe9.mid")
    shutil.copy(sample_midis[0], path)
    ns = load_midi(path)
    assert ns.filename.endswith("t\ufffd.mid") and ns.SerializeToString()
