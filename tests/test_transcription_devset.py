"""The rendered development set and what scores it: sources and splits, effects, frame F1, frame-run decoding,
and `ambientgen evaluate-transcriber` on real renderings with real transcribers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ambientgen.music import synth_sources as src


def test_every_kind_holds_out_works_for_both_dev_parts():
    for kind in src.SOURCE_KINDS:
        train = [src.work_id(p) for p in src.works_of(kind, "train")]
        test = [src.work_id(p) for p in src.works_of(kind, "test")]
        assert train and len(test) >= src.MIN_HELD_OUT and not set(train) & set(test), kind
        parts = {src.dev_part_of(w) for w in test}
        assert parts == {"tune", "test"}, kind
    # the split of the collections the shipped transcriber was first trained on is the plain 8 % hash
    assert src.split_of("bach/bwv110.7.mxl") == "test" and src.split_of("bach/bwv66.6.mxl") == "train"
    with pytest.raises(Exception, match="not a held-out work"):
        src.dev_part_of("bach/bwv66.6.mxl")


def test_accompaniment_sits_under_a_one_part_tune():
    import note_seq

    tune = note_seq.NoteSequence()
    for i, p in enumerate([67, 69, 71, 72, 74, 72, 71, 69]):  # G major, half a second each
        tune.notes.add(pitch=p, start_time=i * 0.5, end_time=(i + 1) * 0.5, velocity=80, instrument=0)
    out = src.accompany(tune, np.random.default_rng(0))
    acc = [n for n in out.notes if n.instrument == 1]
    assert len(out.notes) == len(tune.notes) + len(acc) and acc
    assert max(n.pitch for n in acc) < min(n.pitch for n in tune.notes)
    assert {n.start_time for n in acc} == {0.0, 2.0}
    assert all(n.end_time - n.start_time == pytest.approx(2.0) for n in acc)


def test_a_solo_is_one_part_alone(tmp_path):
    """``solo``: one part of a piece in parts, unaccompanied, rendered with one program (heard single lines)."""
    import note_seq

    from ambientgen.music.synth_data import make_example

    ns = note_seq.NoteSequence()
    for part, (low, count) in enumerate([(72, 12), (60, 12), (48, 3)]):
        for i in range(count):
            ns.notes.add(pitch=low + i % 5, start_time=i * 0.5, end_time=(i + 1) * 0.5, velocity=70, instrument=part)
    picked = {next(iter({n.instrument for n in src.one_part(ns, np.random.default_rng(s)).notes})) for s in range(20)}
    assert picked == {0, 1}  # either part with enough notes, never the 3-note one, and only one of them
    one = src.one_part(ns, np.random.default_rng(0))
    assert len(one.notes) == 12 and one.total_time == pytest.approx(6.0)

    wav = make_example("bach/bwv66.6.mxl", tmp_path, seed=5, max_seconds=10.0, features=False, solo=True)
    meta = json.loads(wav.with_suffix(".json").read_text())
    labels = note_seq.midi_file_to_note_sequence(str(wav.with_suffix(".mid")))
    assert meta["solo"] and len(meta["programs"]) == 1 and len({n.instrument for n in labels.notes}) == 1
    assert max(sum(1 for m in labels.notes if m.start_time <= n.start_time < m.end_time) for n in labels.notes) == 1


def test_mp3_round_trip_keeps_time_and_length():
    from ambientgen.music.synth_effects import mp3_round_trip

    rng = np.random.default_rng(1)
    for sr in (16000, 44100):
        x = (rng.standard_normal(sr * 2) * 0.1).astype(np.float32)
        y = mp3_round_trip(x, sr, 128)
        assert len(y) == len(x)
        c = np.correlate(y[: sr // 2], x[: sr // 2], "full")
        assert int(np.argmax(c)) - (sr // 2 - 1) == 0  # the encoder delay is removed
        assert np.corrcoef(x, y)[0, 1] > 0.8


def test_effects_noise_floor_and_level():
    from ambientgen.music.synth_effects import Effects, apply_effects

    sr = 16000
    t = np.arange(sr * 2) / sr
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    dry = apply_effects(tone, Effects(reverb_wet=0.0, gain_db=0.0), sr)
    noisy = apply_effects(tone, Effects(reverb_wet=0.0, gain_db=0.0, noise_db=-20.0), sr)
    noise = noisy - dry
    ratio_db = 20 * np.log10(np.sqrt(np.mean(noise ** 2)) / np.sqrt(np.mean(dry ** 2)))
    assert -21.5 < ratio_db < -18.5
    loud = apply_effects(tone * 3, Effects(reverb_room=0.98, reverb_wet=0.7, gain_db=12.0), sr)
    assert np.abs(loud).max() <= 0.99 + 1e-6


def test_frame_scores_match_mir_eval_multipitch():
    import mir_eval
    import note_seq

    from ambientgen.music.transcription import FRAME_HOP_S, frame_scores, sounding_roll

    rng = np.random.default_rng(2)
    ref, est = note_seq.NoteSequence(), note_seq.NoteSequence()
    for _ in range(60):
        s = rng.uniform(0, 10)
        p = int(rng.integers(40, 80))
        ref.notes.add(pitch=p, start_time=s, end_time=s + rng.uniform(0.05, 2), velocity=80)
        if rng.random() < 0.7:
            est.notes.add(pitch=p + int(rng.random() < 0.2), start_time=s + rng.uniform(-0.05, 0.05),
                          end_time=s + rng.uniform(0.05, 2.5), velocity=80)
    ours = frame_scores(ref, est)
    n = int(np.ceil(max(x.end_time for x in [*ref.notes, *est.notes]) / FRAME_HOP_S)) + 1
    times = np.arange(n) * FRAME_HOP_S

    def freqs(ns):
        return [mir_eval.util.midi_to_hz(np.flatnonzero(r).astype(float)) for r in sounding_roll(ns, n)]

    m = mir_eval.multipitch.evaluate(times, freqs(ref), times, freqs(est))
    assert ours["frame_precision"] == pytest.approx(m["Precision"])
    assert ours["frame_recall"] == pytest.approx(m["Recall"])
    assert 0.2 < ours["frame_f1"] < 0.9
    assert frame_scores(ref, ref)["frame_f1"] == pytest.approx(1.0)


def test_a_confident_frame_run_starts_a_note_only_when_asked():
    from ambientgen.models.onsets_frames import FRAME_START_FRAMES, decode_notes

    t = 100
    onset, frame = np.zeros((t, 88)), np.zeros((t, 88))
    frame[20:60, 40] = 0.9  # a swell with no onset at all
    frame[70:70 + FRAME_START_FRAMES - 1, 41] = 0.9  # too short a run
    onset[10, 30], frame[10:30, 30] = 0.9, 0.9  # an ordinary struck note
    plain = decode_notes(onset, frame)
    assert [n[2] for n in plain] == [30 + 21]
    swell = decode_notes(onset, frame, frame_start_threshold=0.8)
    assert sorted(n[2] for n in swell) == [30 + 21, 40 + 21]
    (start, end, _, _), = [n for n in swell if n[2] == 61]
    assert start == pytest.approx(20 / 31.25) and end == pytest.approx(60 / 31.25)


@pytest.mark.slow
def test_dev_set_and_evaluate_transcriber(tmp_path):
    """One clip per family, rendered from held-out works, scored by stock basic-pitch and the default."""
    from ambientgen.music.synth_data import FAMILIES, make_dev_set

    dev = tmp_path / "dev"
    out = tmp_path / "res.json"
    r = subprocess.run([sys.executable, "-m", "ambientgen", "evaluate-transcriber", "--dev-set", str(dev),
                        "--per-family", "1", "--seconds", "6", "--backend", "stock-basic-pitch",
                        "--backend", "basic-pitch", "--json", str(out)], capture_output=True, text=True,
                       timeout=900, env={**os.environ, "AMBIENTGEN_NO_PROGRESS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "onset F1" in r.stdout and "frame F1" in r.stdout and "pads" in r.stdout
    res = json.loads(out.read_text())
    assert res["clips"] == len(FAMILIES) and len(res["per_clip"]) == 2 * len(FAMILIES)
    for row in res["per_clip"]:
        meta = json.loads((dev / "test" / f"{row['clip']}.json").read_text())
        assert src.split_of(meta["work"]) == "test" and src.dev_part_of(meta["work"]) == "test"
        assert meta["sample_rate"] == 44100 and row["ref_notes"] > 3
        assert row["f1_offset"] <= row["f1"] + 1e-9
        assert 0.0 <= row["frame_f1"] <= 1.0
    means = res["means"]
    assert set(means) == {"stock-basic-pitch", "basic-pitch"}
    assert means["basic-pitch"]["struck"]["f1"] > 0.3  # a real transcriber on a struck clip: far above chance
    # the clips are made once: the tune part is other works, and a second call reuses the test clips
    before = sorted(p.name for p in (dev / "test").glob("*.wav"))
    again = make_dev_set(dev, "test", 1, 6)
    assert sorted(p.name for p in again) == before
    tune = make_dev_set(dev, "tune", 1, 6)
    tune_works = {json.loads(p.with_suffix(".json").read_text())["work"] for p in tune}
    test_works = {json.loads((dev / "test" / n).with_suffix(".json").read_text())["work"] for n in before}
    assert tune_works and not tune_works & test_works
