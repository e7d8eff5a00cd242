"""Benchmark of the audio stages: transcription speed and memory (accuracy per timbre family is
bench/bench_transcription_families.py).

  .venv/bin/python bench/bench_transcribe.py                       # the default backend
  .venv/bin/python bench/bench_transcribe.py --backend basic-pitch --only speed

Speed: end to end (MP3 -> WAV -> MIDI) after a warm-up, model loaded once, against basic-pitch's own
`predict()` on the same audio in the same run.

Memory: peak RSS of `ambientgen mp3-to-wav` and `ambientgen transcribe` on a one-hour MP3, each in its own
subprocess, against pydub's AudioSegment (whole-file decoding) on the same MP3.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("AMBIENTGEN_NO_PROGRESS", "1")

from ambientgen.music import basic_pitch_onnx as bpo  # noqa: E402
from ambientgen.music import transcription as tr  # noqa: E402
from ambientgen.sample_data import render_midi, score_to_midi  # noqa: E402
from ambientgen.stages.mp3_to_wav import decode_to_wav  # noqa: E402

# Pieces of the long MP3: four works with four General MIDI programs (piano, e-piano, strings, warm pad).
LONG_WORKS = ("bach/bwv281", "bach/bwv10.7", "bach/bwv101.7", "bach/bwv248.23-2")
LONG_PROGRAMS = (0, 4, 48, 89)


def log(msg: str) -> None:
    print(msg, flush=True)


def make_piece(work: str, program: int, cache: Path, seconds: float = 20.0) -> tuple[Path, Path]:
    """(reference MIDI, MP3) of one corpus work played with one GM program, cached."""
    name = f"{work.replace('/', '_').replace('.', '_')}_p{program}"
    mid, mp3 = cache / f"{name}.mid", cache / f"{name}.mp3"
    if not mp3.exists():
        score_to_midi(work, mid, program=program, max_seconds=seconds)
        render_midi(mid, mp3)
    return mid, mp3


def long_mp3(cache: Path, minutes: float) -> Path:
    """A long MP3: four held-out pieces with varied programs joined once, then looped (MP3 frames copied)."""
    dest = cache / f"long_{minutes:g}min.mp3"
    if dest.exists():
        return dest
    parts = [make_piece(w, p, cache)[1] for w, p in zip(LONG_WORKS, LONG_PROGRAMS)]
    joined = cache / "joined.mp3"
    if not joined.exists():
        subprocess.run(["ffmpeg", "-v", "error", "-y", *sum([["-i", str(p)] for p in parts], []), "-filter_complex",
                        f"concat=n={len(parts)}:v=0:a=1", "-ac", "2", "-b:a", "128k", str(joined)], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(joined), "-t", str(minutes * 60),
                    "-c", "copy", str(dest)], check=True)
    return dest


def _cpu() -> float:
    """CPU seconds used so far by this process and its finished children (ffmpeg)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def speed(cache: Path, minutes: float, backend: str) -> dict:
    """Wall-clock and CPU time; on a shared machine the CPU time shows what an idle 2-core machine would do."""
    import contextlib
    import io

    with bpo._quiet_import():
        from basic_pitch.inference import Model, predict

    from ambientgen.stages.transcribe import make_transcriber

    mp3 = long_mp3(cache, minutes)
    ours_tr = make_transcriber(backend)
    bp = bpo.BasicPitchTranscriber()
    with tempfile.TemporaryDirectory() as tmp:
        warm = make_piece(LONG_WORKS[0], 0, cache)[1]
        decode_to_wav(warm, Path(tmp, "warm.wav"))
        ours_tr.transcribe_file(Path(tmp, "warm.wav"))  # warm-up
        c0, t0 = _cpu(), time.perf_counter()
        wav = Path(tmp, "long.wav")
        info = decode_to_wav(mp3, wav)
        t1 = time.perf_counter()
        ns = ours_tr.transcribe_file(wav)
        c2, t2 = _cpu(), time.perf_counter()
        audio_s = info.decoded_s
        ours, ours_cpu = audio_s / (t2 - t0), audio_s / (c2 - c0)
        log(f"ours ({backend}): {audio_s:.0f} s of audio, mp3->wav {t1 - t0:.1f} s, wav->midi {t2 - t1:.1f} s: "
            f"{ours:.0f}x real time end to end (wall), {c2 - c0:.1f} CPU-s = {ours_cpu:.0f}x real time per CPU "
            f"({len(ns.notes)} notes; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        model = Model(bpo.basic_pitch_model_path())
        wav22 = Path(tmp, "long22.wav")
        decode_to_wav(mp3, wav22, sample_rate=22050)
        c3, t3 = _cpu(), time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            predict(wav22, model, onset_threshold=0.5, frame_threshold=0.3)
        c4, t4 = _cpu(), time.perf_counter()
        base, base_cpu = audio_s / (t4 - t3), audio_s / (c4 - c3)
        log(f"baseline basic_pitch.inference.predict (wav->midi only, same model): {base:.0f}x real time (wall), "
            f"{base_cpu:.0f}x per CPU; ours end to end / baseline: {ours / base:.2f} (wall), "
            f"{ours_cpu / base_cpu:.2f} (CPU)")
        # the model alone, for scale: the ceiling of any end-to-end figure on this machine
        x = np.random.default_rng(0).normal(0, 0.1, (8, bpo.BP_WINDOW, 1)).astype(np.float32)
        c5, t5 = _cpu(), time.perf_counter()
        for _ in range(5):
            bp.session.run(bp._outputs, {bp._input: x})
        c6, t6 = _cpu(), time.perf_counter()
        model_s = 5 * 8 * bpo.BP_KEEP * bpo.BP_HOP / bpo.BP_SAMPLE_RATE
        log(f"model alone: {model_s / (t6 - t5):.0f}x real time (wall), {model_s / (c6 - c5):.0f}x per CPU")
    return {"backend": backend, "minutes": minutes, "ours_x_realtime": ours, "model_x_realtime": model_s / (t6 - t5), "ours_x_realtime_per_cpu": ours_cpu,
            "baseline_x_realtime": base, "baseline_x_realtime_per_cpu": base_cpu,
            "mp3_to_wav_s": t1 - t0, "wav_to_midi_s": t2 - t1, "audio_s": audio_s, "load": os.getloadavg()[0]}


def _peak_rss_mb(code: str) -> tuple[float, float]:
    """(peak RSS of a fresh Python process running code, peak RSS of its largest child) in MB.

    The process's own peak is VmHWM (reset at exec, so the benchmark's memory is not counted); a child's is
    ru_maxrss, which on Linux also counts the parent pages it had between fork and exec: an upper bound.
    """
    wrapper = (code + "\nimport resource\n"
               "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
               "print('RSS', hwm, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    proc = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    line = [x for x in proc.stdout.splitlines() if x.startswith("RSS")][-1]
    _, me, kids = line.split()
    return int(me) / 1024, int(kids) / 1024


def memory(cache: Path, minutes: float, backend: str) -> dict:
    mp3 = long_mp3(cache, minutes)
    with tempfile.TemporaryDirectory() as tmp:
        src, wavs, midi = Path(tmp, "in"), Path(tmp, "wav"), Path(tmp, "midi")
        src.mkdir()
        try:  # a hard link (a symbolic link out of the input folder is refused, as it should be)
            os.link(mp3, src / mp3.name)
        except OSError:
            shutil.copyfile(mp3, src / mp3.name)
        t0 = time.perf_counter()
        conv, conv_kid = _peak_rss_mb(f"from ambientgen.cli import main; assert main(['mp3-to-wav', '{src}', '{wavs}']) == 0")
        t1 = time.perf_counter()
        wav_s = tr.audio_duration(next(wavs.glob("*.wav")))
        trans, _ = _peak_rss_mb(f"from ambientgen.cli import main; assert main(['transcribe', '{wavs}', '{midi}', '--backend', '{backend}']) == 0")
        t2 = time.perf_counter()
        side = json.loads(next(midi.glob("*.json")).read_text())
        pydub, _ = _peak_rss_mb(f"from pydub import AudioSegment; a = AudioSegment.from_file('{mp3}'); "
                                "a = a.set_channels(1).set_frame_rate(16000)")
    log(f"{wav_s / 60:.0f}-minute MP3: mp3-to-wav peak RSS {conv:.0f} MB (ffmpeg child <= {conv_kid:.0f} MB, "
        f"{t1 - t0:.0f} s); transcribe peak RSS {trans:.0f} MB ({t2 - t1:.0f} s wall, {side['notes']} notes); "
        f"baseline pydub AudioSegment decode {pydub:.0f} MB (ratio ours/pydub {max(conv, conv_kid) / pydub:.2f})")
    return {"minutes": wav_s / 60, "mp3_to_wav_mb": conv, "ffmpeg_child_mb_upper_bound": conv_kid,
            "transcribe_mb": trans, "pydub_mb": pydub, "mp3_to_wav_s": t1 - t0, "transcribe_s": t2 - t1}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from ambientgen.stages.transcribe import DEFAULT_BACKEND

    ap.add_argument("--only", choices=("speed", "memory"), action="append")
    ap.add_argument("--backend", default=DEFAULT_BACKEND, help=f"transcriber to time (default: {DEFAULT_BACKEND})")
    ap.add_argument("--speed-minutes", type=float, default=3.0)
    ap.add_argument("--memory-minutes", type=float, default=60.0)
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "ambientgen-bench-transcribe"))
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    only = set(args.only or ("speed", "memory"))
    out: dict = {}
    if "speed" in only:
        out["speed"] = speed(cache, args.speed_minutes, args.backend)
    if "memory" in only:
        out["memory"] = memory(cache, args.memory_minutes, args.backend)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
