"""Small helpers shared by every stage: logging, progress bars, errors, file discovery, the per-file loop,
soundfonts."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from . import env

T = TypeVar("T")

log = logging.getLogger("ambientgen")


class StageError(Exception):
    """A failure that names the file and the cause; the CLI prints it without a traceback."""

    def __init__(self, path: str | os.PathLike | None, cause: str):
        self.path = None if path is None else str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}" if self.path else cause)


def setup_logging(verbose: int = 0) -> None:
    """Configure the root logger once: INFO by default, DEBUG with -v."""
    level = logging.DEBUG if verbose > 0 else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    for noisy in ("numba", "matplotlib", "PIL", "h5py", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """A progress bar with rate and ETA on stderr (silent when AMBIENTGEN_NO_PROGRESS=1)."""
    from tqdm import tqdm

    disable = env.no_progress()
    yield from tqdm(items, desc=desc, total=total, unit=unit, disable=disable, dynamic_ncols=True, leave=False)


def iter_files(root: str | os.PathLike, suffixes: Iterable[str] | None = None) -> list[Path]:
    """Every regular file under root (sorted, hidden files skipped), optionally filtered by suffix.

    A symbolic link whose target lies outside root is skipped with a warning: a stage reads only its input
    folder (a link to /etc/passwd must not be copied into an output)."""
    root = Path(root)
    if root.is_file():
        return [root]
    wanted = {s.lower() for s in suffixes} if suffixes else None
    real_root = os.path.realpath(root)
    out = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        real = os.path.realpath(p)
        if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
            logging.getLogger(__name__).warning("%s: a link to %s, outside %s; skipped", p, real, root)
            continue
        if wanted is None or p.suffix.lower() in wanted:
            out.append(p)
    return out


class SkipFile(Exception):
    """Raised by a per-file step for an input that gives nothing and is no failure (a MIDI file without notes)."""


@dataclass
class FileResults:
    """What a per-file stage did with each input, by its path relative to the input folder."""

    done: dict[str, Any] = field(default_factory=dict)  # -> what the step returned (an output name, a sidecar...)
    failed: dict[str, str] = field(default_factory=dict)  # -> the cause
    skipped: dict[str, str] = field(default_factory=dict)  # -> why

    def exit_status(self, what: str = "file(s)") -> int:
        """1 after one log line naming every failed input, else 0: what a stage's main returns."""
        if not self.failed:
            return 0
        log.error("%d of %d %s failed: %s", len(self.failed), len(self.failed) + len(self.done), what,
                  ", ".join(sorted(self.failed)))
        return 1


def for_each_file(input_dir: str | os.PathLike, accepts: Collection[str], step: Callable[[Path, str], Any], *,
                  what: str, kind: str = "an audio file", output_name: Callable[[str], str] | None = None,
                  ignore: Collection[str] = (), prepare: Callable[[list[Path]], None] | None = None,
                  unit: str = "file") -> FileResults:
    """The stage contract's loop: ``step(path, rel)`` for every file under input_dir with a suffix in ``accepts``.

    A bad file never stops the others: a StageError, OSError or RuntimeError (libsndfile's) fails that file
    alone, with its cause. Other suffixes are skipped with a warning (``ignore``: silently, like render's JSON
    sidecars). Two inputs that would give the same ``output_name(rel)`` fail the second, so that nothing is
    overwritten. ``prepare(accepted paths)`` runs once before the first step (load a model only when needed).
    """
    input_dir = Path(input_dir)
    if not input_dir.exists():
        raise StageError(input_dir, "input directory does not exist")
    base = input_dir if input_dir.is_dir() else input_dir.parent
    result = FileResults()
    wanted: list[tuple[Path, str]] = []
    for path in iter_files(input_dir):
        rel = path.relative_to(base).as_posix()
        suffix = path.suffix.lower()
        if suffix in accepts:
            wanted.append((path, rel))
        elif suffix not in ignore:
            log.warning("%s: not %s (suffix %r), skipped", path, kind, path.suffix)
            result.skipped[rel] = f"not {kind}"
    if not wanted:
        log.warning("%s: nothing to do (no %s)", input_dir, kind.split(" ", 1)[-1])
        return result
    if prepare is not None:
        prepare([p for p, _ in wanted])
    taken: dict[str, str] = {}
    for path, rel in progress(wanted, what, unit=unit):
        try:
            if output_name is not None:
                out = output_name(rel)
                if out in taken:
                    raise StageError(path, f"output {out} already written from {taken[out]}; rename one of them")
                taken[out] = rel
            result.done[rel] = step(path, rel)
        except SkipFile as exc:
            result.skipped[rel] = str(exc)
        except StageError as exc:
            cause = exc.cause if exc.path in (None, str(path)) else str(exc)
            log.error("%s: %s", path, cause)
            result.failed[rel] = cause
        except (OSError, RuntimeError) as exc:  # a write error (disk full), libsndfile's: this file alone fails
            cause = getattr(exc, "strerror", None) or str(exc)
            log.error("%s: %s", path, cause)
            result.failed[rel] = cause
    return result


@contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside dest; on success fsync and rename it over dest, else remove it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # the temporary name stays short: a 255-byte file name plus a prefix would be longer than any file system allows
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name[:100]}.", suffix=(suffix or dest.suffix)[:20], dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | os.PathLike, obj: object) -> None:
    """Write JSON atomically (sorted keys, indented)."""
    import json

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
)


def find_soundfont(explicit: str | os.PathLike | None = None) -> Path:
    """The General MIDI soundfont to use: explicit path, $AMBIENTGEN_SOUNDFONT, Debian's FluidR3, or pretty_midi's."""
    for cand in (explicit, env.get("AMBIENTGEN_SOUNDFONT"), *SOUNDFONT_CANDIDATES):
        if cand and Path(cand).is_file():
            return Path(cand)
    import pretty_midi

    bundled = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if bundled.is_file():
        return bundled
    raise StageError(None, "no General MIDI soundfont found: install fluid-soundfont-gm or set AMBIENTGEN_SOUNDFONT")


def require_binary(name: str) -> str:
    """Path of an external program, or a StageError saying how to install it."""
    path = shutil.which(name)
    if not path:
        raise StageError(None, f"'{name}' not found on PATH: install it (Debian: apt-get install {name})")
    return path


# The one table of file kinds. Audio: what ffmpeg decodes for normalize and mp3-to-wav; of those, what the
# transcriber reads itself (libsndfile); MIDI: music.midi_io.MIDI_SUFFIXES.
AUDIO_SUFFIXES = frozenset({".mp3", ".wav", ".ogg", ".oga", ".flac", ".m4a", ".aac", ".opus", ".aif", ".aiff", ".wma"})
SOUNDFILE_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff"})


def positive_int(text: str) -> int:
    """argparse type: an integer above zero (a sample rate of 0 is an error, not a default)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above zero, got {value}")
    return value


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), for benchmark and training records."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
