"""Piano rolls (MIDI path, PrettyMIDI, NoteSequence) and training curves, checked on the pixels they draw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ambientgen.music.pianoroll import extract_notes, note_name, save_pianoroll
from ambientgen.report.curves import read_metrics, save_curves, summarize
from ambientgen.util import StageError


def _image(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(str(path))


def _coloured_fraction(img: np.ndarray) -> float:
    """Share of pixels that are saturated colour (the notes / lines), not grey, white or the dark background."""
    rgb = img[..., :3]
    return float(np.mean(rgb.max(axis=2) - rgb.min(axis=2) > 0.25))


def test_pianoroll_from_path_prettymidi_and_notesequence(sample_midis, tmp_path):
    import note_seq
    import pretty_midi

    a = save_pianoroll(sample_midis[0], tmp_path / "a.png")
    pm = pretty_midi.PrettyMIDI(str(sample_midis[0]))
    b = save_pianoroll(pm, tmp_path / "b.png", title=sample_midis[0].name)
    ns = note_seq.midi_file_to_note_sequence(str(sample_midis[0]))
    c = save_pianoroll(ns, tmp_path / "c.png", title=sample_midis[0].name)
    imgs = [_image(p) for p in (a, b, c)]
    assert imgs[0].shape == imgs[1].shape == imgs[2].shape
    assert _coloured_fraction(imgs[0]) > 0.05  # the notes are drawn
    np.testing.assert_allclose(imgs[0], imgs[1], atol=1e-6)  # same notes, same picture
    assert np.mean(np.abs(imgs[0] - imgs[2])) < 0.01  # NoteSequence: same notes (timing rounding aside)
    notes, title = extract_notes(sample_midis[0])
    assert title == sample_midis[0].name and len(notes) == sum(len(i.notes) for i in pm.instruments)


def test_pianoroll_reflects_the_notes(tmp_path):
    """A high and a low note land at the top and bottom of the picture; an empty piece says so."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    inst.notes.append(pretty_midi.Note(velocity=120, pitch=84, start=0.0, end=5.0))
    inst.notes.append(pretty_midi.Note(velocity=120, pitch=48, start=5.0, end=10.0))
    pm.instruments.append(inst)
    img = _image(save_pianoroll(pm, tmp_path / "two.png"))
    coloured = img[..., :3].max(axis=2) - img[..., :3].min(axis=2) > 0.25
    rows, cols = np.nonzero(coloured)
    top = cols[rows < np.median(rows)]
    bottom = cols[rows >= np.median(rows)]
    assert top.mean() < bottom.mean()  # high note first (left, top), low note later (right, bottom)
    empty = pretty_midi.PrettyMIDI()
    img = _image(save_pianoroll(empty, tmp_path / "empty.png"))
    assert _coloured_fraction(img) < 0.001
    assert note_name(60) == "C4" and note_name(69) == "A4"


def test_pianoroll_bad_input(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(StageError) as err:
        save_pianoroll(bad, tmp_path / "bad.png")
    assert err.value.path == str(bad) and "not a usable MIDI" in err.value.cause
    assert not (tmp_path / "bad.png").exists()
    with pytest.raises(TypeError):
        save_pianoroll(42, tmp_path / "x.png")


def _write_metrics(path: Path, rows: int = 200, eval_every: int = 25) -> None:
    lines = ["step,epoch,train_loss,eval_nll,eval_accuracy,lr,tokens_per_s"]
    for s in range(1, rows + 1):
        ev = s % eval_every == 0
        lines.append(f"{s},{s // 100},{4 * np.exp(-s / 80) + 1:.4f},{(4 * np.exp(-s / 80) + 1.2) if ev else ''},"
                     f"{(0.7 - 0.5 * np.exp(-s / 80)) if ev else ''},{1e-3 * min(1.0, s / 20):.6g},{5000 + s}")
    path.write_text("\n".join(lines) + "\n")


def test_curves_from_metrics_csv(tmp_path):
    csv = tmp_path / "metrics.csv"
    _write_metrics(csv)
    series = read_metrics(csv)
    assert len(series["train_loss"]) == 200 and len(series["eval_nll"]) == 8  # empty eval cells skipped
    summary = summarize(series)
    assert summary["last_step"] == 200 and summary["best_eval_accuracy"] == pytest.approx(max(
        v for _, v in series["eval_accuracy"]))
    assert summary["best_eval_nll"] < series["eval_nll"][0][1]
    img = _image(save_curves(csv, tmp_path / "curves.png"))
    assert img.shape[1] == 1100 and _coloured_fraction(img) > 0.005


def test_curves_errors_and_sparse_files(tmp_path):
    with pytest.raises(StageError, match="metrics file not found"):
        save_curves(tmp_path / "none.csv", tmp_path / "x.png")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b\n1,2\n")
    with pytest.raises(StageError, match="no 'step' column"):
        save_curves(wrong, tmp_path / "x.png")
    # only a header, or a file with eval columns missing entirely: still a picture (panels say 'no data')
    header = tmp_path / "header.csv"
    header.write_text("step,epoch,train_loss,eval_nll,eval_accuracy,lr,tokens_per_s\n")
    assert _coloured_fraction(_image(save_curves(header, tmp_path / "h.png"))) < 0.001
    partial = tmp_path / "partial.csv"
    partial.write_text("step,train_loss\n1,3.0\n2,2.5\n3,nan\n4,2.0\n")
    assert [v for _, v in read_metrics(partial)["train_loss"]] == [3.0, 2.5, 2.0]
    save_curves(partial, tmp_path / "p.png")
