"""Stage 2: decode audio (MP3, WAV, OGG, FLAC, ...) to mono 16 kHz WAV for transcription.

Decoding is done by ffmpeg, found and probed through pydub's helpers (``pydub.utils``). ffmpeg streams the
file straight to the output WAV, resampling and down-mixing on the way, so an hour-long file needs a few
megabytes of memory instead of the whole signal (pydub's ``AudioSegment`` would hold it all; see
bench/bench_transcribe.py for the measurement).

Rules for bad input (each file is judged on its own; the others are still converted and the command
exits 1 at the end when any failed):

* empty file, random bytes, a file with no audio stream, or one ffmpeg cannot decode: error naming it;
* a truncated MP3 (fewer seconds decoded than its header announces) or one with decoding errors: error
  (``--tolerate-errors`` keeps what ffmpeg could decode, with a warning);
* a file whose content is another audio format than its name says (a WAV, FLAC or OGG named ``.mp3``): it is
  decoded by its content, with a warning naming the real format;
* a file whose suffix is not audio (``.txt``, ``.json``...): skipped with a warning.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..music.midi_io import MIDI_SUFFIXES
from ..util import (
    AUDIO_SUFFIXES,
    FileResults,
    StageError,
    atomic_path,
    for_each_file,
    positive_int,
    require_binary,
)

HELP = "decode audio files to mono 16 kHz WAV (ffmpeg via pydub)"
EXAMPLES = """
  ambientgen mp3-to-wav /pfs/audio-processed /pfs/out
  ambientgen mp3-to-wav music/ wav/ --keep-rate
"""
DEFAULT_SAMPLE_RATE = 16000
# ffprobe's format names for each suffix (the container a correctly named file has).
EXPECTED_FORMATS = {
    ".mp3": {"mp3"},
    ".wav": {"wav"},
    ".ogg": {"ogg"},
    ".oga": {"ogg"},
    ".opus": {"ogg"},
    ".flac": {"flac"},
    ".aif": {"aiff"},
    ".aiff": {"aiff"},
    ".m4a": {"mov", "mp4", "m4a", "3gp", "3g2", "mj2"},
    ".aac": {"aac"},
    ".wma": {"asf"},
}
MIN_PROBE_SCORE = 25  # ffprobe's confidence (0-100) below which the content is not taken for audio
TRUNCATION_TOLERANCE = 0.97  # decoded/announced duration below this means the file was cut short

log = logging.getLogger(__name__)


@dataclass
class DecodeInfo:
    """What ffprobe says about a file and what ffmpeg decoded."""

    format_name: str
    codec: str
    sample_rate: int
    channels: int
    announced_s: float | None
    decoded_s: float = 0.0
    warnings: list[str] = field(default_factory=list)


def probe(path: str | Path) -> DecodeInfo:
    """Identify a file by its content with ffprobe (via pydub); StageError when it holds no usable audio."""
    from pydub.utils import get_prober_name

    path = Path(path)
    if path.stat().st_size == 0:
        raise StageError(path, "empty file (0 bytes)")
    prober = require_binary(get_prober_name())
    proc = subprocess.run(
        [prober, "-v", "error", "-of", "json", "-show_format", "-show_streams", str(path)],
        capture_output=True, text=True, errors="replace",
    )
    try:
        info = json.loads(proc.stdout or "{}")
    except json.JSONDecodeError:
        info = {}
    fmt = info.get("format") or {}
    streams = [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]
    if proc.returncode != 0 or not fmt:
        cause = (proc.stderr.strip().splitlines() or ["unknown format"])[-1]
        raise StageError(path, f"not a readable audio file ({_short(cause, path)})")
    if not streams:
        raise StageError(path, f"no audio stream (content is {fmt.get('format_name', '?')})")
    score = int(fmt.get("probe_score", 100))
    if score < MIN_PROBE_SCORE:
        raise StageError(path, f"not a readable audio file (content not recognised: ffprobe confidence {score}/100)")
    stream = streams[0]
    duration = stream.get("duration") or fmt.get("duration")
    return DecodeInfo(
        format_name=str(fmt.get("format_name", "?")),
        codec=str(stream.get("codec_name", "?")),
        sample_rate=int(stream.get("sample_rate") or 0),
        channels=int(stream.get("channels") or 0),
        announced_s=float(duration) if duration not in (None, "N/A") else None,
    )


def _short(msg: str, path: Path) -> str:
    """ffmpeg messages repeat the path; drop it so the error names the file once."""
    return msg.replace(str(path) + ": ", "").strip()


def decode_to_wav(src: str | Path, dest: str | Path, sample_rate: int | None = DEFAULT_SAMPLE_RATE,
                  tolerate_errors: bool = False) -> DecodeInfo:
    """Decode one audio file to a mono 16-bit WAV at sample_rate (None: keep the source rate).

    ffmpeg streams the file (constant memory) into a temporary file that replaces dest only on success.
    Raises StageError naming src for empty, unreadable, truncated or corrupt input.
    """
    from pydub.utils import get_encoder_name

    src, dest = Path(src), Path(dest)
    info = probe(src)
    expected = EXPECTED_FORMATS.get(src.suffix.lower())
    if expected is not None and not (set(info.format_name.split(",")) & expected):
        msg = f"content is {info.format_name.upper()} ({info.codec}), not {src.suffix.lstrip('.').upper()}; decoded by content"
        log.warning("%s: %s", src, msg)
        info.warnings.append(msg)
    ffmpeg = require_binary(get_encoder_name())
    rate = sample_rate or info.sample_rate or 44100
    with atomic_path(dest, suffix=".wav") as tmp:
        cmd = [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-y", "-i", str(src), "-map", "0:a:0", "-vn",
               "-ac", "1", "-ar", str(rate), "-c:a", "pcm_s16le", "-f", "wav", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        errors = [line for line in proc.stderr.splitlines() if line.strip()]
        if proc.returncode != 0:
            raise StageError(src, f"ffmpeg could not decode it ({_short(errors[-1] if errors else 'unknown error', src)})")
        import soundfile

        decoded = soundfile.info(str(tmp))
        info.decoded_s = decoded.frames / decoded.samplerate
        if decoded.frames == 0:
            raise StageError(src, "no audio could be decoded (0 samples)")
        problems = []
        if info.announced_s and info.decoded_s < TRUNCATION_TOLERANCE * info.announced_s - 0.1:
            problems.append(f"truncated: decoded {info.decoded_s:.2f} s of the {info.announced_s:.2f} s its header announces")
        if errors:
            problems.append(f"{len(errors)} decoding error(s), first: {_short(errors[0], src)}")
        if problems:
            if not tolerate_errors:
                raise StageError(src, "; ".join(problems))
            for p in problems:
                log.warning("%s: %s (kept what could be decoded)", src, p)
                info.warnings.append(p)
    return info


def wav_name(rel: str) -> str:
    """The output of one input: NAME.wav for audio; a MIDI file keeps its name (transcribe takes it as it is)."""
    return rel if Path(rel).suffix.lower() in MIDI_SUFFIXES else Path(rel).with_suffix(".wav").as_posix()


def convert(input_dir: str | Path, output_dir: str | Path, sample_rate: int | None = DEFAULT_SAMPLE_RATE,
            tolerate_errors: bool = False) -> FileResults:
    """Decode every audio file under input_dir to output_dir/REL/NAME.wav (``done``: input -> output); a bad
    file never stops the others."""
    output_dir = Path(output_dir)

    def decode(path: Path, rel: str) -> str:
        out_rel = wav_name(rel)
        if path.suffix.lower() in MIDI_SUFFIXES:  # already notes: passed on as they are
            with atomic_path(output_dir / out_rel) as tmp:
                shutil.copyfile(path, tmp)
            return out_rel
        info = decode_to_wav(path, output_dir / out_rel, sample_rate, tolerate_errors)
        log.info("%s -> %s (%.1f s, %s)", rel, out_rel, info.decoded_s, info.codec)
        return out_rel

    return for_each_file(input_dir, AUDIO_SUFFIXES | MIDI_SUFFIXES, decode, what="mp3-to-wav", output_name=wav_name)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input_dir", help="directory of audio files (e.g. /pfs/audio-processed)")
    p.add_argument("output_dir", help="where NAME.wav files go (e.g. /pfs/out)")
    p.add_argument("--sample-rate", type=positive_int, default=DEFAULT_SAMPLE_RATE,
                   help=f"output sample rate in Hz (default {DEFAULT_SAMPLE_RATE})")
    p.add_argument("--keep-rate", action="store_true", help="keep each file's own sample rate (still mono)")
    p.add_argument("--tolerate-errors", action="store_true",
                   help="keep what ffmpeg decodes from truncated or corrupt files instead of failing them")


def main(args: argparse.Namespace) -> int:
    res = convert(args.input_dir, args.output_dir, None if args.keep_rate else args.sample_rate,
                  tolerate_errors=args.tolerate_errors)
    for src, dst in res.done.items():
        print(f"{src} -> {dst}")
    return res.exit_status()
