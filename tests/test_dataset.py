"""The make-dataset stage: layout, splits, augmentation, sustain/drums, bad files, summary, cache."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from ambientgen.music import performance as P
from ambientgen.music.midi_io import load_midi
from ambientgen.music.tfrecord_io import read_note_sequences, read_records, read_targets
from ambientgen.stages.make_dataset import (
    DatasetOptions,
    augment_arrays,
    make_dataset,
    split_of,
    windows,
)
from ambientgen.stages.make_dataset_files import performance_notes

SMALL_AUG = {"stretch": (0.95, 1.0, 1.05), "transpose": (-1, 0, 2)}


def name_in(split: str, prefix: str = "piece") -> str:
    """A file name that the hash puts in the given split."""
    for i in range(10_000):
        name = f"{prefix}{i}.mid"
        if split_of(name) == split:
            return name
    raise AssertionError("no name found")


def write_midi(path: Path, notes, drums=(), sustain=()) -> Path:
    """A MIDI file like a transcription: one piano track, no pedal unless asked; optional drum track."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [pretty_midi.Note(velocity=v, pitch=p, start=s, end=e) for s, e, p, v in notes]
    inst.control_changes = [pretty_midi.ControlChange(64, val, t) for t, val in sustain]
    pm.instruments.append(inst)
    if drums:
        drum = pretty_midi.Instrument(program=0, is_drum=True)
        drum.notes = [pretty_midi.Note(velocity=100, pitch=p, start=s, end=s + 0.1) for s, p in drums]
        pm.instruments.append(drum)
    pm.write(str(path))
    return path


@pytest.fixture(scope="module")
def midi_dir(tmp_path_factory, sample_midis) -> Path:
    """Chorales under names that land in each split, plus a transcription-like file and bad files."""
    d = tmp_path_factory.mktemp("midi")
    for split, src in zip(["train", "train", "eval", "test"], sample_midis):
        shutil.copy(src, d / name_in(split, prefix=src.stem + "_"))
    (d / "sub").mkdir()
    write_midi(d / "sub" / name_in("train", "transcribed"), [(0.1 * i, 0.1 * i + 0.35, 48 + i % 24, 30 + i) for i in range(60)])
    (d / name_in("train", "garbage")).write_bytes(b"this is not a midi file")
    (d / name_in("train", "empty")).write_bytes(b"")
    write_midi(d / name_in("train", "drums"), [], drums=[(0.5 * i, 36) for i in range(8)])
    (d / "notes.json").write_text("{}")  # a transcription sidecar: ignored silently
    (d / "cover.png").write_bytes(b"\x89PNG")
    return d


@pytest.fixture(scope="module")
def built(midi_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("dataset")
    opts = DatasetOptions(max_events=512, hop=256, cache_dir=str(tmp_path_factory.mktemp("cache")), **SMALL_AUG)
    return out, make_dataset(midi_dir, out, opts), opts


def test_layout_records_and_summary(built, midi_dir):
    out, summary, opts = built
    for sub in ("notesequences", "performance"):
        for split in ("train", "eval", "test"):
            assert (out / sub / f"{split}.tfrecord").is_file()
    assert json.loads((out / "summary.json").read_text()) == {k: v for k, v in summary.items() if k != "cache"}
    assert sorted(p.name for p in out.rglob("*") if p.name.startswith(".")) == []  # no temp files left

    sp = summary["splits"]
    assert (sp["train"]["files"], sp["eval"]["files"], sp["test"]["files"]) == (3, 1, 1)
    for split in ("train", "eval", "test"):
        targets = list(read_targets(out / "performance" / f"{split}.tfrecord"))
        assert len(targets) == sp[split]["records"] > 0
        assert sum(len(t) for t in targets) == sp[split]["tokens"]
        for t in targets:
            assert 0 < len(t) <= 512 and t.min() >= 1 and t.max() < P.VOCAB_SIZE and P.PAD_ID not in t
        assert sum((t == P.EOS_ID).sum() for t in targets) == (9 if split == "train" else 1) * sp[split]["files"]
        seqs = list(read_note_sequences(out / "notesequences" / f"{split}.tfrecord"))
        assert len(seqs) == sp[split]["files"]
        for ns in seqs:
            assert ns.collection_name == midi_dir.name and ns.id.startswith(f"/id/midi/{midi_dir.name}/")
            assert list(ns.notes) == list(load_midi(midi_dir / ns.filename).notes)
    assert summary["vocabulary"]["size"] == 390 and 50 < summary["vocabulary"]["used"] <= 388
    assert summary["total"]["tokens"] == sum(s["tokens"] for s in sp.values())


def test_bad_files_are_named_with_reasons_and_the_rest_is_built(built):
    _, summary, _ = built
    reasons = {re.match(r"[a-z]+", r["file"]).group(): r["reason"] for r in summary["rejected"]}
    assert set(reasons) == {"garbage", "empty", "drums"}, summary["rejected"]
    assert "not a Standard MIDI File" in reasons["garbage"]
    assert reasons["empty"] == "empty file"
    assert "only drum notes" in reasons["drums"]
    assert [s["file"] for s in summary["skipped"]] == ["cover.png"]


def test_pedal_free_transcription_encodes_to_events(built):
    _, summary, _ = built
    row = next(f for f in summary["files"] if f["file"].startswith("sub/transcribed"))
    assert row["notes"] == 60 and row["events"] >= 60 * 2 and row["records"] >= 9


def test_train_is_augmented_and_windows_overlap(built, midi_dir):
    out, summary, opts = built
    for row in summary["files"]:
        per_copy = len(windows(np.zeros(row["events"] + 1), 512, 256, 64))  # + EOS
        if row["split"] == "train":
            assert row["records"] >= 9  # 3 stretches x 3 transpositions
        else:
            assert row["records"] == per_copy, row


def reference_ids(ns) -> np.ndarray:
    """score2perf's encoding with note_seq's own classes."""
    from note_seq import performance_lib, sequences_lib
    from note_seq.performance_encoder_decoder import PerformanceOneHotEncoding

    enc = PerformanceOneHotEncoding(num_velocity_bins=32, max_shift_steps=100)
    perf = performance_lib.Performance(sequences_lib.quantize_note_sequence_absolute(ns, 100), num_velocity_bins=32)
    return np.array([enc.encode_event(e) + 2 for e in perf], dtype=np.int64)


def test_augmentation_matches_note_seq(sample_midis):
    from note_seq import sequences_lib

    ns = load_midi(sample_midis[1])
    for stretch, transpose in [(1.05, 3), (0.95, -3), (1.0, 2)]:
        ref_ns = sequences_lib.stretch_note_sequence(ns, stretch)
        ref_ns, _ = sequences_lib.transpose_note_sequence(ref_ns, transpose)
        got = P.encode_arrays(*augment_arrays(performance_notes(ns), stretch, transpose))
        np.testing.assert_array_equal(got, reference_ids(ref_ns))


def test_sustain_pedal_lengthens_notes_and_drums_are_dropped(tmp_path):
    notes = [(0.0, 0.2, 60, 80), (0.5, 0.7, 64, 80)]
    plain = write_midi(tmp_path / "plain.mid", notes, drums=[(0.1, 36)])
    pedal = write_midi(tmp_path / "pedal.mid", notes, drums=[(0.1, 36)], sustain=[(0.0, 127), (2.0, 0)])
    s, e, p, _ = performance_notes(load_midi(plain))
    assert sorted(p.tolist()) == [60, 64] and np.allclose(sorted(e), [0.2, 0.7])
    s, e, p, _ = performance_notes(load_midi(pedal))
    assert sorted(p.tolist()) == [60, 64] and np.allclose(e, [2.0, 2.0])


def test_split_is_stable_and_roughly_90_5_5():
    names = [f"track {i:05d}.mid" for i in range(4000)]
    splits = [split_of(n) for n in names]
    frac = {s: splits.count(s) / len(names) for s in ("train", "eval", "test")}
    assert 0.87 < frac["train"] < 0.93 and 0.03 < frac["eval"] < 0.07 and 0.03 < frac["test"] < 0.07
    assert [split_of(n) for n in names] == splits  # a function of the name only
    assert split_of("a.mid", 50, 0) in ("train", "eval")


def test_few_files_all_go_to_train(tmp_path, sample_midis):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(sample_midis[0], d / name_in("eval", "only"))
    summary = make_dataset(d, tmp_path / "out", DatasetOptions(augment=False))
    assert summary["splits"]["train"]["files"] == 1 and summary["splits"]["eval"]["files"] == 0
    # the file's last 10% is held out instead: eval is never the training windows
    assert any("eval is the last 10% of each file's time" in n for n in summary["notes"])
    assert summary["splits"]["eval"]["records"] >= 1


def test_windows():
    ids = np.arange(10)
    assert [w.tolist() for w in windows(ids, 4, 4, 1)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [w.tolist() for w in windows(ids, 4, 4, 3)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [w.tolist() for w in windows(ids, 6, 2, 1)] == [[0, 1, 2, 3, 4, 5], [2, 3, 4, 5, 6, 7], [4, 5, 6, 7, 8, 9]]
    assert [w.tolist() for w in windows(ids[:3], 6, 2, 5)] == [[0, 1, 2]]
    assert windows(ids[:0], 6, 2, 5) == []


def test_cache_rebuild_is_identical_and_safe(midi_dir, tmp_path, built):
    out, first, opts = built
    again = make_dataset(midi_dir, tmp_path / "again", opts)
    assert again["cache"]["misses"] == 0 and again["cache"]["hits"] == 8
    for f in [*(out / "performance").iterdir(), out / "summary.json"]:  # the same bytes, cache or not
        assert f.read_bytes() == (tmp_path / "again" / f.relative_to(out)).read_bytes()
    for f in (out / "notesequences").iterdir():
        assert list(read_records(f)) == list(read_records(tmp_path / "again" / "notesequences" / f.name))
    # Entries are plain arrays (no pickle); a damaged entry is ignored and rebuilt.
    entries = sorted(Path(opts.cache_dir).rglob("*.npz"))
    assert len(entries) == 5
    with np.load(entries[0], allow_pickle=False) as z:
        assert set(z.files) == {"start", "end", "pitch", "velocity", "ns"}
    entries[0].write_bytes(b"garbage")
    third = make_dataset(midi_dir, tmp_path / "third", opts)
    assert third["cache"]["misses"] == 1
    assert third["splits"] == first["splits"]


def test_cli_exit_status(tmp_path, sample_midis):
    from ambientgen.cli import main

    d = tmp_path / "in"
    d.mkdir()
    (d / "bad.mid").write_bytes(b"MThd")
    assert main(["make-dataset", str(d), str(tmp_path / "o1"), "--no-cache"]) == 1  # nothing usable
    shutil.copy(sample_midis[0], d / "good.mid")
    args = [str(d), str(tmp_path / "o2"), "--no-cache", "--no-augment", "--max-events", "256"]
    assert main(["make-dataset", *args]) == 0  # one bad file does not fail the data set
    assert main(["make-dataset", *args, "--strict"]) == 1
    assert main(["make-dataset", str(tmp_path / "missing"), str(tmp_path / "o3")]) == 1
    summary = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert summary["settings"]["max_events"] == 256 and summary["rejected"][0]["file"] == "bad.mid"


def test_parallel_readers_give_the_same_data_set(midi_dir, tmp_path, built):
    import dataclasses

    out, first, opts = built
    par = make_dataset(midi_dir, tmp_path / "par", dataclasses.replace(opts, cache_dir=None, jobs=2))
    assert par["splits"] == first["splits"] and par["rejected"] == first["rejected"]
    for f in [*(out / "performance").iterdir(), out / "summary.json"]:
        assert f.read_bytes() == (tmp_path / "par" / f.relative_to(out)).read_bytes()


def test_file_names_that_are_not_utf8(tmp_path, sample_midis):
    d = tmp_path / "in"
    d.mkdir()
    weird = os.fsdecode(b"caf\xe9 \xff.mid")  # Latin-1 bytes: not valid UTF-8
    shutil.copy(sample_midis[0], d / weird)
    summary = make_dataset(d, tmp_path / "out", DatasetOptions(augment=False))
    assert summary["total"]["files"] == 1 and not summary["rejected"]
    (ns,) = read_note_sequences(tmp_path / "out" / "notesequences" / "train.tfrecord")
    assert ns.filename.startswith("caf")
    json.loads((tmp_path / "out" / "summary.json").read_text())


def test_liked_pieces_always_train_and_count_their_weight(tmp_path, sample_midis):
    """A liked piece (liked_* once normalized, or under liked/) is never held out, and its windows are written
    --liked-weight times; the listener's own music is untouched by the weight."""
    d = tmp_path / "in"
    (d / "liked").mkdir(parents=True)
    shutil.copy(sample_midis[0], d / name_in("train", "mine"))
    shutil.copy(sample_midis[1], d / name_in("eval", "liked_x"))  # the hash alone would hold it out
    shutil.copy(sample_midis[2], d / "liked" / "y.mid")
    opts = {"augment": False, "max_events": 256}
    once = make_dataset(d, tmp_path / "w1", DatasetOptions(**opts))
    thrice = make_dataset(d, tmp_path / "w3", DatasetOptions(**opts, liked_weight=3))
    files1 = {f["file"]: f for f in once["files"]}
    files3 = {f["file"]: f for f in thrice["files"]}
    for name, f in files3.items():
        liked = name.startswith(("liked_", "liked/"))
        assert f["split"] == "train" or not liked, name
        assert f["records"] == files1[name]["records"] * (3 if liked else 1), name
        assert f["weight"] == (3 if liked else 1)
    assert len(list(read_targets(tmp_path / "w3" / "performance" / "train.tfrecord"))) == sum(
        f["records"] for f in files3.values() if f["split"] == "train")
