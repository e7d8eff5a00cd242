"""The whole chain: every spec of pipelines/ through the local runner, as `make demo` runs it."""

from __future__ import annotations

import json

import pytest
from conftest import PIPELINES_DIR

from ambientgen.demo import run_demo
from ambientgen.local import Store, load_specs


@pytest.mark.slow
def test_demo_runs_every_pipeline_end_to_end_then_nothing_reruns(tmp_path, monkeypatch):
    monkeypatch.setenv("AMBIENTGEN_TRAIN_MINUTES", "0.25")
    requests = tmp_path / "requests"
    requests.mkdir()
    (requests / "short.toml").write_text('name = "short"\nseconds = 5\nprimer_piece = 0\nprimer_seconds = 2\n'
                                         'temperature = 0.9\ntop_p = 0.95\nseed = 3\n')
    run_dir = tmp_path / "run"
    summary = run_demo(run_dir, pieces=2, seconds=8.0, train_minutes=0.25, config_dir=requests)

    jobs = {j["pipeline"]: j for j in summary["jobs"]}
    assert set(jobs) == set(load_specs(PIPELINES_DIR)), "every spec of pipelines/ ran"
    assert all(j["state"] == "JOB_SUCCESS" for j in jobs.values()), jobs

    # Real results in every repo, with provenance back to the inputs.
    store = Store(run_dir / "store")
    assert sorted(store.walk("audio-processed")) == sorted(p.name for p in (run_dir / "audio-processed").iterdir())
    assert all(" " not in name for name in store.walk("audio-processed"))
    midi = sorted((run_dir / "midi").glob("*.mid"))
    assert len(midi) == 2 and all(json.loads(m.with_suffix(".json").read_text())["notes"] > 0 for m in midi)
    assert (run_dir / "transformer-preprocess" / "performance" / "train.tfrecord").stat().st_size > 0
    assert (run_dir / "music-transformer" / "model.safetensors").is_file()
    generated = sorted((run_dir / "music-transformer-generate").glob("short-*/short-*.mid"))
    assert generated
    for kind in ("wav", "mp3", "png"):
        assert sorted((run_dir / "ambient-render").glob(f"short-*/short-*.{kind}")), kind
    chain = {p["repo"] for p in store.inspect_commit("ambient-render")["full_provenance"]}
    assert {"audio-unprocessed", "generation-config", "music-transformer"} <= chain
    report = run_dir / "report.html"
    assert report.is_file() and "short-0" in report.read_text()

    # A second run finds nothing changed: every datum is skipped or no job runs at all.
    again = run_demo(run_dir, pieces=2, seconds=8.0, train_minutes=0.25, config_dir=requests)
    assert all(j["processed"] == 0 for j in again["jobs"]), again["jobs"]
