"""train-base on a few corpus files: from scratch, a warm start from the shipped base, and the shipped form."""

from __future__ import annotations

import json

from ambientgen.stages.train_base import RUNS_FILE, export_base, train_base


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
