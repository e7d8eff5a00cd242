"""train-base on a few corpus files: from scratch, a warm start from the shipped base, and the shipped form."""

from __future__ import annotations

import json

import pytest

from ambientgen.stages.train_base import HEARD_DIR, RUNS_FILE, export_base, train_base
from ambientgen.util import StageError


def test_warm_start_continues_the_shipped_base_and_keeps_its_history(tmp_path):
    out = tmp_path / "base"
    res = train_base(out, steps=2, collections=("bach",), limit=3, batch_size=2, warm_start=True)
    assert res.step == 2 and (out / "init" / "model.safetensors").is_file()
    shipped = json.loads((out / "init" / "config.json").read_text())
    runs, before = json.loads((out / RUNS_FILE).read_text()), len(shipped["runs"])
    assert len(runs) == before + 1 and runs[:before] == shipped["runs"]  # the shipped sessions come first
    assert runs[-1]["to_step"] == 2 and runs[-1]["schedule"].startswith("warm start")
    meta = json.loads((out / "model" / "config.json").read_text())
    assert meta["model"] == shipped["model"]  # the shipped shape, not a new one

    again = train_base(out, steps=3, collections=("bach",), limit=3, batch_size=2)  # resumes, still warm
    assert again.step == 3 and len(json.loads((out / RUNS_FILE).read_text())) == before + 2

    dest = export_base(out, tmp_path / "shipped")
    cfg = json.loads((dest / "config.json").read_text())
    assert len(cfg["runs"]) == before + 2 and cfg["weights_dtype"] == "float16"
    text = (dest / "TRAINING.md").read_text()
    assert "warm start from the shipped base" in text and f"{before + 2} session(s)" in text


def test_heard_pieces_are_transcriptions_of_training_pieces_only(tmp_path):
    """A heard piece is real audio of a corpus piece the base trains on, transcribed by the default backend; a
    rerun makes nothing again; the base's held-out pieces and the demo's chorales are never heard."""
    from ambientgen.sample_data import DEFAULT_WORKS
    from ambientgen.stages.heard_corpus import base_train_piece, build_heard_midi, plan
    from ambientgen.stages.make_dataset import split_of
    from ambientgen.stages.transcribe import DEFAULT_BACKEND

    held = next(f"bach/bwv{n}.mid" for n in range(250, 400) if split_of(f"bach/bwv{n}.mid", 5.0, 0.0) == "eval")
    assert not base_train_piece(held) and not base_train_piece(DEFAULT_WORKS[0] + ".mid")
    assert plan(6)[:3] == plan(3)  # a larger request extends a smaller one
    lines = plan(3, solo=4)
    assert lines[:3] == plan(3) and lines[3:5] == plan(0, solo=2)  # single lines extend the plan, not shift it
    assert all(p[4] and p[3].startswith("solo-") for p in lines[3:]) and not any(p[4] for p in lines[:3])

    heard = tmp_path / "base" / HEARD_DIR
    tally = build_heard_midi(heard, 3, jobs=1)
    sidecars = [json.loads(p.read_text()) for p in heard.glob("*.json") if p.name != "heard.json"]
    assert tally["pieces"] == len(sidecars) >= 2 and tally["notes"] == sum(s["notes"] for s in sidecars)
    for s in sidecars:
        assert s["backend"] == DEFAULT_BACKEND and s["notes"] > 0 and s["rendered"]["notes"] > 0
        assert (heard / s["midi"]).is_file()
    stamp = {p.name: p.stat().st_mtime_ns for p in heard.glob("*.mid")}

    res = train_base(tmp_path / "base", steps=2, batch_size=2, warm_start=True, heard=3, jobs=1)  # nothing made again
    assert res.step == 2 and {p.name: p.stat().st_mtime_ns for p in heard.glob("*.mid")} == stamp
    runs = json.loads((tmp_path / "base" / RUNS_FILE).read_text())
    assert "on the heard corpus (--heard 3)" in runs[-1]["schedule"]
    with pytest.raises(StageError, match="--warm-start"):
        train_base(tmp_path / "cold", steps=1, heard=3)

    dest = export_base(tmp_path / "base", tmp_path / "shipped")
    cfg = json.loads((dest / "config.json").read_text())
    assert cfg["data"]["heard"]["pieces"] == tally["pieces"] and cfg["data"]["pieces"] > 10_000  # the corpus kept
    assert cfg["replay"]["kept"] == cfg["replay"]["windows"] // 2
    text = (dest / "TRAINING.md").read_text()
    assert "## Data of the earlier sessions: the music21 corpus" in text and "palestrina" in text
    assert "the corpus as the transcriber hears it" in text
