"""Benchmark of the audio stages: transcription accuracy, speed and memory.

  .venv/bin/python bench/bench_transcribe.py            # everything (about 10 minutes on 2 cores)
  .venv/bin/python bench/bench_transcribe.py --only accuracy --pieces 4

Accuracy: public-domain scores (music21 corpus) -> MIDI with several General MIDI programs -> FluidSynth
(FluidR3_GM) -> MP3 -> `mp3-to-wav` (16 kHz) -> basic-pitch. The note-decoding thresholds are tuned on one
set of pieces and reported on DIFFERENT held-out pieces; note-onset precision/recall/F1 come from
mir_eval.transcription (50 ms onset tolerance), with and without offsets. The baseline is basic-pitch's
own default thresholds (0.5 / 0.3 / 127.7 ms) on the same audio.

Speed: end to end (MP3 -> WAV -> MIDI) after a warm-up, model loaded once, against basic-pitch's own
`predict()` on the same WAV in the same run.

Memory: peak RSS of `ambientgen mp3-to-wav` and `ambientgen transcribe` on a one-hour MP3, each in its own
subprocess, against pydub's AudioSegment (whole-file decoding) on the same MP3.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
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

# The evaluated timbres: keyboards, mallets and guitar whose FluidR3 samples sound at the note-on, chosen on
# the TUNING works only (acoustic/bright/electric grand, two electric pianos, harpsichord, marimba, jazz guitar).
PROGRAMS = (0, 1, 2, 4, 5, 6, 12, 26)
# Other timbres, reported apart with the same settings: celesta, music box, vibraphone, nylon guitar, harp
# (late or octave-rich samples), and slow-attack organ, strings and pad whose onsets are not sharp.
OTHER = (8, 10, 11, 24, 46, 19, 48, 89)
TUNING_WORKS = ("bach/bwv66.6", "bach/bwv269", "bach/bwv267", "bach/bwv347", "bach/bwv153.1", "bach/bwv86.6",
                "bach/bwv38.6", "bach/bwv40.8")
HELDOUT_WORKS = ("bach/bwv281", "bach/bwv10.7", "bach/bwv101.7", "bach/bwv248.23-2", "bach/bwv26.6",
                 "bach/bwv145.5", "bach/bwv180.7", "bach/bwv195.6")
GRID = {
    "onset_threshold": (0.4, 0.5, 0.6, 0.7),
    "frame_threshold": (0.2, 0.3, 0.4),
    "minimum_note_length_ms": (58.0, 90.0, 127.7),
    "melodia_trick": (True, False),
    "harmonic_ratio": (0.0, 0.8),
}
BASIC_PITCH_DEFAULTS = bpo.BasicPitchParams(onset_threshold=0.5, frame_threshold=0.3, minimum_note_length_ms=127.7)


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


def build_set(works: tuple[str, ...], programs: tuple[int, ...], cache: Path, offset: int) -> list[tuple]:
    """Each work with one program (rotated), as (name, reference NoteSequence, 16 kHz wav)."""
    import note_seq

    out = []
    for i, work in enumerate(works):
        prog = programs[(i + offset) % len(programs)]
        mid, mp3 = make_piece(work, prog, cache)
        wav = mp3.with_suffix(".wav")
        if not wav.exists():
            decode_to_wav(mp3, wav)
        out.append((mid.stem, note_seq.midi_file_to_note_sequence(str(mid)), wav))
    return out


def score(bp: bpo.BasicPitchTranscriber, acts: dict, pieces: list[tuple], params: bpo.BasicPitchParams) -> list[dict]:
    fps = bpo.BP_SAMPLE_RATE / bpo.BP_HOP
    rows = []
    for name, ref, _ in pieces:
        note, onset = acts[name]
        events = bp.decode(note, onset, params)
        est = tr.notes_to_sequence([tr.Note(s / fps, e / fps, p, int(127 * a)) for s, e, p, a in events])
        rows.append({"piece": name, **tr.onset_scores(ref, est)})
    return rows


def mean(rows: list[dict], key: str) -> float:
    return statistics.fmean(r[key] for r in rows) if rows else 0.0


def fmt_rows(title: str, rows: list[dict]) -> str:
    lines = [f"\n{title}", "| piece | P | R | F1 | P (offset) | R (offset) | F1 (offset) |", "|---|---|---|---|---|---|---|"]
    for r in [*rows, {"piece": "**mean**", **{k: mean(rows, k) for k in rows[0] if k != "piece"}}]:
        lines.append(f"| {r['piece']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | "
                     f"{r['precision_offset']:.3f} | {r['recall_offset']:.3f} | {r['f1_offset']:.3f} |")
    return "\n".join(lines)


def accuracy(cache: Path, n_pieces: int) -> dict:
    bp = bpo.BasicPitchTranscriber()
    tuning = build_set(TUNING_WORKS[:n_pieces], PROGRAMS, cache, 0)
    heldout = build_set(HELDOUT_WORKS[:n_pieces], PROGRAMS, cache, 3)
    sustained = build_set(HELDOUT_WORKS[:len(OTHER)], OTHER, cache, 0)
    acts = {}
    for name, _, wav in tuning + heldout + sustained:
        acts[name] = bp.activations_of(tr.load_audio(wav, bpo.BP_SAMPLE_RATE))
    best, best_f1 = None, -1.0
    keys = list(GRID)
    t0 = time.perf_counter()
    for combo in itertools.product(*(GRID[k] for k in keys)):
        params = bpo.BasicPitchParams(**dict(zip(keys, combo)))
        f1 = mean(score(bp, acts, tuning, params), "f1")
        if f1 > best_f1:
            best, best_f1 = params, f1
    log(f"grid of {int(np.prod([len(v) for v in GRID.values()]))} settings searched in {time.perf_counter() - t0:.0f} s")
    assert best is not None
    chosen = {k: getattr(best, k) for k in keys}
    out = {"chosen": chosen, "tuning_f1": best_f1}
    log(f"chosen on the tuning set: {chosen} (tuning mean F1 {best_f1:.3f})")
    res_tune = score(bp, acts, tuning, best)
    res_base = score(bp, acts, heldout, BASIC_PITCH_DEFAULTS)
    # held-out pieces end to end through the stage (streamed reading, MIDI written and read back)
    res_held = heldout_through_stage(heldout, best)
    res_sus = score(bp, acts, sustained, best)
    text = fmt_rows("Tuning pieces, chosen settings", res_tune)
    text += fmt_rows("Held-out pieces, chosen settings (through `ambientgen transcribe`)", res_held)
    text += fmt_rows("Held-out pieces, basic-pitch default settings (baseline)", res_base)
    text += fmt_rows("Other timbres (celesta, music box, vibraphone, nylon guitar, harp, organ, strings, pad), held-out works, chosen settings", res_sus)
    log(text)
    out.update(heldout_f1=mean(res_held, "f1"), baseline_f1=mean(res_base, "f1"), other_timbres_f1=mean(res_sus, "f1"),
               table=text)
    log(f"held-out mean onset F1 {out['heldout_f1']:.3f} vs {out['baseline_f1']:.3f} with basic-pitch defaults "
        f"(ratio {out['heldout_f1'] / max(out['baseline_f1'], 1e-9):.2f})")
    return out


def heldout_through_stage(pieces: list[tuple], params: bpo.BasicPitchParams) -> list[dict]:
    import note_seq

    from ambientgen.stages.transcribe import transcribe_dir

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "in"), Path(tmp, "out")
        src.mkdir()
        for _, _, wav in pieces:
            os.symlink(wav, src / wav.name)
        res = transcribe_dir(src, dst, params=params)
        assert not res.failed, res.failed
        for name, ref, wav in pieces:
            est = note_seq.midi_file_to_note_sequence(str(dst / f"{wav.stem}.mid"))
            rows.append({"piece": name, **tr.onset_scores(ref, est)})
    return rows


def long_mp3(cache: Path, minutes: float) -> Path:
    """A long MP3: four held-out pieces with varied programs joined once, then looped (MP3 frames copied)."""
    dest = cache / f"long_{minutes:g}min.mp3"
    if dest.exists():
        return dest
    parts = [make_piece(w, p, cache)[1] for w, p in zip(HELDOUT_WORKS[:4], PROGRAMS[:4])]
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


def speed(cache: Path, minutes: float) -> dict:
    """Wall-clock and CPU time; on a shared machine the CPU time shows what an idle 2-core machine would do."""
    import contextlib
    import io

    with bpo._quiet_import():
        from basic_pitch.inference import Model, predict

    mp3 = long_mp3(cache, minutes)
    bp = bpo.BasicPitchTranscriber()
    with tempfile.TemporaryDirectory() as tmp:
        warm = make_piece(HELDOUT_WORKS[0], 0, cache)[1]
        decode_to_wav(warm, Path(tmp, "warm.wav"))
        bp.transcribe_file(Path(tmp, "warm.wav"))  # warm-up
        c0, t0 = _cpu(), time.perf_counter()
        wav = Path(tmp, "long.wav")
        info = decode_to_wav(mp3, wav)
        t1 = time.perf_counter()
        ns = bp.transcribe_file(wav)
        c2, t2 = _cpu(), time.perf_counter()
        audio_s = info.decoded_s
        ours, ours_cpu = audio_s / (t2 - t0), audio_s / (c2 - c0)
        log(f"ours: {audio_s:.0f} s of audio, mp3->wav {t1 - t0:.1f} s, wav->midi {t2 - t1:.1f} s: "
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
    return {"minutes": minutes, "ours_x_realtime": ours, "model_x_realtime": model_s / (t6 - t5), "ours_x_realtime_per_cpu": ours_cpu,
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


def memory(cache: Path, minutes: float) -> dict:
    mp3 = long_mp3(cache, minutes)
    with tempfile.TemporaryDirectory() as tmp:
        src, wavs, midi = Path(tmp, "in"), Path(tmp, "wav"), Path(tmp, "midi")
        src.mkdir()
        os.symlink(mp3, src / mp3.name)
        t0 = time.perf_counter()
        conv, conv_kid = _peak_rss_mb(f"from ambientgen.cli import main; assert main(['mp3-to-wav', '{src}', '{wavs}']) == 0")
        t1 = time.perf_counter()
        wav_s = tr.audio_duration(next(wavs.glob("*.wav")))
        trans, _ = _peak_rss_mb(f"from ambientgen.cli import main; assert main(['transcribe', '{wavs}', '{midi}']) == 0")
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
    ap.add_argument("--only", choices=("accuracy", "speed", "memory"), action="append")
    ap.add_argument("--pieces", type=int, default=8, help="pieces per set (tuning and held-out)")
    ap.add_argument("--speed-minutes", type=float, default=3.0)
    ap.add_argument("--memory-minutes", type=float, default=60.0)
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "ambientgen-bench-transcribe"))
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    only = set(args.only or ("accuracy", "speed", "memory"))
    out: dict = {}
    if "accuracy" in only:
        out["accuracy"] = accuracy(cache, args.pieces)
    if "speed" in only:
        out["speed"] = speed(cache, args.speed_minutes)
    if "memory" in only:
        out["memory"] = memory(cache, args.memory_minutes)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
