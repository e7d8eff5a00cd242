"""Stage 7: render generated MIDI to ambient audio (WAV + MP3) with a piano-roll picture beside each piece.

The chain, all streamed in blocks (memory does not grow with the length of the output):

1. FluidSynth (pyfluidsynth, in process, float output) plays the MIDI notes on the preset's layers, General MIDI
   programs from a soundfont (``ambientgen.util.find_soundfont``).
2. pedalboard applies the preset's effects (reverb, delay, chorus, filters, gentle compression) block by block,
   keeping its state between blocks, and lets them ring for the preset's ``tail`` seconds.
3. The piece goes to a temporary float WAV while a streaming ITU-R BS.1770 meter (pyloudnorm's K-weighting
   filters, same gating) measures its loudness.
4. The piece is read back with the gain that brings it to the target loudness (never above -1 dBFS sample
   peak), fades, and with ``--loop-minutes`` repeated with equal-power crossfades into one long seamless piece;
   the blocks go to the WAV (soundfile) and, through a pipe, to ffmpeg for the MP3.

Presets live in a small TOML file (``ambientgen/assets/render_presets.toml``; ``--presets FILE`` for your own).
Leading silence before the first note is cut to half a second. A MIDI file with no notes is skipped with a
warning (nothing is written for it: a silent file helps no one); a file that cannot be read as MIDI is an
error naming it, the other files are still rendered and the command exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
import zlib
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..music.beds import BED_TYPES, BINAURAL_CAUTION, BedSpec, Mixer, parse_bed_options
from ..music.loudness import LoudnessMeter, db
from ..music.midi_io import MIDI_SUFFIXES, MidiLimits, load_pretty_midi
from ..music.mixdown import AudioWriter, arrange, loop_layout
from ..music.presets import Preset, default_presets_path, load_presets, preset_lines
from ..music.synth import midi_events, synthesize
from ..util import FileResults, SkipFile, StageError, atomic_path, find_soundfont, for_each_file, write_json
from .gen_request import MAX_LOOP_MINUTES

HELP = "render MIDI to ambient WAV/MP3 (FluidSynth + pedalboard effects, loudness, long loops) with piano rolls"
EXAMPLES = """
  ambientgen render /pfs/music-transformer-generate /pfs/out
  ambientgen render generated/ audio/ --preset pad --loop-minutes 30
  ambientgen render generated/ audio/ --preset pad --bed rain:-12 --loop-minutes 60
  ambientgen render generated/ audio/ --presets my_presets.toml --preset dreamy --loudness -24 --formats mp3
"""
# The longest piece rendered (three hours, the longest generate writes); longer listening comes from --loop-minutes.
RENDER_LIMITS = MidiLimits(max_bytes=16 * 2**20, max_notes=200_000, max_seconds=3 * 3600.0)
DEFAULT_SAMPLE_RATE = 44100
PEAK_CEILING_DB = -1.0
FORMATS = ("wav", "mp3")

log = logging.getLogger(__name__)


DESCRIPTION = (
    HELP + ".\n\nEach NAME.mid gives NAME.wav, NAME.mp3, NAME.png (piano roll) and NAME.json (what was done).\n"
    "Presets shipped (edit a copy of ambientgen/assets/render_presets.toml and pass --presets FILE):\n"
    + preset_lines()
    + "\n\nSound beds (--bed, or a preset's beds = [...]): pink-noise, brown-noise, rain (intensity 0-1) and "
    "binaural (carrier_hz, beat_hz; never on by default). " + BINAURAL_CAUTION
)


def read_midi(path: str | Path):
    """pretty_midi.PrettyMIDI for path, read through the one MIDI reader with its limits (StageError naming the
    file when it is unreadable, or longer than RENDER_LIMITS allow: a 43-byte file can hold a 14-hour note)."""
    return load_pretty_midi(path, RENDER_LIMITS, allow_empty=True)


# -------------------------------------------------------------------------------------------------- renderer
@dataclass
class RenderOptions:
    preset: str | None = None  # None: the sidecar's "preset", else the presets file's default
    presets_file: str | None = None
    loudness: float | None = None  # None: the preset's
    loop_minutes: float | None = None
    crossfade: float | None = None
    fade_in: float | None = None
    fade_out: float | None = None
    sample_rate: int = DEFAULT_SAMPLE_RATE
    formats: tuple[str, ...] = FORMATS
    mp3_bitrate: str = "192k"
    soundfont: str | None = None
    pianoroll: bool = True
    beds: tuple[str, ...] | None = None  # "rain", "pink-noise:-18" ...; None: the sidecar's, else the preset's


def parse_beds(specs: tuple[str, ...] | list[str], where: str | Path | None) -> list[BedSpec]:
    """Bed options ("rain:-12"; "none" alone for no bed) as BedSpecs; StageError naming where they came from."""
    try:
        return parse_bed_options(specs)
    except ValueError as exc:
        raise StageError(where, str(exc)) from None


@dataclass
class RenderInfo:
    """What render_file did; written as NAME.json beside the audio."""

    source: str
    preset: str
    soundfont: str
    sample_rate: int
    notes: int
    piece_seconds: float
    duration_seconds: float
    loop_minutes: float | None
    piece_loudness_lufs: float
    target_loudness_lufs: float
    gain_db: float
    loudness_lufs: float  # the piece after gain (fades and loop crossfades not counted)
    peak_dbfs: float
    files: list[str]
    render_seconds: float
    beds: list[dict[str, Any]] = field(default_factory=list)  # type, level_lu relative to the music, parameters
    motion: list[str] = field(default_factory=list)
    loop_seams_s: list[float] = field(default_factory=list)  # where each repetition of the music starts
    generation: dict[str, Any] | None = None


def _read_sidecar(midi: Path) -> dict[str, Any] | None:
    side = midi.with_suffix(".json")
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s: sidecar is not valid JSON (%s); ignored", side, exc)
        return None
    return data if isinstance(data, dict) else None


def _asked(sidecar: dict[str, Any] | None, key: str) -> Any:
    """What a sidecar (or the generation request it records) asks of render for key."""
    side = sidecar or {}
    req = side.get("request") if isinstance(side.get("request"), dict) else {}
    return side.get(key) if side.get(key) is not None else req.get(key)


def render_file(midi: str | Path, out_stem: str | Path, options: RenderOptions | None = None,
                presets: tuple[dict[str, Preset], str] | None = None) -> RenderInfo | None:
    """Render one MIDI file to out_stem.{wav,mp3,png,json}. None (and a warning) when it has no notes.

    Raises StageError naming the file when it is not readable MIDI or rendering fails.
    """
    import numpy as np
    import soundfile

    opts = options or RenderOptions()
    midi, out_stem = Path(midi), Path(out_stem)
    t_start = time.perf_counter()
    presets_map, default_name = presets or load_presets(opts.presets_file)
    sidecar = _read_sidecar(midi)
    asked = _asked(sidecar, "preset")
    name = opts.preset or (asked if isinstance(asked, str) else None) or default_name
    if name not in presets_map:
        if opts.preset:
            raise StageError(opts.presets_file or default_presets_path(),
                             f"no preset {name!r} (have: {', '.join(presets_map)})")
        log.warning("%s: sidecar asks for unknown preset %r; using %r", midi, name, default_name)
        name = default_name
    preset = presets_map[name]
    loop_minutes = opts.loop_minutes
    if loop_minutes is None:
        asked_loop = _asked(sidecar, "loop_minutes")
        if isinstance(asked_loop, int | float) and not isinstance(asked_loop, bool) and 0 < asked_loop <= MAX_LOOP_MINUTES:
            loop_minutes = float(asked_loop)
    beds = preset.beds
    asked_beds = _asked(sidecar, "beds")
    if opts.beds is not None:
        beds = parse_beds(opts.beds, "--bed")
    elif isinstance(asked_beds, list) and all(isinstance(b, str) for b in asked_beds):
        beds = parse_beds(asked_beds, midi.with_suffix(".json"))
    pm = read_midi(midi)
    sr = int(opts.sample_rate)
    events = midi_events(pm, preset, sr)
    if events.notes == 0:
        log.warning("%s: no notes to render; skipped (nothing written)", midi)
        return None
    soundfont = find_soundfont(opts.soundfont)
    target = preset.loudness if opts.loudness is None else opts.loudness
    crossfade = preset.crossfade if opts.crossfade is None else opts.crossfade
    fade_in = preset.fade_in if opts.fade_in is None else opts.fade_in
    fade_out = preset.fade_out if opts.fade_out is None else opts.fade_out
    formats = tuple(f.lower() for f in opts.formats)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ambientgen-render-") as tmp_dir:
        piece_path = Path(tmp_dir) / "piece.wav"
        meter = LoudnessMeter(sr)
        with soundfile.SoundFile(str(piece_path), "w", sr, 2, subtype="FLOAT", format="WAV") as piece:
            for blk in synthesize(events, preset, soundfont, sr):
                meter.add(blk)
                piece.write(blk)
        piece_frames = meter.frames
        piece_lufs = meter.integrated()
        if not math.isfinite(piece_lufs):
            raise StageError(midi, f"rendered audio is silent (soundfont {soundfont} has no sound for its notes?)")
        gain_db = target - piece_lufs
        ceiling = PEAK_CEILING_DB - db(meter.peak)
        if gain_db > ceiling:
            log.info("%s: gain limited to %.1f dB by the %.0f dBFS peak ceiling (%.1f LU under target)",
                     midi, ceiling, PEAK_CEILING_DB, gain_db - ceiling)
            gain_db = ceiling
        total = int(round(loop_minutes * 60 * sr)) if loop_minutes else piece_frames
        # beds and motion: seeded by the piece's name, so a piece sounds the same every time it is rendered
        mixer = Mixer(beds, preset.motion, piece_lufs + gain_db, sr,
                      seed=zlib.crc32(midi.name.encode()))
        out_peak = 0.0
        with ExitStack() as stack:
            tmp = {fmt: stack.enter_context(atomic_path(out_stem.with_suffix(f".{fmt}"))) for fmt in formats}
            writer = AudioWriter(tmp.get("wav"), tmp.get("mp3"), sr, opts.mp3_bitrate)
            try:
                with soundfile.SoundFile(str(piece_path)) as piece:
                    for blk in arrange(piece, piece_frames, total, int(crossfade * sr), int(fade_in * sr),
                                       int(fade_out * sr), 10 ** (gain_db / 20), events.end_sample,
                                       mix=mixer or None):
                        out_peak = max(out_peak, float(np.max(np.abs(blk))))
                        writer.write(blk)
                writer.close()
            except BaseException:
                writer.abort()
                raise
        written = [out_stem.with_suffix(f".{fmt}") for fmt in FORMATS if fmt in formats]
        _, _, stride = loop_layout(piece_frames, total, int(crossfade * sr), events.end_sample)
        seams = [round(k * stride / sr, 3) for k in range(1, -(-total // stride))] if total > piece_frames else []
    if opts.pianoroll:
        from ..music.pianoroll import save_pianoroll

        save_pianoroll(pm, out_stem.with_suffix(".png"), title=midi.name)
        written.append(out_stem.with_suffix(".png"))
    info = RenderInfo(
        source=midi.name, preset=name, soundfont=soundfont.name, sample_rate=sr, notes=events.notes,
        piece_seconds=round(piece_frames / sr, 3), duration_seconds=round(total / sr, 3),
        loop_minutes=loop_minutes, piece_loudness_lufs=round(piece_lufs, 2), target_loudness_lufs=target,
        gain_db=round(gain_db, 2), loudness_lufs=round(piece_lufs + gain_db, 2),
        peak_dbfs=round(db(out_peak), 2), files=[p.name for p in written],
        render_seconds=round(time.perf_counter() - t_start, 2), beds=mixer.described,
        motion=[m.type for m in preset.motion], loop_seams_s=seams, generation=sidecar,
    )
    write_json(out_stem.with_suffix(".json"), asdict(info))
    return info


def render(input_dir: str | Path, output_dir: str | Path, options: RenderOptions | None = None) -> FileResults:
    """Render every MIDI file under input_dir into output_dir (same relative names; ``done``: input -> its
    RenderInfo). Bad files are recorded in ``failed`` and logged; the others are still rendered."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.exists():
        raise StageError(input_dir, "input directory does not exist")
    opts = options or RenderOptions()
    bad = set(f.lower() for f in opts.formats) - set(FORMATS)
    if bad or not opts.formats:
        raise StageError(None, f"--formats takes a comma-separated subset of {', '.join(FORMATS)}")
    presets = load_presets(opts.presets_file)
    if opts.preset and opts.preset not in presets[0]:
        raise StageError(opts.presets_file or default_presets_path(),
                         f"no preset {opts.preset!r} (have: {', '.join(presets[0])})")

    def one(path: Path, rel: str) -> RenderInfo:
        try:
            info = render_file(path, output_dir / Path(rel).with_suffix(""), opts, presets)
        except (OSError, RuntimeError) as exc:  # a write error (disk full) or libsndfile's: this file alone fails
            raise StageError(path, f"cannot write the rendering: {getattr(exc, 'strerror', None) or exc}") from None
        if info is None:
            raise SkipFile("no notes")
        log.info("%s -> %s (%.0f s, %s, %.1f LUFS) in %.1f s", rel, ", ".join(info.files), info.duration_seconds,
                 info.preset, info.loudness_lufs, info.render_seconds)
        return info

    return for_each_file(input_dir, MIDI_SUFFIXES, one, what="render", kind="a MIDI file", ignore={".json"},
                         output_name=lambda rel: Path(rel).with_suffix("").as_posix(), unit="piece")


# ------------------------------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input_dir", help="directory of .mid files (+ .json sidecars), e.g. /pfs/music-transformer-generate")
    p.add_argument("output_dir", help="where NAME.wav/.mp3/.png/.json go (e.g. /pfs/out)")
    p.add_argument("--preset", default=None,
                   help="preset name (default: the sidecar's \"preset\", else the presets file's default)")
    p.add_argument("--presets", dest="presets_file", default=None, metavar="FILE",
                   help="presets TOML file (default: the shipped ambientgen/assets/render_presets.toml)")
    p.add_argument("--loop-minutes", type=float, default=None, metavar="N",
                   help="extend each piece to an N-minute seamless loop with crossfades (e.g. 30 for sleep)")
    p.add_argument("--loudness", type=float, default=None, metavar="LUFS",
                   help="target integrated loudness (default: the preset's, about -20)")
    p.add_argument("--crossfade", type=float, default=None, metavar="S", help="loop crossfade seconds (preset's)")
    p.add_argument("--fade-in", type=float, default=None, metavar="S", help="fade-in seconds (preset's)")
    p.add_argument("--fade-out", type=float, default=None, metavar="S", help="fade-out seconds (preset's)")
    p.add_argument("--sample-rate", type=int, default=DEFAULT_SAMPLE_RATE, help="output sample rate (44100)")
    p.add_argument("--formats", default="wav,mp3", help="comma-separated: wav, mp3 (default both)")
    p.add_argument("--mp3-bitrate", default="192k", help="MP3 bit rate for ffmpeg (default 192k)")
    p.add_argument("--soundfont", default=None, help="General MIDI .sf2 (default: FluidR3_GM or pretty_midi's)")
    p.add_argument("--no-pianoroll", action="store_true", help="do not draw NAME.png")
    p.add_argument("--bed", dest="beds", action="append", default=None, metavar="TYPE[:LU]",
                   help=f"a sound under the music, instead of the preset's: {', '.join(BED_TYPES)}; the number "
                        "after ':' is its loudness relative to the music in LU (default -14); repeat for more, "
                        "'none' for no bed")


def main(args: argparse.Namespace) -> int:
    if args.loop_minutes is not None and args.loop_minutes <= 0:
        raise StageError(None, "--loop-minutes must be > 0")
    opts = RenderOptions(
        preset=args.preset, presets_file=args.presets_file, loudness=args.loudness, loop_minutes=args.loop_minutes,
        crossfade=args.crossfade, fade_in=args.fade_in, fade_out=args.fade_out, sample_rate=args.sample_rate,
        formats=tuple(f.strip() for f in args.formats.split(",") if f.strip()), mp3_bitrate=args.mp3_bitrate,
        soundfont=args.soundfont, pianoroll=not args.no_pianoroll,
        beds=tuple(args.beds) if args.beds is not None else None,
    )
    res = render(args.input_dir, args.output_dir, opts)
    for rel, info in res.done.items():
        print(f"{rel} -> {', '.join(info.files)}")
    return res.exit_status("MIDI files")

