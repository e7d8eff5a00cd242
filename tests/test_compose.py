"""`ambientgen compose`: the one command, on real MP3s through the real chain, run again after adding a file and
again with a liked piece."""

from __future__ import annotations

import json
import shutil

import pytest

from ambientgen.cli import main as cli
from ambientgen.compose import ComposeOptions, compose
from ambientgen.local import Store
from ambientgen.music.midi_io import load_midi
from ambientgen.util import StageError

pytestmark = pytest.mark.slow


def jobs_of(summary: dict) -> dict[str, dict]:
    return {j["pipeline"]: j for j in summary["jobs"]}


def test_compose_runs_the_chain_and_reruns_only_what_changed(sample_mp3s, tmp_path):
    music, out = tmp_path / "My Music", tmp_path / "results"
    music.mkdir()
    shutil.copy(sample_mp3s[0], music / "first night.mp3")
    (music / "cover.jpg").write_bytes(b"\xff\xd8 not music")
    opts = ComposeOptions(train_minutes=0.15, pieces=1, seconds=6.0, preset="night-piano", beds=["rain:-14"])

    first = compose(music, out, opts)
    jobs = jobs_of(first)
    assert all(j["state"] == "JOB_SUCCESS" for j in jobs.values()), jobs
    piece = out / "ambient-render" / "compose-0" / "compose-0"
    assert piece.with_suffix(".mp3").stat().st_size > 0 and piece.with_suffix(".png").is_file()
    info = json.loads(piece.with_suffix(".json").read_text())
    assert info["preset"] == "night-piano" and info["beds"][0]["type"] == "rain"  # the options reached render
    # the render pipeline made one datum per piece folder, each holding the MIDI and its sidecar
    render_inputs = [d["inputs"] for d in jobs["ambient-render"]["datums"]]
    assert render_inputs == [["music-transformer-generate:/compose-0/compose-0.json",
                              "music-transformer-generate:/compose-0/compose-0.mid"]]
    report = out / "report.html"
    assert "compose-0" in report.read_text() and "first night" in report.read_text()

    # one more MP3: only its datums run in the per-file stages; training and generation follow the new data
    shutil.copy(sample_mp3s[1], music / "second night.mp3")
    second = compose(music, out, opts)
    jobs = jobs_of(second)
    for stage, before in (("audio-processed", 2), ("audio-processed-wav", 1), ("midi", 1)):  # + cover.jpg's datum
        assert (jobs[stage]["processed"], jobs[stage]["skipped"]) == (1, before), (stage, jobs[stage])
        new = [d["inputs"] for d in jobs[stage]["datums"] if d["state"] == "success"]
        assert len(new) == 1 and "second" in new[0][0], new
    assert jobs["music-transformer"]["state"] == "JOB_SUCCESS"
    assert len(Store(out / "store").walk("audio-unprocessed")) == 3  # the folder mirrored as one commit
    assert len(list((out / "midi").glob("*.mid"))) == 2
    assert "second night" in report.read_text()

    # a liked piece: its variations are generated and rendered; nothing upstream runs again
    third = compose(music, out, ComposeOptions(**{**opts.__dict__, "more_like": ["compose-0"]}))
    jobs = jobs_of(third)
    for stage in ("audio-processed", "audio-processed-wav", "midi", "transformer-preprocess", "music-transformer"):
        assert jobs[stage]["state"] == "UP_TO_DATE", (stage, jobs[stage])
    gen = jobs["music-transformer-generate"]
    assert (gen["processed"], gen["skipped"]) == (1, 1), gen
    variation = out / "music-transformer-generate" / "more-like-compose-0-0" / "more-like-compose-0-0.json"
    side = json.loads(variation.read_text())
    assert side["primer"]["source"] == "midi:compose-0.mid" and side["request"]["include_primer"] is False
    assert (out / "ambient-render" / "more-like-compose-0-0" / "more-like-compose-0-0.mp3").is_file()
    assert (out / "liked" / "compose-0.mid").is_file()
    # the variations go on from inside the liked piece: its first three quarters prime them
    liked_s = load_midi(out / "liked" / "compose-0.mid").total_time
    assert side["request"]["primer_seconds"] == pytest.approx(0.75 * liked_s, abs=1e-3)
    page = report.read_text()
    assert "more-like-compose-0-0" in page and "--more-like more-like-compose-0-0" in page

    # liked pieces join the training, weighted; the listener's MP3s are not processed again
    fourth = compose(music, out, ComposeOptions(**{**opts.__dict__, "learn_from_liked": True}))
    jobs = jobs_of(fourth)
    assert (jobs["midi"]["processed"], jobs["midi"]["skipped"]) == (1, 2), jobs["midi"]
    taken = [m for m in (out / "midi").glob("liked_compose-0*.mid")]
    assert len(taken) == 1 and json.loads(taken[0].with_suffix(".json").read_text())["backend"] == "midi"
    files = json.loads((out / "transformer-preprocess" / "summary.json").read_text())["files"]
    liked = [f for f in files if f["file"] == taken[0].name]
    assert liked and liked[0]["weight"] == 3 and liked[0]["split"] == "train"
    assert jobs["music-transformer"]["state"] == "JOB_SUCCESS"
    assert json.loads((out / "run.json").read_text())["options"]["learn_from_liked"] is True


def test_compose_refuses_what_it_cannot_use(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no music here")
    with pytest.raises(StageError, match="no audio files"):
        compose(empty, tmp_path / "out")
    with pytest.raises(StageError, match="must not be inside the music folder"):
        (empty / "a.mp3").write_bytes(b"ID3")
        compose(empty, empty / "results")
    assert cli(["compose", str(empty), "-o", str(tmp_path / "o"), "--preset", "no-such-preset"]) == 1
    assert "no-such-preset" in capsys.readouterr().err
    assert cli(["compose", str(empty), "-o", str(tmp_path / "o"), "--more-like", "nothing-0"]) == 1
    assert "nothing-0: not a MIDI file, nor a piece generated" in capsys.readouterr().err
