"""Benchmark `ambientgen render` on one CPU core: speed against real time and against the fluidsynth program.

Music: four whole Bach chorales from music21's corpus, joined into one piece of a few minutes.
Measured in this run, every process pinned to one core (sched_setaffinity, inherited by fluidsynth and ffmpeg):

* baseline: the `fluidsynth` program alone rendering the MIDI to WAV (its own reverb and chorus on);
* synth + effects: FluidSynth in process + the preset's pedalboard chain + the loudness meter (no file output);
* full render: `render_file` end to end (synth, effects, loudness, WAV + MP3 through ffmpeg, piano roll);
* a long loop (default 60 minutes) rendered by the CLI in a subprocess: wall time and peak RSS, against a
  1-minute loop of the same piece (memory must not grow with the loop length).

    .venv/bin/python bench/bench_render.py [--loop-minutes 60] [--presets warm-piano,pad] [--core 0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ambientgen.util import cpu_name

os.environ.setdefault("AMBIENTGEN_NO_PROGRESS", "1")


def make_piece(dest: Path) -> float:
    """Four whole chorales joined into one MIDI file; returns its length in seconds."""
    import note_seq

    from ambientgen.sample_data import score_to_midi

    parts = []
    with tempfile.TemporaryDirectory(prefix="bench-parts-") as tmp:
        for i, work in enumerate(("bach/bwv66.6", "bach/bwv269", "bach/bwv267", "bach/bwv347")):
            mid = score_to_midi(work, Path(tmp) / f"part{i}.mid", program=0, tempo_scale=1.6)
            parts.append(note_seq.midi_file_to_note_sequence(str(mid)))
    ns = note_seq.sequences_lib.concatenate_sequences(parts)
    note_seq.sequence_proto_to_midi_file(ns, str(dest))
    return ns.total_time


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and its waited children)."""
    c0 = os.times()
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    c1 = os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system) + (c1.children_user - c0.children_user) + \
        (c1.children_system - c0.children_system)
    return wall, cpu


def loop_run(midi_dir: Path, out: Path, minutes: float, core: int) -> tuple[float, float]:
    """Render a loop in a fresh interpreter pinned to `core`: (wall s, peak RSS MB of the renderer).

    The peak is the interpreter's own VmHWM (ru_maxrss would include the parent's memory at fork time).

    ffmpeg (the MP3 encoder reading the pipe) is a separate process that streams with a constant few MB.
    """
    code = (
        "import os, sys\n"
        f"os.sched_setaffinity(0, {{{core}}})\n"
        "from ambientgen.cli import main\n"
        f"rc = main(['render', {str(midi_dir)!r}, {str(out)!r}, '--loop-minutes', '{minutes}', '--no-pianoroll'])\n"
        "print([int(x.split()[1]) / 1024 for x in open('/proc/self/status') if x.startswith('VmHWM')][0])\n"
        "sys.exit(rc)\n"
    )
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return wall, float(proc.stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loop-minutes", type=float, default=60.0)
    ap.add_argument("--presets", default="warm-piano,pad,original")
    ap.add_argument("--core", type=int, default=0, help="the CPU core everything runs on")
    args = ap.parse_args()
    os.sched_setaffinity(0, {args.core})

    from ambientgen.music.loudness import LoudnessMeter
    from ambientgen.music.presets import load_presets
    from ambientgen.music.synth import midi_events, synthesize
    from ambientgen.stages.render import RenderOptions, read_midi, render_file
    from ambientgen.util import find_soundfont

    sf2 = find_soundfont()
    presets = load_presets()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores visible, benchmark pinned to core {args.core}")
    print(f"soundfont: {sf2}")
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp_s:
        tmp = Path(tmp_s)
        (tmp / "in").mkdir()
        midi = tmp / "in" / "chorales.mid"
        seconds = make_piece(midi)
        print(f"music: 4 Bach chorales joined, {seconds:.1f} s ({seconds / 60:.1f} min)\n")

        fluidsynth = shutil.which("fluidsynth")
        base_wall, base_cpu = min((timed(lambda: subprocess.run(
            [fluidsynth, "-ni", "-q", "-r", "44100", "-F", str(tmp / "base.wav"), str(sf2), str(midi)],
            check=True, capture_output=True)) for _ in range(2)), key=lambda x: x[0])
        base_rt_cpu = seconds / base_cpu
        print("x real time = music seconds / seconds spent (wall clock, and CPU time of all processes involved);")
        print("the ratio to the fluidsynth CLI is taken on CPU time (fair on a shared machine)\n")
        print(f"{'what':54s} {'wall s':>7s} {'cpu s':>7s} {'xRT wall':>9s} {'xRT cpu':>8s} {'vs CLI':>7s}")

        def row(label: str, wall: float, cpu: float) -> None:
            print(f"{label:54s} {wall:7.2f} {cpu:7.2f} {seconds / wall:8.1f}x {seconds / cpu:7.1f}x "
                  f"{(seconds / cpu) / base_rt_cpu:6.2f}x")

        row("baseline: fluidsynth CLI -> WAV (its reverb+chorus)", base_wall, base_cpu)

        pm = read_midi(midi)
        for name in args.presets.split(","):
            preset = presets[0][name]
            events = midi_events(pm, preset, 44100)

            def synth_fx(events=events, preset=preset) -> None:
                meter = LoudnessMeter(44100)
                for blk in synthesize(events, preset, sf2, 44100):
                    meter.add(blk)

            row(f"synth + effects + loudness [{name}, {len(preset.layers)} layer(s)]", *timed(synth_fx))

            def full(name=name) -> None:
                render_file(midi, tmp / "out" / name, RenderOptions(preset=name), presets)

            row(f"full render: synth..WAV+MP3+PNG [{name}]", *timed(full))

        print()
        short_wall, short_rss = loop_run(tmp / "in", tmp / "loop1", 1, args.core)
        shutil.rmtree(tmp / "loop1")
        long_wall, long_rss = loop_run(tmp / "in", tmp / "loopN", args.loop_minutes, args.core)
        size = sum(p.stat().st_size for p in (tmp / "loopN").iterdir()) / 1e6
        print(f"loop  1 min: {short_wall:6.1f} s wall, peak RSS {short_rss:6.1f} MB")
        print(f"loop {args.loop_minutes:2.0f} min: {long_wall:6.1f} s wall, peak RSS {long_rss:6.1f} MB, "
              f"{size:.0f} MB written (WAV + MP3), "
              f"{args.loop_minutes * 60 / long_wall:.0f}x real time")
        print(f"peak RSS ratio {args.loop_minutes:.0f} min / 1 min: {long_rss / short_rss:.3f} "
              f"(holding the {args.loop_minutes:.0f} min as float32 stereo would need "
              f"{args.loop_minutes * 60 * 44100 * 8 / 2**20:.0f} MB)")


if __name__ == "__main__":
    main()
