"""`ambientgen render`: real chorale MIDI through FluidSynth and pedalboard to WAV/MP3, loudness, loops, presets."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile

from ambientgen.cli import main as cli_main
from ambientgen.music.loudness import LoudnessMeter
from ambientgen.music.mixdown import arrange
from ambientgen.music.presets import load_presets
from ambientgen.music.synth import midi_events
from ambientgen.stages.render import RenderOptions, read_midi, render, render_file
from ambientgen.util import StageError


@pytest.fixture(scope="module")
def midi_dir(tmp_path_factory, sample_midis) -> Path:
    """Two chorales, a corrupt file, a MIDI without notes, a sidecar asking for a preset, a stray text file."""
    import pretty_midi

    d = tmp_path_factory.mktemp("gen")
    shutil.copy(sample_midis[0], d / "piece-a.mid")
    shutil.copy(sample_midis[1], d / "piece-b.mid")
    (d / "piece-b.json").write_text(json.dumps({"preset": "bells", "notes": 1}))
    (d / "corrupt.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02garbage that is not a track")
    empty = pretty_midi.PrettyMIDI()
    empty.instruments.append(pretty_midi.Instrument(program=0))
    empty.write(str(d / "empty.mid"))
    (d / "notes.txt").write_text("not music")
    return d


@pytest.fixture(scope="module")
def rendered(midi_dir, tmp_path_factory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp("audio")
    rc = cli_main(["render", str(midi_dir), str(out)])
    return out, rc


def test_render_dir_outputs_and_errors(rendered, caplog):
    out, rc = rendered
    assert rc == 1  # the corrupt file fails the command, after the others were rendered
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"piece-{x}.{s}" for x in "ab" for s in ("wav", "mp3", "png", "json"))
    assert not any(n.startswith("empty") or n.startswith("corrupt") for n in names)
    for stem in ("piece-a", "piece-b"):
        info = json.loads((out / f"{stem}.json").read_text())
        wav, sr = soundfile.read(out / f"{stem}.wav")
        assert sr == 44100 and wav.ndim == 2 and wav.shape[1] == 2
        assert abs(len(wav) / sr - info["duration_seconds"]) < 0.01
        assert 15 < info["duration_seconds"] < 40  # 20 s of music plus release and effects tail
        # loudness as a real meter hears it: the preset's target, within the effect of the fades
        lufs = pyloudnorm.Meter(sr).integrated_loudness(wav)
        assert abs(lufs - info["target_loudness_lufs"]) < 1.0, (stem, lufs)
        assert np.max(np.abs(wav)) <= 10 ** (-1 / 20) + 1e-3  # -1 dBFS ceiling
        assert np.abs(wav[:100]).max() < 1e-3  # starts from silence (fade-in): no click
        assert np.abs(wav[-100:]).max() < 1e-3  # and ends in silence
        assert not np.allclose(wav[:, 0], wav[:, 1])  # stereo: reverb and panning differ per side
        mp3 = soundfile.info(str(out / f"{stem}.mp3"))
        assert mp3.samplerate == 44100 and mp3.channels == 2
        assert abs(mp3.duration - info["duration_seconds"]) < 0.2
        png = (out / f"{stem}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert info["source"] == f"{stem}.mid" and info["notes"] > 50
    assert json.loads((out / "piece-a.json").read_text())["preset"] == "warm-piano"  # the file's default
    b = json.loads((out / "piece-b.json").read_text())
    assert b["preset"] == "bells" and b["generation"] == {"preset": "bells", "notes": 1}  # from its sidecar


def test_bad_and_empty_midi_reported(midi_dir, tmp_path, caplog):
    res = render(midi_dir, tmp_path, RenderOptions(formats=("mp3",), pianoroll=False, preset="original"))
    assert set(res.failed) == {"corrupt.mid"}
    assert "not a usable MIDI file" in res.failed["corrupt.mid"]
    assert res.skipped["empty.mid"] == "no notes" and res.skipped["notes.txt"] == "not a MIDI file"
    assert set(res.done) == {"piece-a.mid", "piece-b.mid"}
    assert any("corrupt.mid" in r.getMessage() and "not a usable MIDI" in r.getMessage() for r in caplog.records)
    assert any("empty.mid: no notes" in r.getMessage() for r in caplog.records)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".json", ".mp3", ".mp3"]


def test_presets_change_the_sound(sample_midis, tmp_path):
    """Different presets give different instruments: the spectra of two renders differ."""
    presets = load_presets()
    centroids = {}
    for name in ("bells", "pad"):
        info = render_file(sample_midis[0], tmp_path / name, RenderOptions(preset=name, formats=("wav",),
                                                                           pianoroll=False), presets)
        assert info is not None and info.preset == name
        x, sr = soundfile.read(tmp_path / f"{name}.wav")
        spec = np.abs(np.fft.rfft(x.mean(axis=1)))
        freqs = np.fft.rfftfreq(len(x), 1 / sr)
        centroids[name] = float((spec * freqs).sum() / spec.sum())
    assert centroids["bells"] > 1.5 * centroids["pad"], centroids


def test_loop_is_long_seamless_and_normalised(sample_midis, tmp_path):
    out = tmp_path / "loop"
    info = render_file(sample_midis[1], out, RenderOptions(loop_minutes=1.5, preset="pad", formats=("wav",),
                                                           pianoroll=False))
    x, sr = soundfile.read(out.with_suffix(".wav"))
    assert len(x) == 90 * sr and info.duration_seconds == 90.0 and info.piece_seconds < 45
    lufs = pyloudnorm.Meter(sr).integrated_loudness(x)
    assert abs(lufs - info.target_loudness_lufs) < 1.0
    # no gap at the seams: one-second levels between the fades stay near the median
    inner = x[5 * sr: -12 * sr]
    level = 10 * np.log10(np.mean(inner[: len(inner) // sr * sr].reshape(-1, sr, 2) ** 2, axis=(1, 2)) + 1e-12)
    assert level.min() > np.median(level) - 12, np.round(level, 1)
    # and no click: the largest sample-to-sample step is that of the music itself
    steps = np.abs(np.diff(inner, axis=0)).max()
    assert steps < 0.25


def test_arrange_crossfades_keep_power(tmp_path):
    """Equal-power crossfades of a noise piece: flat level through every seam, exact length, fades at the ends."""
    sr = 8000
    rng = np.random.default_rng(0)
    piece = (rng.standard_normal((10 * sr, 2)) * 0.1).astype(np.float32)
    path = tmp_path / "noise.wav"
    soundfile.write(path, piece, sr, subtype="FLOAT")
    with soundfile.SoundFile(path) as f:
        blocks = list(arrange(f, len(piece), 61 * sr + 123, crossfade=2 * sr, fade_in=sr, fade_out=sr, gain=2.0,
                              music_end=9 * sr, block=1000))
    y = np.concatenate(blocks)
    assert len(y) == 61 * sr + 123
    rms = np.sqrt(np.mean(y[2 * sr: -2 * sr][: 57 * sr].reshape(-1, sr // 4, 2) ** 2, axis=(1, 2)))
    assert np.all(np.abs(20 * np.log10(rms / 0.2)) < 1.0), np.round(20 * np.log10(rms / 0.2), 2)
    assert np.abs(y[:20]).max() < 0.01 and np.abs(y[-20:]).max() < 0.01
    # without a loop the piece is passed through unchanged (apart from gain and fades)
    with soundfile.SoundFile(path) as f:
        z = np.concatenate(list(arrange(f, len(piece), len(piece), 4000, 0, 0, 1.0)))
    np.testing.assert_allclose(z, piece, atol=1e-7)


@pytest.mark.parametrize("block", [1000, 4410, 44100 * 3 + 7])
def test_streaming_loudness_matches_pyloudnorm(sample_midis, block):
    rng = np.random.default_rng(1)
    sr = 44100
    t = np.arange(int(12.3 * sr)) / sr
    x = np.stack([0.2 * np.sin(2 * np.pi * 220 * t) * (t > 3), 0.05 * rng.standard_normal(len(t))], axis=1)
    meter = LoudnessMeter(sr)
    for i in range(0, len(x), block):
        meter.add(x[i:i + block].astype(np.float32))
    ref = pyloudnorm.Meter(sr).integrated_loudness(x.astype(np.float32).astype(np.float64))
    assert abs(meter.integrated() - ref) < 0.02
    assert meter.frames == len(x)
    silent = LoudnessMeter(sr)
    silent.add(np.zeros((sr, 2), np.float32))
    assert silent.integrated() == float("-inf")


def test_presets_file_errors(tmp_path, sample_midis):
    presets, default = load_presets()
    assert default == "warm-piano" and {"warm-piano", "pad", "choir", "bells", "original"} <= set(presets)
    for p in presets.values():
        assert len(p.board()) == len(p.effects)
    cases = {
        "broken = [": "not a valid TOML",
        "[presets.x]\neffects = [{type = 'Flanger'}]": "type must be one of",
        "[presets.x]\neffects = [{type = 'Reverb', size = 3}]": "effect 1 (Reverb)",
        "[presets.x]\nlayers = [{program = 200}]": "program must be 0-127",
        "[presets.x]\nfade_in = -1": "fade_in must be >= 0",
        "[presets.x]\ncolour = 'blue'": "unknown keys ['colour']",
        "default = 'y'\n[presets.x]": "default preset 'y' is not defined",
    }
    for text, message in cases.items():
        f = tmp_path / "p.toml"
        f.write_text(text)
        with pytest.raises(StageError) as err:
            load_presets(f)
        assert err.value.path == str(f) and message in err.value.cause, (text, err.value.cause)
    # a user's own preset file works end to end through the CLI
    own = tmp_path / "mine.toml"
    own.write_text("[presets.dry]\ndescription = 'dry organ'\nlayers = [{program = 19}]\nloudness = -30\n")
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(sample_midis[2], src / "x.mid")
    assert cli_main(["render", str(src), str(tmp_path / "out"), "--presets", str(own), "--formats", "wav",
                     "--no-pianoroll"]) == 0
    info = json.loads((tmp_path / "out" / "x.json").read_text())
    assert info["preset"] == "dry" and info["target_loudness_lufs"] == -30
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.json", "x.wav"]
    assert cli_main(["render", str(src), str(tmp_path / "o2"), "--preset", "nope"]) == 1


def test_midi_events_layers_and_drums(sample_midis):
    import pretty_midi

    pm = read_midi(sample_midis[0])
    drum = pretty_midi.Instrument(program=0, is_drum=True)
    drum.notes.append(pretty_midi.Note(velocity=100, pitch=36, start=1.0, end=1.1))
    pm.instruments.append(drum)
    presets, _ = load_presets()
    n_pitched = sum(len(i.notes) for i in pm.instruments if not i.is_drum)
    ev = midi_events(pm, presets["warm-piano"], 44100)  # two pitched layers: drums dropped
    assert ev.notes == 2 * n_pitched
    assert {c[2] for c in ev.channels} == {0, 89}
    ev = midi_events(pm, presets["original"], 44100)  # the file's own programs, drums kept on bank 128
    assert ev.notes == n_pitched + 1 and any(c[1] == 128 for c in ev.channels)
    first_on = min(e[0] for e in ev.items if e[2] == "on")
    assert first_on <= int(0.5 * 44100)  # leading silence cut to half a second


def test_render_missing_input(tmp_path, capsys):
    assert cli_main(["render", str(tmp_path / "missing"), str(tmp_path / "out")]) == 1
    assert "missing: input directory does not exist" in capsys.readouterr().err


def _peak_rss_mb(minutes: float, src: Path, out: Path) -> float:
    code = (
        "import sys\n"
        "from ambientgen.cli import main\n"
        f"rc = main(['render', {str(src)!r}, {str(out)!r}, '--loop-minutes', '{minutes}', '--no-pianoroll'])\n"
        "print([int(x.split()[1]) / 1024 for x in open('/proc/self/status') if x.startswith('VmHWM')][0])\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"AMBIENTGEN_NO_PROGRESS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return float(proc.stdout.strip().splitlines()[-1])


def test_long_loop_memory_is_bounded(sample_midis, tmp_path):
    """Memory does not grow with the loop length: 5 minutes (106 MB as float samples) costs what 1 minute does."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(sample_midis[3], src / "s.mid")
    short = _peak_rss_mb(1, src, tmp_path / "o1")
    long = _peak_rss_mb(5, src, tmp_path / "o5")
    assert soundfile.info(str(tmp_path / "o5" / "s.wav")).duration == 300.0
    assert abs(soundfile.info(str(tmp_path / "o5" / "s.mp3")).duration - 300.0) < 0.2
    assert long - short < 40, (short, long)
