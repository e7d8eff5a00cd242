"""`ambientgen evaluate-transcriber`: real held-out renderings, real transcribers, scores that mean something."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_evaluate_transcriber_scores_held_out_pieces(tmp_path):
    out = tmp_path / "of.json"
    data = tmp_path / "data"
    r = subprocess.run([sys.executable, "-m", "ambientgen", "evaluate-transcriber", "--pieces", "2", "--seconds", "8",
                        "--data", str(data), "--json", str(out), "--backend", "onsets-frames"],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "AMBIENTGEN_NO_PROGRESS": "1"})
    assert r.returncode == 0, r.stderr
    assert "onset only" in r.stdout and "backend:" in r.stdout
    res = json.loads(out.read_text())
    assert res["pieces"] == 2 and len(res["per_piece"]) == 2
    for row in res["per_piece"]:
        assert row["ref_notes"] > 10 and row["est_notes"] > 0
        assert 0.3 < row["f1"] <= 1.0  # the shipped checkpoint on its own kind of audio: far above chance
        assert row["f1_offset"] <= row["f1"] + 1e-9  # onset + offset can only be stricter
    # the renderings are kept and reused: a second backend scores the very same audio
    wavs = sorted(p.name for p in data.glob("*.wav"))
    assert len(wavs) == 2
    from ambientgen.stages.evaluate_transcriber import evaluate

    bp = evaluate("basic-pitch", data_dir=data, pieces=2, seconds=8)
    assert sorted(p["piece"] + ".wav" for p in bp["per_piece"]) == wavs
    assert all(0 < p["f1"] <= 1 for p in bp["per_piece"])
