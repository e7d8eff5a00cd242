"""util.for_each_file: the one per-file loop of normalize, mp3-to-wav, transcribe and render."""

from __future__ import annotations

import logging

import pytest

from ambientgen.util import FileResults, SkipFile, StageError, for_each_file


def test_each_file_alone_fails_skips_or_succeeds(tmp_path, caplog):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for name in ("a.mid", "a.midi", "b.mid", "d.mid", "sub/e.mid", "notes.txt", "a.json", ".hidden.mid"):
        (src / name).write_text(name)
    prepared: list[list[str]] = []

    def step(path, rel):
        if rel == "b.mid":
            raise StageError(path, "broken")
        if rel == "d.mid":
            raise RuntimeError("libsndfile said no")
        if rel == "sub/e.mid":
            raise SkipFile("no notes")
        return rel.upper()

    res = for_each_file(src, {".mid", ".midi"}, step, what="t", kind="a MIDI file", ignore={".json"},
                        output_name=lambda rel: rel.rsplit(".", 1)[0],
                        prepare=lambda paths: prepared.append(sorted(p.name for p in paths)))
    assert res.done == {"a.mid": "A.MID"}
    assert res.failed["b.mid"] == "broken" and res.failed["d.mid"] == "libsndfile said no"
    assert "output a already written from a.mid" in res.failed["a.midi"]  # nothing is overwritten
    assert res.skipped == {"notes.txt": "not a MIDI file", "sub/e.mid": "no notes"}  # JSON and hidden: silent
    assert prepared == [["a.mid", "a.midi", "b.mid", "d.mid", "e.mid"]]
    with caplog.at_level(logging.ERROR):
        assert res.exit_status("MIDI files") == 1
    assert "3 of 4 MIDI files failed: a.midi, b.mid, d.mid" in caplog.text
    assert FileResults(done={"x": 1}).exit_status() == 0


def test_a_missing_input_folder_is_an_error_naming_it(tmp_path):
    with pytest.raises(StageError, match="input directory does not exist"):
        for_each_file(tmp_path / "nope", {".mid"}, lambda p, r: None, what="t")
