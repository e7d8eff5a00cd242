"""Rendered transcription data with exact labels: the Onsets and Frames training set and the development set
that every transcription default is chosen and judged on.

A corpus work (ambientgen.music.synth_sources: chorales, polyphony, quartets, piano music, accompanied folk
tunes) is cropped, transposed and stretched, orchestrated for one timbre family, rendered by FluidSynth through
one of two soundfonts and passed through a random room, EQ, noise floor, gain and MP3 round trip
(ambientgen.music.synth_effects). The labels are the notes of the very NoteSequence that was rendered.

Timbre families (FAMILIES), because one setting tuned on struck sounds fails on pads:

* struck: pianos, electric pianos, harpsichord, mallets, guitars, harp, pizzicato;
* sustained: organs, solo strings, winds, brass, soft synth leads;
* pads: synth pads, string ensembles and choirs, always in a hall or cathedral;
* quiet-lead: a soft struck top voice over loud pads; loud-lead: a loud top voice over soft pads;
* doubled: a soft piano doubled note for note by a warm pad.

Files per example: NAME.wav (mono float), NAME.mid (labels), NAME.json (every choice made) and, for training
examples, NAME.npz (log-mel and onset/frame/velocity rolls, loaded with allow_pickle=False).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..util import StageError, atomic_path, find_soundfont, progress
from .synth_effects import Effects, apply_effects
from .synth_sources import SOURCE_KINDS, dev_part_of, load_piece, split_of, work_id, works_of

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # training examples (the transcriber's input rate); the development set is 44.1 kHz
DEV_SAMPLE_RATE = 44100
MIN_PITCH, MAX_PITCH = 21, 108  # the 88 piano keys
STRUCK = (0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 24, 25, 26, 27, 45, 46, 105, 107, 108)
SUSTAINED = (16, 17, 19, 20, 21, 22, 40, 41, 42, 43, 56, 57, 60, 61, 64, 65, 68, 69, 70, 71, 73, 74, 75, 79, 80,
             81, 82, 85)
PADS = (48, 49, 50, 51, 52, 53, 54, 88, 89, 90, 91, 92, 93, 94, 95)
SOFT_PIANOS = (0, 1, 4, 5, 46)
WARM_PADS = (88, 89, 91, 94, 48, 52)
FAMILIES = ("struck", "sustained", "pads", "quiet-lead", "loud-lead", "doubled")
# Training mix: two thirds of the examples hold sustained sound (sustained, pads, the mixes and doubling).
TRAIN_FAMILY_WEIGHTS = {"struck": 0.3, "sustained": 0.2, "pads": 0.2, "quiet-lead": 0.1, "loud-lead": 0.1,
                        "doubled": 0.1}
TRAIN_KIND_WEIGHTS = {"chorales": 0.15, "polyphony": 0.25, "quartets": 0.2, "piano": 0.15, "folk": 0.25}
QUIET, LOUD = 0.45, 1.15  # velocity scales of the soft and the loud layer in the mixes


def soundfonts() -> list[Path]:
    """The two soundfonts used for rendering: Debian's FluidR3_GM and pretty_midi's TimGM6mb (those present)."""
    import pretty_midi

    cands = [Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"), Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"]
    found = [p for p in cands if p.is_file()]
    return found or [find_soundfont()]


def works_for(split: str) -> list[str]:
    """Work ids of one split, every kind."""
    return [work_id(p) for kind in SOURCE_KINDS for p in works_of(kind, split)]


@dataclass
class Augment:
    """The random choices that make one rendering of a work."""

    family: str
    transpose: int
    tempo_scale: float
    programs: list[int]  # per part, in order of the parts' instrument numbers
    scales: list[float]  # velocity scale per part
    doubling_program: int | None
    soundfont: str
    start: float
    effects: Effects = field(default_factory=Effects)

    @classmethod
    def draw(cls, rng: np.random.Generator, n_parts: int, top: int, family: str) -> Augment:
        """Choices for `family`; part `top` (the highest voice) is the lead of the mixes."""
        if family not in FAMILIES:
            raise StageError(None, f"unknown timbre family {family!r}: choose from {', '.join(FAMILIES)}")

        def pick(pool: tuple[int, ...]) -> int:
            return int(rng.choice(pool))

        scales = [1.0] * n_parts
        doubling = None
        if family in ("struck", "sustained", "pads"):
            pool = {"struck": STRUCK, "sustained": SUSTAINED, "pads": PADS}[family]
            first = pick(pool)
            same = rng.random() < 0.5
            programs = [first if same else pick(pool) for _ in range(n_parts)]
        elif family == "doubled":
            programs = [pick(SOFT_PIANOS)] * n_parts
            doubling = pick(WARM_PADS)
        else:
            pad = pick(PADS)
            programs = [pad] * n_parts
            lead_loud = family == "loud-lead"
            programs[top] = pick(STRUCK + SUSTAINED if lead_loud else STRUCK)
            scales = [QUIET if lead_loud else LOUD] * n_parts
            scales[top] = LOUD if lead_loud else QUIET
        fonts = soundfonts()
        return cls(family=family, transpose=int(rng.integers(-6, 7)), tempo_scale=float(rng.uniform(0.75, 1.35)),
                   programs=programs, scales=scales, doubling_program=doubling,
                   soundfont=str(fonts[int(rng.integers(len(fonts)))]), start=float(rng.uniform(0.0, 1.0)),
                   effects=Effects.draw(rng, large_room=family in ("pads", "doubled")))

    def as_dict(self) -> dict:
        return {**asdict(self), "effects": self.effects.as_dict()}


def _parts(ns) -> tuple[list[int], int]:
    """The instrument numbers of a sequence's parts, sorted, and the index of the highest-sounding one."""
    parts = sorted({n.instrument for n in ns.notes}) or [0]
    means = [np.mean([n.pitch for n in ns.notes if n.instrument == p] or [0]) for p in parts]
    return parts, int(np.argmax(means))


def augment_sequence(ns, aug: Augment, max_seconds: float | None):
    """(labels, performance): the transposed, stretched, cropped notes, and what is rendered, which is the same
    notes with programs and velocity scales, plus the doubling layer when there is one."""
    import note_seq
    from note_seq import sequences_lib

    ns = sequences_lib.stretch_note_sequence(ns, aug.tempo_scale)
    pitches = [n.pitch for n in ns.notes]
    shift = int(np.clip(aug.transpose, MIN_PITCH - min(pitches), MAX_PITCH - max(pitches))) if pitches else 0
    parts, _ = _parts(ns)
    index = {p: i for i, p in enumerate(parts)}
    labels, perf = note_seq.NoteSequence(), note_seq.NoteSequence()
    for seq in (labels, perf):
        seq.ticks_per_quarter = ns.ticks_per_quarter
        seq.tempos.add(qpm=120.0)
    start = 0.0
    if max_seconds and ns.total_time > max_seconds:
        start = aug.start * (ns.total_time - max_seconds)
        start = min((n.start_time for n in ns.notes if n.start_time >= start), default=start)
    end = start + max_seconds if max_seconds else ns.total_time + 1.0
    n_parts = len(parts)
    for n in ns.notes:
        if n.start_time < start or n.start_time >= end - 0.05 or n.end_time <= n.start_time:
            continue
        i = index[n.instrument] % len(aug.programs)
        velocity = int(np.clip((n.velocity or 80) * aug.scales[i], 20, 127))
        note = dict(pitch=n.pitch + shift, start_time=n.start_time - start, end_time=min(n.end_time, end) - start,
                    velocity=velocity, instrument=index[n.instrument], is_drum=False)
        labels.notes.add(program=aug.programs[i], **note)
        perf.notes.add(program=aug.programs[i], **note)
        if aug.doubling_program is not None:
            perf.notes.add(program=aug.doubling_program,
                           **{**note, "instrument": n_parts + index[n.instrument],
                              "velocity": int(np.clip(velocity * 1.3, 20, 127))})
    for seq in (labels, perf):
        seq.total_time = max((n.end_time for n in seq.notes), default=0.0)
    return labels, perf


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


def make_example(work: str | Path, dest_dir: str | Path, seed: int, max_seconds: float | None = 30.0,
                 family: str = "struck", name: str | None = None, sample_rate: int = SAMPLE_RATE,
                 features: bool = True, cache_dir: str | Path | None = None,
                 keep: Callable[[str], bool] | None = None, solo: bool = False) -> Path:
    """Render one example of `work` (a corpus path or work id) into dest_dir; returns its .wav path
    (.mid, .json and, with `features`, .npz beside it). ``keep`` narrows the pieces of a tune book and ``solo``
    renders a single line (synth_sources.load_piece)."""
    import note_seq
    import soundfile as sf

    from .corpus import corpus_files

    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = Path(work) if Path(work).is_absolute() else next((p for p in corpus_files() if work_id(p) == work), None)
    if path is None:
        raise StageError(work, "not a file of music21's corpus")
    wid = work_id(path)
    name = name or f"{safe_stem(wid)}-{seed}"
    rng = np.random.default_rng(seed)
    ns = load_piece(path, Path(cache_dir) if cache_dir else dest_dir / "_scores", rng, keep, solo)
    parts, top = _parts(ns)
    aug = Augment.draw(rng, len(parts), top, family)
    labels, perf = augment_sequence(ns, aug, max_seconds)
    if not labels.notes:
        raise StageError(wid, "no notes left after cropping")
    audio = apply_effects(render_sequence(perf, aug.soundfont, sample_rate), aug.effects, sample_rate, seed)
    with atomic_path(dest_dir / f"{name}.mid") as tmp:
        note_seq.sequence_proto_to_midi_file(labels, str(tmp))
    if features:
        from ..models.onsets_frames import FeatureConfig, log_mel, sequence_to_rolls

        fc = FeatureConfig()
        if sample_rate != fc.sample_rate:
            raise StageError(wid, f"features need {fc.sample_rate} Hz audio, not {sample_rate}")
        mel = log_mel(audio, fc)
        with atomic_path(dest_dir / f"{name}.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, mel=mel.astype(np.float16), **sequence_to_rolls(labels, mel.shape[0], fc))
    with atomic_path(dest_dir / f"{name}.wav") as tmp:
        sf.write(str(tmp), audio, sample_rate, subtype="FLOAT", format="WAV")
    meta = {"work": wid, "seed": seed, "split": split_of(wid), "seconds": len(audio) / sample_rate,
            "notes": len(labels.notes), "sample_rate": sample_rate, "solo": solo, **aug.as_dict()}
    with atomic_path(dest_dir / f"{name}.json") as tmp:  # written last: its presence marks a finished example
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return dest_dir / f"{name}.wav"


def plan_examples(split: str, count: int, seed: int, families: dict[str, float], kinds: dict[str, float]):
    """(work path, family, seed) for `count` examples: kinds and families drawn by weight, works at random."""
    rng = np.random.default_rng(seed)
    pools = {k: works_of(k, split) for k in kinds}
    names = [k for k in kinds if pools[k]]
    kw = np.array([kinds[k] for k in names], float)
    fams = list(families)
    fw = np.array([families[f] for f in fams], float)
    for i in range(count):
        kind = names[int(rng.choice(len(names), p=kw / kw.sum()))]
        work = pools[kind][int(rng.integers(len(pools[kind])))]
        yield work, fams[int(rng.choice(len(fams), p=fw / fw.sum()))], seed * 100_003 + i


def make_dataset(dest_dir: str | Path, split: str = "train", count: int = 200, max_seconds: float | None = 30.0,
                 seed: int = 0, families: dict[str, float] | None = None) -> list[Path]:
    """Render `count` training examples (features included) into dest_dir; existing ones are kept, so an
    interrupted run resumes; a work that cannot be rendered is logged and skipped. Returns the .npz paths."""
    dest_dir = Path(dest_dir)
    made: list[Path] = []
    plan = list(plan_examples(split, count, seed, families or TRAIN_FAMILY_WEIGHTS, TRAIN_KIND_WEIGHTS))
    for path, family, s in progress(plan, f"render {split}", unit="piece"):
        name = f"{safe_stem(work_id(path))}-{s}"
        if not (dest_dir / f"{name}.json").exists():
            try:
                make_example(path, dest_dir, s, max_seconds, family, name=name)
            except StageError as exc:
                log.warning("%s", exc)
                continue
        made.append(dest_dir / f"{name}.npz")
    return made


def make_dev_set(dest_dir: str | Path, part: str, per_family: int = 12, seconds: float = 20.0,
                 seed: int = 20_261_201) -> list[Path]:
    """The development set's `part` ('tune' or 'test'): per_family clips of every family from held-out works of
    every kind, at 44.1 kHz, made once and reused. Returns the .wav paths."""
    dest_dir = Path(dest_dir) / part
    kinds = list(SOURCE_KINDS)
    pools = {k: [p for p in works_of(k, "test") if dev_part_of(work_id(p)) == part] for k in kinds}
    out: list[Path] = []
    jobs = [(fam, i) for fam in FAMILIES for i in range(per_family)]
    for fam, i in progress(jobs, f"dev set ({part})", unit="clip"):
        kind = kinds[i % len(kinds)]
        pool = pools[kind] or [p for ps in pools.values() for p in ps]
        s = seed + 1000 * FAMILIES.index(fam) + i
        path = pool[(i // len(kinds) + FAMILIES.index(fam)) % len(pool)]
        name = f"{fam}-{i:02d}-{safe_stem(work_id(path))}"
        if not (dest_dir / f"{name}.json").exists():
            try:
                make_example(path, dest_dir, s, seconds, fam, name=name, sample_rate=DEV_SAMPLE_RATE,
                             features=False, cache_dir=Path(dest_dir).parent / "_scores")
            except StageError as exc:
                log.warning("%s", exc)
                continue
        out.append(dest_dir / f"{name}.wav")
    return out


def safe_stem(work: str) -> str:
    """'trecento/PMFC_01-Vos Qui.xml' -> 'trecento_PMFC_01-Vos_Qui_xml': a file name without spaces or slashes."""
    return re.sub(r"[^A-Za-z0-9-]+", "_", work).strip("_")


def load_example(npz: str | Path) -> dict[str, np.ndarray]:
    """Features and rolls of one example (never unpickles)."""
    with np.load(str(npz), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
