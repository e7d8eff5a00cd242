"""One generation request: its keys, their limits, and reading it from a JSON or TOML file.

A request file is somebody else's text: it is read with a size limit, a nesting limit and a check of every key's
type and range, and an output name is checked against what a Pachyderm repo accepts, so a bad file is one
clear error naming the file and the key — never a traceback, and never the end of the other requests.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..music.midi_io import load_midi
from ..music.performance import SoundingNotes
from ..pfs import refused
from ..util import StageError

MAX_SAMPLES = 64
MAX_SECONDS = 3 * 3600.0  # three hours of music in one piece
MAX_TOKENS = 500_000  # about three hours at a busy 45 events per second
MAX_SEED = 2**63 - 1
MAX_REQUEST_BYTES = 64 * 1024
MAX_NAME = 100
MAX_LOOP_MINUTES = 24 * 60.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]*")


@dataclass
class GenerationRequest:
    name: str = "generated"
    num_samples: int = 1
    seconds: float | None = 30.0
    tokens: int | None = None
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    primer_midi: str | None = None
    primer_piece: str | int | None = None
    primer_seconds: float | None = None
    include_primer: bool = True
    program: int = 0
    note_off_mask: bool = True  # a note-off may only end a sounding note (music.performance.SoundingNotes)
    note_off_share: str = "held"  # where offs aimed at silent pitches go: "held" (longest-sounding), "model"
    hold_guard: bool = False  # end a note held far longer than the training music's notes (off: see RESULTS)
    max_hold_seconds: float | None = None  # the guard's limit (default: twice the training notes' 99th percentile)
    # how the render stage plays the pieces (it reads them from the sidecar; its own options win)
    preset: str | None = None
    loop_minutes: float | None = None
    beds: list[str] | None = None

    def validate(self, source: str | Path | None) -> GenerationRequest:
        """Check types and ranges; a StageError names the source file and the key."""
        def bad(msg: str) -> StageError:
            return StageError(source, msg)

        def num(key: str, kind: type) -> None:
            v = getattr(self, key)
            if v is None:
                return
            if isinstance(v, bool) or not isinstance(v, int | float) or (kind is int and not float(v).is_integer()):
                raise bad(f"{key} must be {'an integer' if kind is int else 'a number'}, not {v!r}"[:200])
            if isinstance(v, float) and not math.isfinite(v):
                raise bad(f"{key} must be a finite number, not {v!r}")
            setattr(self, key, kind(v))

        for key in ("num_samples", "tokens", "top_k", "seed", "program"):
            num(key, int)
        for key in ("seconds", "temperature", "top_p", "primer_seconds", "loop_minutes", "max_hold_seconds"):
            num(key, float)
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name) or len(self.name) > MAX_NAME \
                or refused(self.name):
            raise bad(f"name must be 1-{MAX_NAME} letters, digits, spaces, '.', '_' or '-' (starting with a letter "
                      f"or digit), not {str(self.name)[:60]!r}")
        for key in ("include_primer", "note_off_mask", "hold_guard"):
            if not isinstance(getattr(self, key), bool):
                raise bad(f"{key} must be true or false, not {getattr(self, key)!r}"[:200])
        if self.note_off_share not in SoundingNotes.OFF_SHARES:
            raise bad(f"note_off_share must be one of {', '.join(SoundingNotes.OFF_SHARES)}, "
                      f"not {self.note_off_share!r}"[:200])
        if not 1 <= self.num_samples <= MAX_SAMPLES:
            raise bad(f"num_samples must be between 1 and {MAX_SAMPLES} (got {self.num_samples})")
        if not self.temperature > 0:
            raise bad(f"temperature must be > 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise bad(f"top_p must be in (0, 1] (got {self.top_p})")
        if self.top_k < 0:
            raise bad(f"top_k must be >= 0 (got {self.top_k})")
        if self.tokens is not None and not 0 < self.tokens <= MAX_TOKENS:
            raise bad(f"tokens must be between 1 and {MAX_TOKENS:,} (got {self.tokens})")
        if self.seconds is not None and not 0 < self.seconds <= MAX_SECONDS:
            raise bad(f"seconds must be between 0 and {MAX_SECONDS:g} (three hours; got {self.seconds:g})")
        if self.tokens is None and self.seconds is None:
            raise bad("give a length: seconds or tokens")
        if not 0 <= self.seed <= MAX_SEED:
            raise bad(f"seed must be between 0 and 2**63-1 (got {self.seed})")
        if self.primer_seconds is not None and not 0 < self.primer_seconds <= MAX_SECONDS:
            raise bad(f"primer_seconds must be between 0 and {MAX_SECONDS:g} (got {self.primer_seconds})")
        if self.primer_midi is not None and (not isinstance(self.primer_midi, str) or "\x00" in self.primer_midi):
            raise bad(f"primer_midi must be a file name, not {self.primer_midi!r}"[:200])
        if self.primer_piece is not None and (isinstance(self.primer_piece, bool)
                                              or not isinstance(self.primer_piece, str | int)):
            raise bad(f"primer_piece must be a primer's name or index, not {self.primer_piece!r}"[:200])
        if self.primer_midi is not None and self.primer_piece is not None:
            raise bad("give primer_midi or primer_piece, not both")
        if not 0 <= self.program <= 127:
            raise bad(f"program must be 0-127 (got {self.program})")
        if self.preset is not None and (not isinstance(self.preset, str) or not _NAME.fullmatch(self.preset)
                                        or len(self.preset) > MAX_NAME):
            raise bad(f"preset must be the name of a render preset, not {str(self.preset)[:60]!r}")
        if self.max_hold_seconds is not None and not 0.1 <= self.max_hold_seconds <= MAX_SECONDS:
            raise bad(f"max_hold_seconds must be between 0.1 and {MAX_SECONDS:g} (got {self.max_hold_seconds:g})")
        if self.loop_minutes is not None and not 0 < self.loop_minutes <= MAX_LOOP_MINUTES:
            raise bad(f"loop_minutes must be between 0 and {MAX_LOOP_MINUTES:g} (got {self.loop_minutes:g})")
        if self.beds is not None:
            from ..music.beds import parse_bed_options

            if not isinstance(self.beds, list) or len(self.beds) > 8 or not all(isinstance(b, str) for b in self.beds):
                raise bad(f"beds must be a list of up to 8 names such as [\"rain:-12\"], not {self.beds!r}"[:200])
            try:
                parse_bed_options(self.beds)
            except ValueError as exc:
                raise bad(f"beds: {exc}") from None
        return self


def _load(path: Path) -> object:
    try:
        size = path.stat().st_size
        if size > MAX_REQUEST_BYTES:
            raise StageError(path, f"a generation request is a few lines; this file has {size:,} bytes")
        text = path.read_text()
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib

            return tomllib.loads(text)
        return json.loads(text)
    except OSError as exc:
        raise StageError(path, f"cannot read: {exc.strerror or exc}") from None
    except RecursionError:
        raise StageError(path, "nested too deeply to be a generation request") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise StageError(path, f"not valid {path.suffix.lstrip('.').upper()}: {exc}"[:300]) from None


def parse_request_file(path: Path, defaults: GenerationRequest) -> GenerationRequest:
    """Read one JSON/TOML request file over the defaults; unknown keys or bad values name the file.

    A relative primer_midi is taken relative to the request file and must stay inside its folder: a request
    may not read other files of the machine.
    """
    data = _load(path)
    if not isinstance(data, dict):
        raise StageError(path, "a generation config must be a table/object of key = value")
    known = {f.name for f in fields(GenerationRequest)}
    unknown = sorted(str(k) for k in set(data) - known)
    if unknown:
        raise StageError(path, f"unknown key(s) {', '.join(k[:40] for k in unknown[:5])}; known keys: "
                         f"{', '.join(sorted(known))}")
    values = {**asdict(defaults), "name": path.stem, **data}
    if "tokens" in data and "seconds" not in data:
        values["seconds"] = None
    if "primer_midi" in data or "primer_piece" in data:  # the request's own primer replaces the defaults'
        values["primer_midi"], values["primer_piece"] = data.get("primer_midi"), data.get("primer_piece")
    req = GenerationRequest(**values).validate(path)
    if "primer_midi" in data and req.primer_midi:
        folder = path.parent.resolve()
        target = (folder / req.primer_midi).resolve()
        if folder not in target.parents:
            raise StageError(path, f"primer_midi {req.primer_midi!r} is outside the request's folder {folder}")
        req.primer_midi = str(target)
    return req


MORE_LIKE_PRIMER_SHARE = 0.75  # a variation's primer: the liked piece's first three quarters


def more_like_primer_seconds(mid: Path) -> float | None:
    """How much of a liked piece primes its variations: the first three quarters, so the model goes on from
    inside the piece. A whole finished piece as primer leaves the model continuing after an ending, which no
    training window shows; its variations came out sparse (half the liked piece's notes, some empty) and further
    from it (bench/RESULTS.md, more like this, round four). None: the piece is too short to cut."""
    seconds = load_midi(mid, allow_empty=True).total_time * MORE_LIKE_PRIMER_SHARE
    return round(seconds, 3) if seconds >= 0.01 else None
