"""The faithful Magenta image: pipeline spec validity and the entry script's stage contract.

Magenta itself (TensorFlow 2.9, Python 3.8) is not installed here, so the entry script runs against a stand-in
`onsets_frames_transcription_transcribe` that behaves like Magenta's (writes FILE.wav.midi beside FILE.wav).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import REPO_ROOT, SCHEMA_PATH

IMAGE_DIR = REPO_ROOT / "images" / "transcribe-onsets-frames"
SPEC = REPO_ROOT / "pipelines" / "alternatives" / "midi-onsets-frames.json"


def test_alternative_spec_is_schema_valid_and_replaces_midi():
    jsonschema = pytest.importorskip("jsonschema")
    spec = json.loads(SPEC.read_text())
    if SCHEMA_PATH.is_file():
        jsonschema.Draft4Validator(json.loads(SCHEMA_PATH.read_text())).validate(spec)
    default = json.loads((REPO_ROOT / "pipelines" / "midi.json").read_text())
    assert spec["pipeline"]["name"] == default["pipeline"]["name"] == "midi"
    assert spec["input"] == default["input"]
    assert spec["resourceLimits"]["gpu"] == {"type": "nvidia.com/gpu", "number": 1}
    assert spec["transform"]["cmd"][-2:] == ["/pfs/audio-processed-wav", "/pfs/out"]
    assert not (REPO_ROOT / "pipelines" / "midi-onsets-frames.json").exists()  # not loaded by default


def test_dockerfile_pins_magenta_and_checks_the_checkpoint():
    text = (IMAGE_DIR / "Dockerfile").read_text()
    assert "python:3.8-slim" in text and '"magenta==2.1.4"' in text and '"tensorflow==2.9.1"' in text
    assert "magentadata/models/onsets_frames_transcription/maestro_checkpoint.zip" in text
    assert "sha256sum -c" in text


FAKE_MAGENTA = """#!/usr/bin/env bash
# behaves like magenta's script: FILE.wav -> FILE.wav.midi beside it; fails on files named *bad*
for a in "$@"; do case "$a" in --*) ;; *bad*) echo "Traceback: cannot decode" >&2; exit 1 ;;
  *) printf 'MThd%s' "$(basename "$a")" > "$a.midi" ;; esac; done
"""


def test_entry_script_transcribes_each_wav_and_reports_failures(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "onsets_frames_transcription_transcribe"
    fake.write_text(FAKE_MAGENTA)
    fake.chmod(0o755)
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for name in ("a.wav", "b.WAV", "sub/c.wav", "bad.wav", "notes.txt", ".hidden.wav"):
        (src / name).write_bytes(b"RIFF")
    out = tmp_path / "out"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MODEL_DIR": str(tmp_path)}
    proc = subprocess.run(["bash", str(IMAGE_DIR / "transcribe-dir.sh"), str(src), str(out)], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 1  # bad.wav failed, the others were still done
    assert "bad.wav: transcription failed" in proc.stderr
    made = sorted(p.name for p in out.iterdir())
    assert made == ["a.mid", "b.mid", "sub_c.mid"]
    # each output holds its own file's transcription (not the first file's)
    assert (out / "b.mid").read_text() == "MThdb.wav" and (out / "sub_c.mid").read_text() == "MThdsub_c.wav"
    assert sorted(p.name for p in src.rglob("*")) == sorted(
        ["a.wav", "b.WAV", "sub", "c.wav", "bad.wav", "notes.txt", ".hidden.wav"])  # input untouched


def test_entry_script_rejects_missing_input(tmp_path):
    proc = subprocess.run(["bash", str(IMAGE_DIR / "transcribe-dir.sh"), str(tmp_path / "nope"), str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "does not exist" in proc.stderr

