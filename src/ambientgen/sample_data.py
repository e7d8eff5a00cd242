"""Real sample data from public-domain scores: music21's corpus (Bach chorales, Palestrina, ...).

Scores become MIDI (music21), MIDI becomes audio with FluidSynth and a General MIDI soundfont, and audio
becomes MP3 with ffmpeg. Tests, benchmarks and the demo all draw their data from here.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import subprocess
from pathlib import Path

from .music.midi_io import load_midi
from .util import StageError, atomic_path, progress, require_binary

HELP = "make sample MIDI/MP3 files from public-domain scores (music21 corpus)"
EXAMPLES = """
  ambientgen sample-data data/sample --count 4 --mp3
  ambientgen sample-data /tmp/midis --count 20 --seconds 30 --program 89
"""
log = logging.getLogger(__name__)

# Chorales first (a stable, well-formed set), then other composers for variety.
DEFAULT_WORKS = (
    "bach/bwv66.6", "bach/bwv269", "bach/bwv267", "bach/bwv347", "bach/bwv153.1", "bach/bwv86.6",
    "bach/bwv38.6", "bach/bwv40.8", "bach/bwv248.23-2", "bach/bwv281", "bach/bwv10.7", "bach/bwv101.7",
)
# General MIDI programs suited to soft music: piano, electric piano, organ, strings, choir, pad.
SOFT_PROGRAMS = (0, 4, 19, 48, 52, 89)


def corpus_works(composer: str = "bach", limit: int | None = None) -> list[str]:
    """Corpus identifiers ('bach/bwv66.6') of a composer's scores in music21's bundled corpus (sorted, unique)."""
    from .music.corpus import corpus_files, corpus_id

    ids = list(dict.fromkeys(corpus_id(p) for p in corpus_files()
                             if corpus_id(p).split("/")[0] == composer and p.suffix.lower() != ".abc"))
    return ids[:limit] if limit else ids


def score_to_midi(work: str, dest: str | Path, program: int | None = None, max_seconds: float | None = None,
                  tempo_scale: float = 1.0) -> Path:
    """Write one corpus work as a MIDI file; optionally set every instrument's GM program and cut its length."""
    import note_seq
    from music21 import corpus

    dest = Path(dest)
    score = corpus.parse(work)
    tmp_mid = dest.with_suffix(".m21.mid")
    score.write("midi", fp=str(tmp_mid))
    ns = load_midi(tmp_mid, allow_empty=True)
    tmp_mid.unlink()
    if tempo_scale != 1.0:
        ns = note_seq.sequences_lib.stretch_note_sequence(ns, tempo_scale)
    if max_seconds:
        ns = note_seq.sequences_lib.trim_note_sequence(ns, 0.0, max_seconds)
    for note in ns.notes:
        if program is not None:
            note.program = program
        note.is_drum = False
        note.velocity = max(note.velocity, 40)
    with atomic_path(dest) as tmp:
        note_seq.sequence_proto_to_midi_file(ns, str(tmp))
    return dest


def render_midi(midi: str | Path, dest: str | Path, sample_rate: int = 44100, soundfont: str | Path | None = None,
                gain: float = 0.6) -> Path:
    """Render MIDI to audio with the FluidSynth program; an .mp3 destination is encoded with ffmpeg."""
    from .music.synth import render_file

    dest = Path(dest)
    wav = render_file(midi, dest.with_suffix(".render.wav"), sample_rate, soundfont, gain)
    try:
        if dest.suffix.lower() == ".wav":
            wav.replace(dest)
        else:
            ffmpeg = require_binary("ffmpeg")
            with atomic_path(dest) as tmp:
                proc = subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(wav), "-f", dest.suffix.lstrip("."),
                                       "-b:a", "128k", str(tmp)], capture_output=True, text=True)
                if proc.returncode != 0:
                    raise StageError(midi, f"ffmpeg failed: {proc.stderr.strip()[-500:]}")
    finally:
        wav.unlink(missing_ok=True)
    return dest


def make_samples(out_dir: str | Path, count: int = 4, seconds: float | None = 20.0, mp3: bool = False,
                 program: int | None = None, works: list[str] | None = None) -> list[Path]:
    """Write `count` sample pieces as MIDI (and MP3 renderings when mp3=True) into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    works = list(works or DEFAULT_WORKS)
    if count > len(works):
        works += [w for w in corpus_works("bach") if w not in works]
    made: list[Path] = []
    pieces = 0
    bar = progress(iter(works), "sample-data", total=count, unit="piece")
    for work in bar:
        if pieces >= count:
            break
        name = work.replace("/", "_").replace(".", "_")
        digest = int(hashlib.sha1(work.encode()).hexdigest(), 16)
        prog = program if program is not None else SOFT_PROGRAMS[digest % len(SOFT_PROGRAMS)]
        try:
            mid = score_to_midi(work, out_dir / f"{name}.mid", program=prog, max_seconds=seconds)
        except Exception as exc:  # music21 cannot expand some scores (repeats, pickups): use the next work
            log.warning("%s: skipped, music21 could not convert it (%s)", work, exc)
            continue
        made.append(mid)
        if mp3:
            made.append(render_midi(mid, out_dir / f"{name}.mp3"))
        pieces += 1
    return made


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("output_dir", help="where the sample files go")
    p.add_argument("--count", type=int, default=4, help="number of pieces (default 4)")
    p.add_argument("--seconds", type=float, default=20.0, help="cut each piece to this length (0: whole piece)")
    p.add_argument("--mp3", action="store_true", help="also render each piece to MP3 (FluidSynth + ffmpeg)")
    p.add_argument("--program", type=int, default=None, help="General MIDI program for every note (default: varied)")


def main(args: argparse.Namespace) -> int:
    for path in make_samples(args.output_dir, args.count, args.seconds or None, args.mp3, args.program):
        print(path)
    return 0
