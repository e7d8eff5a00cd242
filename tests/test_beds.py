"""Sound beds and stereo motion: real chorales rendered by FluidSynth with rain, noise and a binaural beat under them,
measured with pyloudnorm (an independent BS.1770 meter) and checked sample by sample for clicks at loop seams."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile

from ambientgen.music.beds import (
    BedSpec,
    Binaural,
    Mixer,
    MotionSpec,
    make_bed,
    parse_bed,
    parse_bed_option,
    parse_bed_options,
)
from ambientgen.music.presets import load_presets
from ambientgen.stages.render import RenderOptions, render_file
from ambientgen.util import StageError

SR = 22050


def loudness(x: np.ndarray, sr: int = SR) -> float:
    return float(pyloudnorm.Meter(sr).integrated_loudness(x))


def max_step(x: np.ndarray) -> np.ndarray:
    """Largest sample-to-sample jump of either channel at each position."""
    return np.abs(np.diff(x, axis=0)).max(axis=1)


def clicks_at(x: np.ndarray, positions: list[int], sr: int = SR, radius: int = 256) -> list[float]:
    """Jump at each position relative to the signal's ordinary largest jumps (99.99th percentile elsewhere):
    a value well above 1 is a click."""
    steps = max_step(x)
    mask = np.ones(len(steps), bool)
    for p in positions:
        mask[max(0, p - radius):p + radius] = False
    ordinary = float(np.quantile(steps[mask], 0.9999))
    return [float(steps[max(0, p - radius):p + radius].max()) / ordinary for p in positions]


@pytest.fixture(scope="module")
def chorale(tmp_path_factory, sample_midis) -> Path:
    d = tmp_path_factory.mktemp("beds")
    return Path(shutil.copy(sample_midis[0], d / "night.mid"))


def render(midi: Path, out: Path, **kw) -> tuple[np.ndarray, dict]:
    opts = RenderOptions(sample_rate=SR, formats=("wav",), pianoroll=False, **kw)
    assert render_file(midi, out, opts) is not None
    audio, sr = soundfile.read(str(out.with_suffix(".wav")), dtype="float64")
    assert sr == SR
    return audio, json.loads(out.with_suffix(".json").read_text())


@pytest.mark.parametrize("bed, level", [("rain", -10.0), ("pink-noise", -16.0), ("brown-noise", -12.0),
                                        ("binaural", -20.0)])
def test_bed_sits_at_its_level_under_the_music(chorale, tmp_path, bed, level):
    """The bed alone (rendering with it minus rendering without it: FluidSynth is deterministic) measures within
    1 LU of the level asked for, relative to the music alone."""
    music, _ = render(chorale, tmp_path / "plain", preset="pad", beds=("none",))
    mixed, info = render(chorale, tmp_path / "bed", preset="pad", beds=(f"{bed}:{level}",))
    assert mixed.shape == music.shape
    bed_only = mixed - music
    assert np.abs(bed_only).max() > 1e-3, "the bed is silent"
    relative = loudness(bed_only) - loudness(music)
    assert abs(relative - level) <= 1.0, f"{bed}: {relative:.2f} LU relative to the music, asked {level}"
    assert info["beds"][0]["type"] == bed and info["beds"][0]["level_lu"] == level


def test_loop_seams_have_no_click_with_a_bed(chorale, tmp_path):
    """In loop mode the music crossfades into its next repetition while a binaural tone and brown noise run on
    unbroken: no jump at any seam stands out from the signal's ordinary jumps. The same check finds the click
    of a bed that restarts at a seam."""
    audio, info = render(chorale, tmp_path / "loop", preset="pad", beds=("binaural:-12", "brown-noise:-18"),
                         loop_minutes=1.0, fade_in=0.0, fade_out=0.0)
    seams = [int(round(s * SR)) for s in info["loop_seams_s"]]
    assert len(seams) >= 2 and abs(len(audio) / SR - 60.0) < 0.01
    assert max(clicks_at(audio, seams)) < 1.5

    # a bed that restarted at each seam would click: the checker sees it
    tone = Binaural(0, SR, 180.0, 6.0)
    restarted = np.concatenate([tone.next(seams[0]), Binaural(0, SR, 180.0, 6.0).next(SR * 2)])
    assert clicks_at(restarted, [seams[0]])[0] > 3.0


def test_bed_streams_are_seamless_and_repeatable():
    """A bed made in blocks of any size equals the same bed made at once; the same seed gives the same bed."""
    for kind in ("pink-noise", "brown-noise", "rain", "binaural"):
        spec = parse_bed({"type": kind})
        whole = make_bed(spec, 3, SR).next(20_000)
        gen = make_bed(spec, 3, SR)
        parts = np.concatenate([gen.next(n) for n in (1, 999, 4096, 14_904)])
        np.testing.assert_allclose(parts, whole, atol=1e-9, err_msg=kind)
        assert not np.allclose(make_bed(spec, 4, SR).next(2000), whole[:2000]) or kind == "binaural"


def test_auto_pan_moves_the_music_between_the_ears():
    """Auto-pan with a 4 s period: the left/right balance swings with that period; the centre keeps its level."""
    mixer = Mixer([], [MotionSpec("auto-pan", {"period_s": 4.0, "depth": 0.8})], -20.0, SR)
    block = np.full((SR * 4, 2), 0.1, dtype=np.float32)
    mixer(0, block)
    quarter = SR  # 1 s: the pan is fully right; 3 s: fully left
    assert block[quarter, 1] > 2 * block[quarter, 0]
    assert block[3 * quarter, 0] > 2 * block[3 * quarter, 1]
    np.testing.assert_allclose(block[0], [0.1, 0.1], rtol=1e-5)
    power = block[:, 0].astype(float) ** 2 + block[:, 1].astype(float) ** 2
    assert power.std() / power.mean() < 0.05  # equal-power panning


def test_bed_options_and_presets_are_checked(tmp_path):
    assert parse_bed_option("rain:-9").level == -9.0
    assert parse_bed_options(["none"]) == [] and len(parse_bed_options(["rain", "binaural:-20"])) == 2
    with pytest.raises(ValueError):
        parse_bed_options(["none", "rain"])  # "none" means no bed at all, never one among others
    assert parse_bed_option("pink-noise") == BedSpec("pink-noise", -14.0, {})
    for bad in ("thunder", "rain:loud", "rain:-90"):
        with pytest.raises(ValueError):
            parse_bed_option(bad)
    presets, _ = load_presets()
    assert not any(b.type == "binaural" for b in presets[_].beds), "the default preset has no binaural beat"
    assert presets["rain-pad"].beds[0].type == "rain" and presets["rain-pad"].motion[0].type == "stereo-drift"
    bad = tmp_path / "p.toml"
    bad.write_text('[presets.x]\nbeds = [{ type = "binaural", beat_hz = 400 }]\n')
    with pytest.raises(StageError, match=r"preset 'x': beds 1: binaural: beat_hz must be a number from 0.5 to 40"):
        load_presets(bad)
    bad.write_text('[presets.x]\nmotion = [{ type = "auto-pan", speed = 2 }]\n')
    with pytest.raises(StageError, match=r"unknown keys \['speed'\]"):
        load_presets(bad)
