"""Stage 1: copy audio files to safe, collision-free names.

Rule (stable across Pachyderm datums, which never see each other): a name that is already safe
(``[A-Za-z0-9._-]``, lower-case extension, at most 100 characters) is kept as it is; any other name is
ASCII-folded, reduced to safe characters and given ``-`` plus the first 8 hex digits of the SHA-1 of the
original relative path. A safe name that ends like a changed one (``-`` and 8 hex digits) is changed too, so
kept and changed names never meet and two originals can never map to the same output.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
from pathlib import Path

from ..music.midi_io import MIDI_SUFFIXES
from ..pfs import ascii_fold, has_folded_shape, short_hash
from ..util import AUDIO_SUFFIXES, FileResults, StageError, atomic_path, for_each_file

HELP = "copy audio files to safe, collision-free names"
EXAMPLES = """
  ambientgen normalize /pfs/audio-unprocessed /pfs/out
  ambientgen normalize ~/Music/sleep normalized/ --dry-run
"""
MAX_STEM = 100
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

log = logging.getLogger(__name__)


def safe_name(relpath: str) -> str:
    """The output file name for an input path relative to the input directory."""
    p = Path(relpath)
    stem = "_".join([*p.parent.parts, p.stem]) if p.parent != Path(".") else p.stem
    suffix = p.suffix.lower()
    if _SAFE.match(stem) and len(stem) <= MAX_STEM and (stem + suffix) == relpath and not has_folded_shape(stem):
        return relpath
    folded = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_fold(stem)).strip("._-")
    folded = re.sub(r"_+", "_", folded)[:MAX_STEM].rstrip("._-") or "audio"
    return f"{folded}-{short_hash(relpath)}{suffix}"


def normalize(input_dir: str | Path, output_dir: str | Path, dry_run: bool = False) -> FileResults:
    """Copy every audio (and MIDI) file under input_dir to output_dir under its safe name (``done``: input ->
    name); other files are skipped with a warning."""
    output_dir = Path(output_dir)

    def copy(path: Path, rel: str) -> str:
        name = safe_name(rel)
        if dry_run:
            return name
        dest = output_dir / name
        if dest.exists():
            raise StageError(dest, f"output already exists (from {rel}); refusing to overwrite")
        with atomic_path(dest) as tmp:
            shutil.copyfile(path, tmp)
        log.info("%s -> %s", rel, name)
        return name

    # MIDI passes through the chain as it is
    return for_each_file(input_dir, AUDIO_SUFFIXES | MIDI_SUFFIXES, copy, what="normalize", output_name=safe_name)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input_dir", help="directory of audio files (e.g. /pfs/audio-unprocessed)")
    p.add_argument("output_dir", help="where the renamed copies go (e.g. /pfs/out)")
    p.add_argument("--dry-run", action="store_true", help="print the mapping, copy nothing")


def main(args: argparse.Namespace) -> int:
    res = normalize(args.input_dir, args.output_dir, dry_run=args.dry_run)
    for src, dst in res.done.items():
        print(f"{src} -> {dst}")
    return res.exit_status()
