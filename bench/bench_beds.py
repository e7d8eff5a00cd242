"""Sound beds under rendered music: how loud each bed is against the music (goal: within 1 LU of the level asked
for), whether a loop seam clicks, and what a bed costs in render time.

A chorale is rendered with the `pad` preset twice, with a bed and without it (FluidSynth and the effects are
deterministic, so the difference is the bed alone); pyloudnorm, an independent BS.1770 meter, measures both.
Then a 10-minute loop with a binaural tone and brown noise under it: the largest sample-to-sample jump within
256 samples of each seam, against the 99.99th percentile of the jumps elsewhere (a click stands far above 1).

  .venv/bin/python bench/bench_beds.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from ambientgen.util import cpu_name


def main() -> int:
    import argparse
    import json

    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    import pyloudnorm
    import soundfile

    from ambientgen.sample_data import make_samples
    from ambientgen.stages.render import RenderOptions, render_file

    sr = 44100
    print(f"machine: {cpu_name()}")
    with tempfile.TemporaryDirectory(prefix="ambientgen-beds-") as tmp:
        tmp = Path(tmp)
        midi = make_samples(tmp / "midi", count=1, seconds=30.0)[0]

        def run(name: str, **kw) -> tuple[np.ndarray, dict, float]:
            t = time.perf_counter()
            render_file(midi, tmp / name, RenderOptions(formats=("wav",), pianoroll=False, preset="pad", **kw))
            took = time.perf_counter() - t
            audio, _ = soundfile.read(str(tmp / f"{name}.wav"), dtype="float64")
            return audio, json.loads((tmp / f"{name}.json").read_text()), took

        meter = pyloudnorm.Meter(sr)
        music, info, plain_s = run("plain", beds=("none",))
        music_lufs = meter.integrated_loudness(music)
        print(f"music: {info['duration_seconds']:.0f} s, {music_lufs:.2f} LUFS, rendered in {plain_s:.2f} s")
        print("\nbed | asked (LU) | measured (LU) | error | render time with bed / without")
        for bed, level in (("pink-noise", -16.0), ("brown-noise", -12.0), ("rain", -10.0), ("binaural", -20.0),
                           ("rain", -20.0)):
            mixed, _, took = run(f"{bed}{level:g}", beds=(f"{bed}:{level:g}",))
            rel = meter.integrated_loudness(mixed - music) - music_lufs
            print(f"{bed} | {level:g} | {rel:.2f} | {rel - level:+.2f} | {took / plain_s:.2f}x")

        audio, info, took = run("loop", beds=("binaural:-12", "brown-noise:-18"), loop_minutes=10.0, fade_in=0.0,
                                fade_out=0.0)
        steps = np.abs(np.diff(audio, axis=0)).max(axis=1)
        seams = [int(round(s * sr)) for s in info["loop_seams_s"]]
        mask = np.ones(len(steps), bool)
        for p in seams:
            mask[max(0, p - 256):p + 256] = False
        ordinary = float(np.quantile(steps[mask], 0.9999))
        worst = max(float(steps[max(0, p - 256):p + 256].max()) for p in seams) / ordinary
        print(f"\n10-minute loop, {len(seams)} seams: largest jump at a seam / ordinary largest jumps = {worst:.2f} "
              f"(a click is far above 1); rendered in {took:.1f} s ({600 / took:.0f}x real time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
