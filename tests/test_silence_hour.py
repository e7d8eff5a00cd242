"""An hour of silence (a sleep recording's pauses, taken to the extreme) goes through the audio stages."""

from __future__ import annotations

import subprocess

import note_seq
import pytest
import soundfile

from ambientgen.stages.mp3_to_wav import convert
from ambientgen.stages.transcribe import transcribe_dir


@pytest.mark.slow
def test_an_hour_of_silence_gives_an_empty_valid_midi(tmp_path, caplog):
    src = tmp_path / "in"
    src.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "3600",
                    "-b:a", "8k", str(src / "silence.mp3")], check=True)
    wav_dir, midi_dir = tmp_path / "wav", tmp_path / "midi"
    assert not convert(src, wav_dir).failed
    assert soundfile.info(str(wav_dir / "silence.wav")).duration == pytest.approx(3600, abs=1)

    res = transcribe_dir(wav_dir, midi_dir, backend="basic-pitch")
    assert not res.failed and res.done["silence.wav"]["notes"] == 0
    # the model never runs on silence: every one of the hour's ~1,800 two-second windows is skipped (its speed is
    # measured in bench/bench_transcribe.py, not here)
    windows = res.done["silence.wav"]["model_windows"]
    assert windows["run"] == 0 and windows["silent"] > 1500
    assert res.done["silence.wav"]["duration_s"] == pytest.approx(3600, abs=1)
    assert len(note_seq.midi_file_to_note_sequence(str(midi_dir / "silence.mid")).notes) == 0
    assert "no notes found" in caplog.text
