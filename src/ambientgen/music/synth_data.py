"""Training data for the Onsets and Frames transcriber, made here from public-domain scores.

Each example is a music21 corpus work (Bach chorales, Palestrina, Monteverdi, ...) turned into a NoteSequence,
randomly transposed, stretched and given General MIDI programs, rendered with FluidSynth through one of two
soundfonts, passed through a random reverb and gain, and stored as 16 kHz mono audio beside the exact note labels
taken from the same NoteSequence:

    NAME.wav   16 kHz mono float audio
    NAME.mid   the labels (the notes that were rendered)
    NAME.npz   log-mel features and onset/frame/velocity rolls (numpy, loaded with allow_pickle=False)
    NAME.json  what was done to make it (work, programs, soundfont, transposition, gain, reverb)

Pieces are split into train/test by a hash of the work id, so held-out pieces never appear in training under any
augmentation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..util import StageError, atomic_path, find_soundfont, progress
from .midi_io import load_midi

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MIN_PITCH, MAX_PITCH = 21, 108  # the 88 piano keys
# Corpus collections used for training data: (composer, max works). Chorales first, then other vocal polyphony.
COLLECTIONS = (("bach", 433), ("monteverdi", 97), ("palestrina", 250), ("trecento", 103))
# General MIDI programs with clear pitch: pianos, e-pianos, mallets, organs, guitars, strings, choir, brass,
# reeds, flutes, soft synth leads and pads.
PROGRAMS = (0, 1, 2, 4, 5, 6, 8, 11, 12, 16, 19, 21, 24, 25, 40, 41, 42, 46, 48, 49, 52, 56, 60, 64, 68, 71,
            73, 74, 80, 81, 88, 89, 90, 92, 94)
TEST_FRACTION_PERCENT = 8
SCORE_SUFFIXES = {".mxl", ".xml", ".musicxml", ".krn"}


def soundfonts() -> list[Path]:
    """The two soundfonts used for rendering: Debian's FluidR3_GM and pretty_midi's TimGM6mb (those present)."""
    import pretty_midi

    cands = [Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"), Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"]
    found = [p for p in cands if p.is_file()]
    return found or [find_soundfont()]


def split_of(work: str) -> str:
    """'test' for the held-out works (a stable hash of the work id), else 'train'."""
    h = int(hashlib.sha1(work.encode()).hexdigest(), 16) % 100
    return "test" if h < TEST_FRACTION_PERCENT else "train"


def works_for(split: str, limit: int | None = None) -> list[str]:
    """Corpus work ids of one split, interleaving collections so a small limit still mixes styles."""
    per = [[w for w in corpus_works(c, n) if split_of(w) == split] for c, n in COLLECTIONS]
    out: list[str] = []
    i = 0
    while any(i < len(p) for p in per):
        for p in per:
            # two chorales for every other piece: they are the cleanest scores
            take = p[2 * i:2 * i + 2] if p is per[0] else p[i:i + 1]
            out.extend(take)
        i += 1
    return out[:limit] if limit else out


def corpus_works(composer: str, limit: int | None = None) -> list[str]:
    """Corpus paths ('bach/bwv66.6.mxl') of a composer's scores in music21's bundled corpus, sorted.

    Only note-bearing score formats are kept (Monteverdi's roman-numeral analyses are skipped).
    """
    from music21 import corpus

    root = Path(corpus.__file__).resolve().parent
    ids = []
    for p in sorted(corpus.getComposer(composer)):
        p = Path(p).resolve()
        if p.suffix.lower() not in SCORE_SUFFIXES:
            continue
        rel = p.relative_to(root) if p.is_relative_to(root) else Path(composer) / p.name
        ids.append(rel.as_posix())
    return ids[:limit] if limit else ids


@dataclass
class Augment:
    """The random choices that make one rendering of a work."""

    transpose: int
    tempo_scale: float
    programs: list[int]
    soundfont: str
    gain_db: float
    reverb_room: float
    reverb_wet: float
    start: float

    @classmethod
    def draw(cls, rng: np.random.Generator, n_parts: int, clean: bool = False) -> Augment:
        fonts = soundfonts()
        if clean:  # a plain, repeatable rendering (used for evaluation variety too, but deterministic)
            return cls(0, 1.0, [int(rng.choice(PROGRAMS)) for _ in range(n_parts)], str(fonts[0]), -3.0, 0.3, 0.1, 0.0)
        same = rng.random() < 0.5  # half the time one instrument for all parts (a piano, an organ, a pad...)
        first = int(rng.choice(PROGRAMS))
        programs = [first if same else int(rng.choice(PROGRAMS)) for _ in range(n_parts)]
        return cls(
            transpose=int(rng.integers(-6, 7)),
            tempo_scale=float(rng.uniform(0.75, 1.35)),
            programs=programs,
            soundfont=str(fonts[int(rng.integers(len(fonts)))]),
            gain_db=float(rng.uniform(-18.0, 0.0)),
            reverb_room=float(rng.uniform(0.1, 0.9)),
            reverb_wet=float(rng.uniform(0.0, 0.45)),
            start=float(rng.uniform(0.0, 1.0)),
        )


def work_to_sequence(work: str):
    """A corpus work as a note_seq.NoteSequence (music21 -> MIDI -> note_seq), one instrument per part."""
    from music21 import corpus

    try:
        score = corpus.parse(work)
        with tempfile.TemporaryDirectory() as tmp:
            mid = Path(tmp) / "w.mid"
            score.write("midi", fp=str(mid))
            return load_midi(mid, allow_empty=True)
    except Exception as exc:  # music21 raises many kinds of errors on odd scores
        raise StageError(work, f"cannot turn the score into MIDI: {exc}") from exc


def augment_sequence(ns, aug: Augment, max_seconds: float | None):
    """Apply transposition, tempo, programs and the crop to a NoteSequence; returns a new sequence."""
    import note_seq
    from note_seq import sequences_lib

    ns = sequences_lib.stretch_note_sequence(ns, aug.tempo_scale)
    pitches = [n.pitch for n in ns.notes]
    if pitches:  # keep every note on the keyboard
        shift = int(np.clip(aug.transpose, MIN_PITCH - min(pitches), MAX_PITCH - max(pitches)))
    else:
        shift = 0
    instruments = sorted({n.instrument for n in ns.notes})
    prog_of = {ins: aug.programs[i % len(aug.programs)] for i, ins in enumerate(instruments)}
    out = note_seq.NoteSequence()
    out.ticks_per_quarter = ns.ticks_per_quarter
    out.tempos.add(qpm=120.0)
    start = 0.0
    if max_seconds and ns.total_time > max_seconds:
        start = aug.start * (ns.total_time - max_seconds)
        start = min((n.start_time for n in ns.notes if n.start_time >= start), default=start)
    end = start + max_seconds if max_seconds else ns.total_time + 1.0
    for n in ns.notes:
        if n.start_time < start or n.start_time >= end - 0.05 or n.end_time <= n.start_time:
            continue
        m = out.notes.add()
        m.pitch = n.pitch + shift
        m.start_time = n.start_time - start
        m.end_time = min(n.end_time, end) - start
        m.velocity = int(np.clip(n.velocity if n.velocity else 80, 40, 127))
        m.instrument = n.instrument
        m.program = prog_of[n.instrument]
        m.is_drum = False
    out.total_time = max((n.end_time for n in out.notes), default=0.0)
    return out


def render_sequence(ns, soundfont: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Render a NoteSequence with the FluidSynth program; returns mono float32 audio."""
    import note_seq
    import soundfile as sf

    from .synth import render_file

    with tempfile.TemporaryDirectory() as tmp:
        mid, wav = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        note_seq.sequence_proto_to_midi_file(ns, str(mid))
        render_file(mid, wav, sample_rate, soundfont, gain=0.5)
        audio, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    if sr != sample_rate:
        raise StageError(wav, f"fluidsynth wrote {sr} Hz, wanted {sample_rate}")
    return audio.mean(axis=1)


def apply_effects(audio: np.ndarray, aug: Augment, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Reverb (pedalboard) and gain; the result is kept within [-1, 1]."""
    from pedalboard import Gain, Pedalboard, Reverb

    board = Pedalboard([Reverb(room_size=aug.reverb_room, wet_level=aug.reverb_wet, dry_level=1.0 - aug.reverb_wet / 2),
                        Gain(gain_db=aug.gain_db)])
    out = board(audio[None, :].astype(np.float32), sample_rate)[0]
    peak = float(np.abs(out).max(initial=0.0))
    if peak > 0.99:
        out = out * (0.99 / peak)
    return out.astype(np.float32)


def make_example(work: str, dest_dir: str | Path, seed: int, max_seconds: float | None = 30.0,
                 clean: bool = False, name: str | None = None) -> Path:
    """Render one augmented example of `work` into dest_dir; returns the .npz path (wav/mid/json beside it)."""
    import note_seq
    import soundfile as sf

    from ..models.onsets_frames import FeatureConfig, log_mel, sequence_to_rolls

    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = name or f"{safe_stem(work)}-{seed}"
    rng = np.random.default_rng(seed)
    ns = work_to_sequence(work)
    n_parts = len({n.instrument for n in ns.notes}) or 1
    aug = Augment.draw(rng, n_parts, clean=clean)
    labels = augment_sequence(ns, aug, max_seconds)
    if not labels.notes:
        raise StageError(work, "no notes left after cropping")
    audio = apply_effects(render_sequence(labels, aug.soundfont), aug)
    fc = FeatureConfig()
    mel = log_mel(audio, fc)
    rolls = sequence_to_rolls(labels, mel.shape[0], fc)
    with atomic_path(dest_dir / f"{name}.wav") as tmp:
        sf.write(str(tmp), audio, SAMPLE_RATE, subtype="FLOAT", format="WAV")
    with atomic_path(dest_dir / f"{name}.mid") as tmp:
        note_seq.sequence_proto_to_midi_file(labels, str(tmp))
    with atomic_path(dest_dir / f"{name}.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, mel=mel.astype(np.float16), **rolls)
    meta = {"work": work, "seed": seed, "split": split_of(work), "seconds": len(audio) / SAMPLE_RATE,
            "notes": len(labels.notes), **aug.__dict__}
    with atomic_path(dest_dir / f"{name}.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return dest_dir / f"{name}.npz"


def make_dataset(dest_dir: str | Path, split: str = "train", count: int = 200, max_seconds: float | None = 30.0,
                 seed: int = 0, renders_per_work: int = 1, clean: bool = False) -> list[Path]:
    """Render `count` examples of one split into dest_dir (existing ones are kept); a bad work is logged and skipped."""
    dest_dir = Path(dest_dir)
    works = works_for(split)
    jobs = [(w, seed * 100_003 + i * 7919 + r) for r in range(renders_per_work) for i, w in enumerate(works)]
    made: list[Path] = []
    for work, s in progress(jobs, f"render {split}", total=min(count, len(jobs)), unit="piece"):
        if len(made) >= count:
            break
        name = f"{safe_stem(work)}-{s}"
        if (dest_dir / f"{name}.npz").exists():
            made.append(dest_dir / f"{name}.npz")
            continue
        try:
            made.append(make_example(work, dest_dir, s, max_seconds, clean=clean, name=name))
        except StageError as exc:
            log.warning("%s", exc)
    return made


def safe_stem(work: str) -> str:
    """'trecento/PMFC_01-Vos Qui.xml' -> 'trecento_PMFC_01-Vos_Qui_xml': a file name without spaces or slashes."""
    return re.sub(r"[^A-Za-z0-9-]+", "_", work).strip("_")


def load_example(npz: str | Path) -> dict[str, np.ndarray]:
    """Features and rolls of one example (never unpickles)."""
    with np.load(str(npz), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
