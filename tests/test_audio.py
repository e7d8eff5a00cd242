"""mp3-to-wav: real MP3s rendered from Bach chorales, plus the bad inputs a user's folder really holds."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ambientgen.cli import main as cli_main
from ambientgen.stages.mp3_to_wav import convert, decode_to_wav


def _make_bad_folder(root: Path, good_mp3: Path) -> Path:
    """A folder with one good MP3 and every kind of bad or odd input."""
    src = root / "in"
    src.mkdir()
    shutil.copy(good_mp3, src / "good.mp3")
    shutil.copy(good_mp3, src / "Forêt n°1 (live) – ça.mp3")  # weird but valid name
    (src / "empty.mp3").write_bytes(b"")
    (src / "random.mp3").write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    data = good_mp3.read_bytes()
    (src / "truncated.mp3").write_bytes(data[: len(data) // 3])
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(good_mp3), "-f", "wav", str(src / "disguised.mp3")],
                   check=True)
    (src / "notes.txt").write_text("not audio\n")
    return src


def test_mp3_to_wav_mono_16k_same_duration(sample_mp3s, tmp_path):
    src = sample_mp3s[0].parent
    res = convert(src, tmp_path / "out")
    assert not res.failed
    midis = sorted(p.name for p in src.glob("*.mid"))  # the scores beside the MP3s pass through as they are
    assert midis and sorted(res.done) == sorted([p.name for p in sample_mp3s] + midis)
    for name in midis:
        assert res.done[name] == name and (tmp_path / "out" / name).read_bytes() == (src / name).read_bytes()
    for mp3 in sample_mp3s:
        wav = tmp_path / "out" / (mp3.stem + ".wav")
        info = soundfile.info(str(wav))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        expected = float(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                                         str(mp3)], capture_output=True, text=True, check=True).stdout)
        assert info.duration == pytest.approx(expected, abs=0.1)
        audio, _ = soundfile.read(str(wav))
        assert np.sqrt(np.mean(audio**2)) > 0.01  # real music, not silence


def test_keep_rate_keeps_source_rate(sample_mp3s, tmp_path):
    code = cli_main(["mp3-to-wav", str(sample_mp3s[0].parent), str(tmp_path / "out"), "--keep-rate"])
    assert code == 0
    info = soundfile.info(str(tmp_path / "out" / (sample_mp3s[0].stem + ".wav")))
    assert (info.samplerate, info.channels) == (44100, 1)


def test_bad_files_fail_alone_and_exit_1(sample_mp3s, tmp_path, caplog):
    src = _make_bad_folder(tmp_path, sample_mp3s[0])
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        code = cli_main(["mp3-to-wav", str(src), str(out)])
    assert code == 1
    produced = sorted(p.name for p in out.iterdir())
    assert produced == sorted(["good.wav", "Forêt n°1 (live) – ça.wav", "disguised.wav"])
    text = caplog.text
    assert "empty.mp3: empty file" in text
    assert "random.mp3: not a readable audio file" in text
    assert "truncated.mp3: truncated" in text
    assert "disguised.mp3: content is WAV" in text and "decoded by content" in text
    assert "notes.txt: not an audio file" in text
    # the disguised WAV decodes to the same audio as the real MP3
    a, _ = soundfile.read(str(out / "disguised.wav"))
    b, _ = soundfile.read(str(out / "good.wav"))
    n = min(len(a), len(b))
    assert abs(len(a) - len(b)) < 16000 * 0.1
    assert np.corrcoef(a[:n], b[:n])[0, 1] > 0.9
    assert not list(out.glob(".*"))  # no half-written temporary files left behind


def test_tolerate_errors_keeps_decodable_part(sample_mp3s, tmp_path):
    data = sample_mp3s[0].read_bytes()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cut.mp3").write_bytes(data[: len(data) // 2])
    res = convert(tmp_path / "in", tmp_path / "out", tolerate_errors=True)
    assert not res.failed
    dur = soundfile.info(str(tmp_path / "out" / "cut.wav")).duration
    assert 2.0 < dur < 11.0


def test_silence_and_other_formats(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo", "-t", "3",
                    str(src / "silence.mp3")], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "2",
                    str(src / "tone.flac")], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050", "-t", "2",
                    "-c:a", "libvorbis", str(src / "tone2.ogg")], check=True)
    res = convert(src, tmp_path / "out")
    assert not res.failed and len(res.done) == 3
    silence, sr = soundfile.read(str(tmp_path / "out" / "silence.wav"))
    assert sr == 16000 and silence.size > 2.5 * sr and np.abs(silence).max() < 1e-3
    tone, sr = soundfile.read(str(tmp_path / "out" / "tone.wav"))
    spectrum = np.abs(np.fft.rfft(tone))
    assert np.fft.rfftfreq(len(tone), 1 / sr)[spectrum.argmax()] == pytest.approx(440, abs=2)


@pytest.mark.parametrize("fmt, args", [("wav", []), ("flac", []), ("ogg", ["-c:a", "libvorbis"])])
def test_other_formats_disguised_as_mp3_are_decoded_with_a_warning(tmp_path, caplog, fmt, args):
    src = tmp_path / "in"
    src.mkdir()
    # a 440 Hz tone written as WAV/FLAC/OGG, then named .mp3
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050", "-t", "2",
                    *args, "-f", fmt, str(src / "disguised.mp3")], check=True)
    res = convert(src, tmp_path / "out")
    assert not res.failed and res.done == {"disguised.mp3": "disguised.wav"}
    warning = next(r.getMessage() for r in caplog.records if "disguised.mp3" in r.getMessage())
    assert "not MP3; decoded by content" in warning and fmt.upper()[:3] in warning.upper()
    tone, sr = soundfile.read(str(tmp_path / "out" / "disguised.wav"))
    spectrum = np.abs(np.fft.rfft(tone))
    assert np.fft.rfftfreq(len(tone), 1 / sr)[spectrum.argmax()] == pytest.approx(440, abs=2)


def test_same_stem_collision_is_an_error(sample_mp3s, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(sample_mp3s[0], src / "a.mp3")
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(sample_mp3s[0]), str(src / "a.flac")], check=True)
    res = convert(src, tmp_path / "out")
    assert list(res.done) == ["a.flac"] and "a.mp3" in res.failed
    assert "already written from a.flac" in res.failed["a.mp3"]


def test_missing_input_dir_is_a_clear_error(tmp_path, capsys):
    assert cli_main(["mp3-to-wav", str(tmp_path / "nope"), str(tmp_path / "out")]) == 1
    assert "input directory does not exist" in capsys.readouterr().err


def test_decode_to_wav_names_file_in_error(tmp_path):
    bad = tmp_path / "x.mp3"
    bad.write_bytes(b"ID3" + b"\x00" * 100)
    from ambientgen.util import StageError

    with pytest.raises(StageError) as err:
        decode_to_wav(bad, tmp_path / "x.wav")
    assert str(bad) in str(err.value)
    assert not (tmp_path / "x.wav").exists()
